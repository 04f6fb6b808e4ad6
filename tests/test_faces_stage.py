"""The face stage: modes, the protocols it meets, the fast mode's defaults and recall."""

from __future__ import annotations

import cv2
import torch
from fakes import FakeFaces, FakeTrackedFaces

from rtvision.faces.detector import FacenetMTCNN, FastMTCNN
from rtvision.faces.protocols import FaceStage, PlannedFaceStage
from rtvision.faces.stage import EveryFrameFaces, TrackedFaces, build_face_stage, pyramid_min_face
from rtvision.metrics import face_quality
from rtvision.types import Frame


def test_pyramid_min_face_keeps_reference_levels():
    assert pyramid_min_face(20) == 20
    assert abs(pyramid_min_face(28) - 20 / 0.709) < 1e-6  # drops exactly the finest level
    assert abs(pyramid_min_face(40) - 20 / 0.709**2) < 1e-6
    assert pyramid_min_face(27) == 20


def test_modes_build_what_they_say():
    cpu = torch.device("cpu")
    assert build_face_stage("off", cpu) is None
    full = build_face_stage("full", cpu)
    assert isinstance(full, EveryFrameFaces) and isinstance(full.detector, FastMTCNN)
    assert full.detector.scale == 1.0 and full.detector.min_face_size == 20 and full.description == "full: fast-mtcnn scale 1"
    fast = build_face_stage("fast", cpu, resolution_wh=(1920, 1080))
    assert isinstance(fast, TrackedFaces) and fast.stride > 1
    assert fast.detector.scale == 1.0 and fast.detector.min_face_size > 20
    big = build_face_stage("fast", cpu, min_face=80, resolution_wh=(1920, 1080))
    assert big.detector.scale == 0.25  # only big faces wanted: detect on a quarter-size frame


def test_min_face_is_honoured_by_every_mode(faces_frames):
    """--min-face with --faces full, or with an explicit --face-scale, leaves out the pyramid
    levels that find only smaller faces (it was ignored: 56 faces under 200 px on 8 frames with
    --min-face 200). On a real frame: only the bigger faces are found."""
    cpu = torch.device("cpu")
    every = build_face_stage("full", cpu).detector.detect([faces_frames[0]])[0]
    heights = every.xyxy[:, 3] - every.xyxy[:, 1]
    assert len(every) >= 5 and heights.min() < 60
    for stage in (build_face_stage("full", cpu, min_face=200),
                  build_face_stage("fast", cpu, min_face=200, scale=1.0, resolution_wh=(1920, 1080)),
                  build_face_stage("full", cpu, min_face=200, scale=0.5)):
        assert stage.detector.min_face_size > 20, stage.description
        got = stage.detector.detect([faces_frames[0]])[0]
        h = got.xyxy[:, 3] - got.xyxy[:, 1]
        # MTCNN's smallest face is not a sharp edge (its boxes are regressed), hence the margin
        assert 1 <= len(got) < len(every) and (h >= 0.4 * 200).all(), (stage.description, h)
    assert build_face_stage("full", cpu, min_face=20).detector.min_face_size == 20


def test_stages_and_the_test_fakes_meet_the_protocols():
    cpu = torch.device("cpu")
    full, fast = build_face_stage("full", cpu), build_face_stage("fast", cpu)
    assert isinstance(full, PlannedFaceStage) and not full.background
    assert isinstance(fast, PlannedFaceStage) and not fast.background  # until a live run says so
    assert isinstance(FakeFaces(), FaceStage) and not isinstance(FakeFaces(), PlannedFaceStage)
    assert isinstance(FakeTrackedFaces(), PlannedFaceStage)


def test_fast_mode_looks_for_the_smallest_faces_every_second_detection_on_the_cpu():
    """Files and live sources detecting in the background: every second detection is a full
    one; live detections in line (--no-face-background): every one."""
    fast = build_face_stage("fast", torch.device("cpu"), resolution_wh=(1920, 1080))
    assert fast.tracker.fine_every == 2 and "smallest faces every 2" in fast.description
    fast.set_live(True)  # live sources detecting in the background: the same cadence
    assert fast.tracker.fine_every == 2 and fast.background
    fast.set_live(False)
    assert fast.tracker.fine_every == 2
    inline = build_face_stage("fast", torch.device("cpu"), resolution_wh=(1920, 1080), background=False)
    inline.set_live(True)  # live detections in line: the full pyramid on every detection
    assert inline.tracker.fine_every == 1 and not inline.background
    assert "smallest faces every 2 detections (live: every 1)" in inline.description
    inline.set_live(False)
    assert inline.tracker.fine_every == 2
    assert build_face_stage("fast", torch.device("cpu"), small_face_every=1).tracker.fine_every == 1
    explicit = build_face_stage("fast", torch.device("cpu"), small_face_every=3)
    explicit.set_live(True)
    assert explicit.tracker.fine_every == 3
    facenet = build_face_stage("fast", torch.device("cpu"), backend="facenet")
    assert facenet.tracker.fine_every == 1  # facenet-pytorch's MTCNN has no coarse detection


def test_default_fast_mode_recall_on_real_video(faces_video):
    """The CPU's default fast face stage (a detection at most every 6 frames, sooner with motion
    but never within 2, smallest faces every second detection, re-fit, local search) on 24 frames of the real video, against facenet-pytorch's MTCNN on
    every frame: a result for every frame, ids, and recall/precision with conservative bounds
    (the bench reports the real figures over the whole clip)."""
    cap = cv2.VideoCapture(str(faces_video))
    frames = [cap.read()[1] for _ in range(24)]
    cap.release()
    assert all(f is not None for f in frames)
    fast = build_face_stage("fast", torch.device("cpu"), resolution_wh=(1920, 1080))
    out = []
    for k in range(0, 24, 4):
        out += fast.detect([Frame(index=i, pts_s=i / 25, captured_at=0.0, image=frames[i]) for i in range(k, k + 4)])
    assert len(out) == 24 and all(f.track_ids is not None for f in out)
    d = fast.stats
    assert 24 // 6 <= d.detected <= 24 // 2
    assert d.motion >= 1  # a street scene: the motion budget brings detections forward
    assert d.coarse == d.detected // 2  # the finest pyramid levels every second detection
    reference = FacenetMTCNN("cpu")
    q = face_quality([(reference.detect([frames[i]])[0].xyxy, out[i].xyxy) for i in range(24)])
    assert q["tall"]["ref_boxes"] >= 100
    assert q["tall"]["recall"] >= 0.9 and q["tall"]["precision"] >= 0.9, q
    assert q["overall"]["recall"] >= 0.85, q


def test_the_cpu_fast_defaults_reach_every_frame_size():
    """--faces fast on the CPU: stride 6, sooner with motion (budget 0.15, from 2 frames), at 1080p,
    720p and 640x360 alike."""
    cpu = torch.device("cpu")
    for wh in ((1920, 1080), (1280, 720), (640, 360)):
        t = build_face_stage("fast", cpu, resolution_wh=wh).tracker
        assert (t.stride, t.min_stride, t.motion_budget) == (6, 2, 0.15), wh
