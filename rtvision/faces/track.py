"""One face followed across frames: :class:`Track`, and landmarks carried along with its box."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    """One face followed across frames.

    xyxy: (4,) box in original pixels at frame ``index``; velocity: (4,) box change per frame.
    confidence: in [0, 1], how well the last flow step went (1 right after a detection).
    misses: detections in a row that did not match this track (0: it is reported).
    """

    track_id: int
    xyxy: np.ndarray
    score: float
    landmarks: np.ndarray | None
    index: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    confidence: float = 1.0
    misses: int = 0
    hits: int = 1
    searches: int = 0  # local searches that failed since this track was last missed
    confirmed_xyxy: np.ndarray | None = None  # box at the last detection / re-fit / search hit
    confirmed_index: int | None = None
    unconfirmed: int = 0  # frames processed since then (moved by the flow alone)

    @property
    def active(self) -> bool:
        return self.misses == 0


def move_landmarks(lm: np.ndarray | None, old: np.ndarray, new: np.ndarray) -> np.ndarray | None:
    """Landmarks carried along with a box: same relative position inside it."""
    if lm is None:
        return None
    ow, oh = max(old[2] - old[0], 1e-6), max(old[3] - old[1], 1e-6)
    nw, nh = new[2] - new[0], new[3] - new[1]
    out = np.empty_like(lm)
    out[:, 0] = new[0] + (lm[:, 0] - old[0]) * (nw / ow)
    out[:, 1] = new[1] + (lm[:, 1] - old[1]) * (nh / oh)
    return out
