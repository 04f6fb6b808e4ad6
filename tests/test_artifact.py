""".rtv artifacts (format v2): round trip in a new process, the pipeline's loader, refusal of damaged,
tampered, unsafe and non-finite files, and the int8 disk cache (damaged or swapped entries are
rebuilt, never served)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rtvision import errors
from rtvision.config import ModelConfig
from rtvision.errors import ModelError, UsageError
from rtvision.models import artifact, compress, zoo
from rtvision.models.artifact import ArtifactError, load_artifact, save_artifact
from rtvision.models.build import build_classifier, load_for_pipeline
from rtvision.sources import SourceInfo

REPO = Path(__file__).resolve().parents[1]
PP = {"resize": 128, "crop": 112, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
NAMES = [f"class_{i}" for i in range(1000)]


@pytest.fixture(scope="module")
def models(faces_frames):
    torch.manual_seed(0)
    batch = compress.frames_to_batch(faces_frames, PP)
    fp32 = compress.reestimate_bn(zoo.empty_module("resnet18"), batch)
    pruned = compress.prune(fp32, 0.3, "l1", batch[:1])
    return {"fp32": fp32, "pruned": pruned, "pruned_int8": compress.quantize_int8(pruned, faces_frames[:4], PP)}


def _save(path, model, variant, spec=None, **extra):
    return save_artifact(
        path,
        model,
        arch="resnet18",
        spec=spec,
        class_names=NAMES,
        preprocess=PP,
        variant=variant,
        calibration={"source": "4 frames of faces_1080p.mp4", "images": 16},
        report={"variants": [{"name": variant, "kl": 0.01}]},
        **extra,
    )


def _save_int8(path, models):
    return _save(path, models["pruned_int8"], "resnet18 pruned30 int8", spec=compress.channel_spec(models["pruned"]),
                 metadata={"weights": "sha256:test", "prune": 0.3})


def _cfg(tmp_path, **kw) -> ModelConfig:
    return ModelConfig(device="cpu", faces="off", cache_dir=str(tmp_path / "cache"), **kw)


def _flip(path: Path, n: int, at: float = 0.5, out: Path | None = None) -> Path:
    """XOR ``n`` bytes at the relative position ``at`` of the file (written to ``out`` or in place)."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i : i + n] = bytes(b ^ 0xA5 for b in data[i : i + n])
    out = out or path
    out.write_bytes(bytes(data))
    return out


def _one_line(msg: str) -> str:
    assert "\n" not in msg and 0 < len(msg) < 400, msg
    return msg


def _assert_refused(path: Path, match: str = "refused") -> str:
    with pytest.raises(ArtifactError, match=match) as ei:
        load_artifact(path)
    return _one_line(str(ei.value))


def _encode_raw(payload_bytes: bytes, **outer) -> bytes:
    """An outer v2 container around arbitrary payload bytes, with their correct digest."""
    wrapper = {"format": artifact.FORMAT, "version": artifact.VERSION, "sha256": hashlib.sha256(payload_bytes).hexdigest(),
               "payload": torch.frombuffer(bytearray(payload_bytes), dtype=torch.uint8), **outer}
    buf = io.BytesIO()
    torch.save(wrapper, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- round trips


def test_round_trip_in_a_new_process(models, faces_frames, tmp_path):
    paths = {
        "pruned": _save(tmp_path / "p.rtv", models["pruned"], "resnet18 pruned30 fp32"),
        "pruned_int8": _save_int8(tmp_path / "q.rtv", models),
    }
    batch = compress.frames_to_batch(faces_frames[:3], PP)
    torch.save(batch, tmp_path / "batch.pt")
    script = textwrap.dedent(
        """
        import sys, warnings, torch
        warnings.simplefilter("error", DeprecationWarning)  # nothing deprecated may reach the user
        from rtvision.models.artifact import load_artifact
        batch = torch.load(sys.argv[1], weights_only=True)
        out = {}
        for key, path in (("pruned", sys.argv[2]), ("pruned_int8", sys.argv[3])):
            art = load_artifact(path)
            m = art.torch_module()
            assert not m.training
            with torch.no_grad():
                out[key] = m(batch)
            out[key + "_variant"] = art.variant
        torch.save(out, sys.argv[4])
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "batch.pt"), str(paths["pruned"]), str(paths["pruned_int8"]),
         str(tmp_path / "out.pt")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        for key in ("pruned", "pruned_int8"):
            assert torch.equal(out[key], models[key](batch)), key
    assert out["pruned_int8_variant"] == "resnet18 pruned30 int8"


def test_loaded_artifact_carries_everything(models, faces_frames, tmp_path):
    engine = torch.backends.quantized.engine
    path = _save_int8(tmp_path / "q.rtv", models)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "q.rtv"]  # atomic write: no temp file left
    art = load_artifact(path)
    m = art.torch_module()
    assert torch.backends.quantized.engine == engine
    assert (art.arch, art.precision, art.backend, art.variant) == ("resnet18", "int8", "torch", "resnet18 pruned30 int8")
    assert art.class_names == NAMES and art.preprocess == PP
    assert art.calibration == {"source": "4 frames of faces_1080p.mp4", "images": 16}
    assert art.report["variants"][0]["name"] == "resnet18 pruned30 int8"
    assert art.metadata == {"weights": "sha256:test", "prune": 0.3}
    assert art.payload["spec"] == compress.channel_spec(models["pruned"])
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    batch = compress.frames_to_batch(faces_frames[:2], PP)
    with torch.no_grad():
        assert torch.equal(m(batch), models["pruned_int8"](batch))


def test_load_for_pipeline_runs_the_artifact_on_real_frames(models, faces_frames, tmp_path):
    batch = compress.frames_to_batch(faces_frames[:3], PP)
    cases = {
        "int8": (_save_int8(tmp_path / "q.rtv", models), models["pruned_int8"], "resnet18 pruned30 int8 torch cpu"),
        "fp32": (_save(tmp_path / "p.rtv", models["pruned"], "resnet18 pruned30 fp32"), models["pruned"],
                 "resnet18 pruned30 fp32 torch cpu"),
    }
    for key, (path, model, variant) in cases.items():
        clf = load_for_pipeline(str(path), _cfg(tmp_path))
        assert clf.variant == variant and clf.arch == "resnet18" and clf.categories == NAMES, key
        assert clf.weights_id == ("sha256:test" if key == "int8" else "")
        logits = clf.logits(clf.prepare(faces_frames[:3]))
        with torch.no_grad():
            assert torch.equal(logits, model(batch)), key
        top = clf.top_k(logits, 3)
        assert len(top) == 3 and all(len(t.names) == 3 for t in top)
    int8_path = cases["int8"][0]
    for bad in ({"device": "cuda"}, {"precision": "fp32"}, {"backend": "openvino"}):
        with pytest.raises(UsageError):
            load_for_pipeline(str(int8_path), ModelConfig(faces="off", **{"device": "cpu", **bad}))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    with pytest.raises(ModelError, match="2 names"):
        load_for_pipeline(str(cases["fp32"][0]), _cfg(tmp_path, labels_path=str(labels)))


# ---------------------------------------------------------------- refused files


class _Payload:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_pickle_is_refused_and_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.rtv"
    raw.write_bytes(pickle.dumps({"format": artifact.FORMAT, "x": _Payload(marker)}, protocol=2))
    msg = _assert_refused(raw)
    assert "forbidden global" in msg or "Unpickl" in msg
    zipped = tmp_path / "zipped.rtv"
    torch.save({"format": artifact.FORMAT, "version": artifact.VERSION, "x": _Payload(marker)}, zipped)
    assert "forbidden global" in _assert_refused(zipped)
    # inside a well-formed v2 container whose digest matches: the payload is loaded safely too
    inner = io.BytesIO()
    torch.save({"arch": "resnet18", "x": _Payload(marker)}, inner)
    wrapped = tmp_path / "wrapped.rtv"
    wrapped.write_bytes(_encode_raw(inner.getvalue()))
    assert "forbidden global" in _assert_refused(wrapped, "unsafe payload")
    with pytest.raises(ModelError, match="forbidden global"):
        load_for_pipeline(str(wrapped), _cfg(tmp_path))
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    with open(zipped, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_flipped_bytes_are_refused_as_damaged(models, faces_video, tmp_path, capsys):
    good = _save(tmp_path / "good.rtv", models["pruned"], "resnet18 pruned30 fp32")
    load_artifact(good)  # intact: loads
    for at in (0.5, 0.25, 0.9):
        bad = _flip(good, 100, at, tmp_path / f"bad{at}.rtv")
        msg = _assert_refused(bad, "damaged or tampered")
        assert str(bad) in msg
    bad = tmp_path / "bad0.5.rtv"
    with pytest.raises(ModelError, match="damaged or tampered") as ei:
        load_for_pipeline(str(bad), _cfg(tmp_path))
    _one_line(str(ei.value))
    # through the command line: exit 5 with one line on stderr, nothing run
    from rtvision.cli import main

    capsys.readouterr()
    code = main(["--model", str(bad), "--source", str(faces_video), "--headless", "--max-frames", "2", "--faces", "off",
                 "--no-progress", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == errors.EXIT_BAD_MODEL, err
    assert len(lines) == 1 and "damaged or tampered" in lines[0] and "Traceback" not in err, err


def test_non_finite_weights_are_refused_at_load(models, tmp_path):
    for key, value in (("fc.weight", float("nan")), ("layer1.0.bn1.running_var", float("inf"))):
        payload = artifact.torch_payload(models["pruned"], arch="resnet18", class_names=NAMES, preprocess=PP)
        bad = payload["state_dict"][key].clone()  # the payload's tensors share the model's memory
        bad.view(-1)[0] = value
        payload["state_dict"][key] = bad
        path = artifact.write(tmp_path / "nan.rtv", payload)
        _assert_refused(path, "non-finite")
        with pytest.raises(ModelError, match="non-finite"):
            load_for_pipeline(str(path), _cfg(tmp_path))


def test_openvino_artifact_with_nan_weights_is_refused_at_load(tmp_path):
    """The same rule for the OpenVINO kind: a NaN in the IR's weights is refused at load, not at the
    first frame. (A tiny graph with the classifier's input and output: no conversion needed.)"""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([-1, 3, 112, 112], np.float32, name="x")
    w = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    for bad in (False, True):
        w[0, 5] = np.nan if bad else 0.5
        y = ops.matmul(ops.reduce_mean(x, np.array([2, 3]), keep_dims=False), ops.constant(w.copy()), False, False)
        payload = artifact.openvino_payload(ov.Model([y], [x], "tiny"), arch="resnet18", precision="fp32",
                                            class_names=NAMES, preprocess=PP)
        path = artifact.write(tmp_path / f"ov{int(bad)}.rtv", payload)
        if not bad:  # finite: refused only for not being a resnet18 (no convolutions)
            _assert_refused(path, "not a resnet18")
            continue
        _assert_refused(path, "non-finite")


def _resnet18_ir(crop: int):
    import torchvision

    from rtvision.backends import openvino_runtime as ovr

    torch.manual_seed(0)
    return ovr.export(torchvision.models.resnet18(weights=None).eval(), crop)


@pytest.mark.parametrize("edit, needle", [
    ({"preprocess": dict(PP, resize=342, crop=300)}, "does not fit its preprocessing (crop 300)"),
    ({"arch": "resnet50"}, "not a resnet50 (20 convolutions, a resnet50 has 53)"),
    ({"arch": "mobilenet_v2"}, "not a mobilenet_v2"),
    ({"metadata": "x"}, "bad metadata"),
    ({"calibration": [1, 2]}, "bad calibration"),
    ({"variant": 7}, "bad variant"),
    (lambda p: {"ir_bin": p["ir_bin"][: len(p["ir_bin"]) // 2].clone()}, "broken OpenVINO IR (Incorrect weights in bin file!)"),
    (lambda p: {"ir_xml": p["ir_xml"][: len(p["ir_xml"]) // 2]}, "broken OpenVINO IR ("),
])
def test_an_edited_openvino_artifact_that_does_not_fit_its_record_is_refused(tmp_path, edit, needle):
    """Edited after it was written, its digest recomputed: a crop the IR's input does not take
    (it failed at the first frame, exit 1, several lines), an arch label that is not the graph's
    (a MobileNetV2 ran as "resnet50"), metadata of the wrong type (exit 1 in the summary) are
    refused at load in one line, exit 5. The unedited artifact loads."""
    payload = artifact.openvino_payload(_resnet18_ir(PP["crop"]), arch="resnet18", precision="fp32",
                                        class_names=NAMES, preprocess=PP)
    good = artifact.write(tmp_path / "good.rtv", payload)
    assert load_artifact(good).openvino_model().inputs[0].get_partial_shape()[2].get_length() == PP["crop"]
    buf = io.BytesIO()
    torch.save({**payload, **(edit(payload) if callable(edit) else edit)}, buf)
    path = tmp_path / "edited.rtv"
    path.write_bytes(_encode_raw(buf.getvalue()))
    msg = _assert_refused(path, re.escape(needle))
    assert "Exception from src" not in msg, msg  # OpenVINO's reason, not where it was raised
    with pytest.raises(ModelError) as ei:
        load_for_pipeline(str(path), _cfg(tmp_path))
    _one_line(str(ei.value))


def test_old_and_undigested_files_are_refused_with_one_line(models, tmp_path):
    # a version-1 file (the old format: the model's dict saved directly, no digest)
    v1 = tmp_path / "v1.rtv"
    torch.save({"format": artifact.FORMAT, "version": 1, "arch": "resnet18", "precision": "fp32",
                "spec": compress.channel_spec(models["pruned"]), "state_dict": models["pruned"].state_dict(),
                "class_names": NAMES, "preprocess": PP}, v1)
    msg = _assert_refused(v1, "version 1")
    assert "rtvision optimize" in msg
    # the current version without its digest
    good = _save(tmp_path / "good.rtv", models["pruned"], "resnet18 pruned30 fp32")
    outer = torch.load(good, weights_only=True)
    del outer["sha256"]
    torch.save(outer, tmp_path / "nodigest.rtv")
    _assert_refused(tmp_path / "nodigest.rtv", "not a valid rtvision artifact")
    # a digest that does not match (another file's)
    outer["sha256"] = hashlib.sha256(b"something else").hexdigest()
    torch.save(outer, tmp_path / "wrongdigest.rtv")
    _assert_refused(tmp_path / "wrongdigest.rtv", "damaged or tampered")
    for name in ("v1.rtv", "nodigest.rtv"):
        with pytest.raises(ModelError) as ei:
            load_for_pipeline(str(tmp_path / name), _cfg(tmp_path))
        _one_line(str(ei.value))


def test_arbitrary_objects_and_broken_files_are_refused(models, tmp_path):
    module_file = tmp_path / "module.rtv"
    torch.save(models["pruned"], module_file)  # a pickled nn.Module: classes are not allowed
    _assert_refused(module_file)
    plain = tmp_path / "plain.rtv"
    torch.save({"weights": torch.zeros(3)}, plain)
    _assert_refused(plain, "not a valid rtvision artifact")
    good = _save(tmp_path / "good.rtv", models["pruned"], "resnet18 pruned30 fp32")
    truncated = tmp_path / "truncated.rtv"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _assert_refused(truncated)
    empty = tmp_path / "empty.rtv"
    empty.write_bytes(b"")
    _assert_refused(empty)
    xml = tmp_path / "model.xml"  # an OpenVINO IR given as --model: torch's reason, not its paragraph about 2.6
    xml.write_text("<?xml version='1.0'?>\n<net name='m' version='11'></net>\n")
    msg = _assert_refused(xml, "not a safe, intact rtvision artifact")
    assert "Unsupported operand" in msg and "PyTorch 2.6" not in msg, msg
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "missing.rtv")
    with pytest.raises(ModelError, match="not found"):
        load_for_pipeline(str(tmp_path / "missing.rtv"), _cfg(tmp_path))
    # an intact file (valid digest) whose layer widths do not match its weights
    payload = artifact.read_payload(good)
    payload["spec"]["conv"]["conv1"][1] += 1
    mismatch = artifact.write(tmp_path / "mismatch.rtv", payload)
    art = load_artifact(mismatch)
    with pytest.raises(ArtifactError, match="does not match") as ei:
        art.torch_module()
    _one_line(str(ei.value))
    with pytest.raises(ModelError, match="does not match"):
        load_for_pipeline(str(mismatch), _cfg(tmp_path))
    # an unknown architecture name
    payload = artifact.read_payload(good)
    payload["arch"] = "vgg16"
    _assert_refused(artifact.write(tmp_path / "vgg.rtv", payload), "unknown arch")



def test_a_record_that_declares_more_than_its_file_holds_is_refused_before_it_is_built(models, tmp_path):
    """A tampered record, its digest recomputed: a 1,000,000-class head in a file with 1000
    classes' weights (and as many class names), or a layer wider than the architecture has.
    Refused in one line before the network is built: the head alone was built first (2 GB here,
    2.8 GB in a reviewer's 15 KB file with 400,000 classes) and refused only after."""
    good = _save(tmp_path / "good.rtv", models["pruned"], "resnet18 pruned30 fp32")
    payload = artifact.read_payload(good)
    payload["spec"]["linear"]["fc"][1] = 1_000_000
    payload["class_names"] = [f"c{i}" for i in range(1_000_000)]
    big = artifact.write(tmp_path / "big.rtv", payload)
    payload = artifact.read_payload(good)
    payload["spec"]["conv"]["layer4.1.conv2"] = [4096, 4096, 1]
    wide = artifact.write(tmp_path / "wide.rtv", payload)
    child = (
        "import resource, sys\n"
        "from rtvision.models.artifact import load_artifact, ArtifactError\n"
        "load_artifact(sys.argv[1]).torch_module()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for path in sys.argv[2:]:\n"
        "    try:\n"
        "        load_artifact(path).torch_module()\n"
        "    except ArtifactError as e:\n"
        "        print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    r = subprocess.run([sys.executable, "-c", child, str(good), str(big), str(wide)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    *errors, grown_mb = r.stdout.strip().splitlines()
    assert len(errors) == 2, r.stdout
    assert "the classifier's weights are not in the file" in errors[0], errors[0]
    assert "layer4.1.conv2 is [4096, 4096, 1], not within resnet18's [512, 512, 1]" in errors[1], errors[1]
    assert int(grown_mb) < 300, f"{grown_mb} MB more than loading the intact file"


def test_save_rejects_non_plain_metadata(models, tmp_path):
    with pytest.raises(ValueError):
        save_artifact(tmp_path / "x.rtv", models["fp32"], arch="resnet18", class_names=NAMES, preprocess=PP,
                      metadata={"p": Path("x")})
    with pytest.raises(ValueError):
        save_artifact(tmp_path / "x.rtv", models["fp32"], arch="resnet18", class_names=NAMES[:10], preprocess=PP)
    with pytest.raises(ValueError, match="spec"):  # an int8 model cannot describe its own widths
        save_artifact(tmp_path / "x.rtv", models["pruned_int8"], arch="resnet18", class_names=NAMES, preprocess=PP)
    with pytest.raises(ValueError):
        save_artifact(tmp_path / "x.rtv", models["fp32"], arch="resnet18", class_names=NAMES, preprocess={"crop": 1})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the int8 cache


class _CountingQuantize:
    def __init__(self, monkeypatch):
        self.calls = 0
        self._real = compress.quantize_int8
        monkeypatch.setattr(compress, "quantize_int8", self)

    def __call__(self, *a, **k):
        self.calls += 1
        return self._real(*a, **k)


def _logits(model, batch):
    with torch.no_grad():
        return model(batch)


def test_damaged_cache_entry_is_rebuilt_not_loaded(models, faces_frames, tmp_path, monkeypatch, caplog):
    quantize = _CountingQuantize(monkeypatch)
    args = ("resnet18", "sha256:test", "faces_1080p.mp4:first4", faces_frames[:4], PP, tmp_path)
    batch = compress.frames_to_batch(faces_frames[:3], PP)
    first = artifact.torch_int8_cached(models["pruned"], *args)
    (entry,) = tmp_path.glob("resnet18-int8-torch-*.rtv")
    assert quantize.calls == 1
    ref = _logits(first, batch)
    # the second start reads it from disk
    assert torch.equal(_logits(artifact.torch_int8_cached(models["pruned"], *args), batch), ref)
    assert quantize.calls == 1
    # 4,000 bytes damaged in the middle of the file: reported, rebuilt, not served
    _flip(entry, 4000, 0.5)
    with pytest.raises(ArtifactError, match="damaged"):
        load_artifact(entry)
    with caplog.at_level(logging.WARNING, logger="rtvision.models.artifact"):
        rebuilt = artifact.torch_int8_cached(models["pruned"], *args)
    assert quantize.calls == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "damaged" in warned[0] and str(entry) in warned[0], warned
    assert torch.equal(_logits(rebuilt, batch), ref)
    # the rebuilt entry is intact, and the next start serves it again
    assert torch.equal(_logits(load_artifact(entry).torch_module(), batch), ref)
    assert torch.equal(_logits(artifact.torch_int8_cached(models["pruned"], *args), batch), ref)
    assert quantize.calls == 2 and [p.name for p in tmp_path.iterdir() if p.name != ".locks"] == [entry.name]


def test_cache_entry_written_for_another_key_is_rebuilt(models, faces_frames, tmp_path, monkeypatch, caplog):
    quantize = _CountingQuantize(monkeypatch)
    batch = compress.frames_to_batch(faces_frames[:3], PP)
    a = artifact.torch_int8_cached(models["pruned"], "resnet18", "sha256:test", "calib-A", faces_frames[:4], PP, tmp_path)
    b = artifact.torch_int8_cached(models["pruned"], "resnet18", "sha256:test", "calib-B", faces_frames[4:], PP, tmp_path)
    entries = sorted(tmp_path.glob("*.rtv"), key=lambda p: p.stat().st_mtime_ns)
    assert len(entries) == 2 and quantize.calls == 2  # another calibration is another entry
    ref_a, ref_b = _logits(a, batch), _logits(b, batch)
    assert not torch.equal(ref_a, ref_b)  # the two calibrations give different models
    entry_a, entry_b = entries
    shutil.copyfile(entry_b, entry_a)  # a valid artifact, under entry A's name
    load_artifact(entry_a)  # intact as a file...
    with caplog.at_level(logging.WARNING, logger="rtvision.models.artifact"):
        again = artifact.torch_int8_cached(models["pruned"], "resnet18", "sha256:test", "calib-A", faces_frames[:4], PP,
                                           tmp_path)
    assert quantize.calls == 3  # ...but rebuilt, not served
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "written for another" in warned[0], warned
    assert torch.equal(_logits(again, batch), ref_a)
    assert torch.equal(_logits(load_artifact(entry_a).torch_module(), batch), ref_a)
    # read_cache_entry itself: None for a missing entry, for another key, the artifact for its own key
    key_a = load_artifact(entry_a).metadata["cache_key"]
    assert artifact.read_cache_entry(tmp_path / "missing.rtv", key_a) is None
    assert artifact.read_cache_entry(entry_b, key_a) is None
    assert artifact.read_cache_entry(entry_a, key_a).metadata["cache_key"] == key_a
    assert artifact.cache_key(a=1, b=[1, 2]) == artifact.cache_key(b=[1, 2], a=1) != artifact.cache_key(a=2, b=[1, 2])


def test_torch_int8_classifier_is_cached_across_starts(resnet18_ckpt, faces_video, faces_frames, tmp_path, monkeypatch):
    """``--backend torch --precision int8``: calibrated on the source's own frames at the first
    start, from the cache at the next."""
    cfg = ModelConfig(classifier="resnet18", weights=str(resnet18_ckpt), backend="torch", precision="int8", device="cpu",
                      calib_frames=3, cache_dir=str(tmp_path / "cache"), faces="off")
    info = SourceInfo(name=str(faces_video), kind="file", live=False, fps=25.0, resolution_wh=(1920, 1080), frame_count=105)
    quantize = _CountingQuantize(monkeypatch)
    first = build_classifier(cfg, calib=(None, info))
    assert first.variant == "resnet18 int8 torch cpu" and quantize.calls == 1
    entries = list((tmp_path / "cache").glob("resnet18-int8-torch-*.rtv"))
    assert len(entries) == 1
    art = load_artifact(entries[0])
    assert art.calibration["frames"] == 3 and art.metadata["weights"] == zoo.file_identity(resnet18_ckpt)
    second = build_classifier(cfg, calib=(None, info))
    assert quantize.calls == 1
    x = first.prepare(faces_frames[:2])
    assert torch.equal(first.logits(x), second.logits(second.prepare(faces_frames[:2])))
    with pytest.raises(UsageError, match="calibration"):
        build_classifier(cfg, calib=None)


def test_weights_identity(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    assert artifact.weights_identity(str(f)).startswith("sha256:ba7816bf")
    assert artifact.weights_identity("imagenet:ResNet50_Weights.IMAGENET1K_V2") == "imagenet:ResNet50_Weights.IMAGENET1K_V2"


@pytest.mark.parametrize("edit", [{"crop": 60000, "resize": 60000}, {"std": [float("nan")] * 3},
                                  {"mean": [0.5, float("inf"), 0.5]}, {"std": [0.2, 0.0, 0.2]}])
def test_preprocessing_out_of_bounds_is_refused_even_with_a_recomputed_digest(tmp_path, edit):
    """An artifact edited after it was written, its digest recomputed (the digest has no key): a
    60000-pixel crop (it would take all the memory), a NaN std (every input the same), an inf
    mean or a zero std are refused at load in one line."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([-1, 3, 112, 112], np.float32, name="x")
    w = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    y = ops.matmul(ops.reduce_mean(x, np.array([2, 3]), keep_dims=False), ops.constant(w), False, False)
    payload = artifact.openvino_payload(ov.Model([y], [x], "tiny"), arch="resnet18", precision="fp32",
                                        class_names=NAMES, preprocess=PP)
    payload["preprocess"] = dict(payload["preprocess"], **edit)
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = tmp_path / "edited.rtv"
    path.write_bytes(_encode_raw(buf.getvalue()))
    _assert_refused(path, "preprocess")
    with pytest.raises(ModelError) as ei:
        load_for_pipeline(str(path), _cfg(tmp_path))
    _one_line(str(ei.value))
