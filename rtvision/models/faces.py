"""The face stage: MTCNN (facenet-pytorch's weights from its wheel) in one of three modes.

``--faces``:

* ``full``  the reference behaviour: the detector on every frame at full resolution.
* ``fast``  tuned for live use: detection at the scale that keeps the smallest wanted face
            (``--min-face``, original pixels) at MTCNN's 20 px minimum, every ``--face-stride``-th
            frame (or earlier when tracking loses confidence), with optical-flow tracking and
            stable track ids in between.
* ``off``   no face stage.

The stage interface is ``detect(frames: list[Frame]) -> list[Faces]``; "no faces" is
``Faces.empty()``, never None; boxes are in original-frame pixels. The detector backend is
``FastMTCNN`` (batched torch re-implementation) or ``FacenetMTCNN`` (facenet-pytorch itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..types import Faces, Frame
from .fast_mtcnn import DEFAULT_MIN_FACE_SIZE, FacenetMTCNN, FastMTCNN, choose_scale
from .tracker import StridedFaceTracker

BACKENDS = ("fast", "facenet")


class FaceDetector(Protocol):
    description: str

    def detect(self, frames: list[Frame]) -> list[Faces]: ...


@dataclass(frozen=True)
class FastDefaults:
    """``--faces fast`` defaults per device kind (measured with ``rtvision bench``; see README)."""

    min_face: int
    stride: int


FAST_DEFAULTS = {"cpu": FastDefaults(min_face=32, stride=3), "cuda": FastDefaults(min_face=20, stride=2)}


class TrackedFaces:
    """A detector run every ``stride``-th frame with tracking in between (the stage interface)."""

    def __init__(self, detector, stride: int) -> None:
        self.detector = detector
        self.tracker = StridedFaceTracker(detector, stride=stride)
        self.stride = stride
        self.description = f"{detector.description}, stride {stride} + tracking"

    @property
    def stats(self):
        return self.tracker.stats

    def detect(self, frames: list[Frame]) -> list[Faces]:
        return self.tracker.process(frames, [f.index for f in frames])


def build_face_detector(
    mode: str,
    device: torch.device,
    scale: float | None = None,
    stride: int | None = None,
    min_face: int | None = None,
    resolution_wh: tuple[int, int] | None = None,
    backend: str = "fast",
) -> FaceDetector | None:
    """The face stage for ``--faces full|fast|off`` (None when off); explicit knobs win over the mode."""
    if mode == "off":
        return None
    if backend not in BACKENDS:
        raise ValueError(f"face backend must be one of {BACKENDS}")
    if mode == "full":
        s, k = scale or 1.0, stride or 1
    elif mode == "fast":
        d = FAST_DEFAULTS.get(device.type, FAST_DEFAULTS["cpu"])
        mf = min_face or d.min_face
        s = scale or (choose_scale(resolution_wh, mf) if resolution_wh else min(1.0, DEFAULT_MIN_FACE_SIZE / mf))
        k = stride or d.stride
    else:
        raise ValueError(f"unknown face mode {mode!r}")
    cls = FastMTCNN if backend == "fast" else FacenetMTCNN
    det = cls(device, scale=round(s, 4))
    det.description = f"{mode}: {det.description}"
    return TrackedFaces(det, k) if k > 1 else det
