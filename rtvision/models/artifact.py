"""Classifier artifacts (``.rtv``): one file that the pipeline loads and runs, verified on load.

Format
------
A ``.rtv`` file is ``torch.save`` of ``{"format": "rtvision-artifact", "version": 2, "sha256": HEX,
"payload": uint8 tensor}``: the payload is itself a ``torch.save`` of one dict, and ``sha256`` is
the digest of its bytes. Loading reads the outer dict with ``torch.load(weights_only=True)``,
checks the digest, then reads the payload the same way. So:

* nothing pickled from outside ever runs: ``weights_only`` refuses every global outside torch's
  tensor/dtype allow-list, before anything is built;
* a damaged file (a flipped byte anywhere in the payload) fails the digest and is refused with
  one line; non-finite weights and preprocessing out of bounds are refused too. The digest has
  no key: an edit that recomputes it passes it, and still loads only plain values, checked.

The payload holds only tensors and plain python. Two kinds:

* ``backend: "torch"``: ``arch`` and the layer shapes (``compress.channel_spec``, pruning
  included) rebuild the network's skeleton; ``state_dict`` (fp32, or torch.ao int8 for ResNets:
  the skeleton goes through FX prepare/convert without calibration first) is loaded strictly.
* ``backend: "openvino"``: the OpenVINO IR (``ir_xml`` text, ``ir_bin`` uint8 tensor), fp32 or
  NNCF int8, pruned or not: the graph carries its own architecture.

Common keys: arch, backend, precision, class_names, preprocess, variant, calibration, report,
metadata (weights identity, cache key, pruning settings), versions.

Cache entries (int8 models calibrated at start-up, converted OpenVINO models) are artifacts too;
an entry must also carry the cache key it was written for, so a file copied onto another
entry's name is rebuilt, never served.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import compress, quant_backend
from .weights_errors import wrong_kind

log = logging.getLogger(__name__)

FORMAT = "rtvision-artifact"
VERSION = 2
BACKENDS = ("torch", "openvino")
PRECISIONS = ("fp32", "int8")


class ArtifactError(Exception):
    """A ``.rtv`` file that is missing, unreadable, unsafe, damaged or inconsistent (one line)."""


def variant_name(arch: str, prune_ratio: float = 0.0, precision: str = "fp32", distilled: bool = False,
                 backend: str | None = None) -> str:
    """e.g. ``resnet50 pruned30 int8``, ``mobilenet_v2 int8 openvino``."""
    parts = [arch]
    if prune_ratio > 0:
        parts.append(f"pruned{round(prune_ratio * 100)}")
    if distilled:
        parts.append("distilled")
    parts.append(precision)
    if backend:
        parts.append(backend)
    return " ".join(parts)


def _plain(value: Any, what: str) -> Any:
    """Round-trip through JSON: rejects anything that is not plain python (keeps files loadable)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-like plain python: {e}") from None


_PLAIN_TYPES = (str, int, float, bool, type(None), torch.dtype)


def _check_plain(obj: Any, where: str = "artifact") -> None:
    """Only exact plain types go into a file (a str subclass would make weights_only refuse it)."""
    if type(obj) in _PLAIN_TYPES or type(obj) is torch.Tensor or type(obj) is torch.nn.Parameter:
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif type(obj) is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise ValueError(f"{where}: non-str key {k!r}")
            _check_plain(v, f"{where}.{k}")
    else:
        raise ValueError(f"{where}: {type(obj).__name__} cannot go into an artifact")


def versions() -> dict[str, str]:
    out = {"torch": str(torch.__version__)}
    try:
        from ..backends.openvino_runtime import versions as ov_versions

        out.update(ov_versions())
    except ImportError:
        pass
    return out


def _common(arch: str, backend: str, precision: str, class_names: list[str], preprocess: dict, variant: str | None,
            calibration: dict | None, report: dict | None, metadata: dict | None) -> dict:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    return {
        "arch": arch,
        "backend": backend,
        "precision": precision,
        "class_names": [str(c) for c in class_names],
        "preprocess": compress.check_preprocess(preprocess),
        "variant": variant or variant_name(arch, 0.0, precision, backend=backend if backend != "torch" else None),
        "calibration": _plain(calibration, "calibration"),
        "report": _plain(report, "report"),
        "metadata": _plain(metadata or {}, "metadata"),
        "versions": versions(),
    }


def torch_payload(model: nn.Module, *, arch: str, spec: dict | None = None, class_names: list[str], preprocess: dict,
                  variant: str | None = None, calibration: dict | None = None, report: dict | None = None,
                  metadata: dict | None = None, qbackend: str = quant_backend.BACKEND) -> dict:
    """The payload of a torch model (fp32, or torch.ao int8 with ``spec`` from its float model)."""
    quantized = quant_backend.is_quantized(model)
    if spec is None:
        if quantized:
            raise ValueError("an int8 model needs the spec of its float model")
        spec = compress.channel_spec(model)
    if len(class_names) != compress.num_classes_of(spec):
        raise ValueError(f"{len(class_names)} class names for a {compress.num_classes_of(spec)}-class model")
    sd = model.state_dict()
    state = {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}
    # Per-module state_dict versions: quantized Linear/Conv pick their loading code by them.
    state_meta = {k: {mk: mv for mk, mv in v.items() if type(mv) in (int, str)} for k, v in getattr(sd, "_metadata", {}).items()}
    precision = "int8" if quantized else "fp32"
    if precision == "fp32":
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    data = _common(arch, "torch", precision, class_names, preprocess, variant, calibration, report, metadata)
    data.update({"spec": spec, "state_dict": state, "state_metadata": state_meta,
                 "qbackend": qbackend if precision == "int8" else None})
    return data


def openvino_payload(model, *, arch: str, precision: str, class_names: list[str], preprocess: dict,
                     variant: str | None = None, calibration: dict | None = None, report: dict | None = None,
                     metadata: dict | None = None) -> dict:
    """The payload of an OpenVINO model WITHOUT the preprocessing (it is added at load time)."""
    from ..backends.openvino_runtime import serialize

    outputs = model.outputs[0].get_partial_shape()
    classes = outputs[-1].get_length() if outputs[-1].is_static else None
    if classes is not None and len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for a {classes}-class model")
    xml, weights = serialize(model)
    data = _common(arch, "openvino", precision, class_names, preprocess, variant, calibration, report, metadata)
    data.update({"ir_xml": xml, "ir_bin": torch.from_numpy(weights)})
    return data


def encode(payload: dict) -> bytes:
    """The file's bytes: the payload wrapped with its digest (see the module docstring)."""
    _check_plain(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    raw = buf.getvalue()
    outer = {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(raw).hexdigest(),
             "payload": torch.frombuffer(bytearray(raw), dtype=torch.uint8)}
    out = io.BytesIO()
    torch.save(outer, out)
    return out.getvalue()


def write(path: str | os.PathLike, payload: dict) -> Path:
    """Write an artifact atomically (temp file + rename): a reader sees the old file or the new one."""
    path = Path(path)
    data = encode(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_artifact(path: str | os.PathLike, model: nn.Module, **kwargs) -> Path:
    """A torch model as an artifact (``torch_payload``'s keywords)."""
    return write(path, torch_payload(model, **kwargs))


def serialized_size(payload: dict) -> int:
    return len(encode(payload))


def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ArtifactError(f"{path}: not a valid rtvision artifact ({what})")


def read_payload(path: str | os.PathLike) -> dict:
    """The verified payload of an artifact. Raises ArtifactError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact not found")
    try:
        with open(path, "rb") as f:
            outer = quant_backend.safe_load(f)
    except Exception as e:  # UnpicklingError (forbidden global), RuntimeError (bad zip), EOFError...
        raise ArtifactError(f"{path}: refused: not a safe, intact rtvision artifact "
                            f"({type(e).__name__}: {quant_backend.short_reason(e)})") from None
    _require(isinstance(outer, dict) and outer.get("format") == FORMAT, path, "no rtvision format tag")
    _require(outer.get("version") == VERSION, path,
             f"version {outer.get('version')!r}, this rtvision reads {VERSION}; rebuild it with rtvision optimize")
    raw, digest = outer.get("payload"), outer.get("sha256")
    _require(isinstance(raw, torch.Tensor) and raw.dtype == torch.uint8 and isinstance(digest, str), path, "no payload")
    data = raw.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise ArtifactError(f"{path}: damaged or tampered: its content does not match its sha256 digest")
    try:
        payload = quant_backend.safe_load(io.BytesIO(data))
    except Exception as e:
        raise ArtifactError(f"{path}: refused: unsafe payload ({type(e).__name__}: {quant_backend.short_reason(e)})") from None
    _require(isinstance(payload, dict), path, "payload is not a dict")
    _check_payload(payload, path)
    return payload


def _check_payload(p: dict, path: Path) -> None:
    from .zoo import ARCHS

    _require(p.get("arch") in ARCHS, path, f"unknown arch {p.get('arch')!r}")
    _require(p.get("backend") in BACKENDS, path, f"unknown backend {p.get('backend')!r}")
    _require(p.get("precision") in PRECISIONS, path, f"unknown precision {p.get('precision')!r}")
    names = p.get("class_names")
    _require(isinstance(names, list) and names and all(isinstance(n, str) for n in names), path, "bad class_names")
    try:
        compress.check_preprocess(p.get("preprocess"))
    except ValueError:
        raise ArtifactError(f"{path}: not a valid rtvision artifact (bad preprocess)") from None
    for key in ("metadata", "calibration", "report"):
        _require(p.get(key) is None or isinstance(p[key], dict), path, f"bad {key}")
    _require(p.get("variant") is None or isinstance(p["variant"], str), path, "bad variant")
    if p["backend"] == "torch":
        _require(isinstance(p.get("spec"), dict) and isinstance(p.get("state_dict"), dict), path, "missing spec or state_dict")
        tensors = [v for v in p["state_dict"].values() if isinstance(v, torch.Tensor)]
    else:
        _require(isinstance(p.get("ir_xml"), str) and isinstance(p.get("ir_bin"), torch.Tensor), path, "missing OpenVINO IR")
        tensors = []
    for t in tensors:
        values = t.dequantize() if t.is_quantized else t
        if values.is_floating_point() and not torch.isfinite(values).all():
            raise ArtifactError(f"{path}: refused: non-finite weights (NaN or inf)")


@functools.lru_cache(maxsize=None)
def conv_layers(arch: str) -> int:
    """Convolutions in ``arch`` (pruning changes their widths, not their number): an OpenVINO
    model has as many (Convolution + GroupConvolution), which tells the architectures apart."""
    from .zoo import empty_module

    return sum(isinstance(m, nn.Conv2d) for m in empty_module(arch).modules())


def _holds_rows(state: dict, layer: str, rows: int) -> bool:
    """Whether ``state`` holds a tensor of ``layer`` (``layer.weight``, or the weight inside an
    int8 layer's packed parameters) with ``rows`` rows: the class count is in the file's data,
    not only in its record."""
    def tensors(v):
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (tuple, list)):
            for x in v:
                yield from tensors(x)

    return any(t.dim() >= 1 and t.shape[0] == rows
               for key, v in state.items() if isinstance(key, str) and key.startswith(layer + ".") for t in tensors(v))


@dataclass
class Artifact:
    """A verified artifact (see ``read_payload``); ``torch_module()`` / ``openvino_model()`` rebuild it."""

    path: Path
    payload: dict = field(repr=False)
    _ov_model: Any = field(default=None, repr=False)

    @property
    def arch(self) -> str:
        return self.payload["arch"]

    @property
    def backend(self) -> str:
        return self.payload["backend"]

    @property
    def precision(self) -> str:
        return self.payload["precision"]

    @property
    def class_names(self) -> list[str]:
        return list(self.payload["class_names"])

    @property
    def preprocess(self) -> dict:
        return dict(self.payload["preprocess"])

    @property
    def variant(self) -> str:
        return str(self.payload.get("variant") or variant_name(self.arch, 0.0, self.precision))

    @property
    def metadata(self) -> dict:
        return dict(self.payload.get("metadata") or {})

    @property
    def calibration(self) -> dict | None:
        return self.payload.get("calibration")

    @property
    def report(self) -> dict | None:
        return self.payload.get("report")

    def torch_module(self) -> nn.Module:
        """The eval-mode torch module (CPU). Raises ArtifactError when it does not fit its record."""
        p = self.payload
        try:
            compress.check_spec_bounds(p["arch"], p["spec"])
        except ValueError as e:
            raise ArtifactError(f"{self.path}: artifact does not match its architecture ({e})") from None
        n = compress.num_classes_of(p["spec"])
        _require(len(self.class_names) == n, self.path, "class_names do not match the model")
        _require(_holds_rows(p["state_dict"], list(p["spec"]["linear"])[-1], n), self.path,
                 "the classifier's weights are not in the file")
        try:
            model = compress.rebuild(p["arch"], p["spec"])
            if p["precision"] == "int8":
                qb = p.get("qbackend")
                _require(isinstance(qb, str) and quant_backend.supported(qb), self.path, f"quantization backend {qb!r}")
                crop = int(p["preprocess"]["crop"])
                model = quant_backend.quantize_skeleton(model, torch.zeros(1, 3, crop, crop), qb)
            state = OrderedDict(p["state_dict"])
            meta = p.get("state_metadata")
            if isinstance(meta, dict):
                state._metadata = meta  # type: ignore[attr-defined]
            kind = wrong_kind(model.state_dict(), state)
            _require(kind is None, self.path, kind or "")
            with quant_backend.quiet():
                model.load_state_dict(state, strict=True)
        except ArtifactError:
            raise
        except Exception as e:
            raise ArtifactError(f"{self.path}: artifact does not match its architecture ({quant_backend.short_reason(e)})") from None
        _require(len(self.class_names) == compress.num_classes_of(p["spec"]), self.path, "class_names do not match the model")
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    def openvino_model(self):
        """The OpenVINO model (without preprocessing). Raises ArtifactError for a broken IR."""
        from ..backends.openvino_runtime import deserialize

        if self._ov_model is not None:
            return self._ov_model

        try:
            model = deserialize(self.payload["ir_xml"], self.payload["ir_bin"].numpy())
        except Exception as e:
            raise ArtifactError(f"{self.path}: broken OpenVINO IR ({quant_backend.short_reason(e)})") from None
        shape = model.outputs[0].get_partial_shape()
        _require(shape[-1].is_static and shape[-1].get_length() == len(self.class_names), self.path,
                 "class_names do not match the model")
        for op in model.get_ops():
            if op.get_type_name() == "Constant" and op.get_element_type().is_real():
                if not np.isfinite(op.get_data()).all():
                    raise ArtifactError(f"{self.path}: refused: non-finite weights (NaN or inf)")
        crop = int(self.payload["preprocess"]["crop"])
        dims = model.inputs[0].get_partial_shape()
        _require(len(model.inputs) == 1 and dims.rank.is_static and dims.rank.get_length() == 4, self.path,
                 "the model does not take one batch of images")
        static = sorted(d.get_length() for d in list(dims)[1:] if d.is_static)
        _require(static == sorted([3, crop, crop]), self.path,
                 f"the model's input {dims} does not fit its preprocessing (crop {crop})")
        counts = {}
        for op in model.get_ops():
            counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
        convs = counts.get("Convolution", 0) + counts.get("GroupConvolution", 0)
        _require(convs == conv_layers(self.arch), self.path,
                 f"the model is not a {self.arch} ({convs} convolutions, a {self.arch} has {conv_layers(self.arch)})")
        self._ov_model = model
        return model


def load_artifact(path: str | os.PathLike) -> Artifact:
    """A verified artifact; an OpenVINO one is also parsed now (a broken IR or non-finite weights
    are refused here, not at the first frame)."""
    art = Artifact(Path(path), read_payload(path))
    if art.backend == "openvino":
        art.openvino_model()
    return art


# ---------------------------------------------------------------- cache entries


def cache_key(**parts: Any) -> str:
    """A stable digest of what a cache entry depends on (architecture, weights identity,
    calibration, settings, library versions)."""
    return hashlib.sha256(json.dumps(_plain(parts, "cache key"), sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def folder_lock(lock_path: Path):
    """Hold an inter-process lock at ``lock_path`` for the block. Best effort: where the lock
    file cannot be made (a read-only folder), the block runs unlocked with a log line; what it
    writes is atomic anyway."""
    from filelock import FileLock

    lock = None
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        lock.acquire()
    except OSError as exc:
        log.info("no lock at %s (%s); going on without it", lock_path, exc)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def entry_lock(path: Path):
    """The lock for building the cache entry at ``path``: of two processes started together, the
    second waits for the first's entry instead of building its own."""
    return folder_lock(path.parent / ".locks" / f"{path.name}.lock")


def read_cache_entry(path: Path, key: str) -> Artifact | None:
    """The entry at ``path`` if it is intact and was written for ``key``; None when absent. A
    damaged entry, or one written for another key, is reported and treated as absent (rebuilt)."""
    if not path.is_file():
        return None
    try:
        art = load_artifact(path)
    except ArtifactError as e:
        log.warning("rebuilding a damaged cache entry: %s", e)
        return None
    if art.metadata.get("cache_key") != key:
        log.warning("rebuilding cache entry %s: it was written for another model or calibration", path)
        return None
    return art


def torch_int8_cached(model: nn.Module, arch: str, weights_id: str, calib_key: str, calib_frames,
                      preprocess: dict, cache_dir: str | os.PathLike, *, n_frames: int | None = None,
                      class_names: list[str] | None = None, qbackend: str = quant_backend.BACKEND) -> nn.Module:
    """torch.ao int8 version of a float ResNet ``model``, from the disk cache when the same one
    was built before. ``calib_frames``: BGR frames, or a callable giving them (called only on a
    miss; then ``n_frames`` is the requested count that goes into the key)."""
    if n_frames is None:
        n_frames = len(calib_frames)
    spec = compress.channel_spec(model)
    key = cache_key(kind="torch-int8", arch=arch, weights=weights_id, calib=calib_key, frames=int(n_frames),
                    preprocess=compress.check_preprocess(preprocess), qbackend=qbackend, spec=spec, format=VERSION,
                    torch=str(torch.__version__))
    path = Path(cache_dir) / f"{arch}-int8-torch-{key[:20]}.rtv"
    with entry_lock(path):
        art = read_cache_entry(path, key)
        if art is not None:
            log.info("int8 model from cache %s", path)
            return art.torch_module()
        frames = calib_frames() if callable(calib_frames) else calib_frames
        if not frames:
            raise ValueError("no calibration frames for int8")
        qmodel = compress.quantize_int8(model, frames, preprocess, backend=qbackend)
        names = class_names or [f"class_{i}" for i in range(compress.num_classes_of(spec))]
        write(path, torch_payload(qmodel, arch=arch, spec=spec, class_names=names, preprocess=preprocess,
                                  calibration={"source": calib_key, "frames": len(frames)},
                                  metadata={"weights": weights_id, "cache_key": key}, qbackend=qbackend))
    return qmodel


def weights_identity(weights: str) -> str:
    """``imagenet[:NAME]`` as given, else ``sha256:<hex>`` of the file."""
    from .zoo import file_identity, is_imagenet

    return weights if is_imagenet(weights) else file_identity(weights)
