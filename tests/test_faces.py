"""Face modes and the O-Net refinement of tracked boxes, on frames of the real video."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from rtvision.metrics import face_quality, iou_matrix
from rtvision.models.faces import TrackedFaces, build_face_detector, pyramid_min_face
from rtvision.models.fast_mtcnn import FacenetMTCNN, FastMTCNN
from rtvision.types import Frame


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


def test_coarse_detection_finds_every_face_but_the_smallest(faces_frames):
    """detect_coarse skips the finest pyramid level (one P-Net pass fewer): on real frames it
    finds every face the full detection finds that is at least 40 px tall (a face of 28-40 px
    may go), and nothing the full detection does not find."""
    det = FastMTCNN("cpu", min_face_size=pyramid_min_face(28))
    passes = []
    forward = det.pnet.forward
    det.pnet.forward = lambda x: passes.append(tuple(x.shape[2:])) or forward(x)
    for frame in (faces_frames[0], faces_frames[4]):
        passes.clear()
        full = det.detect([frame])[0]
        full_passes = list(passes)
        passes.clear()
        coarse = det.detect_coarse([frame])[0]
        assert passes == full_passes[1:]  # all levels but the finest (the first, largest)
        assert len(full) >= 5 and len(coarse) <= len(full)
        tall = np.flatnonzero(full.xyxy[:, 3] - full.xyxy[:, 1] >= 40)
        assert len(tall) >= 4
        iou = iou_matrix(full.xyxy, coarse.xyxy)
        assert (iou[tall].max(axis=1) >= 0.5).all()
        assert (iou.max(axis=0) >= 0.5).all()  # no face the full detection lacks


def test_fast_mode_looks_for_the_smallest_faces_every_second_detection_on_the_cpu():
    fast = build_face_detector("fast", torch.device("cpu"), resolution_wh=(1920, 1080))
    assert fast.tracker.fine_every == 2 and "smallest faces every 2" in fast.description
    fast.set_live(True)  # live sources: the full pyramid on every detection, unless asked otherwise
    assert fast.tracker.fine_every == 1
    fast.set_live(False)
    assert fast.tracker.fine_every == 2
    assert build_face_detector("fast", torch.device("cpu"), small_face_every=1).tracker.fine_every == 1
    explicit = build_face_detector("fast", torch.device("cpu"), small_face_every=3)
    explicit.set_live(True)
    assert explicit.tracker.fine_every == 3
    facenet = build_face_detector("fast", torch.device("cpu"), backend="facenet")
    assert facenet.tracker.fine_every == 1  # facenet-pytorch's MTCNN has no coarse detection


def test_default_fast_mode_recall_on_real_video(faces_video):
    """The CPU's default fast face stage (stride 4, smallest faces every second detection,
    re-fit, local search) on 24 frames of the real video, against facenet-pytorch's MTCNN on
    every frame: a result for every frame, ids, and recall/precision with conservative bounds
    (the bench reports the real figures over the whole clip)."""
    cap = cv2.VideoCapture(str(faces_video))
    frames = [cap.read()[1] for _ in range(24)]
    cap.release()
    assert all(f is not None for f in frames)
    fast = build_face_detector("fast", torch.device("cpu"), resolution_wh=(1920, 1080))
    out = []
    for k in range(0, 24, 4):
        out += fast.detect([Frame(index=i, pts_s=i / 25, captured_at=0.0, image=frames[i]) for i in range(k, k + 4)])
    assert len(out) == 24 and all(f.track_ids is not None for f in out)
    assert fast.stats.detected == 6 and fast.stats.coarse == 3
    reference = FacenetMTCNN("cpu")
    q = face_quality([(reference.detect([frames[i]])[0].xyxy, out[i].xyxy) for i in range(24)])
    assert q["tall"]["ref_boxes"] >= 100
    assert q["tall"]["recall"] >= 0.9 and q["tall"]["precision"] >= 0.9, q
    assert q["overall"]["recall"] >= 0.85, q


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
