"""Box maths shared by the face code and ``rtvision.metrics``: IoU, one-to-one matching, the
share of a box inside the frame.

Boxes are ``xyxy`` (N, 4), in pixels. A box with ``x2 < x1`` or ``y2 < y1`` has no area.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def as_boxes(boxes) -> np.ndarray:
    """(N, 4) float64 view of ``boxes`` (None or empty gives (0, 4); extra columns, such as a
    score, are left out)."""
    if boxes is None:
        return np.zeros((0, 4), np.float64)
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    return arr.reshape(-1, arr.shape[-1])[:, :4]


def _no_negative_sides(b: np.ndarray) -> torch.Tensor:
    # torchvision's box areas assume x2 >= x1, y2 >= y1; an inverted box becomes an empty one
    return torch.from_numpy(np.concatenate([b[:, :2], np.maximum(b[:, 2:], b[:, :2])], axis=1))


def iou_matrix(a, b) -> np.ndarray:
    """(Na, Nb) float64 intersection over union of two sets of xyxy boxes
    (``torchvision.ops.box_iou`` in float64); 0 where both boxes are empty."""
    a, b = as_boxes(a), as_boxes(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    iou = box_iou(_no_negative_sides(a), _no_negative_sides(b)).numpy()
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, col) pairs with IoU >= threshold, highest IoU first (ties: row-major)."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


def match_boxes(ref, pred, iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(ref_index, pred_index, iou)`` with IoU >= threshold, greedy by IoU."""
    iou = iou_matrix(ref, pred)
    return [(r, p, float(iou[r, p])) for r, p in greedy_match(iou, iou_threshold)]


def visible_share(b: np.ndarray, w: int, h: int) -> float:
    """The share of box ``b``'s (4,) area inside a ``w x h`` frame (0 for an empty box)."""
    area = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    if area <= 0:
        return 0.0
    iw = max(min(b[2], w) - max(b[0], 0.0), 0.0)
    ih = max(min(b[3], h) - max(b[1], 0.0), 0.0)
    return iw * ih / area
