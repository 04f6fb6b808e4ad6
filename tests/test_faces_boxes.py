"""Box maths: IoU (torchvision's box_iou) and greedy one-to-one matching."""

from __future__ import annotations

import numpy as np

from rtvision.faces.boxes import greedy_match, iou_matrix, match_boxes, visible_share


def test_greedy_match_is_one_to_one():
    a = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    b = np.array([[1, 0, 11, 10], [0, 0, 9, 10], [21, 0, 31, 10]], np.float32)
    pairs = greedy_match(iou_matrix(a, b), 0.3)
    assert sorted(pairs) == [(0, 1), (1, 2)]  # row 0 takes its best (IoU 0.9 over 0.82)
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def reference_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The IoU formula the face code and the metrics used before box_iou (float64 numpy)."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def test_iou_is_the_numpy_formula_bit_for_bit_and_zero_for_empty_boxes():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1900, size=(60, 2)).astype(np.float32)
    wh = rng.uniform(0, 200, size=(60, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    boxes[::7, 2] = boxes[::7, 0] - 5  # inverted: no area
    boxes[1] = boxes[2] = [10, 10, 10, 10]  # empty: IoU 0 even with itself
    a, b = boxes[:30], boxes[30:]
    assert np.array_equal(iou_matrix(a, b), reference_iou(a.astype(np.float64), b.astype(np.float64)))
    assert np.array_equal(iou_matrix(boxes, boxes), reference_iou(boxes.astype(np.float64), boxes.astype(np.float64)))
    assert iou_matrix(boxes[1:3], boxes[1:3]).max() == 0.0
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 30) and iou_matrix(None, b).shape == (0, 30)
    scored = np.concatenate([a, np.ones((30, 1), np.float32)], axis=1)  # (N, 5): the score column is left out
    assert np.array_equal(iou_matrix(scored, b), iou_matrix(a, b))


def test_match_boxes_gives_the_greedy_pairs_with_their_iou():
    a = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    b = np.array([[1, 0, 11, 10], [0, 0, 9, 10], [21, 0, 31, 10]], np.float32)
    iou = iou_matrix(a, b)
    assert match_boxes(a, b, 0.3) == [(r, c, float(iou[r, c])) for r, c in greedy_match(iou, 0.3)]


def test_visible_share():
    assert visible_share(np.array([-10.0, 0, 10, 10]), 100, 100) == 0.5
    assert visible_share(np.array([0.0, 0, 10, 10]), 100, 100) == 1.0
    assert visible_share(np.array([5.0, 5, 5, 9]), 100, 100) == 0.0
