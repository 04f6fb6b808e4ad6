""".rtv artifacts: round trip in a new process, refusal of tampered files, the int8 disk cache."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from rtvision.models import artifact, compress
from rtvision.models.artifact import ArtifactError, load_artifact, save_artifact

REPO = Path(__file__).resolve().parents[1]
PP = {"resize": 128, "crop": 112, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
NAMES = [f"class_{i}" for i in range(1000)]


@pytest.fixture(scope="module")
def models(faces_frames):
    torch.manual_seed(0)
    batch = compress.frames_to_batch(faces_frames, PP)
    fp32 = compress.reestimate_bn(compress.build_resnet("resnet18"), batch)
    pruned = compress.prune(fp32, 0.3, "l1", batch[:1])
    return {"fp32": fp32, "pruned": pruned, "pruned_int8": compress.quantize_int8(pruned, faces_frames[:4], PP)}


def _save(path, model, variant):
    return save_artifact(
        path,
        model,
        arch="resnet18",
        class_names=NAMES,
        preprocess=PP,
        variant=variant,
        calibration={"source": "faces_1080p.mp4", "frames": 4},
        report={"variants": [{"name": variant, "top1": 1.0}]},
    )


def test_round_trip_in_a_new_process(models, faces_frames, tmp_path):
    paths = {
        "pruned": _save(tmp_path / "p.rtv", models["pruned"], "resnet18 pruned30 fp32"),
        "pruned_int8": _save(tmp_path / "q.rtv", models["pruned_int8"], "resnet18 pruned30 int8"),
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
        for key in ("pruned", "pruned_int8"):
            m = load_artifact({"pruned": sys.argv[2], "pruned_int8": sys.argv[3]}[key])
            assert not m.module.training
            with torch.no_grad():
                out[key] = m.module(batch)
            out[key + "_variant"] = m.variant
        torch.save(out, sys.argv[4])
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "batch.pt"), str(paths["pruned"]), str(paths["pruned_int8"]), str(tmp_path / "out.pt")],
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
            assert torch.allclose(out[key], models[key](batch), atol=1e-4, rtol=0), key
    assert out["pruned_int8_variant"] == "resnet18 pruned30 int8"


def test_loaded_classifier_carries_everything(models, faces_frames, tmp_path):
    engine = torch.backends.quantized.engine
    path = _save(tmp_path / "q.rtv", models["pruned_int8"], "resnet18 pruned30 int8")
    m = load_artifact(path)
    assert torch.backends.quantized.engine == engine
    assert (m.arch, m.precision, m.backend, m.variant) == ("resnet18", "int8", "x86", "resnet18 pruned30 int8")
    assert m.class_names == NAMES and m.preprocess == PP
    assert m.calibration == {"source": "faces_1080p.mp4", "frames": 4}
    assert m.report["variants"][0]["top1"] == 1.0
    assert compress.channel_spec(m.module) == compress.channel_spec(models["pruned"])
    logits = m.logits(faces_frames[:2])
    assert logits.shape == (2, 1000)
    with torch.no_grad():
        assert torch.equal(logits, models["pruned_int8"](compress.frames_to_batch(faces_frames[:2], PP)))


class _Payload:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _assert_refused(path: Path, match: str = "refused") -> str:
    with pytest.raises(ArtifactError, match=match) as ei:
        load_artifact(path)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_tampered_pickle_is_refused_and_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.rtv"
    raw.write_bytes(pickle.dumps({"format": artifact.FORMAT, "x": _Payload(marker)}, protocol=2))
    msg = _assert_refused(raw)
    assert "forbidden global" in msg or "Unpickl" in msg
    zipped = tmp_path / "zipped.rtv"
    torch.save({"format": artifact.FORMAT, "version": 1, "x": _Payload(marker)}, zipped)
    assert "forbidden global" in _assert_refused(zipped)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    with open(zipped, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()


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
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "missing.rtv")
    # consistent-looking file whose widths do not match its weights
    data = torch.load(good, weights_only=True)
    data["spec"]["convs"]["conv1"][1] += 1
    torch.save(data, tmp_path / "mismatch.rtv")
    _assert_refused(tmp_path / "mismatch.rtv", "does not match")


def test_save_rejects_non_plain_metadata(models, tmp_path):
    with pytest.raises(ValueError):
        save_artifact(tmp_path / "x.rtv", models["fp32"], arch="resnet18", class_names=NAMES, preprocess=PP, metadata={"p": Path("x")})
    with pytest.raises(ValueError):
        save_artifact(tmp_path / "x.rtv", models["fp32"], arch="resnet18", class_names=NAMES[:10], preprocess=PP)
    assert not list(tmp_path.iterdir())


def test_cached_int8_second_start_loads_from_disk(models, faces_frames, tmp_path, monkeypatch):
    args = ("resnet18", "sha256:test", "faces_1080p.mp4:first4", faces_frames[:4], PP, tmp_path)
    first = artifact.cached_int8(models["pruned"], *args)
    files = list(tmp_path.glob("*.rtv"))
    assert len(files) == 1

    def no_quantize(*a, **k):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(compress, "quantize_int8", no_quantize)
    t0 = time.perf_counter()
    second = artifact.cached_int8(models["pruned"], *args)
    assert time.perf_counter() - t0 < 10
    batch = compress.frames_to_batch(faces_frames[:2], PP)
    with torch.no_grad():
        assert torch.equal(first(batch), second(batch))
    # another calibration key is another entry
    monkeypatch.undo()
    artifact.cached_int8(models["pruned"], "resnet18", "sha256:test", "other", faces_frames[:2], PP, tmp_path)
    assert len(list(tmp_path.glob("*.rtv"))) == 2


def test_weights_identity(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    assert artifact.weights_identity(str(f)).startswith("sha256:ba7816bf")
    assert artifact.weights_identity("imagenet:ResNet50_Weights.IMAGENET1K_V2") == "imagenet:ResNet50_Weights.IMAGENET1K_V2"


def test_pipeline_adapters(models, faces_frames, faces_video, tmp_path):
    classifier_mod = pytest.importorskip("rtvision.models.classifier")
    from rtvision.config import ModelConfig
    from rtvision.errors import ModelError
    from rtvision.sources import SourceInfo

    path = _save(tmp_path / "q.rtv", models["pruned_int8"], "resnet18 pruned30 int8")
    clf = artifact.load_for_pipeline(path, "cpu")
    assert isinstance(clf, classifier_mod.Classifier) and clf.precision == "int8"
    assert clf.extra["artifact_variant"] == "resnet18 pruned30 int8"
    assert clf.logits(clf.prepare(faces_frames[:2])).shape == (2, 1000)
    bad = tmp_path / "bad.rtv"
    bad.write_bytes(b"junk")
    with pytest.raises(ModelError):
        artifact.load_for_pipeline(bad, "cpu")

    cfg = ModelConfig(classifier="resnet18", weights="x.pt", calib_frames=3, cache_dir=str(tmp_path / "cache"))
    info = SourceInfo(name=str(faces_video), kind="file", live=False, fps=25.0, resolution_wh=(1920, 1080), frame_count=105)
    pp = classifier_mod.Preprocess(resize=128, crop=112)
    from rtvision.models.build import int8_cached

    q = int8_cached(models["pruned"], cfg, "sha256:test", pp, (None, info))
    assert compress.channel_spec(q) == compress.channel_spec(models["pruned"])
    assert len(list((tmp_path / "cache").glob("resnet18-int8-*.rtv"))) == 1
