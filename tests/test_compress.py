"""Compression variants on real frames: random-init ResNet-18 (no downloads), low resolution to stay fast."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from rtvision.models import artifact, compress, quant_backend
from rtvision.optimize import Variant, agreement, compare_variants, render_markdown

# 112 px crops: 4x fewer MACs than 224, same layers and widths.
PP = {"resize": 128, "crop": 112, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
NAMES = [f"class_{i}" for i in range(1000)]


@pytest.fixture(scope="module")
def batch(faces_frames) -> torch.Tensor:
    return compress.frames_to_batch(faces_frames, PP)


@pytest.fixture(scope="module")
def variants(faces_frames, batch) -> dict[str, torch.nn.Module]:
    """fp32 (BN statistics re-estimated on the frames so it reacts to them), int8, pruned30, pruned30+int8."""
    torch.manual_seed(0)
    fp32 = compress.reestimate_bn(compress.build_resnet("resnet18"), batch)
    pruned = compress.prune(fp32, 0.3, "l1", batch[:1])
    calib = faces_frames[:4]
    return {
        "fp32": fp32,
        "int8": compress.quantize_int8(fp32, calib, PP),
        "pruned": pruned,
        "pruned_int8": compress.quantize_int8(pruned, calib, PP),
    }


def test_frames_to_batch_shape_and_color_order(faces_frames):
    b = compress.frames_to_batch(faces_frames[:2], PP)
    assert b.shape == (2, 3, 112, 112) and b.dtype == torch.float32 and b.is_contiguous()
    blue = np.zeros((90, 160, 3), np.uint8)
    blue[..., 0] = 255  # BGR: pure blue
    x = compress.frames_to_batch([blue], PP)[0]
    assert x[2].mean() > 2.0 and x[0].mean() < -2.0  # RGB order: channel 2 is blue
    assert compress.frames_to_batch([], PP).shape == (0, 3, 112, 112)
    with pytest.raises(ValueError):
        compress.frames_to_batch([blue[..., 0]], PP)


def test_frames_to_batch_matches_torchvision_transform(faces_frames):
    import torchvision

    pp = compress.preprocess_for("resnet50")
    assert pp == {"resize": 232, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    t = torchvision.models.get_model_weights("resnet50").DEFAULT.transforms()
    ref = torch.stack([t(torch.from_numpy(f[..., ::-1].copy()).permute(2, 0, 1)) for f in faces_frames[:2]])
    ours = compress.frames_to_batch(faces_frames[:2], pp)
    assert (ref - ours).abs().mean() < 0.1  # interpolation differs slightly; normalized units


def test_every_variant_runs_on_real_frames(variants, batch):
    for name, m in variants.items():
        with torch.no_grad():
            out = m(batch)
        assert out.shape == (len(batch), 1000), name
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), name
    assert quant_backend.is_quantized(variants["int8"]) and quant_backend.is_quantized(variants["pruned_int8"])
    assert not quant_backend.is_quantized(variants["pruned"])


def test_pruned_and_int8_are_really_smaller(variants):
    fp32, pruned = variants["fp32"], variants["pruned"]
    p0, p1 = compress.count_params(fp32), compress.count_params(pruned)
    m0, m1 = compress.count_macs(fp32, 224), compress.count_macs(pruned, 224)
    assert p0 == 11_689_512 and m0 == 1_822_177_768
    # ratio 0.3 per channel -> about (1 - 0.3)^2 = 0.49 of the weights and MACs (NOTES: 0.906 G)
    assert 0.44 < p1 / p0 < 0.54 and 0.44 < m1 / m0 < 0.54
    assert m1 == 905_775_022
    assert pruned.conv1.out_channels < 64 and pruned.fc.out_features == 1000
    # int8 keeps the weight count, in a quarter of the bytes
    assert abs(compress.count_params(variants["int8"]) / p0 - 1) < 0.01
    size = {k: artifact.serialized_size(m, arch="resnet18", class_names=NAMES, preprocess=PP) for k, m in variants.items()}
    assert size["int8"] / size["fp32"] < 0.3
    assert 0.44 < size["pruned"] / size["fp32"] < 0.54
    assert size["pruned_int8"] / size["fp32"] < 0.15


def test_taylor_pruning_with_teacher_kl(variants, batch):
    fp32 = variants["fp32"]
    pt = compress.prune(fp32, 0.5, "taylor", batch[:1], calib_batch=batch[:2], teacher=fp32)
    ratio = compress.count_params(pt) / compress.count_params(fp32)
    assert 0.2 < ratio < 0.3  # (1 - 0.5)^2
    with torch.no_grad():
        assert pt(batch[:2]).shape == (2, 1000)
    pe = compress.prune(fp32, 0.3, "taylor", batch[:1])  # no teacher: own output entropy
    assert compress.channel_spec(pe)["convs"]["conv1"][1] == compress.channel_spec(variants["pruned"])["convs"]["conv1"][1]
    with pytest.raises(ValueError):
        compress.prune(fp32, 1.0)
    with pytest.raises(ValueError):
        compress.prune(fp32, 0.3, "l2")


def test_quantize_leaves_model_engine_and_warnings_alone(variants, faces_frames, batch):
    fp32 = variants["fp32"]
    with torch.no_grad():
        before = fp32(batch[:2])
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"  # a different engine in effect
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = compress.quantize_int8(fp32, faces_frames[:2], PP)
            with torch.no_grad():
                q(batch[:1])
        assert torch.backends.quantized.engine == "qnnpack"
    finally:
        torch.backends.quantized.engine = engine
    leaked = [str(w.message)[:80] for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not leaked
    with torch.no_grad():
        assert torch.equal(fp32(batch[:2]), before)  # the float model is untouched
    with pytest.raises(ValueError):
        compress.quantize_int8(fp32, [], PP)


def test_quantized_engine_restores_after_error():
    engine = torch.backends.quantized.engine
    with pytest.raises(ZeroDivisionError):
        with quant_backend.quantized_engine("qnnpack"):
            assert torch.backends.quantized.engine == "qnnpack"
            1 / 0
    assert torch.backends.quantized.engine == engine


def test_agreement_values():
    ref = torch.tensor([[5.0, 1, 0, 0, 0, 0, 0], [0, 5.0, 1, 0, 0, 0, 0], [0, 0, 5.0, 1, 0, 0, 0], [0, 0, 0, 5.0, 1, 0, 0]])
    same = agreement(ref, ref.clone())
    assert same["top1"] == 1.0 and same["top5"] == 1.0 and same["kl"] < 1e-6
    other = ref.clone()
    other[2] = torch.tensor([0, 0, 0, 0, 0, 0, 5.0])  # ref's class 2 still in top-5? logits tie at 0 -> use -1
    other[2, 2] = -1.0
    other[3] = torch.tensor([0, 0, 0, 1.0, 0, 0, 5.0])  # wrong top-1, right class in top-5
    a = agreement(ref, other)
    assert a["top1"] == 0.5 and a["top5"] == 0.75 and a["kl"] > 0.5


def test_agreement_identical_high_corrupted_low(variants, batch):
    fp32 = variants["fp32"]
    ref = compress.logits_of(fp32, batch)
    assert agreement(ref, compress.logits_of(copy.deepcopy(fp32), batch))["top1"] == 1.0
    broken = copy.deepcopy(fp32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in broken.parameters():  # shuffle every tensor's weights, then add heavy noise
            flat = p.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=g)])
            p.add_(torch.randn(p.shape, generator=g) * p.std().clamp_min(1e-3) * 3)
    a = agreement(ref, compress.logits_of(broken, batch))
    assert a["top1"] <= 0.25 and a["kl"] > 0.05


def test_report_compares_to_fp32(variants, batch):
    vs = [
        Variant("fp32", variants["fp32"], variants["fp32"]),
        Variant("pruned30 int8", variants["pruned_int8"], variants["pruned"], "int8"),
    ]
    rep = compare_variants(vs, batch[:4], batch_size=2, repeats=1, iters=1)
    a, b = rep["variants"]
    assert a["ratios"]["speed_batch1"] == 1.0 and a["agreement"]["top1"] == 1.0
    assert set(b["speed"]) == {"batch1", "batch2"} and b["speed"]["batch2"]["images_per_s"] > 0
    assert b["ratios"]["macs"] < 0.55 and b["ratios"]["file_bytes"] < 0.15
    table = render_markdown(rep)
    assert table.count("\n|") >= 3 and "pruned30 int8" in table and "x fp32 b2" in table


def test_distill_reports_agreement(variants, batch):
    student = copy.deepcopy(variants["pruned"])
    res = compress.distill(student, variants["fp32"], batch[:4], steps=2, holdout=batch[4:], batch_size=2, lr=1e-3)
    assert res["steps"] == 2 and 0.0 <= res["top1_before"] <= 1.0 and 0.0 <= res["top1_after"] <= 1.0
    assert res["loss_first"] >= 0 and not student.training


def test_channel_spec_rebuild_round_trip(variants):
    pruned = variants["pruned"]
    spec = compress.channel_spec(pruned)
    assert spec == compress.channel_spec(variants["pruned_int8"])  # readable from the int8 model too
    rebuilt = compress.rebuild_resnet("resnet18", spec)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_fp16_needs_cuda(variants):
    with pytest.raises(RuntimeError, match="CUDA"):
        compress.to_fp16_cuda(variants["fp32"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_cuda_runs(variants, batch):
    m = compress.to_fp16_cuda(variants["pruned"])
    x = batch[:2].to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = m(x).float().cpu()
    ref = compress.logits_of(variants["pruned"], batch[:2])
    assert agreement(ref, out)["top1"] == 1.0
