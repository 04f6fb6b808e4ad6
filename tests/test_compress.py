"""Compression variants on real frames: random-init networks (no downloads), low resolution to stay fast.

Random-init networks answer almost the same class for every image; their BatchNorm statistics
are re-estimated on the real frames (``compress.reestimate_bn``) wherever a test needs the
network to react to its input. Accuracy of trained networks is tested in test_classifiers.py.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from rtvision import evaluation
from rtvision.backends.torch_runtime import TorchRuntime
from rtvision.evaluation import agreement
from rtvision.models import artifact, compress, quant_backend, zoo
from rtvision.models.classifier import Preprocess

# 112 px crops: 4x fewer MACs than 224, same layers and widths.
PP = {"resize": 128, "crop": 112, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# 64 px for what trains or runs many images (distillation, agreement): 3x cheaper again.
PP64 = {**PP, "resize": 73, "crop": 64}
NAMES = [f"class_{i}" for i in range(1000)]


@pytest.fixture(scope="module")
def batch(faces_frames) -> torch.Tensor:
    return compress.frames_to_batch(faces_frames, PP)


@pytest.fixture(scope="module")
def variants(faces_frames, batch) -> dict[str, torch.nn.Module]:
    """fp32 (BN statistics re-estimated on the frames so it reacts to them), int8, pruned30, pruned30+int8."""
    torch.manual_seed(0)
    fp32 = compress.reestimate_bn(zoo.empty_module("resnet18"), batch)
    pruned = compress.prune(fp32, 0.3, "l1", batch[:1])
    calib = faces_frames[:4]
    return {
        "fp32": fp32,
        "int8": compress.quantize_int8(fp32, calib, PP),
        "pruned": pruned,
        "pruned_int8": compress.quantize_int8(pruned, calib, PP),
    }


@pytest.fixture(scope="module")
def small(faces_frames):
    """64 px: the 8 frames plus 3 random crops each (32 real images) and a ResNet-18 whose BN
    statistics were re-estimated on them, so that it answers many different classes."""
    images = compress.calibration_images(faces_frames, 3)
    b = compress.frames_to_batch(images, PP64)
    torch.manual_seed(0)
    teacher = compress.reestimate_bn(zoo.empty_module("resnet18"), b)
    return {"images": images, "batch": b, "teacher": teacher, "logits": compress.logits_of(teacher, b)}


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
    with pytest.raises(ValueError):
        compress.frames_to_batch([blue], {**PP, "crop": 200})  # crop larger than resize


def test_frames_to_batch_matches_torchvision_transform(faces_frames):
    import torchvision

    pp = zoo.preprocess_of("resnet50").to_dict()
    assert pp == {"resize": 232, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    t = torchvision.models.get_model_weights("resnet50").DEFAULT.transforms()
    ref = torch.stack([t(torch.from_numpy(f[..., ::-1].copy()).permute(2, 0, 1)) for f in faces_frames[:2]])
    ours = compress.frames_to_batch(faces_frames[:2], pp)
    assert (ref - ours).abs().mean() < 0.1  # interpolation differs slightly; normalized units


def test_calibration_crops_of_frames_smaller_than_8_pixels():
    """A crop is at most its frame: a 6x6 video's int8 calibration failed (numpy high <= 0, exit 1)."""
    frames = [np.full((h, w, 3), 120, np.uint8) for h, w in ((6, 6), (2, 2), (7, 20), (40, 5))]
    imgs = compress.calibration_images(frames, 3, seed=0)
    assert len(imgs) == 16
    for i, im in enumerate(imgs):
        h, w = frames[i // 4].shape[:2]
        assert im.shape[0] <= h and im.shape[1] <= w and im.size > 0


def test_sampling_a_video_that_does_not_say_its_length(tmp_path):
    """Raw MJPEG has no frame count (OpenCV says -9.2e18): the file is counted with grab() and
    read again for the picks, spread evenly over the whole file, in order."""
    import cv2
    from conftest import decode_index, encode_index

    path = tmp_path / "cam.mjpeg"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (256, 64))
    assert writer.isOpened()
    for i in range(50):
        img = np.full((64, 256, 3), 90, np.uint8)
        encode_index(img, i)
        writer.write(img)
    writer.release()
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) <= 0, "the test needs a file of unknown length"
    cap.release()
    import tracemalloc

    tracemalloc.start()
    try:
        picked = compress.sample_video_frames(str(path), 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [decode_index(f) for f in picked] == [0, 12, 24, 37, 49]
    assert peak < 15 * 64 * 256 * 3, peak  # the picks and a frame or two, not the 50 frames (it kept them all)
    assert [decode_index(f) for f in compress.sample_video_frames(str(path), 1000)] == list(range(50))


def test_calibration_images_are_frames_plus_crops(faces_frames):
    imgs = compress.calibration_images(faces_frames[:2], 3, seed=0)
    assert len(imgs) == 8 and imgs[0] is faces_frames[0] and imgs[4] is faces_frames[1]
    for crop in imgs[1:4] + imgs[5:8]:
        h, w = crop.shape[:2]
        assert h == w and 1080 // 4 - 1 <= h <= 1080 and crop.flags["C_CONTIGUOUS"]
    again = compress.calibration_images(faces_frames[:2], 3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, again))  # deterministic for a seed
    other = compress.calibration_images(faces_frames[:2], 3, seed=1)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(imgs[1:4], other[1:4]))


def test_every_variant_runs_on_real_frames(variants, batch):
    outs = {}
    for name, m in variants.items():
        with torch.no_grad():
            out = m(batch)
        assert out.shape == (len(batch), 1000), name
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), name
        outs[name] = out
    assert quant_backend.is_quantized(variants["int8"]) and quant_backend.is_quantized(variants["pruned_int8"])
    assert not quant_backend.is_quantized(variants["pruned"])
    # the frames give different answers (the model reacts to its input) ...
    assert (outs["fp32"] - outs["fp32"][:1]).abs().amax() > 0.05
    # ... and int8 follows fp32 image by image: its error is small next to how much fp32's logits vary
    for f, q in (("fp32", "int8"), ("pruned", "pruned_int8")):
        err = (outs[q] - outs[f]).abs().mean()
        assert err < 0.25 * outs[f].std(), (q, float(err), float(outs[f].std()))


def test_pruned_and_int8_are_really_smaller(variants):
    fp32, pruned = variants["fp32"], variants["pruned"]
    p0, p1 = compress.count_params(fp32), compress.count_params(pruned)
    m0, m1 = compress.count_macs(fp32, 224), compress.count_macs(pruned, 224)
    assert p0 == 11_689_512 and m0 == 1_822_177_768  # torchvision's ResNet-18: 11.7 M weights, 1.82 GMACs
    # ratio 0.3 per channel -> about (1 - 0.3)^2 = 0.49 of the weights and MACs
    assert 0.44 < p1 / p0 < 0.54 and 0.44 < m1 / m0 < 0.54
    assert pruned.conv1.out_channels < 64 and pruned.fc.out_features == 1000
    # int8 keeps the weight count, in a quarter of the bytes
    assert abs(compress.count_params(variants["int8"]) / p0 - 1) < 0.01
    specs = {"int8": compress.channel_spec(fp32), "pruned_int8": compress.channel_spec(pruned)}
    size = {k: artifact.serialized_size(artifact.torch_payload(m, arch="resnet18", spec=specs.get(k), class_names=NAMES,
                                                               preprocess=PP))
            for k, m in variants.items()}
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
    assert compress.channel_spec(pe)["conv"]["conv1"][1] == compress.channel_spec(variants["pruned"])["conv"]["conv1"][1]
    assert compress.channel_spec(fp32)["conv"]["conv1"][1] == 64  # the input model is untouched
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
    other[2] = torch.tensor([0, 0, 0, 0, 0, 0, 5.0])
    other[2, 2] = -1.0  # ref's class 2 is last: out of the top-5
    other[3] = torch.tensor([0, 0, 0, 1.0, 0, 0, 5.0])  # wrong top-1, right class in top-5
    a = agreement(ref, other)
    assert a["top1"] == 0.5 and a["top5"] == 0.75 and a["kl"] > 0.5
    with pytest.raises(ValueError):
        agreement(ref, ref[:2])
    # a constant answer is flagged: agreement with it means nothing
    assert not evaluation.informative(torch.zeros(20, 7).index_fill_(1, torch.tensor([3]), 1.0))


def test_agreement_identical_high_corrupted_low(small):
    teacher, b, ref = small["teacher"], small["batch"], small["logits"]
    # the reference answers many classes on these real images, so agreement with it says something
    assert evaluation.informative(ref), ref.argmax(1).unique().numel()
    same = agreement(ref, compress.logits_of(copy.deepcopy(teacher), b))
    assert same["top1"] == 1.0 and same["kl"] < 1e-6
    broken = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in broken.parameters():  # shuffle every tensor's weights, then add heavy noise
            flat = p.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=g)])
            p.add_(torch.randn(p.shape, generator=g) * p.std().clamp_min(1e-3) * 3)
    a = agreement(ref, compress.logits_of(broken, b))
    majority = float(torch.bincount(ref.argmax(1)).max()) / len(ref)
    assert a["top1"] <= max(0.25, majority) and a["kl"] > 0.05
    # answers for the wrong images (rows rolled) agree far less than the same model
    rolled = agreement(ref, ref.roll(1, dims=0))
    assert rolled["top1"] < 0.5 and rolled["kl"] > 100 * same["kl"]


def test_measure_speed_and_run_all_on_real_frames(variants, faces_frames, batch):
    pp = Preprocess.from_dict(PP)
    runtimes = {"fp32": TorchRuntime(variants["fp32"], pp, torch.device("cpu"), "fp32"),
                "pruned30 int8": TorchRuntime(variants["pruned_int8"], pp, torch.device("cpu"), "int8")}
    speed = evaluation.measure_speed(runtimes, faces_frames[:2], (1, 2), repeats=1, iters=1, warmup=0)
    for name in runtimes:
        assert set(speed[name]) == {"batch1", "batch2"}
        for k, s in speed[name].items():
            assert s["images_per_s"] > 0 and 0 < s["latency_ms_p50"] <= s["latency_ms_p90"], (name, k)
    # run_all gives the model's own logits on the pipeline's preprocessing, in chunks
    logits = evaluation.run_all(runtimes["pruned30 int8"], faces_frames, batch_size=3)
    with torch.no_grad():
        assert torch.equal(logits, variants["pruned_int8"](batch))


@pytest.fixture
def one_thread():
    """Training on a CPU that other processes share: with 2 intra-op threads, torch's backward
    passes wait on each other (measured 40 s instead of 1.6 s for the same 15 steps on a busy
    2-core machine); the result does not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_distillation_reduces_kl_to_the_teacher(small, one_thread):
    teacher, b, t_logits = small["teacher"], small["batch"], small["logits"]
    student = compress.reestimate_bn(compress.prune(teacher, 0.3, "l1", b[:1]), b)
    bn_before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}

    def kl() -> float:
        return float(compress.kl_to_teacher(compress.logits_of(student, b), t_logits))

    before = kl()
    assert before > 0.01  # pruning moved the student away from the teacher: there is something to recover
    res = compress.distill(student, teacher, b, steps=15, batch_size=8, lr=1e-3)
    after = kl()
    assert after < 0.6 * before, (before, after)
    assert res["steps"] == 15 and res["loss_last"] < res["loss_first"]
    assert not student.training and not teacher.training
    # BatchNorm statistics stay frozen (tiny batches would wreck them)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in bn_before.items())
    with pytest.raises(ValueError):
        compress.distill(student, teacher, b[:0], steps=1)


def test_channel_spec_rebuild_round_trip_resnet(variants, batch):
    pruned = variants["pruned"]
    spec = compress.channel_spec(pruned)
    assert spec["conv"]["conv1"] == [3, pruned.conv1.out_channels, 1] and spec["linear"]["fc"][1] == 1000
    assert compress.num_classes_of(spec) == 1000
    rebuilt = compress.rebuild("resnet18", spec)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), pruned(batch))
    # an int8 (torch.ao) model has no float layers left to read: its spec comes from its float model
    with pytest.raises(ValueError):
        compress.channel_spec(variants["pruned_int8"])
    # a record that does not describe the architecture is refused
    with pytest.raises(ValueError, match="no shape for"):
        compress.rebuild("resnet34", spec)
    broken = copy.deepcopy(spec)
    broken["conv"]["not.a.layer"] = [3, 3, 1]
    with pytest.raises(ValueError, match="does not have"):
        compress.rebuild("resnet18", broken)
    with pytest.raises(ValueError, match="malformed"):
        compress.rebuild("resnet18", {"conv": spec["conv"], "linear": spec["linear"]})  # no "bn"
    with pytest.raises(ValueError, match="malformed"):
        compress.rebuild("resnet18", {**spec, "conv": {**spec["conv"], "conv1": "wide"}})


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_prune_and_rebuild_other_families(arch, batch):
    torch.manual_seed(0)
    model = compress.reestimate_bn(zoo.empty_module(arch), batch)
    head = {"mobilenet_v2": "classifier.1", "efficientnet_lite0": "classifier"}[arch]
    pruned = compress.prune(model, 0.3, "l1", batch[:1], head=head)
    assert pruned.get_submodule(head).out_features == 1000  # the head keeps every class
    assert pruned.get_submodule(head).in_features < model.get_submodule(head).in_features
    assert 0.4 < compress.count_macs(pruned, 112) / compress.count_macs(model, 112) < 0.62
    spec = compress.channel_spec(pruned)
    assert spec != compress.channel_spec(model)
    rebuilt = compress.rebuild(arch, spec)
    assert type(rebuilt.get_submodule(head)) is torch.nn.Linear
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        out = pruned(batch)
        assert torch.equal(rebuilt(batch), out)
    assert out.shape == (len(batch), 1000) and torch.isfinite(out).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_fp16_needs_cuda(variants):
    with pytest.raises(RuntimeError, match="CUDA"):
        compress.to_fp16_cuda(variants["fp32"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_cuda_runs(variants, batch):
    m = compress.to_fp16_cuda(variants["pruned"])
    x = batch.to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = m(x).float().cpu()
    ref = compress.logits_of(variants["pruned"], batch)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-2
    with pytest.raises(ValueError):
        compress.to_fp16_cuda(variants["pruned_int8"])


def test_measure_speed_percentiles_are_the_named_ones(monkeypatch):
    """p50 and p90 of the calls, interpolated: ten calls of 1..10 ms give 5.5 and 9.1 ms (the old
    index int(0.9 n) gave the slowest call, 10 ms, which is p100 at n = 10)."""
    import time as time_mod

    clock = {"t": 0.0}
    durations = iter([k / 1000 for k in range(1, 11)])

    class Fake:
        def prepare(self, images):
            return images

        def run(self, x):
            clock["t"] += next(durations)

    monkeypatch.setattr(time_mod, "perf_counter", lambda: clock["t"])
    out = evaluation.measure_speed({"v": Fake()}, [np.zeros((4, 4, 3), np.uint8)], (1,), repeats=1, iters=10, warmup=0)
    s = out["v"]["batch1"]
    assert s["latency_ms_p50"] == pytest.approx(5.5) and s["latency_ms_p90"] == pytest.approx(9.1)
    assert s["images_per_s"] == pytest.approx(1000 / 5.5)
