"""Face-box quality against a reference detector: IoU, one-to-one matching, recall and precision.

Boxes are ``xyxy`` in original-frame pixels, shape (N, 4). A reference face is *found* when a
predicted box overlaps it with IoU >= ``iou_threshold`` (0.5 by default), each box matched at
most once (greedy, highest IoU first: the usual detection-benchmark rule). IoU and matching are
``rtvision.faces.boxes``' (the tracker's own).

* recall    = matched reference boxes / reference boxes
* precision = matched predicted boxes / predicted boxes
* mean IoU  = mean IoU of the matched pairs (how exact the boxes found are)

The ``min_height`` subset (faces >= 40 px tall by default) counts only reference boxes at least
that tall for recall, and only predicted boxes at least that tall for precision (a tall
prediction counts as correct when it matches any reference box, of any size). Heights are
``y2 - y1`` in pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .faces.boxes import as_boxes, iou_matrix, match_boxes

__all__ = ["as_boxes", "iou_matrix", "match_boxes", "box_heights", "BoxCounts", "frame_counts", "face_quality", "top1_agreement"]

IOU_THRESHOLD = 0.5
MIN_FACE_HEIGHT_PX = 40.0


def box_heights(boxes) -> np.ndarray:
    b = as_boxes(boxes)
    return b[:, 3] - b[:, 1]


@dataclass
class BoxCounts:
    """Counts behind recall and precision (add them up over frames)."""

    ref: int = 0  # reference boxes considered
    ref_found: int = 0  # of those, matched by a prediction
    pred: int = 0  # predicted boxes considered
    pred_correct: int = 0  # of those, matched to a reference box
    iou_sum: float = 0.0  # IoU summed over the matched reference boxes considered

    def __iadd__(self, other: BoxCounts) -> BoxCounts:
        self.ref += other.ref
        self.ref_found += other.ref_found
        self.pred += other.pred
        self.pred_correct += other.pred_correct
        self.iou_sum += other.iou_sum
        return self

    @property
    def recall(self) -> float:
        """Share of reference boxes found; NaN without reference boxes."""
        return self.ref_found / self.ref if self.ref else float("nan")

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the matched reference boxes with their predictions; NaN without matches."""
        return self.iou_sum / self.ref_found if self.ref_found else float("nan")

    @property
    def precision(self) -> float:
        """Share of predicted boxes that match a reference box; NaN without predictions."""
        return self.pred_correct / self.pred if self.pred else float("nan")

    def to_dict(self) -> dict:
        return {
            "recall": self.recall,
            "precision": self.precision,
            "mean_iou": self.mean_iou,
            "ref_boxes": self.ref,
            "ref_found": self.ref_found,
            "pred_boxes": self.pred,
            "pred_correct": self.pred_correct,
        }


def frame_counts(
    ref, pred, iou_threshold: float = IOU_THRESHOLD, min_height: float | None = None
) -> BoxCounts:
    """Counts for one frame; with ``min_height`` only boxes at least that tall (see module doc)."""
    ref_b, pred_b = as_boxes(ref), as_boxes(pred)
    matches = match_boxes(ref_b, pred_b, iou_threshold)
    found_r = {r: iou for r, _, iou in matches}
    correct_p = {p for _, p, _ in matches}
    ref_keep = np.ones(len(ref_b), bool)
    pred_keep = np.ones(len(pred_b), bool)
    if min_height is not None:
        ref_keep = box_heights(ref_b) >= min_height
        pred_keep = box_heights(pred_b) >= min_height
    return BoxCounts(
        ref=int(ref_keep.sum()),
        ref_found=sum(1 for r in found_r if ref_keep[r]),
        iou_sum=sum(iou for r, iou in found_r.items() if ref_keep[r]),
        pred=int(pred_keep.sum()),
        pred_correct=sum(1 for p in correct_p if pred_keep[p]),
    )


def face_quality(
    pairs: Iterable[tuple[object, object]],
    iou_threshold: float = IOU_THRESHOLD,
    min_height: float = MIN_FACE_HEIGHT_PX,
) -> dict:
    """Recall / precision over frames, overall and for faces >= ``min_height`` px tall.

    pairs: ``(reference_boxes, predicted_boxes)`` per frame.
    """
    overall, tall = BoxCounts(), BoxCounts()
    frames = 0
    for ref, pred in pairs:
        frames += 1
        overall += frame_counts(ref, pred, iou_threshold)
        tall += frame_counts(ref, pred, iou_threshold, min_height)
    return {
        "frames": frames,
        "iou_threshold": iou_threshold,
        "min_height_px": min_height,
        "overall": overall.to_dict(),
        "tall": tall.to_dict(),
    }


def top1_agreement(a: Iterable[int], b: Iterable[int]) -> float:
    """Share of positions where two sequences of top-1 class ids agree; NaN when empty."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")
    if not a:
        return float("nan")
    return sum(int(x == y) for x, y in zip(a, b)) / len(a)
