"""Frame inputs of the face code: a frame's image and index, frames grouped by size, and the
detection scale (frames resized for detection, boxes mapped back to original-frame pixels).

A frame is a ``Frame`` record or an HxWx3 uint8 BGR image (numpy, as OpenCV gives it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..types import Faces, Frame


def as_image(f: Any) -> np.ndarray:
    """The HxWx3 uint8 BGR image of a ``Frame`` or of an image; ValueError for anything else."""
    img = f.image if isinstance(f, Frame) else f
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {img.shape if isinstance(img, np.ndarray) else type(img)}")
    return img


def frame_indices(frames: list[Any], last: int | None) -> list[int]:
    """Source indices of ``frames``: a ``Frame``'s own, else the next after ``last`` (consecutive)."""
    start = -1 if last is None else last
    return [int(f.index) if isinstance(f, Frame) else start + 1 + i for i, f in enumerate(frames)]


def group_by_size(images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Positions of the images of each (height, width), in order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape[:2], []).append(i)
    return groups


def detect_grouped(images: list[np.ndarray], run: Callable[[list[np.ndarray]], list[Faces]]) -> list[Faces]:
    """``run`` on each group of same-size images; the results back in the images' order."""
    out: list[Faces] = [Faces.empty()] * len(images)
    for idx in group_by_size(images).values():
        for i, faces in zip(idx, run([images[i] for i in idx])):
            out[i] = faces
    return out


def resize_for_detection(images: list[np.ndarray], scale: float) -> tuple[list[np.ndarray], float, float]:
    """Frames resized by ``scale`` (``cv2.INTER_AREA``) and the exact per-axis factors
    ``(sx, sy)`` of the integer resized size; unchanged frames and 1.0 when ``scale == 1``."""
    if scale == 1.0:
        return images, 1.0, 1.0
    h, w = images[0].shape[:2]
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    return [cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA) for img in images], rw / w, rh / h


def to_original(faces: Faces, sx: float, sy: float) -> Faces:
    """Boxes and landmarks from resized-frame pixels back to original-frame pixels."""
    if (sx == 1.0 and sy == 1.0) or len(faces) == 0:
        return faces
    lm = None if faces.landmarks is None else faces.landmarks / np.array([sx, sy], np.float32)
    return Faces(faces.xyxy / np.array([sx, sy, sx, sy], np.float32), faces.scores, lm, faces.track_ids)
