"""ResNet image classifier built through torchvision's weights API.

The classifier carries what it needs to run: the module, its preprocessing (taken from the
weights' own transforms), its class names and a human-readable variant name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from ..errors import ModelError
from ..types import Labels
from .weights_errors import describe_load_failure

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


class WeightsUnavailable(Exception):
    """ImageNet weights are neither cached nor downloadable (offline)."""


@dataclass(frozen=True)
class Preprocess:
    """The weights' eval transform: resize the short side, centre-crop, normalize (RGB, 0..1).

    Taken from ``Weights.transforms()`` so it matches what the weights were trained with.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_weights(cls, weights: torchvision.models.WeightsEnum) -> Preprocess:
        t = weights.transforms()
        return cls(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))

    def to_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]))

    def crop_uint8(self, image_bgr: np.ndarray) -> np.ndarray:
        """(crop, crop, 3) uint8 RGB: the centre square that resize+crop would keep, resized once.

        Cropping in the original frame first and resizing only the crop gives the same pixels as
        resize-then-crop while touching fewer of them.
        """
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {image_bgr.shape} {image_bgr.dtype}")
        h, w = image_bgr.shape[:2]
        side = min(h, w, max(1, round(min(h, w) * self.crop / self.resize)))  # the crop in original pixels
        y0, x0 = (h - side) // 2, (w - side) // 2
        roi = image_bgr[y0 : y0 + side, x0 : x0 + side]
        k = min(2, side // self.crop)
        if k >= 2:
            # Area averaging, fast: OpenCV's INTER_AREA is ~15x slower at a fractional ratio
            # (5 ms for 1043->224) than at an integer one, so resize bilinearly to 2*crop first (0.3 ms).
            roi = cv2.resize(roi, (self.crop * k, self.crop * k), interpolation=cv2.INTER_LINEAR)
            out = cv2.resize(roi, (self.crop, self.crop), interpolation=cv2.INTER_AREA)
        else:
            out = cv2.resize(roi, (self.crop, self.crop), interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)

    def batch(self, images_bgr: list[np.ndarray], device: torch.device | str = "cpu", dtype=torch.float32) -> torch.Tensor:
        """(N, 3, crop, crop) normalized tensor on ``device``; uint8 travels, floats are made there."""
        device = torch.device(device)
        if len(images_bgr) == 0:
            return torch.empty((0, 3, self.crop, self.crop), dtype=dtype, device=device)
        arr = np.stack([self.crop_uint8(im) for im in images_bgr])
        t = torch.from_numpy(arr)
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        t = t.permute(0, 3, 1, 2).to(dtype).div_(255.0)
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, 3, 1, 1)
        t = t.sub_(mean).div_(std)
        # The uint8 HWC data is already channels_last in memory: CUDA keeps it, the CPU models want NCHW.
        return t.contiguous(memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)


def imagenet_categories(arch: str = "resnet50") -> list[str]:
    """ImageNet class names, available offline in the weights' metadata."""
    return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])


def read_labels(path: str) -> list[str]:
    p = Path(path)
    try:
        names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labels file {path}: {exc.__class__.__name__}") from None
    if not names:
        raise ModelError(f"labels file {path} is empty")
    return names


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """A torchvision-format state_dict from disk, loaded with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated zip, not a checkpoint...
        raise ModelError(describe_load_failure(path, exc)) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} is not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


@dataclass
class Classifier:
    """A ready-to-run classifier.

    variant: e.g. "resnet50 fp32 cpu", "resnet50 int8 cpu", "resnet50 fp16 cuda".
    """

    arch: str
    module: nn.Module
    categories: list[str]
    preprocess: Preprocess
    device: torch.device
    precision: str = "fp32"
    weights_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def variant(self) -> str:
        """e.g. "resnet50 int8 cpu", "resnet50 fp16 cuda", "resnet50 pruned30 int8 cpu" (artifact)."""
        name = self.extra.get("artifact_variant") or f"{self.arch} {self.precision}"
        return f"{name} {self.device.type}"

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32

    def prepare(self, images_bgr: list[np.ndarray]) -> torch.Tensor:
        return self.preprocess.batch(images_bgr, self.device, self.input_dtype)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch).float()

    def top_k(self, logits: torch.Tensor, k: int) -> list[Labels]:
        probs = torch.softmax(logits, dim=1)
        k = min(k, probs.shape[1])
        scores, ids = probs.topk(k, dim=1)
        scores, ids = scores.cpu().numpy(), ids.cpu().numpy()
        return [Labels(ids[i], scores[i], [self.categories[j] for j in ids[i]]) for i in range(len(ids))]


def build_resnet(arch: str, weights: str, labels_path: str | None = None) -> tuple[nn.Module, list[str], Preprocess, str]:
    """(module in eval mode on CPU, class names, preprocessing, weights id).

    weights: ``imagenet`` (torchvision's cache, downloading with a progress bar when online) or a
    path to a torchvision-format state_dict. Raises WeightsUnavailable when ImageNet weights cannot
    be had, ModelError for a missing or broken file.
    """
    if arch not in ARCHS:
        raise ModelError(f"unknown classifier {arch!r}; choose from {', '.join(ARCHS)}")
    default = torchvision.models.get_model_weights(arch).DEFAULT
    preprocess = Preprocess.from_weights(default)
    if weights == "imagenet":
        try:
            state = default.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:
            raise WeightsUnavailable(f"ImageNet weights for {arch} unavailable ({exc.__class__.__name__})") from None
        weights_id = f"imagenet:{default}"
    else:
        state = load_state_dict_file(weights)
        st = Path(weights).stat()
        weights_id = f"file:{Path(weights).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise ModelError(f"{weights}: no fc.weight; not a torchvision {arch} state_dict")
    num_classes = int(fc.shape[0])
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(describe_load_failure(weights, exc, arch, state)) from None
    model.eval()
    if labels_path:
        categories = read_labels(labels_path)
        if len(categories) != num_classes:
            raise ModelError(f"{labels_path} has {len(categories)} names but the model has {num_classes} classes")
    elif num_classes == len(default.meta["categories"]):
        categories = list(default.meta["categories"])
    else:
        categories = [f"class_{i}" for i in range(num_classes)]
    return model, categories, preprocess, weights_id


def place(module: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """Move a float module to ``device``; fp16 + channels_last on CUDA."""
    module = module.to(device)
    if precision == "fp16":
        if device.type != "cuda":
            raise ModelError("fp16 needs a CUDA device")
        module = module.half().to(memory_format=torch.channels_last)
    return module.eval()
