"""The fast face mode on footage it was not tuned on: hard cuts, fast motion, still scenes, boxes the
flow can no longer follow. Real media: the generated clips (rtvision.benchmark.footage) made from
faces_1080p.mp4, and a real face crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from face_scenes import W, CountingSearchDetector, render

from rtvision.benchmark import quality as qmod
from rtvision.benchmark.footage import RECIPES, make_footage, read_frames
from rtvision.faces.boxes import iou_matrix
from rtvision.faces.flow import LKFlow
from rtvision.faces.schedule import CUT_SETTLE
from rtvision.faces.shots import CUT_CHANGE, ShotCuts
from rtvision.faces.stage import build_face_stage
from rtvision.faces.strided import StridedFaceTracker
from rtvision.faces.tracker import FaceTracker
from rtvision.metrics import MIN_FACE_HEIGHT_PX
from rtvision.types import Frame

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def footage(faces_video, tmp_path_factory):
    """The generated clips (spliced with cuts; 640x360; every 3rd frame) in a temporary folder."""
    return make_footage(faces_video, tmp_path_factory.mktemp("footage"), ["cuts", "cuts-360p", "skip3"])


@pytest.fixture(scope="module")
def cuts_frames(footage):
    frames, _ = read_frames(footage["cuts"].path)
    return frames


def frames_of(images, start: int = 0) -> list[Frame]:
    return [Frame(index=start + i, pts_s=(start + i) / 25, captured_at=0.0, image=img) for i, img in enumerate(images)]


def run_file_mode(stage, frames: list[Frame], batch: int = 4):
    """The stage as the file loop runs it: plan, detections, finish, a batch at a time; the faces
    and, per frame, (detected, cut) from the plans."""
    stage.set_live(False)
    out, booked = [], []
    for k in range(0, len(frames), batch):
        b = frames[k : k + batch]
        plan = stage.plan(b)
        out += stage.finish(b, plan, stage.detect_planned(b, plan))
        booked += list(zip(plan.detect, plan.cut))
    return out, booked


@pytest.mark.slow
def test_footage_clips_have_the_recipes_shapes(footage, faces_video, tmp_path):
    """The cuts clip: 7 segments (cuts where the metadata says), 1080p; the small one 640x360;
    skip3 forward then back; a second call reuses the files."""
    cuts = footage["cuts"]
    assert cuts.cuts == [13, 30, 41, 60, 74, 90] and len(cuts.source_frames) == 105
    frames, fps = read_frames(cuts.path)
    assert len(frames) == 105 and frames[0].shape == (1080, 1920, 3) and fps == 25
    small, _ = read_frames(footage["cuts-360p"].path)
    assert small[0].shape == (360, 640, 3) and len(small) == 105
    assert footage["skip3"].source_frames[:3] == [0, 3, 6] and footage["skip3"].source_frames[-1] == 0
    again = make_footage(faces_video, footage["cuts"].path.parent.parent, ["cuts"])
    assert again["cuts"].path == cuts.path and again["cuts"].path.stat().st_mtime_ns == cuts.path.stat().st_mtime_ns
    with pytest.raises(ValueError, match="unknown clip"):
        make_footage(faces_video, tmp_path, ["nope"])
    assert set(RECIPES) == {"cuts", "cuts-360p", "skip2", "skip3"}


@pytest.mark.slow
def test_shot_cuts_are_told_from_fast_motion(footage, cuts_frames):
    """Every cut of the spliced clips (1080p and 640x360) and nothing else is a cut; with every
    third frame dropped (fast motion, a reversal) no frame is."""
    for name, frames in (("cuts", cuts_frames), ("cuts-360p", read_frames(footage["cuts-360p"].path)[0])):
        shots = ShotCuts()
        found = [i for i, img in enumerate(frames) if shots.step(img)]
        assert found == footage[name].cuts, name
    shots = ShotCuts()
    changes = []
    for img in read_frames(footage["skip3"].path)[0]:
        assert not shots.step(img)
        changes.append(shots.last_change)
    assert max(changes) < CUT_CHANGE / 1.4  # a margin


@pytest.mark.slow
def test_every_frame_right_after_a_cut_has_boxes_on_its_faces(footage, cuts_frames, tmp_path):
    """On the spliced clip, the default fast mode reports a box (IoU >= 0.5) on every reference
    face >= 40 px of every frame right after a cut, and the old shot's tracks are gone there."""
    clip = footage["cuts"]
    after = set(clip.cuts)
    ref, _, _ = qmod.compute_references(str(clip.path), after, set(), str(tmp_path), None, CPU, progress=False)
    stage = build_face_stage("fast", CPU, resolution_wh=(1920, 1080))
    out, booked = run_file_mode(stage, frames_of(cuts_frames))
    assert [i for i, (_, cut) in enumerate(booked) if cut] == clip.cuts
    assert all(booked[i][0] for i in clip.cuts)  # each detected
    # and again CUT_SETTLE frames in (or sooner, for another reason)
    assert all(any(booked[i + k][0] for k in range(1, CUT_SETTLE + 1)) for i in clip.cuts)
    tall = 0
    for i in sorted(after):
        r = ref[i][:, :4]
        tall_ref = r[(r[:, 3] - r[:, 1]) >= MIN_FACE_HEIGHT_PX]
        tall += len(tall_ref)
        assert len(out[i]), i
        assert (iou_matrix(tall_ref, out[i].xyxy).max(axis=1) >= 0.5).all(), i
        # nothing carried over from the old shot: every box reported is one of this frame's faces
        assert (iou_matrix(out[i].xyxy, r).max(axis=1) >= 0.5).all(), i
    assert tall >= 20


@pytest.mark.slow
def test_a_still_scene_runs_fewer_detections_than_a_moving_one(faces_frames, faces_video):
    """A frame of the street clip held still for 24 frames against 24 frames of the moving street
    (every second frame): the still one is detected at the stride ceiling, the moving one sooner."""
    still_stage = build_face_stage("fast", CPU, resolution_wh=(1920, 1080))
    run_file_mode(still_stage, frames_of([faces_frames[0]] * 24))
    moving_frames = read_frames(faces_video)[0][:48:2]
    moving_stage = build_face_stage("fast", CPU, resolution_wh=(1920, 1080))
    run_file_mode(moving_stage, frames_of(moving_frames))
    still, moving = still_stage.counts(), moving_stage.counts()
    assert still["detected"] == 24 // still_stage.stride  # 0, 6, 12, 18
    assert still["motion"] == 0
    assert moving["detected"] > still["detected"] and moving["motion"] > 0
    assert moving["detections_per_100"] >= 1.5 * still["detections_per_100"]


class StuckFlow(LKFlow):
    """Optical flow that cannot follow at all: every box stays where it was, with full
    confidence (the flow locked onto the background behind a face that moved on)."""

    def move(self, prev, cur, boxes):
        return [(np.asarray(b, np.float64).copy(), 1.0) for b in boxes]


def test_a_drifting_box_is_corrected_or_dropped_within_two_frames(detector, face_patch, background):
    """A real face crop moves slowly, then jumps 60 px a frame, faster than the flow follows (it
    stays behind, confident): the box left behind is reported at most two frames, then the face
    is found again (a search) or no longer reported; never carried to the next detection."""
    xs = [200.0 + 4 * t for t in range(5)]
    for _ in range(5):
        xs.append(xs[-1] + 60.0)
    xs += [xs[-1]] * 4
    assert xs[-1] + 50 < W
    centers = [(x, 240.0) for x in xs]
    frames = render(background, face_patch, centers)
    counting = CountingSearchDetector(detector)
    st = StridedFaceTracker(counting, stride=40, tracker=FaceTracker(flow=StuckFlow()))
    out = st.process(frames, list(range(len(frames))))
    box0 = out[0].xyxy[0]
    off_frames = []
    for t, faces in enumerate(out):
        dx = round(centers[t][0] - 50) - round(centers[0][0] - 50)
        true = box0 + np.array([dx, 0, dx, 0], np.float32)
        if (iou_matrix(faces.xyxy, true[None])[:, 0] < 0.5).any():
            off_frames.append(t)
    assert off_frames, "it did drift (the test can fail)"
    assert len(off_frames) <= 2 and off_frames[-1] - off_frames[0] <= 1, off_frames
    assert counting.near_calls >= 1  # searched for before it was given up
    assert st.stats.detected == 1  # no full detection came to the rescue


@pytest.mark.slow
def test_live_cut_is_detected_in_line_and_the_old_tracks_dropped(cuts_frames, footage, tmp_path):
    """Background detections (live): the first frame of a new shot waits for no background
    detection: it is detected in line, the detection in flight is dropped, and its faces are
    reported on that very frame; CUT_SETTLE frames later a second detection of the shot starts."""
    clip = footage["cuts"]
    cut = clip.cuts[1]
    ref, _, _ = qmod.compute_references(str(clip.path), {cut}, set(), str(tmp_path), None, CPU, progress=False)
    stage = build_face_stage("fast", CPU, resolution_wh=(1920, 1080))
    stage.set_live(True)
    assert stage.background
    stage.start()
    try:
        frames = frames_of(cuts_frames[cut - 8 : cut + 1], start=cut - 8)
        out = [stage.detect([f])[0] for f in frames]
        assert stage.stats.cuts == 1
        calls = stage.stats.detect_calls
        for f in frames_of(cuts_frames[cut + 1 : cut + 1 + CUT_SETTLE], start=cut + 1):
            stage.detect([f])
    finally:
        stage.close()
    assert stage.stats.detect_calls == calls + 1 and stage.stats.cuts == 2
    r = ref[cut][:, :4]
    r = r[(r[:, 3] - r[:, 1]) >= MIN_FACE_HEIGHT_PX]
    assert len(r) >= 3
    assert (iou_matrix(r, out[-1].xyxy).max(axis=1) >= 0.5).all()
    # the old shot's tracks are gone: every box reported is one of this frame's faces
    assert (iou_matrix(out[-1].xyxy, ref[cut][:, :4]).max(axis=1) >= 0.5).all()


def test_missed_faces_are_told_apart_by_cause():
    """bench --footage explains each missed face >= 40 px: after a cut, just appeared (new), a box
    that drifted off it, or none near it; small faces and found ones are not misses."""
    from rtvision.benchmark.quality import miss_causes

    face = np.array([100, 100, 160, 170, 0.99], np.float32)  # 70 px tall
    small = np.array([300, 300, 320, 325, 0.99], np.float32)  # 25 px: not counted
    ref = {4: np.stack([face, small]), 5: np.stack([face, small]), 9: np.zeros((0, 5), np.float32),
           10: face[None], 11: face[None], 12: face[None], 13: face[None]}
    shifted = face[:4] + np.array([40, 0, 40, 0], np.float32)  # IoU 0.2 with the face
    pred = {4: face[None, :4], 5: np.zeros((0, 4)), 10: np.zeros((0, 4)), 11: shifted[None], 12: np.zeros((0, 4)),
            13: face[None, :4] + 2}
    out = miss_causes(ref, pred, cuts=[5])
    assert out["faces"] == 6 and out["missed"] == 4
    assert {c: out[c] for c in ("after_cut", "new", "drift", "lost")} == {"after_cut": 1, "new": 1, "drift": 1, "lost": 1}
    assert out["frames"] == {"after_cut": [5], "new": [10], "drift": [11], "lost": [12]}
