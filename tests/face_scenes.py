"""Synthetic face scenes for the tracking tests: a real face (from the shared portrait) moved over
a textured background, and detector wrappers that count what they were asked.

The fixtures (``face_patch``, ``background``, ``detector``) are registered by conftest.py for the test modules
that use them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_file

from rtvision.faces.boxes import iou_matrix
from rtvision.faces.detector import FastMTCNN
from rtvision.types import Faces, Frame

W, H = 640, 480
N_FRAMES = 30


@pytest.fixture(scope="module")
def face_patch() -> np.ndarray:
    """Paul Rudd's head from the shared portrait, about 100 px wide."""
    img = cv2.imread(str(shared_file("paul_rudd.jpg")))
    assert img is not None
    det = FastMTCNN().detect([img])[0]
    assert len(det) == 1
    x1, y1, x2, y2 = det.xyxy[0]
    mx, my = 0.15 * (x2 - x1), 0.1 * (y2 - y1)
    crop = img[int(max(0, y1 - my)) : int(y2 + my), int(max(0, x1 - mx)) : int(x2 + mx)]
    scale = 100.0 / crop.shape[1]
    return cv2.resize(crop, (100, round(crop.shape[0] * scale)), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 255, size=(H // 8, W // 8, 3), dtype=np.uint8)
    bg = cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(-25, 25, size=(H, W, 3))
    return np.clip(bg.astype(np.int32) + fine, 0, 255).astype(np.uint8)


def render(background: np.ndarray, patch: np.ndarray, centers: list[tuple[float, float]]) -> list[np.ndarray]:
    """Frames with ``patch`` pasted (clipped at the borders) centred at integer positions."""
    ph, pw = patch.shape[:2]
    frames = []
    for cx, cy in centers:
        img = background.copy()
        x0, y0 = round(cx - pw / 2), round(cy - ph / 2)
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        dx1, dy1 = min(W, x0 + pw), min(H, y0 + ph)
        if dx1 > dx0 and dy1 > dy0:
            img[dy0:dy1, dx0:dx1] = patch[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
        frames.append(img)
    return frames


def smooth_path(t: int) -> tuple[float, float]:
    return 140.0 + 11.0 * t, 240.0 + 40.0 * np.sin(t / 5.0)


def true_box(box0: np.ndarray, c0: tuple[float, float], ct: tuple[float, float]) -> np.ndarray:
    """The frame-0 detection box moved with the pasted patch (rounded like ``render``)."""
    dx = round(ct[0] - 50) - round(c0[0] - 50)
    dy = round(ct[1]) - round(c0[1])
    return box0 + np.array([dx, dy, dx, dy], np.float32)


def assert_one_face_followed(out: list[Faces], centers: list[tuple[float, float]], min_iou: float = 0.7) -> None:
    """One box on every frame, one track id throughout, each box on the pasted face."""
    assert [len(f) for f in out] == [1] * len(out)
    assert len({int(f.track_ids[0]) for f in out}) == 1
    box0 = out[0].xyxy[0]
    for t, faces in enumerate(out):
        assert iou_matrix(faces.xyxy, true_box(box0, centers[0], centers[t]))[0, 0] >= min_iou, t


class CountingDetector:
    """A detector wrapper that records how often, and on which frames, it was asked (a plain
    Detector, whatever ``inner`` offers)."""

    description = "counting"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.seen: list[int] = []  # id() of each frame image given

    def detect(self, frames):
        self.calls.append(len(frames))
        self.seen.extend(id(f.image if isinstance(f, Frame) else f) for f in frames)
        return self.inner.detect(frames)


@pytest.fixture(scope="module")
def detector() -> FastMTCNN:
    return FastMTCNN()


class CountingSearchDetector(CountingDetector):
    """CountingDetector that also offers what a tracker uses of FastMTCNN (a TrackableDetector):
    the coarse detection, the O-Net re-fit and the local search."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.near_calls = 0

    def detect_coarse(self, frames):
        return self.inner.detect_coarse(frames)

    def coarse_blind_below(self):
        return self.inner.coarse_blind_below()

    def refine(self, frame, xyxy):
        return self.inner.refine(frame, xyxy)

    def detect_near(self, frame, xyxy):
        self.near_calls += 1
        return self.inner.detect_near(frame, xyxy)
