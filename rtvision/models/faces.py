"""Face detection stage: facenet-pytorch MTCNN (weights from its wheel), batched over frames.

The stage interface is ``detect(frames: list[Frame]) -> list[Faces]``; "no faces" is
``Faces.empty()``, never None. Boxes are in original-frame pixels.
"""

from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np
import torch

from ..types import Faces, Frame

log = logging.getLogger(__name__)


class FaceDetector(Protocol):
    description: str

    def detect(self, frames: list[Frame]) -> list[Faces]: ...


def _group_by_size(frames: list[Frame]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(f.image.shape[:2], []).append(i)
    return groups


class FacenetFaces:
    """facenet-pytorch's MTCNN, full resolution (or ``scale``), batched over same-size frames."""

    def __init__(self, device: torch.device, scale: float = 1.0, min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN

        self.device = device
        self.scale = scale
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)
        self.description = f"facenet-mtcnn scale {scale:g}"

    def detect(self, frames: list[Frame]) -> list[Faces]:
        out: list[Faces] = [Faces.empty()] * len(frames)
        for (h, w), idx in _group_by_size(frames).items():
            imgs = []
            for i in idx:
                img = frames[i].image
                if self.scale != 1.0:
                    img = cv2.resize(img, (round(w * self.scale), round(h * self.scale)), interpolation=cv2.INTER_AREA)
                imgs.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            with torch.inference_mode():
                boxes, probs, points = self.mtcnn.detect(imgs, landmarks=True)
            for j, i in enumerate(idx):
                if boxes[j] is None:
                    continue
                b = np.asarray(boxes[j], dtype=np.float32) / self.scale
                lm = np.asarray(points[j], dtype=np.float32) / self.scale
                out[i] = Faces(b, np.asarray(probs[j], dtype=np.float32), lm)
        return out


def build_face_detector(mode: str, device: torch.device, scale: float | None = None, stride: int | None = None, min_face: int | None = None) -> FaceDetector | None:
    """The face stage for ``--faces full|fast|off``; None when off."""
    if mode == "off":
        return None
    return FacenetFaces(device, scale or 1.0)
