"""The pipeline's classifier: a runtime (``rtvision.backends``) with its preprocessing, class
names and a human-readable variant name; also the pieces every family shares (preprocessing,
labels files, state_dict files). The networks themselves are built in ``zoo.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torchvision

from ..argtypes import read_list_file
from ..errors import ModelError
from ..types import Labels, check_bgr
from .weights_errors import describe_load_failure

log = logging.getLogger(__name__)


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
        check_bgr(image_bgr, "a classifier input")
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


def read_labels(path: str) -> list[str]:
    try:
        names = [line.strip() for line in read_list_file(path).splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labels file {path}: {exc.__class__.__name__}") from None
    except ValueError as exc:
        raise ModelError(f"labels file {path}: {exc}, not a list of class names") from None
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
    """A ready-to-run classifier: ``prepare`` frames, then ``logits``, then ``top_k``.

    runtime: a ``rtvision.backends.ClassifierRuntime`` (torch or OpenVINO).
    name: the model's name without where it runs (e.g. ``mobilenet_v2 int8``,
    ``resnet50 pruned30 int8`` for an artifact); ``variant`` adds the backend and the device.
    """

    arch: str
    runtime: Any
    categories: list[str]
    preprocess: Preprocess
    weights_id: str = ""
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def backend(self) -> str:
        return self.runtime.backend

    @property
    def variant(self) -> str:
        """e.g. "mobilenet_v2 int8 openvino cpu", "resnet50 fp16 torch cuda", "resnet50 pruned30 int8 openvino cpu"."""
        return f"{self.name or f'{self.arch} {self.precision}'} {self.backend} {self.device.type}"

    def set_num_threads(self, n: int | None) -> None:
        self.runtime.set_num_threads(n)

    def prepare(self, images_bgr: list[np.ndarray]) -> Any:
        return self.runtime.prepare(images_bgr)

    def logits(self, batch: Any) -> torch.Tensor:
        """(N, classes) float32 logits. Raises ModelError when the model answers NaN or inf (a
        broken model must stop the run, never write NaN scores)."""
        out = self.runtime.run(batch)
        if not torch.isfinite(out).all():
            raise ModelError(f"the classifier ({self.variant}) produced non-finite outputs (NaN/inf): its weights are broken")
        return out

    def top_k(self, logits: torch.Tensor, k: int) -> list[Labels]:
        probs = torch.softmax(logits, dim=1)
        k = min(k, probs.shape[1])
        scores, ids = probs.topk(k, dim=1)
        scores, ids = scores.cpu().numpy(), ids.cpu().numpy()
        return [Labels(ids[i], scores[i], [self.categories[j] for j in ids[i]]) for i in range(len(ids))]
