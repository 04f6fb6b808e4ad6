"""StridedFaceTracker: detect every n-th frame, track, re-fit and search in between; a real face
moved over a textured background, and the real clip."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
from face_scenes import (
    N_FRAMES,
    CountingDetector,
    CountingSearchDetector,
    assert_one_face_followed,
    render,
    smooth_path,
    true_box,
)

from rtvision.faces.boxes import greedy_match, iou_matrix
from rtvision.faces.detector import FacenetMTCNN
from rtvision.faces.strided import StridedFaceTracker
from rtvision.metrics import face_quality
from rtvision.types import Faces, Frame


def test_ids_stable_and_boxes_follow_the_face(detector, face_patch, background):
    centers = [smooth_path(t) for t in range(N_FRAMES)]
    frames = render(background, face_patch, centers)
    counting = CountingDetector(detector)
    st = StridedFaceTracker(counting, stride=5)
    out = st.process(frames, list(range(N_FRAMES)))
    assert len(out) == N_FRAMES
    assert all(isinstance(f, Faces) and f.track_ids is not None for f in out)
    assert all(len(f) == 1 for f in out), [len(f) for f in out]
    ids = {int(f.track_ids[0]) for f in out}
    assert len(ids) == 1, ids
    # the scheduled detections went to the detector in one batch
    assert counting.calls[0] == len(range(0, N_FRAMES, 5))
    assert st.stats.frames == N_FRAMES and st.stats.tracked >= N_FRAMES // 2
    box0 = out[0].xyxy[0]
    for t, faces in enumerate(out):
        iou = iou_matrix(faces.xyxy, true_box(box0, centers[0], centers[t]))[0, 0]
        assert iou >= 0.6, (t, iou)


def test_track_dropped_when_face_leaves(detector, face_patch, background):
    centers = [(300.0 + 28.0 * t, 230.0) for t in range(N_FRAMES)]  # gone past x=690 at t~14
    frames = render(background, face_patch, centers)
    st = StridedFaceTracker(detector, stride=10)
    out = st.process(frames, list(range(N_FRAMES)))
    assert len(out) == N_FRAMES
    assert len(out[0]) == 1 and len(out[5]) == 1
    first_id = int(out[0].track_ids[0])
    assert all(int(f.track_ids[0]) == first_id for f in out[:8] if len(f))
    assert all(len(f) == 0 for f in out[16:]), [len(f) for f in out]
    assert not [t for t in st.tracker.tracks if t.active]


def test_gap_in_indices_forces_detection(detector, face_patch, background):
    centers = [smooth_path(t) for t in range(12)]
    frames = render(background, face_patch, centers)
    indices = [0, 1, 2, 9, 10, 11]  # frames 3..8 were dropped by the source
    picked = [frames[i] for i in indices]
    counting = CountingDetector(detector)
    st = StridedFaceTracker(counting, stride=10, max_gap=3)
    out = st.process(picked, indices)
    assert len(out) == len(indices) and all(len(f) == 1 for f in out)
    assert id(picked[3]) in counting.seen  # index 9, right after the gap, was detected
    assert st.stats.gaps == 1 and st.stats.detected == 2
    box0 = out[0].xyxy[0]
    for i, faces in zip(indices, out):
        assert iou_matrix(faces.xyxy, true_box(box0, centers[0], centers[i]))[0, 0] >= 0.6


def test_frame_records_and_calls_across_batches(detector, face_patch, background):
    centers = [smooth_path(t) for t in range(8)]
    frames = [Frame(index=i, pts_s=i / 25, captured_at=0.0, image=img) for i, img in enumerate(render(background, face_patch, centers))]
    st = StridedFaceTracker(detector, stride=3)
    out = st.detect(frames[:4]) + st.detect(frames[4:])
    assert [len(f) for f in out] == [1] * 8
    assert len({int(f.track_ids[0]) for f in out}) == 1
    assert st.stats.detected == len([0, 3, 6])


def test_fast_face_keeps_its_id_through_local_search(detector, face_patch, background):
    """A face jumping its own width per processed frame (a live source dropping frames): the
    flow and the O-Net re-fit lose it; the local search finds it again, with its id and no
    extra full-frame detection, and a box on every frame. Without the search, detections
    come early."""
    centers = [(100.0 + 100.0 * t, 240.0) for t in range(5)]
    frames = render(background, face_patch, centers)
    counting = CountingSearchDetector(detector)
    st = StridedFaceTracker(counting, stride=10)
    out = st.process(frames, list(range(len(frames))))
    assert_one_face_followed(out, centers)
    assert counting.calls == [1], counting.calls  # the scheduled detection only
    # found once, the track knows the face's velocity: the re-fit at the predicted box holds it
    assert st.stats.early == 0 and st.stats.relocated >= 1 and counting.near_calls >= 1

    plain = CountingSearchDetector(detector)
    st2 = StridedFaceTracker(plain, stride=10, search=False)
    st2.process(frames, list(range(len(frames))))
    assert plain.near_calls == 0 and st2.stats.early >= 2 and len(plain.calls) >= 3


class DoubtingRefitDetector(CountingSearchDetector):
    """The re-fit never confirms a box (a face turning away from the camera, say)."""

    def refine(self, frame, xyxy):
        faces, ok = self.inner.refine(frame, xyxy)
        return faces, np.zeros_like(ok)


def test_box_the_flow_follows_rides_on_it_for_two_frames_then_is_searched_for(detector, face_patch, background):
    """A smoothly moving face whose re-fit fails on every tracked frame: it stays reported on
    its flow box, with its id, for at most FLOW_ONLY_FRAMES frames; then it is searched for near
    its track (found: relocated), never carried on the flow alone for the rest of the stride,
    and no full-frame detection is brought forward."""
    from rtvision.faces.strided import FLOW_ONLY_FRAMES

    centers = [smooth_path(t) for t in range(6)]
    frames = render(background, face_patch, centers)
    doubting = DoubtingRefitDetector(detector)
    st = StridedFaceTracker(doubting, stride=10)
    out = st.process(frames, list(range(len(frames))))
    assert_one_face_followed(out, centers)
    assert FLOW_ONLY_FRAMES == 2 and doubting.calls == [1] and st.stats.early == 0
    # frames 1-2 on the flow, frame 3 searched and found, frames 4-5 on the flow again
    assert doubting.near_calls == 1 and st.stats.searched == 1 and st.stats.relocated == 1
    assert st.stats.kept_on_flow == len(frames) - 1 - st.stats.relocated


class LazyReference:
    """facenet-pytorch at full resolution, one frame at a time, each frame computed once: the
    per-frame reference, and (being deterministic) exactly what ``StridedFaceTracker`` with
    ``FacenetMTCNN()`` as its detector would get on its detection frames."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.facenet = FacenetMTCNN()
        self._cache: dict[int, Faces] = {}
        self.asked = 0

    def at(self, i: int) -> Faces:
        if i not in self._cache:
            self._cache[i] = self.facenet.detect([self.frames[i]])[0]
        return self._cache[i]

    def detect(self, frames):
        self.asked += len(frames)
        pos = {id(f): i for i, f in enumerate(self.frames)}
        return [self.at(pos[id(f)]) for f in frames]


def test_stride_3_recall_on_real_video(faces_video):
    cap = cv2.VideoCapture(str(faces_video))
    frames = []
    while len(frames) < 30:
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    stride = 3
    ref = LazyReference(frames)
    st = StridedFaceTracker(ref, stride=stride)
    out = st.process(frames, list(range(len(frames))))
    assert ref.asked < 0.6 * len(frames)
    # scored on the frames furthest from their scheduled detection (2 frames of tracking)
    evaluated = [i for i in range(len(frames)) if i % stride == stride - 1]
    tracked = face_quality([(ref.at(i).xyxy, out[i].xyxy) for i in evaluated])
    stale = face_quality([(ref.at(i).xyxy, ref.at(i - i % stride).xyxy) for i in evaluated])
    assert tracked["tall"]["ref_boxes"] >= 40
    assert tracked["tall"]["recall"] >= 0.85, tracked
    assert tracked["tall"]["precision"] >= 0.85, tracked
    assert tracked["tall"]["recall"] > stale["tall"]["recall"], (tracked, stale)
    # ids: a face found in consecutive frames keeps its id
    same = total = 0
    for a, b in itertools.pairwise(out):
        for i, j in greedy_match(iou_matrix(a.xyxy, b.xyxy), 0.5):
            total += 1
            same += int(a.track_ids[i] == b.track_ids[j])
    assert total > 50 and same / total >= 0.97
