"""Box matching, recall and precision on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtvision.metrics import (
    face_quality,
    frame_counts,
    iou_matrix,
    match_boxes,
    top1_agreement,
)

REF = np.array([[100, 100, 160, 180], [300, 50, 350, 110], [500, 400, 520, 425]], np.float32)  # 80, 60, 25 px tall


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (1, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_identical_boxes_give_recall_and_precision_one():
    q = face_quality([(REF, REF.copy())])
    assert q["overall"]["recall"] == 1.0
    assert q["overall"]["precision"] == 1.0
    assert q["overall"]["ref_boxes"] == 3


def test_shift_below_iou_threshold_gives_zero():
    shifted = REF + np.array([40, 0, 40, 0], np.float32)  # IoU of the 60-wide box: 20/100 = 0.2
    assert iou_matrix(REF[:1], shifted[:1])[0, 0] < 0.5
    q = face_quality([(REF, shifted)])
    assert q["overall"]["recall"] == 0.0
    assert q["overall"]["precision"] == 0.0


def test_small_shift_above_threshold_still_matches():
    shifted = REF + np.array([2, 2, 2, 2], np.float32)
    assert face_quality([(REF[:2], shifted[:2])])["overall"]["recall"] == 1.0


def test_mean_iou_averages_the_matched_pairs_only():
    shifted = REF[:2] + np.array([2, 2, 2, 2], np.float32)
    q = face_quality([(REF, shifted), (REF[:1], REF[:1].copy())])  # REF[2] unmatched
    expected = [float(iou_matrix(REF[i : i + 1], shifted[i : i + 1])[0, 0]) for i in range(2)] + [1.0]
    assert 0.5 < min(expected[:2]) < 1.0
    assert q["overall"]["mean_iou"] == pytest.approx(np.mean(expected))
    assert np.isnan(face_quality([(REF, None)])["overall"]["mean_iou"])


def test_missing_reference_face_lowers_recall_by_its_share():
    # frame 1: 3 reference faces, 2 found; frame 2: 2 reference faces, both found -> 4/5
    pairs = [(REF, REF[:2]), (REF[:2], REF[:2])]
    q = face_quality(pairs)
    assert q["overall"]["recall"] == pytest.approx(4 / 5)
    assert q["overall"]["precision"] == 1.0
    assert q["frames"] == 2


def test_precision_counts_false_positives():
    extra = np.array([[800, 800, 860, 880], [900, 100, 950, 160]], np.float32)
    pred = np.concatenate([REF, extra])
    c = frame_counts(REF, pred)
    assert (c.ref, c.ref_found, c.pred, c.pred_correct) == (3, 3, 5, 3)
    assert c.recall == 1.0
    assert c.precision == pytest.approx(3 / 5)


def test_matching_is_one_to_one():
    # two predictions on the same reference face: one is a duplicate (false positive)
    pred = np.stack([REF[0], REF[0] + 1])
    matches = match_boxes(REF[:1], pred)
    assert len(matches) == 1
    c = frame_counts(REF[:1], pred)
    assert c.precision == pytest.approx(0.5)
    assert c.recall == 1.0


def test_tall_subset_only_counts_faces_at_least_40px():
    # the 25 px face is missed: overall recall 2/3, recall for >= 40 px faces 2/2
    q = face_quality([(REF, REF[:2])])
    assert q["overall"]["recall"] == pytest.approx(2 / 3)
    assert q["tall"]["recall"] == 1.0
    assert q["tall"]["ref_boxes"] == 2
    # a tall face missed: 1 of 2 tall faces found; the small one found does not count there
    q = face_quality([(REF, REF[1:])])
    assert q["tall"]["recall"] == pytest.approx(0.5)
    assert q["overall"]["recall"] == pytest.approx(2 / 3)
    # a small false positive does not lower precision for the tall subset
    small_fp = np.array([[10, 10, 30, 30]], np.float32)
    q = face_quality([(REF[:2], np.concatenate([REF[:2], small_fp]))])
    assert q["overall"]["precision"] == pytest.approx(2 / 3)
    assert q["tall"]["precision"] == 1.0


def test_empty_frames_give_nan_not_errors():
    q = face_quality([(np.zeros((0, 4)), np.zeros((0, 4))), (None, None)])
    assert math.isnan(q["overall"]["recall"])
    assert math.isnan(q["overall"]["precision"])
    q = face_quality([(REF, None)])
    assert q["overall"]["recall"] == 0.0
    assert math.isnan(q["overall"]["precision"])


def test_top1_agreement():
    assert top1_agreement([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(0.75)
    assert math.isnan(top1_agreement([], []))
    with pytest.raises(ValueError):
        top1_agreement([1], [1, 2])
