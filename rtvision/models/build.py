"""Build the models a run needs from its settings: device, classifier variant, face stage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..config import ModelConfig
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
        return "fp16" if device.type == "cuda" else "fp32"  # CPU default becomes int8 with the compression lab
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


def build_classifier(cfg: ModelConfig, device: torch.device, calib=None) -> Classifier:
    """The classifier variant for ``cfg``; raises WeightsUnavailable / ModelError / UsageError."""
    precision = resolve_precision(cfg.precision, device)
    module, categories, preprocess, weights_id = build_resnet(cfg.classifier, cfg.weights, cfg.labels_path)
    if precision == "int8":
        from .compress import int8_for_pipeline

        module = int8_for_pipeline(module, cfg, weights_id, preprocess, calib)
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
    faces = build_face_detector(cfg.faces, device, cfg.face_scale, cfg.face_stride, cfg.min_face)
    return Models(device, classifier, faces, warnings)
