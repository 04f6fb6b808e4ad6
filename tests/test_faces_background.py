"""Background detections (live sources): the helper thread, late merges, size changes, failures."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch
from face_scenes import (
    H,
    W,
    CountingSearchDetector,
    render,
    smooth_path,
    true_box,
)

from rtvision.faces.boxes import iou_matrix
from rtvision.faces.stage import build_face_stage
from rtvision.faces.strided import StridedFaceTracker
from rtvision.types import Frame


class SlowDetector(CountingSearchDetector):
    """A detector whose full detections take ``delay`` seconds more, on whatever thread; fails
    from the ``fail_from``-th detection on when asked to."""

    def __init__(self, inner, delay: float, fail_from: int | None = None) -> None:
        super().__init__(inner)
        self.delay = delay
        self.fail_from = fail_from
        self.threads: list[str] = []

    def detect(self, frames):
        self.threads.append(threading.current_thread().name)
        if self.fail_from is not None and len(self.threads) >= self.fail_from:
            raise RuntimeError("fake detector failure")
        time.sleep(self.delay)
        return super().detect(frames)


def helper_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtvision-faces")]


def test_background_detections_keep_a_face_and_find_a_new_one(detector, face_patch, background):
    """Background mode (live sources, started with ``start()``): the first frame is detected in
    line, later detections on the helper thread while frames are tracked, merged when done. A moving face keeps one id
    and its box on every frame; a face appearing at frame 6 is found a few frames later (the
    detection's time) at its place, with an id of its own; no face ever gets two boxes; the
    helper thread is joined on close."""
    centers = [smooth_path(t) for t in range(26)]
    frames = render(background, face_patch, centers)
    ph, pw = face_patch.shape[:2]
    still = (W - pw - 20, 20)  # the second face's top-left corner, away from the first's path
    for img in frames[6:]:
        img[still[1] : still[1] + ph, still[0] : still[0] + pw] = face_patch
    slow = SlowDetector(detector, delay=0.1)
    st = StridedFaceTracker(slow, stride=4)
    st.set_background(True)
    st.start()
    assert st.background
    out = []
    for i, img in enumerate(frames):
        out += st.process([img], [i])
        time.sleep(0.03)  # a camera's pace, roughly
    st.close()
    assert not helper_threads()
    assert slow.threads[0] == threading.current_thread().name  # the first detection, in line
    assert len(slow.threads) >= 3 and all(n.startswith("rtvision-faces") for n in slow.threads[1:])
    assert st.stats.late >= 2 and st.stats.detected == st.stats.late + 1
    box0 = out[0].xyxy[0]
    first_id = int(out[0].track_ids[0])
    for t, faces in enumerate(out):
        on_a = iou_matrix(faces.xyxy, true_box(box0, centers[0], centers[t]))[:, 0]
        assert on_a.max() >= 0.6, t  # the moving face, on every frame
        assert int(faces.track_ids[int(on_a.argmax())]) == first_id
        assert (on_a >= 0.3).sum() == 1  # one box per face
    b_box = box0 + np.array([still[0] - round(centers[0][0] - pw / 2), still[1] - round(centers[0][1] - ph / 2)] * 2, np.float32)
    found = [t for t, faces in enumerate(out) if (iou_matrix(faces.xyxy, b_box[None])[:, 0] >= 0.6).any()]
    assert found and found[0] <= 6 + 12, found  # found a few frames after it appeared
    assert found == list(range(found[0], len(out)))  # and kept from then on
    ids_b = {int(out[t].track_ids[int(iou_matrix(out[t].xyxy, b_box[None])[:, 0].argmax())]) for t in found}
    assert len(ids_b) == 1 and first_id not in ids_b


def test_background_mode_survives_a_change_of_frame_size(detector, face_patch, background):
    big = render(background, face_patch, [smooth_path(t) for t in range(16)])
    small = [cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA) for img in big[8:]]
    st = StridedFaceTracker(SlowDetector(detector, delay=0.05), stride=2)
    st.set_background(True)
    st.start()
    out = []
    for i, img in enumerate(big[:8] + small):
        out += st.process([img], [i])
        time.sleep(0.02)
    st.close()
    assert len(out) == 16 and all(len(f) == 1 for f in out[:8])
    assert sum(len(f) == 1 for f in out[8:]) >= 6  # found again at the new size
    assert all((f.xyxy[:, 2] <= W // 2 + 5).all() for f in out[9:] if len(f))


def test_background_detection_failure_is_raised_and_the_helper_joined(detector, face_patch, background):
    frames = render(background, face_patch, [smooth_path(t) for t in range(40)])
    failing = SlowDetector(detector, delay=0.0, fail_from=2)  # the first (in line) works, the next fails
    st = StridedFaceTracker(failing, stride=2)
    st.set_background(True)
    st.start()
    with pytest.raises(RuntimeError, match="fake detector failure"):
        for i, img in enumerate(frames):
            st.process([img], [i])
            time.sleep(0.01)
    st.close()
    assert not helper_threads()


def test_background_detections_need_start_and_close_joins_the_helper(detector, face_patch, background):
    """The helper thread is the stage's to start and close: without ``start()`` the first
    background detection fails with a clear error; the face stage of a live run starts it and
    joins it on ``close()`` (idempotent); a stage that is not in background mode starts nothing."""
    frames = render(background, face_patch, [smooth_path(t) for t in range(6)])
    st = StridedFaceTracker(CountingSearchDetector(detector), stride=2)
    st.set_background(True)
    with pytest.raises(RuntimeError, match="start"):
        for i, img in enumerate(frames):
            st.process([img], [i])
    st.close()

    stage = build_face_stage("fast", torch.device("cpu"), stride=2)
    stage.set_live(True)
    assert stage.background
    stage.start()
    out = []
    for i, img in enumerate(frames):
        out += stage.detect([Frame(i, i / 25, 0.0, img)])
        time.sleep(0.02)
    assert helper_threads() and all(len(f) == 1 for f in out)
    stage.close()
    stage.close()
    assert not helper_threads()
    stage.set_live(False)
    stage.start()
    stage.detect([Frame(len(frames), 1.0, 0.0, frames[0])])
    assert not stage.background and not helper_threads()
    stage.close()


@pytest.mark.parametrize("wait_s", [1.0, 0.0])
def test_a_live_stream_back_at_another_size_is_detected_at_once(faces_frames, wait_s):
    """The real clip at 1920x1080, then (a stream reconnecting) at 1280x720: both flow at 960 px,
    so the flow images alone do not show the change. The first 720p frame is detected in line
    (it used to have no faces for several frames), and no box of the old size is reported: with
    the detection in flight finished during the reconnect (wait 1 s) or still running (no wait)."""
    stage = build_face_stage("fast", torch.device("cpu"), resolution_wh=(1920, 1080))
    stage.set_live(True)
    stage.start()
    small = (1280, 720)
    try:
        for i in range(8):
            stage.detect([Frame(i, i / 25, time.monotonic(), faces_frames[i])])
            time.sleep(0.04)
        time.sleep(wait_s)
        out = []
        for i in range(8, 14):  # the clip played back (the fixture has 8 frames)
            img = cv2.resize(faces_frames[15 - i], small, interpolation=cv2.INTER_AREA)
            out.append(stage.detect([Frame(i, i / 25, time.monotonic(), img)])[0])
            time.sleep(0.04)
        reference = stage.detector.detect([cv2.resize(faces_frames[7], small, interpolation=cv2.INTER_AREA)])[0]
    finally:
        stage.close()
    assert len(reference) >= 5
    assert len(out[0]) >= len(reference) - 1, (len(out[0]), len(reference))  # detected at once
    matched = iou_matrix(reference.xyxy, out[0].xyxy).max(axis=1) >= 0.5
    assert matched.sum() >= len(reference) - 1
    for f in out:  # never a box of the old size: in the frame, and not tiny (a half-scale box)
        assert (f.xyxy[:, 2] <= small[0] + 5).all() and (f.xyxy[:, 3] <= small[1] + 5).all()
