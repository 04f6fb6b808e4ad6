"""The OpenVINO runtime: the CPU backend (fp32, bf16, and int8 from NNCF post-training quantization).

A float torch network becomes an OpenVINO model (``export``); int8 goes through NNCF on
calibration images (``quantize``); ``with_preprocessing`` then makes the model take the uint8
RGB crops straight from ``Preprocess.crop_uint8`` (NHWC): OpenVINO converts, normalizes and
transposes them inside the compiled graph, so no float batch is built in Python.

Models travel as OpenVINO IR (XML text + weights bytes, ``serialize``/``deserialize``) inside
rtvision's artifacts; compiled models are cached by OpenVINO itself (``CACHE_DIR``), so a second
start compiles nothing. OpenVINO writes a blob in place and maps the blobs it reads, so a process
that rewrites a blob another one has mapped kills that one (SIGBUS): compiling with a cache
holds an inter-process lock on the folder (``folder_lock``), so the second of two processes
started together finds the first's finished blob and writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.artifact import folder_lock
from ..models.classifier import Preprocess

log = logging.getLogger(__name__)

_CORE = None
_CORE_LOCK = threading.Lock()


def core():
    """The process's one ``openvino.Core``."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


def versions() -> dict[str, str]:
    import nncf
    import openvino as ov

    return {"openvino": ov.get_version(), "nncf": nncf.__version__}


@contextlib.contextmanager
def quiet():
    """NNCF's progress bars (rich, on stdout) and the converters' warnings stay out of the user's
    terminal: rtvision reports what matters in its own log."""
    # importing NNCF makes torch's cpp_extension warn that there is no CUDA runtime (irrelevant here)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    nncf.set_log_level(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export(module: nn.Module, crop: int):
    """A float (eval-mode, CPU) torch network -> an OpenVINO model with input (N, 3, crop, crop)
    float32, any batch size."""
    import openvino as ov

    module = module.eval().cpu().float()
    with quiet(), torch.no_grad():
        return ov.convert_model(module, example_input=torch.zeros(1, 3, crop, crop), input=[(-1, 3, crop, crop)])


def quantize(model, calib: np.ndarray, *, float_ops: tuple[str, ...] = (), fast_bias_correction: bool = False):
    """NNCF post-training int8 quantization of a float OpenVINO model on ``calib``: normalized
    float32 images (N, 3, crop, crop). Weights per channel, activations per tensor (NNCF's
    defaults), with the full bias correction (it measured more accurate than the fast one).
    ``float_ops``: OpenVINO op types left in float (e.g. ``GroupConvolution``, the depthwise
    convolutions)."""
    import nncf

    if len(calib) == 0:
        raise ValueError("int8 calibration needs at least one image")
    items = [np.ascontiguousarray(calib[i : i + 1], dtype=np.float32) for i in range(len(calib))]
    kwargs = {"ignored_scope": nncf.IgnoredScope(types=list(float_ops))} if float_ops else {}
    with quiet():
        return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                             fast_bias_correction=fast_bias_correction, **kwargs)


def with_preprocessing(model, preprocess: Preprocess):
    """``model`` taking uint8 RGB crops (N, crop, crop, 3), normalized inside the graph."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model.clone())  # PrePostProcessor edits the model it is given
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([255.0 * m for m in preprocess.mean]).scale(
        [255.0 * s for s in preprocess.std]
    )
    return ppp.build()


def serialize(model) -> tuple[str, np.ndarray]:
    """(IR XML text, weights as a uint8 array) of an OpenVINO model, weights kept at their precision."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="rtvision-ir-") as d:
        xml = Path(d) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return xml.read_text(encoding="utf-8"), np.fromfile(xml.with_suffix(".bin"), dtype=np.uint8)


def deserialize(xml: str, weights: np.ndarray):
    import openvino as ov

    return core().read_model(model=xml.encode("utf-8"), weights=ov.Tensor(np.ascontiguousarray(weights, dtype=np.uint8)))


def count_ops(model) -> dict[str, int]:
    """How many FakeQuantize / Convolution / MatMul nodes the model has (int8 checks, reports)."""
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        counts[t] = counts.get(t, 0) + 1
    return counts


SEAL_SUFFIX = ".sha256"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def check_cached_blobs(folder: Path) -> dict[str, tuple[int, int, int]]:
    """OpenVINO loads a compiled model from its cache without checking it: a damaged blob ran,
    with other outputs. Every blob here was sealed (:func:`seal_cached_blobs`) when it was made;
    one whose seal is missing or does not match is removed, so that OpenVINO compiles the model
    again. Returns the blobs that passed, with their (size, mtime, inode): a blob OpenVINO then
    rewrites itself (one of another OpenVINO version or CPU) is sealed again afterwards. Runs
    under the cache's compile lock."""
    checked: dict[str, tuple[int, int, int]] = {}
    if not folder.is_dir():
        return checked
    for blob in folder.glob("*.blob"):
        seal = blob.with_name(blob.name + SEAL_SUFFIX)
        try:
            want = seal.read_text().strip() if seal.exists() else None
            if want is not None and want == _sha256(blob):
                checked[blob.name] = _stat_key(blob)
                continue
            if want is not None:
                log.warning("damaged compiled model in the OpenVINO cache (%s); rebuilding it", blob)
            else:
                log.debug("unsealed OpenVINO cache entry %s removed", blob)
            blob.unlink(missing_ok=True)
            seal.unlink(missing_ok=True)
        except OSError as exc:  # an unreadable entry: OpenVINO's own errors decide
            log.debug("cannot check %s: %s", blob, exc)
    return checked


def seal_cached_blobs(folder: Path, checked: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Record the sha256 of every blob OpenVINO has just written or rewritten: one without a seal,
    or one that changed since :func:`check_cached_blobs` passed it (``checked``)."""
    if not folder.is_dir():
        return
    checked = checked or {}
    for blob in folder.glob("*.blob"):
        seal = blob.with_name(blob.name + SEAL_SUFFIX)
        with contextlib.suppress(OSError):
            if seal.exists() and checked.get(blob.name) == _stat_key(blob):
                continue
            if seal.exists() and blob.name not in checked:
                continue  # sealed by another process's compile since (under the same lock, so current)
            tmp = seal.with_name(seal.name + ".tmp")
            tmp.write_text(_sha256(blob) + "\n")
            tmp.replace(seal)


class OpenVINORuntime:
    """An OpenVINO model with preprocessing (``with_preprocessing``) behind the runtime interface.

    precision: ``int8`` (an NNCF model; its non-quantized parts run at OpenVINO's default
    inference precision), ``bf16`` or ``fp32`` (``INFERENCE_PRECISION_HINT``).
    cache_dir: where OpenVINO caches compiled models (None: no cache).
    Compiled once per thread count (``set_num_threads``); one infer request each, used from one
    thread at a time (the worker's).
    """

    backend = "openvino"
    device = torch.device("cpu")

    def __init__(self, model, preprocess: Preprocess, precision: str, cache_dir: str | None = None,
                 threads: int | None = None) -> None:
        self.model = model
        self.preprocess = preprocess
        self.precision = precision
        self.cache_dir = cache_dir
        self._compiled: dict[int | None, tuple] = {}
        self._threads = threads
        self._request = self._compile(threads)

    def _config(self, threads: int | None) -> dict:
        config: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision in ("fp32", "bf16"):
            config["INFERENCE_PRECISION_HINT"] = "f32" if self.precision == "fp32" else "bf16"
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if self.cache_dir:
            config["CACHE_DIR"] = str(self.cache_dir)
        return config

    def _compile(self, threads: int | None):
        if threads not in self._compiled:
            config = self._config(threads)
            lock = folder_lock(Path(self.cache_dir) / ".locks" / "compile.lock") if self.cache_dir else contextlib.nullcontext()
            try:
                with lock:
                    checked = check_cached_blobs(Path(self.cache_dir)) if self.cache_dir else {}
                    compiled = core().compile_model(self.model, "CPU", config)
                    if self.cache_dir:
                        seal_cached_blobs(Path(self.cache_dir), checked)
            except RuntimeError as exc:
                if not self.cache_dir:
                    raise
                # A cache folder OpenVINO cannot use (a file, read-only, full): compile without it.
                # Said only once that compile works: an error of the model itself is raised as is,
                # not blamed on the cache.
                folder, self.cache_dir = self.cache_dir, None
                compiled = core().compile_model(self.model, "CPU", self._config(threads))
                log.warning("OpenVINO cannot use the cache folder %s (%s); compiled without it",
                            folder, str(exc).strip().splitlines()[-1][:200])
            self._compiled[threads] = (compiled, compiled.create_infer_request())
        return self._compiled[threads][1]

    @property
    def inference_precision(self) -> str:
        compiled = self._compiled[self._threads][0]
        return str(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def set_num_threads(self, n: int | None) -> None:
        self._threads = n
        self._request = self._compile(n)

    def prepare(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        crop = self.preprocess.crop
        if not images_bgr:
            return np.empty((0, crop, crop, 3), np.uint8)
        return np.stack([self.preprocess.crop_uint8(im) for im in images_bgr])

    def run(self, batch: np.ndarray) -> torch.Tensor:
        if len(batch) == 0:
            return torch.empty((0, 0))
        self._request.infer({0: batch}, share_inputs=True)
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy()).float()
