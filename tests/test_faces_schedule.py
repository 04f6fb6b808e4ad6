"""The detection schedule: stride, gaps, restarts, size changes, coarse detections."""

from __future__ import annotations

import numpy as np
from face_scenes import CountingDetector

from rtvision.faces.schedule import Schedule
from rtvision.faces.strided import StridedFaceTracker
from rtvision.types import Faces


def test_schedule_books_stride_gaps_restarts_and_size_changes():
    """Detections at the first frame, every ``stride`` processed frames, after a gap longer than
    ``max_gap``, after the indices go back and after a size change; every other one coarse."""
    small, big = np.zeros((8, 8, 3), np.uint8), np.zeros((16, 8, 3), np.uint8)
    s = Schedule()
    plan, booked = s.book([small] * 5, [0, 1, 2, 3, 4], stride=3, max_gap=3, fine_every=2)
    assert plan.indices == [0, 1, 2, 3, 4] and plan.detect == [True, False, False, True, False] and booked.gaps == 0
    assert plan.coarse == [False, False, False, True, False]
    plan, booked = s.book([small] * 2, [9, 10], stride=3, max_gap=3, fine_every=2)  # 5..8 dropped
    assert plan.detect == [True, False] and plan.coarse == [False, False] and booked.gaps == 1
    plan, _ = s.book([small, big, big], [2, 3, 4], stride=3, max_gap=3, fine_every=2)  # restart, then a new size
    assert plan.detect == [True, True, False] and plan.coarse == [False, False, False]


class CoarseRecordingDetector:
    """A trackable detector that records which frames (by their pixel value) got a full and which
    a coarse detection; it never finds a face."""

    description = "coarse recording"

    def __init__(self) -> None:
        self.full: list[int] = []
        self.coarse: list[int] = []

    def detect(self, frames):
        self.full.extend(int(f[0, 0, 0]) for f in frames)
        return [Faces.empty() for _ in frames]

    def detect_coarse(self, frames):
        self.coarse.extend(int(f[0, 0, 0]) for f in frames)
        return [Faces.empty() for _ in frames]

    def coarse_blind_below(self):
        return 0.0

    def refine(self, frame, xyxy):  # never asked: no face is found, so none is tracked
        raise AssertionError("refine")

    def detect_near(self, frame, xyxy):
        raise AssertionError("detect_near")


def test_only_every_fine_every_th_detection_is_full():
    """stride 4, fine_every 2: detections at 0, 4, 8, 12 are full, coarse, full, coarse (the
    schedule counts across batches); after a restart the first detection is full again."""
    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(16)]
    det = CoarseRecordingDetector()
    st = StridedFaceTracker(det, stride=4, fine_every=2)
    for k in range(0, 16, 3):  # batches of 3 frames: the schedule does not follow the batches
        st.process(frames[k : k + 3], list(range(k, min(k + 3, 16))))
    assert det.full == [0, 8] and det.coarse == [4, 12]
    assert st.stats.coarse == 2 and st.stats.detected == 4
    st.process(frames[:5], list(range(5)))  # the source restarted
    assert det.full == [0, 8, 0] and det.coarse == [4, 12, 4]
    plain = CountingDetector(CoarseRecordingDetector())  # no detect_coarse: every detection is full
    st2 = StridedFaceTracker(plain, stride=4, fine_every=2)
    st2.process(frames, list(range(16)))
    assert plain.inner.full == [0, 4, 8, 12] and st2.fine_every == 1 and st2.stats.coarse == 0


def test_a_new_shot_is_detected_on_its_first_frame_and_again_cut_settle_frames_in():
    """A hard cut (a different picture) is detected on its first frame and again CUT_SETTLE frames
    into the shot, both full (never coarse), both counted as brought forward by the cut; then
    the stride resumes from the second one. A detection that comes in between for another reason
    (here a gap) is the second one: no third."""
    from rtvision.faces.schedule import CUT_SETTLE

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (36, 64, 3), np.uint8)
    b = 255 - a  # every pixel changed: a cut
    s = Schedule()
    plan, booked = s.book([a] * 3 + [b] * 9, list(range(12)), stride=6, max_gap=6, fine_every=2)
    cut = 3
    assert plan.cut == [i == cut for i in range(12)]
    assert [i for i, d in enumerate(plan.detect) if d] == [0, cut, cut + CUT_SETTLE, cut + CUT_SETTLE + 6]
    assert not any(plan.coarse[i] for i in (0, cut, cut + CUT_SETTLE)) and plan.coarse[cut + CUT_SETTLE + 6]
    assert booked.cuts == 2 and booked.gaps == 0 and booked.motion == 0
    s2 = Schedule()
    plan, booked = s2.book([a] * 3 + [b] * 3, [0, 1, 2, 3, 20, 21], stride=6, max_gap=6, fine_every=1)
    assert [i for i, d in enumerate(plan.detect) if d] == [0, 3, 4] and booked.cuts == 1 and booked.gaps == 1
