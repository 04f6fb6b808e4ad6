"""Faces followed across frames: tracks moved by the optical flow, associated with detections.

:class:`FaceTracker` moves every face box into the next frame with :class:`~rtvision.faces.flow.LKFlow`.
Each track reports a confidence (share of flow points that survived; 0 when too few did, and
then the box coasts on a constant-velocity model instead). Detections are associated to tracks
by greedy IoU (:func:`~rtvision.faces.boxes.greedy_match`); ids are stable integers; tracks die
when they leave the frame or are not re-detected for ``max_misses`` detections in a row. It also
takes the results of the detector's cheap calls between detections (a re-fit, a local search)
and the late results of detections that ran in the background (:meth:`FaceTracker.merge_late`).

Frames are ``Frame`` records or HxWx3 uint8 BGR images. Boxes are ``xyxy`` in original-frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..types import Faces
from .boxes import greedy_match, iou_matrix, visible_share
from .flow import LKFlow
from .frames import as_image
from .track import Track, move_landmarks


class FaceTracker:
    """Optical-flow face tracker with IoU association (see the module doc).

    flow: moves boxes from frame to frame (default: :class:`LKFlow` with its defaults).
    iou_threshold: smallest IoU to associate a detection with a track.
    max_misses: a track that misses this many detections in a row is dropped.
    max_searches: local searches (see :meth:`missed_once`) for a track a detection missed,
        before it waits for the next detection.
    min_visible: a track whose box keeps less than this share of its area inside the frame is
        dropped (the face left).
    """

    def __init__(
        self,
        flow: LKFlow | None = None,
        iou_threshold: float = 0.3,
        max_misses: int = 2,
        max_searches: int = 3,
        min_visible: float = 0.5,
    ) -> None:
        self.flow = flow if flow is not None else LKFlow()
        self.iou_threshold = float(iou_threshold)
        self.max_misses = int(max_misses)
        self.max_searches = int(max_searches)
        self.min_visible = float(min_visible)
        self.tracks: list[Track] = []
        self._next_id = 1
        self._prev_gray: np.ndarray | None = None
        self._prev_index: int | None = None
        self._frame_wh: tuple[int, int] | None = None
        self._new_shot = False  # the next update keeps only the tracks it re-finds

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all tracks and the previous frame (ids keep counting up)."""
        self.tracks = []
        self._prev_gray = None
        self._prev_index = None
        self._frame_wh = None
        self._new_shot = False

    def new_shot(self) -> None:
        """The next frame starts a new shot (a hard cut): the flow does not cross a cut, so the
        tracks are not moved into it, and the next :meth:`update` (its detection) keeps only the
        tracks it re-finds at their old place (IoU, as usual; their ids stay) and drops the
        others at once, instead of letting them coast and be searched for."""
        self._prev_gray = None
        self._new_shot = True

    @property
    def confidence(self) -> float:
        """The lowest confidence among reported tracks; 1.0 when there are none."""
        confs = [t.confidence for t in self.tracks if t.active]
        return float(min(confs)) if confs else 1.0

    @property
    def last_index(self) -> int | None:
        return self._prev_index

    def confidences(self) -> np.ndarray:
        """The reported tracks' flow confidences, in ``faces()`` order."""
        return np.array([t.confidence for t in self.tracks if t.active], np.float64)

    def unconfirmed(self) -> np.ndarray:
        """Per reported track, in ``faces()`` order, the frames it has been moved by the flow
        alone (since its last detection, re-fit or search hit)."""
        return np.array([t.unconfirmed for t in self.tracks if t.active], np.int64)

    def faces(self) -> Faces:
        """The reported (active) tracks as a ``Faces`` record with ``track_ids``."""
        act = [t for t in self.tracks if t.active]
        if not act:
            return Faces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), track_ids=np.zeros((0,), np.int64))
        lms = None
        if all(t.landmarks is not None for t in act):
            lms = np.stack([t.landmarks for t in act])
        return Faces(
            np.stack([t.xyxy for t in act]),
            np.array([t.score for t in act], np.float32),
            lms,
            np.array([t.track_id for t in act], np.int64),
        )

    def set_reported(self, faces: Faces, ok: np.ndarray, positions: np.ndarray | None = None) -> None:
        """Replace the reported tracks' boxes with refined ones (same order as ``faces()``, or
        as ``positions`` in that order).

        A track whose refinement failed (``ok`` False: the last stage is unsure at this crop,
        e.g. a face turning, blurred or moved further than the flow could follow) keeps its
        flow-moved box and flow confidence; :meth:`relocate` then decides its fate."""
        act = [t for t in self.tracks if t.active]
        if positions is not None:
            act = [act[int(p)] for p in positions]
        for i, (t, good) in enumerate(zip(act, ok)):
            if good:  # the detector's own last stage confirms the face: full confidence again
                self._confirm(t, faces, i)

    def relocate(self, positions: Sequence[int], faces: Faces, found: np.ndarray, min_confidence: float, max_unconfirmed: int | None = None) -> None:
        """Results of a local search (``detect_near``, its first rows) for the reported tracks at
        ``positions`` (indices into ``faces()`` order): a found face that is not another track's becomes the
        track's box (full confidence, velocity from its last confirmed box); a track not found
        whose flow confidence is below ``min_confidence`` stops being reported and coasts until
        a detection re-finds it or drops it; one the flow still follows well stays reported on
        its flow box (:class:`StridedFaceTracker` does not search for those at all), unless the
        flow alone has moved it for more than ``max_unconfirmed`` frames."""
        act = [t for t in self.tracks if t.active]
        for k, p in enumerate(positions):
            t = act[int(p)]
            if found[k] and not self._taken(faces.xyxy[k], t):
                self._confirm(t, faces, k)
            elif t.confidence < min_confidence or (max_unconfirmed is not None and t.unconfirmed > max_unconfirmed):
                t.misses += 1
                t.searches += 1

    def missed_once(self) -> list[Track]:
        """Tracks that the last detection (or search) lost, reported until then: candidates
        for a local search until the next detection re-finds them or they are dropped."""
        return [t for t in self.tracks if t.misses == 1 and t.searches < self.max_searches]

    def rescue(self, tracks: Sequence[Track], faces: Faces, found: np.ndarray, start: int = 0) -> int:
        """Reinstate ``tracks`` (from :meth:`missed_once`) whose local search found them
        (``faces``/``found`` rows from ``start`` on), unless the face found is already another
        reported track's. Returns how many."""
        n = 0
        for k, t in enumerate(tracks, start):
            if not found[k]:
                t.searches += 1
                continue
            if self._taken(faces.xyxy[k], t):
                continue
            t.misses = 0
            t.searches = 0
            self._confirm(t, faces, k)
            n += 1
        return n

    def _taken(self, box: np.ndarray, t: Track) -> bool:
        """Whether ``box`` is already another reported track's face (two tracks must not
        converge on one face)."""
        others = [o.xyxy for o in self.tracks if o.active and o is not t]
        return bool(others) and float(iou_matrix(np.asarray(box)[None], np.stack(others)).max()) >= self.iou_threshold

    def confirm(self, t: Track, faces: Faces, k: int) -> None:
        """Face ``k`` of ``faces`` (a re-fit or a search result) is track ``t`` here (see :meth:`_confirm`)."""
        self._confirm(t, faces, k)

    def _confirm(self, t: Track, faces: Faces, k: int) -> None:
        """Face ``k`` of ``faces`` (a re-fit or search result) is track ``t`` in its current
        frame: its box, score and landmarks, full confidence, velocity from the last confirmed box."""
        box = faces.xyxy[k].astype(np.float64)
        if t.confirmed_index is not None and t.index > t.confirmed_index and t.confirmed_xyxy is not None:
            t.velocity = (box - t.confirmed_xyxy) / (t.index - t.confirmed_index)
        t.xyxy = box
        t.score = float(faces.scores[k])
        t.confidence = 1.0
        if faces.landmarks is not None:
            t.landmarks = faces.landmarks[k].astype(np.float64)
        t.confirmed_xyxy, t.confirmed_index = box.copy(), t.index
        t.unconfirmed = 0

    # ------------------------------------------------------------ frame steps
    def track(self, index: int, frame: Any) -> Faces:
        """Move the tracks into frame ``index`` (flow from the previous frame) and report them."""
        self._advance(index, as_image(frame))
        return self.faces()

    def update(self, index: int, frame: Any, detections: Faces, blind_below: float | None = None) -> Faces:
        """Associate ``detections`` of frame ``index`` to the tracks (moving them into this frame
        first, if not done yet); returns the detections with their ``track_ids``.

        ``blind_below``: the detection could not find faces whose box is less tall than this
        (a coarse detection: no finest pyramid level); a reported track that small which it did
        not match is not counted as missed: it stays reported on its flow box
        (:meth:`unseen`, for the caller to re-fit)."""
        img = as_image(frame)
        if self._prev_index != index or self._prev_gray is None:
            self._advance(index, img)
        dets = detections
        n = len(dets)
        pred = np.stack([t.xyxy for t in self.tracks]) if self.tracks else np.zeros((0, 4))
        pairs = greedy_match(iou_matrix(pred, dets.xyxy), self.iou_threshold)
        ids = np.zeros(n, np.int64)
        matched_tracks = set()
        for ti, di in pairs:
            t = self.tracks[ti]
            box = dets.xyxy[di].astype(np.float64)
            if t.misses > 0 or self._new_shot:  # re-found after coasting, or across a cut: its motion is unknown
                t.velocity = np.zeros(4)
            t.xyxy = box
            t.score = float(dets.scores[di])
            t.landmarks = None if dets.landmarks is None else dets.landmarks[di].astype(np.float64)
            t.index = index
            t.confidence = 1.0
            t.misses = 0
            t.searches = 0
            t.hits += 1
            t.confirmed_xyxy, t.confirmed_index = box.copy(), index
            t.unconfirmed = 0
            ids[di] = t.track_id
            matched_tracks.add(ti)
        kept = []
        for ti, t in enumerate(self.tracks):
            if ti not in matched_tracks:
                if blind_below is not None and t.active and t.xyxy[3] - t.xyxy[1] < blind_below and not self._new_shot:
                    kept.append(t)  # the detection could not have seen it
                    continue
                t.misses += 1
                if t.misses > self.max_misses or self._new_shot:
                    continue
            kept.append(t)
        self.tracks = kept
        self._new_shot = False
        matched_dets = {di for _, di in pairs}
        for di in range(n):
            if di in matched_dets:
                continue
            t = Track(
                track_id=self._next_id,
                xyxy=dets.xyxy[di].astype(np.float64),
                score=float(dets.scores[di]),
                landmarks=None if dets.landmarks is None else dets.landmarks[di].astype(np.float64),
                index=index,
                confirmed_xyxy=dets.xyxy[di].astype(np.float64),
                confirmed_index=index,
            )
            self._next_id += 1
            self.tracks.append(t)
            ids[di] = t.track_id
        return Faces(dets.xyxy, dets.scores, dets.landmarks, ids)

    def unseen(self) -> np.ndarray:
        """Positions (in :meth:`faces` order) of the reported tracks that were neither
        detected nor re-fitted nor found by a search in the current frame."""
        act = [t for t in self.tracks if t.active]
        return np.array([k for k, t in enumerate(act) if t.confirmed_index != self._prev_index], np.int64)

    def merge_late(self, grays: Sequence[np.ndarray], snapshot: list[tuple[int, np.ndarray]], detections: Faces) -> int:
        """Merge ``detections`` of an earlier frame (a detection that ran in the background)
        into the tracks, which have already been moved into the current frame.

        ``snapshot``: (track id, box) of every track at that earlier frame; ``grays``: the flow
        images of the frames processed since, that one first and the current one last.
        Detections are associated with the snapshot's boxes (IoU, as in :meth:`update`): a
        matched track counts as detected (a coasting one is re-found); a track of the snapshot
        that no detection matched misses once (dropped after ``max_misses``). A detection of a
        new face, and of a re-found coasting track, is carried into the current frame by the
        flow from frame to frame, as the tracks were (one jump over several frames loses a
        fast face); where the flow fails it keeps its last box, which the re-fit or the search
        corrects. Returns the number of new tracks."""
        if self._prev_gray is None or self._prev_index is None:
            return 0
        ids = [i for i, _ in snapshot]
        boxes = np.array([b for _, b in snapshot], np.float64).reshape(-1, 4)
        pairs = greedy_match(iou_matrix(boxes, detections.xyxy), self.iou_threshold)
        by_id = {t.track_id: t for t in self.tracks}
        seen: set[int] = set()
        matched_dets: set[int] = set()
        refound: list[tuple[Track, int]] = []
        for ti, di in pairs:
            matched_dets.add(di)
            t = by_id.get(ids[ti])
            if t is None:  # dropped since (it left the frame)
                continue
            seen.add(t.track_id)
            t.hits += 1
            t.searches = 0
            if t.misses > 0:
                refound.append((t, di))
            t.misses = 0
        snap_ids = set(ids)
        kept = []
        for t in self.tracks:
            if t.track_id in snap_ids and t.track_id not in seen:
                t.misses += 1
                if t.misses > self.max_misses:
                    continue
            kept.append(t)
        self.tracks = kept
        new = [di for di in range(len(detections)) if di not in matched_dets]
        carry = [di for _, di in refound] + new
        if not carry:
            return 0
        start = [detections.xyxy[di].astype(np.float64) for di in carry]
        boxes_now, confs = list(start), [1.0] * len(carry)
        for a, b in zip(grays[:-1], grays[1:]):
            for k, m in enumerate(self.flow.move(a, b, boxes_now)):
                if m is None:
                    confs[k] = 0.0
                else:
                    boxes_now[k] = m[0]
                    confs[k] = min(confs[k], m[1])
        now = []
        for di, det_box, box, conf in zip(carry, start, boxes_now, confs):
            lm = None if detections.landmarks is None else move_landmarks(detections.landmarks[di].astype(np.float64), det_box, box)
            now.append((box, conf, lm))
        index = self._prev_index
        for (t, di), (box, conf, lm) in zip(refound, now):
            t.xyxy, t.confidence, t.landmarks, t.index = box, conf, lm, index
            t.velocity = np.zeros(4)
            t.score = float(detections.scores[di])
            t.confirmed_xyxy, t.confirmed_index = box.copy(), index
            t.unconfirmed = 0
        for di, (box, conf, lm) in zip(new, now[len(refound):]):
            self.tracks.append(Track(
                track_id=self._next_id, xyxy=box, score=float(detections.scores[di]), landmarks=lm, index=index,
                confidence=conf, confirmed_xyxy=box.copy(), confirmed_index=index,
            ))
            self._next_id += 1
        return len(new)

    def snapshot(self) -> list[tuple[int, np.ndarray]]:
        """(track id, box) of every track (reported or coasting) in the current frame."""
        return [(t.track_id, t.xyxy.copy()) for t in self.tracks]

    @property
    def gray(self) -> np.ndarray | None:
        """The current frame's flow image."""
        return self._prev_gray

    # -------------------------------------------------------------- internals
    def _gray(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self._frame_wh != (w, h):
            self.reset()
            self._frame_wh = (w, h)
            self.flow.set_frame_size(w, h)
        return self.flow.gray(img)

    def _advance(self, index: int, img: np.ndarray) -> None:
        gray = self._gray(img)
        prev, prev_index = self._prev_gray, self._prev_index
        self._prev_gray, self._prev_index = gray, index
        if prev is None or prev_index is None or not self.tracks:
            return
        dt = index - prev_index
        if dt <= 0:  # same frame again, or out of order: nothing to move
            return
        active = [t for t in self.tracks if t.active]
        moved = self.flow.move(prev, gray, [t.xyxy for t in active])
        for t, res in zip(active, moved):
            old = t.xyxy
            if res is None:
                new = old + t.velocity * dt
                t.confidence = 0.0
            else:
                new, t.confidence = res
                t.velocity = 0.5 * t.velocity + 0.5 * (new - old) / dt
            t.landmarks = move_landmarks(t.landmarks, old, new)
            t.xyxy = new
            t.index = index
            t.unconfirmed += 1
        for t in self.tracks:
            if not t.active:  # coasting: constant velocity, not reported
                t.xyxy = t.xyxy + t.velocity * dt
                t.index = index
        w, h = self._frame_wh
        self.tracks = [t for t in self.tracks if visible_share(t.xyxy, w, h) >= self.min_visible]
