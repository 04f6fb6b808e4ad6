"""The tracker's cheap detector calls on frames of the real video: the O-Net re-fit of moved
boxes and the local search for lost faces."""

from __future__ import annotations

import numpy as np

from rtvision.faces.boxes import iou_matrix
from rtvision.faces.detector import FacenetMTCNN, FastMTCNN
from rtvision.faces.protocols import Detector, TrackableDetector
from rtvision.faces.stage import pyramid_min_face


def test_fast_mtcnn_is_a_trackable_detector_and_facenet_a_plain_one():
    assert isinstance(FastMTCNN("cpu"), TrackableDetector)
    facenet = FacenetMTCNN("cpu")
    assert isinstance(facenet, Detector) and not isinstance(facenet, TrackableDetector)


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


def test_detect_near_finds_the_full_detectors_faces_from_shifted_boxes(faces_frames):
    """The local search of a tracker's lost face: boxes moved by 60% of their height (beyond
    the O-Net re-fit's reach) get back the full-frame detection's own boxes, since the search
    runs P-Net on windows of the same pyramid levels; a box on the road finds nothing."""
    det = FastMTCNN("cpu", min_face_size=pyramid_min_face(28))
    frame = faces_frames[2]
    full = det.detect([frame])[0]
    tall = full.xyxy[(full.xyxy[:, 3] - full.xyxy[:, 1]) >= 40]
    assert len(tall) >= 4
    rng = np.random.default_rng(1)
    angle = rng.uniform(0, 2 * np.pi, size=len(tall))
    h = tall[:, 3] - tall[:, 1]
    d = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 0.6 * h[:, None]
    shifted = (tall + np.concatenate([d, d], axis=1)).astype(np.float32)
    assert np.diag(iou_matrix(shifted, tall)).max() < 0.5
    near, ok = det.detect_near(frame, shifted)
    iou = np.diag(iou_matrix(near.xyxy, tall))
    assert ok.mean() >= 0.75, (ok, iou)
    assert np.median(iou[ok]) >= 0.99 and iou[ok].min() >= 0.5, iou
    assert near.landmarks.shape == (len(tall), 5, 2)
    _, refit_ok = det.refine(frame, shifted)
    assert ok.sum() > refit_ok.sum()  # what the re-fit alone cannot recover
    _, ok_bg = det.detect_near(frame, np.array([[1500, 950, 1600, 1050]], np.float32))
    assert not ok_bg.any()


def test_detect_near_at_half_scale_maps_back_to_full_resolution(faces_frames):
    """With ``--face-scale`` the search works in the detector's pixels and answers in the
    frame's: boxes moved half a face sideways come back as the half-scale detection's boxes."""
    det = FastMTCNN("cpu", scale=0.5)
    frame = faces_frames[2]
    full = det.detect([frame])[0]
    tall = full.xyxy[(full.xyxy[:, 3] - full.xyxy[:, 1]) >= 40]
    assert len(tall) >= 3
    h = tall[:, 3] - tall[:, 1]
    moved = (tall + np.stack([0.5 * h, 0 * h, 0.5 * h, 0 * h], axis=1)).astype(np.float32)
    near, ok = det.detect_near(frame, moved)
    assert ok.mean() >= 0.75
    assert np.diag(iou_matrix(near.xyxy, tall))[ok].min() >= 0.9


def test_detect_near_device_path_matches_host_path(faces_frames):
    """The GPU's way (table and windows computed with torch on the device, here the CPU) gives
    the host path's boxes."""
    frame = faces_frames[2]
    host = FastMTCNN("cpu", min_face_size=pyramid_min_face(28))
    dev = FastMTCNN("cpu", min_face_size=pyramid_min_face(28), host_preprocess=False)
    full = host.detect([frame])[0]
    h = full.xyxy[:, 3] - full.xyxy[:, 1]
    moved = (full.xyxy + np.stack([0.4 * h, 0.2 * h, 0.4 * h, 0.2 * h], axis=1)).astype(np.float32)
    a, ok_a = host.detect_near(frame, moved)
    b, ok_b = dev.detect_near(frame, moved)
    assert ok_a.sum() >= 3 and (ok_a == ok_b).all()
    assert np.allclose(a.xyxy, b.xyxy, atol=1e-3) and np.allclose(a.scores, b.scores, atol=1e-5)
