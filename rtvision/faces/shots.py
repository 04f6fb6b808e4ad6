"""Shot changes (hard cuts) and how much a frame changed: a tiny normalized grey thumbnail per frame.

At a cut every track of the old shot is wrong at once, and the new shot's faces are unknown
until a detection: the tracking face stage detects on the first frame of a new shot and drops
the old tracks that detection does not re-find (:mod:`rtvision.faces.strided`).

:func:`thumbnail` shrinks a frame to ``THUMB_WH`` grey pixels, normalized to zero mean and unit
spread (a change of exposure or of stage lighting is not a cut); :func:`change` is the mean
absolute difference of two thumbnails. Measured on the generated footage
(:mod:`rtvision.benchmark.footage`, made from the shared 1080p street clip): consecutive frames
of one shot differ by 0.06 (median) and at most 0.15; with every second or third frame dropped
(fast motion) by at most 0.24 and 0.29; across a cut by 0.80 to 0.94 (spliced segments,
mirrored, zoomed, at 1080p and 640x360). ``CUT_CHANGE`` sits between. A histogram distance
(HSV, Bhattacharyya) separated them far less well (0.06 within a shot against 0.10 at the
weakest cut) and does not see a mirrored shot at all.

Costs ~0.3 ms a 1080p frame (a strided subsample, then an area resize of that).
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB_WH = (64, 36)
CUT_CHANGE = 0.5
_SPREAD_MIN = 4.0  # grey levels: a flat frame (black) is not amplified into noise


def thumbnail(img: np.ndarray) -> np.ndarray:
    """(36, 64) float32: ``img`` (HxWx3 uint8 BGR) in grey, shrunk, zero mean, unit spread."""
    h, w = img.shape[:2]
    step = max(1, min(h // (4 * THUMB_WH[1]), w // (4 * THUMB_WH[0])))
    small = cv2.resize(img[::step, ::step], THUMB_WH, interpolation=cv2.INTER_AREA)
    g = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return (g - g.mean()) / max(float(g.std()), _SPREAD_MIN)


def change(a: np.ndarray, b: np.ndarray) -> float:
    """How much two thumbnails differ (mean absolute difference; 0: the same picture)."""
    return float(np.abs(a - b).mean())


class ShotCuts:
    """Frame after frame: whether each starts a new shot, and how much it changed.

    threshold: a change at least this large is a cut (see the module doc).
    """

    def __init__(self, threshold: float = CUT_CHANGE) -> None:
        self.threshold = float(threshold)
        self._prev: np.ndarray | None = None
        self.last_change = 0.0

    def reset(self) -> None:
        """Forget the previous frame (the next one is no cut)."""
        self._prev = None
        self.last_change = 0.0

    def step(self, img: np.ndarray) -> bool:
        """Whether ``img`` starts a new shot (never the first frame); :attr:`last_change` is
        its change from the previous frame (0 for the first)."""
        t = thumbnail(img)
        prev, self._prev = self._prev, t
        self.last_change = 0.0 if prev is None else change(prev, t)
        return self.last_change >= self.threshold
