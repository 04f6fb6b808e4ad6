"""The one resolver of device, backend and precision, and the classifier's guard against NaN."""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import pytest
import torch

from rtvision import backends
from rtvision.backends import resolve_target
from rtvision.errors import ModelError, UsageError
from rtvision.models.classifier import Classifier, Preprocess


def target(*args, **kw) -> tuple[str, str, str]:
    t = resolve_target(*args, **kw)
    return t.device.type, t.backend, t.precision


def test_cpu_defaults_to_openvino_int8(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    assert target() == ("cpu", "openvino", "int8")
    assert target(precision="fp32") == ("cpu", "openvino", "fp32")
    assert target(precision="bf16") == ("cpu", "openvino", "bf16")
    assert target(backend="torch") == ("cpu", "torch", "int8")
    assert target(backend="torch", precision="fp32") == ("cpu", "torch", "fp32")
    with pytest.raises(UsageError, match="fp16 needs CUDA"):
        resolve_target(precision="fp16")
    with pytest.raises(UsageError, match="--backend openvino"):
        resolve_target(backend="torch", precision="bf16")
    with pytest.raises(UsageError, match="no CUDA device"):
        resolve_target(device="cuda")


def test_a_cuda_machine_runs_int8_and_openvino_on_the_cpu(monkeypatch):
    """On a CUDA machine: auto is fp16 torch on CUDA; int8 (the bench's int8 and pruned-int8
    variants) and OpenVINO take the CPU with --device auto, and say why with --device cuda."""
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    assert target() == ("cuda", "torch", "fp16")
    assert target(precision="int8") == ("cpu", "openvino", "int8")
    assert target(backend="torch", precision="int8") == ("cpu", "torch", "int8")
    assert target(backend="openvino") == ("cpu", "openvino", "int8")
    assert target(fixed_backend="openvino", fixed_precision="int8") == ("cpu", "openvino", "int8")
    assert target(fixed_backend="torch", fixed_precision="fp32") == ("cuda", "torch", "fp16")
    for kw in ({"precision": "int8"}, {"backend": "openvino"}):
        with pytest.raises(UsageError, match="runs on the CPU"):
            resolve_target(device="cuda", **kw)


def test_artifacts_run_as_they_were_built(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    assert target(fixed_backend="torch", fixed_precision="fp32") == ("cpu", "torch", "fp32")
    assert target(fixed_backend="openvino", fixed_precision="fp32", precision="bf16") == ("cpu", "openvino", "bf16")
    with pytest.raises(UsageError, match="built for openvino"):
        resolve_target(backend="torch", fixed_backend="openvino", fixed_precision="int8")
    with pytest.raises(UsageError, match="is int8"):
        resolve_target(precision="fp32", fixed_backend="openvino", fixed_precision="int8")
    with pytest.raises(UsageError, match="quantize it"):
        resolve_target(precision="int8", fixed_backend="torch", fixed_precision="fp32")
    with pytest.raises(UsageError, match="--precision 'fp8'"):
        resolve_target(precision="fp8")


def test_bf16_on_a_cpu_without_bf16_is_a_usage_error(monkeypatch):
    """OpenVINO takes a bf16 hint on a CPU without bf16 arithmetic and runs fp32: a run (and a
    bench row) labelled bf16 would be fp32. Such a CPU is told in one line instead. On this
    machine, the capability OpenVINO lists is what a compiled model really runs."""
    import openvino as ov

    from rtvision.backends.openvino_runtime import core

    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    caps = backends.cpu_capabilities()
    conv = ov.convert_model(torch.nn.Conv2d(3, 8, 3).eval(), example_input=torch.zeros(1, 3, 16, 16))
    compiled = core().compile_model(conv, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    runs = compiled.get_property("INFERENCE_PRECISION_HINT")
    assert (runs == ov.Type.bf16) == ("BF16" in caps), (runs, caps)
    monkeypatch.setattr(backends, "cpu_capabilities", lambda: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"])
    with pytest.raises(UsageError, match="this CPU has no bf16 .*FP32, INT8.*use fp32 or int8"):
        resolve_target(precision="bf16")
    with pytest.raises(UsageError, match="no bf16"):
        resolve_target(fixed_backend="openvino", fixed_precision="fp32", precision="bf16")
    assert target(precision="fp32") == ("cpu", "openvino", "fp32")
    assert target() == ("cpu", "openvino", "int8")


class _NaNRuntime:
    backend, precision, device = "torch", "fp32", torch.device("cpu")

    def prepare(self, images):
        return images

    def run(self, batch):
        out = torch.zeros(len(batch), 10)
        out[0, 3] = float("nan")
        return out

    def set_num_threads(self, n):
        pass


def test_a_classifier_that_answers_nan_stops_the_run():
    clf = Classifier("resnet18", _NaNRuntime(), [f"c{i}" for i in range(10)], Preprocess(), name="broken fp32")
    with pytest.raises(ModelError, match="non-finite outputs"):
        clf.logits(clf.prepare([np.zeros((8, 8, 3), np.uint8)]))


@pytest.mark.slow
def test_two_processes_started_together_on_a_cold_cache_build_once(index_clip, tmp_path):
    """OpenVINO maps the compiled blobs it reads and rewrites a blob in place: a process that
    compiled at the same time as another used to rewrite the blob the other had mapped (SIGBUS,
    exit -7, seen in CI with bench --streams). Both processes succeed, the int8 model is built
    by one of them, and the other reads it from the cache."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, RTVISION_CACHE=str(tmp_path / "cache"))
    argv = [sys.executable, "-m", "rtvision", "--source", str(index_clip), "--headless", "--no-progress", "-v",
            "--classifier", "mobilenet_v2", "--faces", "off", "--max-frames", "10"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    built = [e for e in errs if "int8 calibration (NNCF)" in e]
    cached = [e for e in errs if "OpenVINO model from cache" in e]
    assert len(built) == 1 and len(cached) == 1, errs
    assert list((tmp_path / "cache").glob("mobilenet_v2-int8-openvino-*.rtv"))
    assert any((tmp_path / "cache" / "openvino").glob("*.blob"))


@contextlib.contextmanager
def _warnings_of(name: str):
    """The warnings a logger says meanwhile, whatever an earlier test did to logging (a CLI run
    in this process leaves rtvision's loggers at ERROR, with a handler of its own)."""
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger(name)
    level, disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.disabled = False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


def test_a_damaged_compiled_model_in_the_openvino_cache_is_rebuilt(tmp_path, faces_frames):
    """OpenVINO loads a compiled model from its cache unchecked: 4 KB flipped in the middle of
    the blob gave other outputs, silently. Each blob is sealed (sha256) when made; a damaged one
    is removed with a warning and compiled again, and the outputs are the clean ones."""
    import torchvision

    from rtvision.backends import openvino_runtime as ovr

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    pp = Preprocess(resize=72, crop=64)
    cache = tmp_path / "openvino"

    def run():
        rt = ovr.OpenVINORuntime(ovr.with_preprocessing(ovr.export(net, pp.crop), pp), pp, "fp32", cache_dir=str(cache))
        return np.asarray(rt.run(rt.prepare(faces_frames[:2])))

    clean = run()
    (blob,) = cache.glob("*.blob")
    assert blob.with_name(blob.name + ".sha256").read_text().strip() == ovr._sha256(blob)
    assert np.array_equal(run(), clean)  # from the cache
    data = bytearray(blob.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = bytes(b ^ 0xFF for b in data[mid : mid + 4096])
    blob.write_bytes(bytes(data))
    with _warnings_of("rtvision.backends.openvino_runtime") as said:
        again = run()
    assert np.array_equal(again, clean)
    assert any("damaged compiled model in the OpenVINO cache" in m for m in said), said
    (blob,) = cache.glob("*.blob")
    assert blob.with_name(blob.name + ".sha256").read_text().strip() == ovr._sha256(blob)  # sealed again

    # A blob that OpenVINO rewrites under the same name while it compiles (one of another
    # OpenVINO version or CPU, whose seal matched): sealed again, so the next start does not call
    # it damaged (the old seal was kept, and the next start rebuilt it with a warning).
    checked = ovr.check_cached_blobs(cache)
    assert list(checked) == [blob.name]
    time.sleep(0.01)
    blob.write_bytes(blob.read_bytes() + b"rewritten")  # what compile_model would have done
    ovr.seal_cached_blobs(cache, checked)
    assert blob.with_name(blob.name + ".sha256").read_text().strip() == ovr._sha256(blob)
    with _warnings_of("rtvision.backends.openvino_runtime") as said:
        assert ovr.check_cached_blobs(cache) and blob.exists()
    assert not any("damaged" in m for m in said), said


def test_a_model_that_does_not_compile_is_not_blamed_on_the_cache(tmp_path, monkeypatch):
    """A compile that fails with a usable cache folder is retried without the cache; when that
    fails too, the error is the model's own and raised as is: no warning that blames the cache
    (it said "cannot use the cache folder" first). A cache OpenVINO cannot use is still said."""
    import torchvision

    from rtvision.backends import openvino_runtime as ovr

    net = torchvision.models.resnet18(weights=None).eval()
    pp = Preprocess(resize=72, crop=64)
    model = ovr.with_preprocessing(ovr.export(net, pp.crop), pp)
    real = ovr.core()

    class BrokenCore:
        def compile_model(self, *args, **kwargs):
            raise RuntimeError("Exception from src/inference: the model's own error")

    monkeypatch.setattr(ovr, "core", lambda: BrokenCore())
    with _warnings_of("rtvision.backends.openvino_runtime") as said:
        with pytest.raises(RuntimeError, match="the model's own error"):
            ovr.OpenVINORuntime(model, pp, "fp32", cache_dir=str(tmp_path / "openvino"))
    assert not any("cache" in m for m in said), said

    class CacheRefusingCore:  # OpenVINO's own error for a cache folder it cannot write
        def compile_model(self, model, device, config):
            if "CACHE_DIR" in config:
                raise RuntimeError("Exception from src/inference: Failed to create directory")
            return real.compile_model(model, device, config)

    monkeypatch.setattr(ovr, "core", lambda: CacheRefusingCore())
    with _warnings_of("rtvision.backends.openvino_runtime") as said:
        rt = ovr.OpenVINORuntime(model, pp, "fp32", cache_dir=str(tmp_path / "openvino2"))
    assert rt.cache_dir is None
    assert any("cannot use the cache folder" in m and "Failed to create directory" in m for m in said), said
