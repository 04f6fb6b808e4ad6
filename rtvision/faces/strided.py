"""Detect every ``stride``-th frame and track in between: :class:`StridedFaceTracker`.

The detector runs on the frames the schedule books (:mod:`rtvision.faces.schedule`; the
detection frames of one call in one batch), and the tracker (:mod:`rtvision.faces.tracker`)
carries the faces over the frames between. With a detector that offers them
(:class:`~rtvision.faces.protocols.TrackableDetector`: FastMTCNN), each tracked box is re-fitted
by the detector's last stage, and a face the re-fit (with the flow) or a detection lost is
searched for near its track (``detect_near``) instead of bringing a full-frame detection
forward; a box only the re-fit doubts rides on its flow box for at most ``FLOW_ONLY_FRAMES``
frames, then is searched for (or dropped), never carried to the next detection. Without
them, low tracking confidence brings the detection forward. Live sources may detect in the
background (:mod:`rtvision.faces.background`). It returns ``Faces`` with ``track_ids`` for
every frame.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..types import Faces
from .background import BackgroundDetections
from .frames import as_image, frame_indices
from .protocols import Detector, TrackableDetector
from .schedule import CUT_SETTLE, Plan, Schedule
from .shots import ShotCuts
from .tracker import FaceTracker

# A box the re-fit no longer calls a face is carried by the flow alone for at most this many
# frames; then it is searched for (detect_near), and not found, no longer reported. The flow
# follows a face's texture, but a face that moves faster than it can follow leaves its box on
# the background, which the flow then follows just as confidently.
FLOW_ONLY_FRAMES = 2


@dataclass
class StrideStats:
    """What :class:`StridedFaceTracker` did, over its lifetime."""

    frames: int = 0
    detected: int = 0  # frames given to the detector
    tracked: int = 0  # frames answered by the tracker alone
    early: int = 0  # detections brought forward by low tracking confidence
    gaps: int = 0  # detections forced by a gap in frame indices
    cuts: int = 0  # detections brought forward by a shot change (the old tracks re-verified)
    motion: int = 0  # detections brought forward by motion (the picture changed by motion_budget)
    detect_calls: int = 0
    refined: int = 0  # tracked frames whose boxes the detector's last stage refined
    searched: int = 0  # lost tracks searched for near their expected place (detect_near)
    relocated: int = 0  # of those, found again
    kept_on_flow: int = 0  # tracked boxes the re-fit doubted, kept on their flow box (flow confident)
    coarse: int = 0  # scheduled detections without the finest pyramid level (fine_every > 1)
    late: int = 0  # background detections merged into a later frame (background mode)

    @property
    def detections_per_100(self) -> float:
        """Frames given to the detector per 100 frames processed (NaN before the first)."""
        return 100.0 * self.detected / self.frames if self.frames else float("nan")

    def counts(self) -> dict[str, float]:
        """The counters, and :attr:`detections_per_100`."""
        return {**dataclasses.asdict(self), "detections_per_100": self.detections_per_100}


class StridedFaceTracker:
    """Detect every ``stride``-th frame, track in between.

    detector: a :class:`Detector` (FacenetMTCNN), or a :class:`TrackableDetector` (FastMTCNN),
        which enables ``fine_every``, ``refine``, ``search`` and background mode; decided here,
        once (:attr:`trackable`).
    stride: the most frames from one scheduled detection to the next (1: detect every frame).
    motion_budget: a detection comes sooner, once the frames since the last one have changed
        this much in all (:func:`rtvision.faces.shots.change`, summed), but not sooner than
        ``min_stride`` frames after it; None: every ``stride`` frames. A frame that starts a
        new shot (a hard cut) is always detected, and the old tracks that detection does not
        re-find are dropped.
    min_confidence: a tracked frame whose lowest track confidence falls below this is detected
        right away (an extra detection; the stride schedule is unchanged).
    max_gap: a jump in frame index larger than this (dropped frames) forces a detection;
        default ``stride``.
    fine_every: only every ``fine_every``-th scheduled detection (and the first, and the first
        after a restart) is a full one; the others are coarse (``detect_coarse``: no finest
        pyramid level, so no faces under ~1.41x the smallest). Faces already tracked are carried
        and re-fitted in between whatever their size; a new face of the smallest sizes is found
        up to ``stride * fine_every`` frames after it appears instead of ``stride``.
    refine: on tracked frames, re-fit the flow-moved boxes with the detector's ``refine``
        (MTCNN's O-Net).
    search: a box the re-fit no longer calls a face, and the flow no longer follows well
        either, is searched for nearby with the detector's ``detect_near``; without it, low
        flow confidence brings the next detection forward.
    background_detector: the detector of background mode's detections (default ``detector``;
        re-fits and local searches always use ``detector``).
    """

    def __init__(
        self,
        detector: Detector,
        stride: int = 3,
        min_confidence: float = 0.5,
        max_gap: int | None = None,
        tracker: FaceTracker | None = None,
        refine: bool = True,
        search: bool = True,
        fine_every: int = 1,
        motion_budget: float | None = None,
        min_stride: int = 1,
        flow_only: int = FLOW_ONLY_FRAMES,
        background_detector: Detector | None = None,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if min_stride < 1:
            raise ValueError(f"min_stride must be >= 1, got {min_stride}")
        self.detector = detector
        # Background mode's detections (not its re-fits and local searches): a detector whose
        # detections take less time (FastMTCNN.with_pnet_threshold), since a new face waits for
        # one to end.
        self.background_detector = background_detector if background_detector is not None else detector
        self.motion_budget = None if motion_budget is None else float(motion_budget)
        self.min_stride = int(min_stride)
        self.flow_only = int(flow_only)
        self.trackable = isinstance(detector, TrackableDetector)
        self.stride = int(stride)
        self.min_confidence = float(min_confidence)
        self.max_gap = int(max_gap) if max_gap is not None else self.stride
        self.tracker = tracker if tracker is not None else FaceTracker()
        # Between detections, a detector that can (FastMTCNN.refine) re-fits each tracked box
        # with its last stage: exact boxes for a few ms instead of flow-only drift.
        self.refine = bool(refine) and self.trackable
        # A track the re-fit loses (fast motion, blur) is searched for with the whole cascade in
        # a small window around it (FastMTCNN.detect_near) instead of a full-frame detection:
        # a few ms, and the track keeps its id. Not found and not followed by the flow, it
        # stops being reported until the next scheduled detection re-finds or drops it.
        self.search = self.refine and bool(search)
        self.fine_every = 1
        self.set_fine_every(fine_every)
        self.stats = StrideStats()
        self._calls_lock = threading.Lock()  # detect_calls, counted by detect_planned on helper threads
        self._last_index: int | None = None  # the last frame processed (tracked or detected)
        self._schedule = Schedule()
        # Background mode (live sources): detections run on a helper thread, merged when done.
        self.background = False
        self._jobs = BackgroundDetections()
        self._since_submit: int | None = None  # frames processed since the last background detection
        self._moved = 0.0  # background mode: the frames' changes summed since the last detection
        self._shots = ShotCuts()  # background mode (files book cuts with the schedule)
        self._settle = False  # background mode: a cut was detected, and its second detection is due
        self._bg_wh: tuple[int, ...] | None = None  # background mode: the last frame's size
        self._submitted = 0

    def set_background(self, on: bool) -> None:
        """Background mode, for live sources: a due detection runs on a helper thread
        (``rtvision-faces``, created by :meth:`start`) while the following frames are tracked,
        and is merged into the tracks of the frame at which it is done
        (:meth:`FaceTracker.merge_late`): no frame waits for a detection, so a detection no
        longer costs a live frame ~100 ms of latency (and the frames dropped meanwhile). A new
        face appears a few frames later (the detection's time) and is carried to the current
        frame by the flow. Needs the re-fit and the local search (a trackable detector); off:
        every detection in line, as for files."""
        on = bool(on) and self.search
        if not on:
            self.close()
        self.background = on

    def share_detections(self, pool) -> None:
        """Background detections on ``pool`` (a ``ThreadPoolExecutor`` shared by the stages of
        several streams, owned by the caller) instead of a helper thread of this stage's own.
        Call before :meth:`start`."""
        self._jobs.close()
        self._jobs = BackgroundDetections(shared=pool)

    def start(self) -> None:
        """Start the helper thread, in background mode (nothing otherwise)."""
        if self.background:
            self._jobs.start()

    def close(self) -> None:
        """Stop background detection: drop a pending one and join the helper thread."""
        self._since_submit = None
        self._jobs.close()

    def _drop_pending(self) -> None:
        """Forget a background detection in flight; the next frame is detected in line."""
        self._jobs.drop()
        self._since_submit = None

    def set_fine_every(self, n: int) -> None:
        """Change ``fine_every`` (see the class doc); 1 for a detector without ``detect_coarse``."""
        if n < 1:
            raise ValueError(f"fine_every must be >= 1, got {n}")
        self.fine_every = int(n) if self.trackable else 1

    def reset(self) -> None:
        self.tracker.reset()
        self._last_index = None
        self._schedule = Schedule()
        self._drop_pending()
        self._shots.reset()
        self._settle = False

    def detect(self, frames: Sequence[Any]) -> list[Faces]:
        """The detector interface: frame indices from ``Frame.index``, else consecutive."""
        return self.process(list(frames))

    def plan(self, frames: Sequence[Any], indices: Sequence[int] | None = None) -> Plan:
        """Book the next frames (in order, each frame once) into the detection schedule
        (see :mod:`rtvision.faces.schedule`): their detections can then run (:meth:`detect_planned`,
        on another thread) while the tracker still works on the frames before."""
        frames = list(frames)
        indices = frame_indices(frames, self._schedule.last) if indices is None else [int(i) for i in indices]
        if len(indices) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(indices)} indices")
        plan, booked = self._schedule.book(frames, indices, self.stride, self.max_gap, self.fine_every,
                                           self.motion_budget, self.min_stride)
        self.stats.gaps += booked.gaps
        self.stats.cuts += booked.cuts
        self.stats.motion += booked.motion
        self.stats.coarse += sum(plan.coarse)
        return plan

    def detect_planned(self, frames: Sequence[Any], plan: Plan) -> dict[int, Faces]:
        """The scheduled detections of ``plan`` (positions in ``frames`` -> Faces): one detector
        call for the full ones, one for the coarse ones. Touches no tracker state: safe on
        another thread than :meth:`process`, and on several at once (the batches ahead of the
        file loop, side by side)."""
        out: dict[int, Faces] = {}
        for coarse in (False, True):
            planned = [i for i, d in enumerate(plan.detect) if d and plan.coarse[i] == coarse]
            if not planned:
                continue
            run = self.detector.detect_coarse if coarse else self.detector.detect
            out.update(zip(planned, run([frames[i] for i in planned])))
            with self._calls_lock:
                self.stats.detect_calls += 1
        return out

    def process(
        self,
        frames: Sequence[Any],
        indices: Sequence[int] | None = None,
        plan: Plan | None = None,
        detections: dict[int, Faces] | None = None,
    ) -> list[Faces]:
        """``Faces`` with ``track_ids`` for every frame, in order. ``indices`` are the frames'
        positions in their source (increasing; gaps mean dropped frames). ``plan`` and
        ``detections`` come from :meth:`plan` and :meth:`detect_planned` when the detections
        ran ahead; by default both are done here."""
        frames = list(frames)
        if self.background and plan is None and detections is None:
            return self._process_background(frames, indices)
        if plan is None:
            plan = self.plan(frames, indices)
        if len(plan.indices) != len(frames):
            raise ValueError(f"{len(frames)} frames but a plan for {len(plan.indices)}")
        if not frames:
            return []
        if detections is None:
            detections = self.detect_planned(frames, plan)
        out: list[Faces] = []
        for i, (frame, index) in enumerate(zip(frames, plan.indices)):
            self.stats.frames += 1
            if self._last_index is not None and index <= self._last_index:
                self.tracker.reset()  # went back (a source restart): old tracks mean nothing
            if plan.cut[i]:
                self.tracker.new_shot()
            if i in detections:
                faces = self._detected(frame, index, detections[i], plan.coarse[i])
            else:
                faces = self._refit(frame, self.tracker.track(index, frame))
                if self.tracker.confidence < self.min_confidence:
                    # An extra detection; the schedule stays as planned (it may already
                    # have been booked, and its detections run, ahead of this frame).
                    dets = self.detector.detect([frame])[0]
                    self.stats.detect_calls += 1
                    faces = self.tracker.update(index, frame, dets)
                    self.stats.detected += 1
                    self.stats.early += 1
                else:
                    self.stats.tracked += 1
            self._last_index = index
            out.append(faces)
        return out

    def _detected(self, frame: Any, index: int, detections: Faces, coarse: bool = False) -> Faces:
        """A frame with a detection of its own: the detections take over the tracks; tracks
        that the detection missed get their local search (:meth:`_search`). A coarse detection
        cannot see the smallest faces: their tracks are not counted as missed by it, but
        re-fitted as on a tracked frame."""
        blind = self.detector.coarse_blind_below() if coarse and self.refine else None
        faces = self.tracker.update(index, frame, detections, blind_below=blind)
        self.stats.detected += 1
        unseen = self.tracker.unseen() if blind is not None else np.zeros(0, np.int64)
        if len(unseen):
            return self._refit(frame, self.tracker.faces(), unseen)
        if self.search:
            faces = self._search(frame, faces, np.zeros(0, np.int64))
        return faces

    def _refit(self, frame: Any, faces: Faces, only: np.ndarray | None = None) -> Faces:
        """A tracked frame after the flow: the re-fit of the reported boxes (those at positions
        ``only``, default all), then the local search; the reported faces."""
        lost = np.zeros(0, np.int64)
        pos = np.arange(len(faces)) if only is None else np.asarray(only, np.int64)
        if self.refine and len(pos):
            refined, ok = self.detector.refine(frame, faces.xyxy[pos])
            self.tracker.set_reported(refined, ok, pos)
            self.stats.refined += 1
            # A box the re-fit doubts (a face turning, blurred) that the flow still follows
            # well stays on its flow box until the next detection, without a search: on the
            # test video this halved the searches at the same recall (mean matched IoU 0.921
            # -> 0.918). Only boxes the flow lost too are searched.
            # The flow alone carries a box for at most `stride` frames (a detection normally
            # comes first; background detections come later, and a face turning away would
            # otherwise be reported on its flow box until one does).
            followed = (self.tracker.confidences()[pos] >= self.min_confidence) & (self.tracker.unconfirmed()[pos] <= self.flow_only)
            lost = pos[~ok & ~followed]
            self.stats.kept_on_flow += int((~ok & followed).sum())
        if self.search:
            return self._search(frame, faces, lost)
        return self.tracker.faces() if self.refine and len(faces) else faces

    def _process_background(self, frames: list[Any], indices: Sequence[int] | None) -> list[Faces]:
        """:meth:`process` in background mode (see :meth:`set_background`)."""
        indices = frame_indices(frames, self._last_index) if indices is None else indices
        if len(indices) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(indices)} indices")
        out: list[Faces] = []
        for frame, index in zip(frames, indices):
            index = int(index)
            self.stats.frames += 1
            if self._last_index is not None and index <= self._last_index:
                self.reset()  # went back (a source restart): old tracks and detections mean nothing
            wh = as_image(frame).shape[:2]
            if self._bg_wh is not None and wh != self._bg_wh:
                # A new frame size (a stream reconnecting at another resolution): tracks and a
                # detection in flight are of the old size, and the first frame is detected in
                # line, below. (The flow images of two sizes can be the same size: 1080p and 720p
                # both flow at 960 px.)
                self.reset()
            self._bg_wh = wh
            gap = self._last_index is not None and index - self._last_index > self.max_gap
            if self._shots.step(as_image(frame)) and self._since_submit is not None:
                # A new shot: a detection of the old one (in flight) means nothing here, and
                # the new shot's faces should not wait for one: detected in line, below.
                self._drop_pending()
                self.tracker.new_shot()
                self.stats.cuts += 1
                self._settle = True
            self._moved += self._shots.last_change
            faces = self.tracker.track(index, frame)
            p = self._jobs.pending
            if self._since_submit is None and p is None:
                # The first frame (of a run, after a restart or a size change) is detected in
                # line: nothing is tracked yet, and a late detection would leave frames empty.
                faces = self._detected(frame, index, self.background_detector.detect([frame])[0])
                self.stats.detect_calls += 1
                self._since_submit, self._moved = 0, 0.0
                self._submitted += 1
                self._last_index = index
                out.append(faces)
                continue
            self._jobs.carry(self.tracker.gray)
            done = self._jobs.take_done()
            if done is not None:
                self.tracker.merge_late(done.grays, done.snapshot, done.future.result())  # a failure raises here
                self.stats.detected += 1
                self.stats.late += 1
                faces = self.tracker.faces()
            faces = self._refit(frame, faces)
            self.stats.tracked += 1
            self._since_submit = None if self._since_submit is None else self._since_submit + 1
            moving = (self.motion_budget is not None and self._moved >= self.motion_budget
                      and self._since_submit is not None and self._since_submit >= self.min_stride)
            settle = self._settle and self._since_submit is not None and self._since_submit >= CUT_SETTLE
            if self._jobs.pending is None and (self._since_submit is None or self._since_submit >= self.stride or gap or moving or settle):
                early = self._since_submit is not None and self._since_submit < self.stride and not gap
                self.stats.motion += bool(early and moving)
                self.stats.cuts += bool(early and settle and not moving)
                self._submit(frame, index)
            self._last_index = index
            out.append(faces)
        return out

    def _submit(self, frame: Any, index: int) -> None:
        """Start a detection of ``frame`` (the current one) on the helper thread."""
        img = as_image(frame)
        fine = self._settle or self._submitted % self.fine_every == 0
        run = self.background_detector.detect if fine else self.background_detector.detect_coarse
        self._jobs.submit(index, self.tracker.gray, self.tracker.snapshot(), lambda: run([img])[0])
        self._submitted += 1
        self._since_submit, self._moved, self._settle = 0, 0.0, False
        self.stats.detect_calls += 1
        self.stats.coarse += not fine

    def _search(self, frame: Any, faces: Faces, lost: np.ndarray) -> Faces:
        """One local search (``detect_near``) for two kinds of faces, then the reported faces:

        - ``lost``: reported tracks (positions in ``faces``) the re-fit no longer calls a face
          (fast motion, blur, dropped frames): found, the track takes the box.
        - tracks the last detection missed (:meth:`FaceTracker.missed_once`): MTCNN drops a
          face now and then for a frame or two (a blink of its cross-level NMS, a turn) that
          it finds again right after; found, the track is reported again at once, with its id,
          instead of after the next detection.
        """
        missed = self.tracker.missed_once()
        if not len(lost) and not missed:
            return self.tracker.faces()
        boxes = np.concatenate([faces.xyxy[lost].reshape(-1, 4), np.array([t.xyxy for t in missed], np.float32).reshape(-1, 4)])
        near, hit = self.detector.detect_near(frame, boxes)
        k = len(lost)
        self.stats.searched += len(boxes)
        self.stats.relocated += int(hit.sum())
        if k:
            self.tracker.relocate(lost, near, hit, self.min_confidence, self.flow_only)
        if missed:
            self.tracker.rescue(missed, near, hit, start=k)
        return self.tracker.faces()

