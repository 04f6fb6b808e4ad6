"""Build the models a run needs from its settings: device, classifier variant, face stage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig, default_cache_dir
from ..errors import UsageError
from .classifier import Classifier, WeightsUnavailable, build_resnet, place
from .faces import FaceDetector, build_face_detector

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp16 on CUDA, int8 on CPU. Explicit choices must fit the device."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "int8"
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs CUDA; on CPU use int8 or fp32")
    if precision == "int8" and device.type != "cpu":
        raise UsageError("--precision int8 runs on the CPU; use --device cpu, or fp16 on CUDA")
    return precision


@dataclass
class Models:
    """What the worker runs, plus what the user must be told about it."""

    device: torch.device
    classifier: Classifier | None
    faces: FaceDetector | None
    warnings: list[str] = field(default_factory=list)

    @property
    def classifier_variant(self) -> str:
        return self.classifier.variant if self.classifier is not None else "off"

    @property
    def face_mode(self) -> str:
        return getattr(self.faces, "description", "off") if self.faces is not None else "off"


def calibration_frames(source, info, n: int) -> tuple[str, Callable[[], list[np.ndarray]]]:
    """(cache key part, frame getter) for int8 calibration on the user's own source.

    Files: ``n`` frames spread over the whole clip, read through a separate capture. Live
    sources: the next ``n`` frames of the (already open) source, read before capture starts.
    """
    if info is not None and info.kind == "file":
        path = Path(info.name).resolve()
        st = path.stat()
        from .compress import sample_video_frames

        return f"file:{path}:{st.st_size}:{int(st.st_mtime)}", lambda: sample_video_frames(str(path), n)

    def read_live() -> list[np.ndarray]:
        frames = []
        for _ in range(n * 3):
            img = source.read()
            if img is not None:
                frames.append(img)
            if len(frames) == n:
                break
        return frames

    return f"{info.kind}:{info.name}" if info is not None else "unknown", read_live


def int8_cached(module, cfg: ModelConfig, weights_id: str, preprocess, calib) -> torch.nn.Module:
    """The int8 classifier, calibrated on ``cfg.calib_frames`` frames of the source, cached on
    disk (keyed by architecture, weights and calibration settings) so a second start is instant."""
    from .artifact import cached_int8

    source, info = calib if calib is not None else (None, None)
    if info is None or (source is None and info.kind != "file"):
        raise UsageError("int8 needs calibration frames from a source")
    key, frames = calibration_frames(source, info, cfg.calib_frames)
    cache_dir = cfg.cache_dir or str(default_cache_dir())
    try:
        return cached_int8(module, cfg.classifier, weights_id, key, frames, preprocess.to_dict(), cache_dir, n_frames=cfg.calib_frames)
    except OSError as exc:
        log.warning("int8 cache unavailable (%s); quantizing without it", exc)
        from .compress import quantize_int8

        return quantize_int8(module, frames(), preprocess.to_dict())


def build_classifier(cfg: ModelConfig, device: torch.device, calib=None) -> Classifier:
    """The classifier variant for ``cfg``; raises WeightsUnavailable / ModelError / UsageError."""
    precision = resolve_precision(cfg.precision, device)
    module, categories, preprocess, weights_id = build_resnet(cfg.classifier, cfg.weights, cfg.labels_path)
    if precision == "int8":
        module = int8_cached(module, cfg, weights_id, preprocess, calib)
    else:
        module = place(module, device, precision)
    return Classifier(cfg.classifier, module, categories, preprocess, device, precision, weights_id)


def build_models(cfg: ModelConfig, source=None, info=None) -> Models:
    device = resolve_device(cfg.device)
    warnings: list[str] = []
    classifier = None
    if cfg.model_path:
        from .artifact import load_for_pipeline

        classifier = load_for_pipeline(cfg.model_path, device)
    elif cfg.classifier != "none":
        try:
            classifier = build_classifier(cfg, device, calib=(source, info))
        except WeightsUnavailable as exc:
            msg = (
                f"CLASSIFIER DISABLED: {exc}; running the face detector alone. "
                f"Fix: --weights FILE (a torchvision {cfg.classifier} state_dict), or run once online to cache them."
            )
            log.warning(msg)
            warnings.append(msg)
    faces = build_face_detector(
        cfg.faces, device, cfg.face_scale, cfg.face_stride, cfg.min_face,
        resolution_wh=info.resolution_wh if info is not None else None, backend=cfg.face_backend,
        small_face_every=cfg.small_face_every, background=cfg.face_background,
    )
    return Models(device, classifier, faces, warnings)
