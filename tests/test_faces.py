"""Face modes and the O-Net refinement of tracked boxes, on frames of the real video."""

from __future__ import annotations

import numpy as np
import torch

from rtvision.metrics import iou_matrix
from rtvision.models.faces import TrackedFaces, build_face_detector, pyramid_min_face
from rtvision.models.fast_mtcnn import FastMTCNN


def test_pyramid_min_face_keeps_reference_levels():
    assert pyramid_min_face(20) == 20
    assert abs(pyramid_min_face(28) - 20 / 0.709) < 1e-6  # drops exactly the finest level
    assert abs(pyramid_min_face(40) - 20 / 0.709**2) < 1e-6
    assert pyramid_min_face(27) == 20


def test_modes_build_what_they_say():
    cpu = torch.device("cpu")
    assert build_face_detector("off", cpu) is None
    full = build_face_detector("full", cpu)
    assert isinstance(full, FastMTCNN) and full.scale == 1.0 and full.min_face_size == 20
    fast = build_face_detector("fast", cpu, resolution_wh=(1920, 1080))
    assert isinstance(fast, TrackedFaces) and fast.stride > 1
    assert fast.detector.scale == 1.0 and fast.detector.min_face_size > 20
    big = build_face_detector("fast", cpu, min_face=80, resolution_wh=(1920, 1080))
    assert big.detector.scale == 0.25  # only big faces wanted: detect on a quarter-size frame


def test_refine_recovers_boxes_moved_off_faces(faces_frames):
    det = FastMTCNN("cpu")
    ref = det.detect([faces_frames[1]])[0]
    assert len(ref) >= 5
    rng = np.random.default_rng(0)
    h = ref.xyxy[:, 3:4] - ref.xyxy[:, 1:2]
    moved = ref.xyxy + rng.uniform(-0.15, 0.15, size=ref.xyxy.shape).astype(np.float32) * h
    refined, ok = det.refine(faces_frames[1], moved)
    before = np.diag(iou_matrix(moved, ref.xyxy))
    after = np.diag(iou_matrix(refined.xyxy, ref.xyxy))
    assert ok.mean() >= 0.8
    assert after[ok].mean() > before[ok].mean() + 0.05, (before, after)
    assert refined.landmarks.shape == (len(ref), 5, 2)
    # A box on the road, not on a face: O-Net says no.
    _, ok_bg = det.refine(faces_frames[1], np.array([[1500, 950, 1600, 1050]], np.float32))
    assert not ok_bg.any()
