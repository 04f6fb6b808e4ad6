"""Optimized classifier artifacts (``.rtv``): one file the pipeline loads and runs directly.

Format and why
--------------
An artifact is ``torch.save`` of ONE dict holding only plain tensors and plain python
(str/int/float/bool/None/list/dict, plus ``torch.dtype`` values inside quantized
state_dicts), read back with ``torch.load(weights_only=True)``. That loader refuses every
global outside torch's tensor/dtype allow-list, so a tampered file (a pickle with a
``__reduce__`` payload, a pickled ``nn.Module``, any arbitrary object) fails *before*
anything runs; we then raise ``ArtifactError`` with one line. No module object is pickled:

* the architecture is recorded as data: the torchvision name plus per-layer widths after
  pruning (``compress.channel_spec``); loading rebuilds the torchvision ResNet and shrinks
  each conv/bn/fc to those widths (``compress.rebuild_resnet``), then ``load_state_dict``
  (strict, so any mismatch is an ``ArtifactError`` too);
* int8 models are rebuilt the same way, then run through FX prepare/convert *without*
  calibration (``quant_backend.quantize_skeleton``) to get the same quantized module graph,
  and the saved quantized state_dict overwrites every weight, scale and zero point. Checked in
  torch 2.14.1: quantized state_dicts (per-channel qint8 tensors, packed Linear params, which
  serialize as (qtensor, bias) tuples and a dtype) load under ``weights_only=True``, so no
  hand-written int8 format is needed. The backend (``x86``) is recorded and used for convert.

Keys: format, version, arch, precision (fp32|int8), backend, spec, state_dict, class_names,
preprocess, variant, calibration {source, frames}, report, metadata, torch_version, and
state_metadata (the state_dict's per-module versions, which quantized layers need to load).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rtvision.models import compress, quant_backend

log = logging.getLogger(__name__)

FORMAT = "rtvision-artifact"
VERSION = 1
PRECISIONS = ("fp32", "int8")


class ArtifactError(Exception):
    """A ``.rtv`` file that is missing, unreadable, unsafe or inconsistent (one-line message)."""


@dataclass
class LoadedClassifier:
    """An artifact ready to run: ``module`` is in eval mode on ``device``.

    Call ``logits(frames_bgr)`` for (N, classes) float32 CPU logits, or feed ``module`` a
    batch from ``compress.frames_to_batch(frames, preprocess)``.
    """

    module: nn.Module
    arch: str
    class_names: list[str]
    preprocess: dict
    variant: str
    precision: str
    backend: str | None
    calibration: dict | None
    report: dict | None
    metadata: dict = field(default_factory=dict)
    device: str = "cpu"

    @torch.no_grad()
    def logits(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        return compress.logits_of(self.module, compress.frames_to_batch(frames_bgr, self.preprocess))


def variant_name(arch: str, prune_ratio: float = 0.0, precision: str = "fp32", distilled: bool = False) -> str:
    """e.g. ``resnet50 pruned30 int8``."""
    parts = [arch]
    if prune_ratio > 0:
        parts.append(f"pruned{round(prune_ratio * 100)}")
    if distilled:
        parts.append("distilled")
    parts.append(precision)
    return " ".join(parts)


def _plain(value: Any, what: str) -> Any:
    """Round-trip through JSON: rejects anything that is not plain python (keeps files loadable)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-like plain python: {e}") from None


def artifact_dict(
    model: nn.Module,
    *,
    arch: str,
    class_names: list[str],
    preprocess: dict,
    variant: str | None = None,
    calibration: dict | None = None,
    report: dict | None = None,
    metadata: dict | None = None,
    backend: str = quant_backend.BACKEND,
) -> dict:
    """The plain dict that ``save_artifact`` writes (also used to measure serialized sizes)."""
    if arch not in compress.ARCHS:
        raise ValueError(f"unknown arch {arch!r}")
    precision = "int8" if quant_backend.is_quantized(model) else "fp32"
    spec = compress.channel_spec(model)
    if len(class_names) != spec["fc"][1]:
        raise ValueError(f"{len(class_names)} class names for a {spec['fc'][1]}-class model")
    sd = model.state_dict()
    state = {k: (v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}
    # Per-module state_dict versions: quantized Linear/Conv pick their loading code by them.
    state_meta = {k: {mk: mv for mk, mv in v.items() if type(mv) in (int, str)} for k, v in getattr(sd, "_metadata", {}).items()}
    if precision == "fp32":
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    data = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "precision": precision,
        "backend": backend if precision == "int8" else None,
        "spec": spec,
        "state_dict": state,
        "state_metadata": state_meta,
        "class_names": [str(c) for c in class_names],
        "preprocess": compress.check_preprocess(preprocess),
        "variant": variant or variant_name(arch, 0.0, precision),
        "calibration": _plain(calibration, "calibration"),
        "report": _plain(report, "report"),
        "metadata": _plain(metadata or {}, "metadata"),
        "torch_version": str(torch.__version__),
    }
    _check_plain(data)
    return data


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


def serialized_size(model: nn.Module, **kwargs) -> int:
    """Bytes the artifact of ``model`` takes on disk."""
    buf = io.BytesIO()
    torch.save(artifact_dict(model, **kwargs), buf)
    return buf.tell()


def save_artifact(path: str | os.PathLike, model: nn.Module, **kwargs) -> Path:
    """Write ``model`` (fp32 or int8 torchvision ResNet, pruned or not) as a ``.rtv`` artifact.

    kwargs: arch, class_names, preprocess (required); variant, calibration ({"source", "frames"}),
    report, metadata, backend. Written atomically (temp file + rename).
    """
    path = Path(path)
    data = artifact_dict(model, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # normal (umask) permissions
    try:
        with open(tmp, "xb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ArtifactError(f"{path}: not a valid rtvision artifact ({what})")


def load_artifact(path: str | os.PathLike, device: str = "cpu") -> LoadedClassifier:
    """Load a ``.rtv`` artifact safely (``weights_only``) and rebuild a runnable eval-mode model.

    Raises ArtifactError (one line) for a missing, truncated, unsafe or inconsistent file.
    int8 artifacts run on the CPU only.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact not found")
    try:
        with open(path, "rb") as f:
            data = quant_backend.safe_load(f)
    except Exception as e:  # UnpicklingError (forbidden global), RuntimeError (bad zip), EOFError...
        raise ArtifactError(
            f"{path}: refused: not a safe rtvision artifact ({type(e).__name__}: {quant_backend.short_reason(e)})"
        ) from None
    _require(isinstance(data, dict) and data.get("format") == FORMAT, path, "no rtvision format tag")
    _require(data.get("version") == VERSION, path, f"unsupported version {data.get('version')!r}")
    arch, precision = data.get("arch"), data.get("precision")
    _require(arch in compress.ARCHS, path, f"unknown arch {arch!r}")
    _require(precision in PRECISIONS, path, f"unknown precision {precision!r}")
    spec, state = data.get("spec"), data.get("state_dict")
    _require(isinstance(spec, dict) and isinstance(state, dict), path, "missing spec or state_dict")
    names = data.get("class_names")
    _require(isinstance(names, list) and all(isinstance(n, str) for n in names), path, "bad class_names")
    try:
        preprocess = compress.check_preprocess(data.get("preprocess"))
    except ValueError:
        raise ArtifactError(f"{path}: not a valid rtvision artifact (bad preprocess)") from None
    backend = data.get("backend")
    try:
        model = compress.rebuild_resnet(arch, spec)
        _require(len(names) == model.fc.out_features, path, "class_names do not match the model")
        if precision == "int8":
            _require(isinstance(backend, str) and quant_backend.supported(backend), path, f"backend {backend!r}")
            example = torch.zeros(1, 3, preprocess["crop"], preprocess["crop"])
            model = quant_backend.quantize_skeleton(model, example, backend)
        state = OrderedDict(state)
        meta = data.get("state_metadata")
        if isinstance(meta, dict):
            state._metadata = meta  # type: ignore[attr-defined]
        with quant_backend.quiet():
            model.load_state_dict(state, strict=True)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"{path}: artifact does not match its architecture ({quant_backend.short_reason(e)})") from None
    model.eval()
    if device != "cpu":
        if precision == "int8":
            raise ArtifactError(f"{path}: int8 artifacts run on the CPU only, not {device}")
        model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedClassifier(
        module=model,
        arch=arch,
        class_names=names,
        preprocess=preprocess,
        variant=str(data.get("variant") or variant_name(arch, 0.0, precision)),
        precision=precision,
        backend=backend,
        calibration=data.get("calibration"),
        report=data.get("report"),
        metadata=data.get("metadata") or {},
        device=str(device),
    )


# ---------------------------------------------------------------- int8 cache


def weights_identity(weights: str) -> str:
    """``imagenet:<WeightsEnum>`` for ``imagenet:ARCH``/``imagenet``, else ``sha256:<hex>`` of the file."""
    if weights.startswith("imagenet"):
        return weights if ":" in weights else "imagenet"
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def cache_key(model: nn.Module, arch: str, weights_id: str, calib_key: str, n_frames: int, preprocess: dict, backend: str) -> str:
    payload = {
        "arch": arch,
        "weights": weights_id,
        "calib": calib_key,
        "frames": int(n_frames),
        "preprocess": compress.check_preprocess(preprocess),
        "backend": backend,
        "spec": compress.channel_spec(model),
        "format": VERSION,
        "torch": str(torch.__version__),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cached_int8(
    model: nn.Module,
    arch: str,
    weights_id: str,
    calib_key: str,
    calib_frames: list[np.ndarray] | Callable[[], list[np.ndarray]],
    preprocess: dict,
    cache_dir: str | os.PathLike,
    *,
    n_frames: int | None = None,
    class_names: list[str] | None = None,
    backend: str = quant_backend.BACKEND,
) -> nn.Module:
    """int8 version of ``model``, from the disk cache when the same one was built before.

    The key hashes arch, widths (pruning), ``weights_id`` (see ``weights_identity``),
    ``calib_key`` (e.g. the calibration source + frame selection), the frame count,
    preprocess, backend and torch version. The cache entry is an artifact, so loading it
    is weights_only-safe; a broken entry is rebuilt. ``calib_frames`` may be a callable, called
    only on a cache miss (reading frames from a source takes time); then ``n_frames`` is the
    requested count that goes into the key.
    """
    if n_frames is None:
        n_frames = len(calib_frames)  # type: ignore[arg-type]
    key = cache_key(model, arch, weights_id, calib_key, n_frames, preprocess, backend)
    path = Path(cache_dir) / f"{arch}-int8-{key[:20]}.rtv"
    if path.is_file():
        try:
            loaded = load_artifact(path)
            log.info("int8 model from cache %s", path)
            return loaded.module
        except ArtifactError as e:
            log.warning("rebuilding broken int8 cache entry: %s", e)
    if callable(calib_frames):
        calib_frames = calib_frames()
    if not calib_frames:
        raise ValueError("no calibration frames for int8")
    qmodel = compress.quantize_int8(model, calib_frames, preprocess, backend=backend)
    names = class_names or [f"class_{i}" for i in range(compress.channel_spec(model)["fc"][1])]
    save_artifact(
        path,
        qmodel,
        arch=arch,
        class_names=names,
        preprocess=preprocess,
        calibration={"source": calib_key, "frames": len(calib_frames)},
        metadata={"weights": weights_id, "cache_key": key},
        backend=backend,
    )
    return qmodel


# ---------------------------------------------------------------- pipeline adapters


def load_for_pipeline(path: str | os.PathLike, device):
    """An artifact as the pipeline's ``Classifier`` (``rtvision.models.classifier``).

    int8 artifacts run on the CPU; fp32 ones run fp32 on the CPU, fp16 + channels_last on CUDA.
    Raises the pipeline's ModelError (exit code 5) with one line for a bad artifact.
    """
    from ..errors import ModelError, UsageError
    from .classifier import Classifier, Preprocess

    device = torch.device(device)
    try:
        loaded = load_artifact(path)
    except ArtifactError as e:
        raise ModelError(str(e)) from None
    if loaded.precision == "int8" and device.type != "cpu":
        raise UsageError(f"{path} is an int8 artifact ({loaded.variant}): it runs on the CPU, use --device cpu")
    precision = loaded.precision
    module = loaded.module
    if device.type == "cuda":
        module, precision = compress.to_fp16_cuda(module, device), "fp16"
    extra = {"artifact": str(path), "artifact_variant": loaded.variant, "calibration": loaded.calibration}
    return Classifier(
        loaded.arch,
        module,
        loaded.class_names,
        Preprocess.from_dict(loaded.preprocess),
        device,
        precision,
        str(loaded.metadata.get("weights", "")),
        extra,
    )
