"""Carry faces between detections: sparse optical flow, IoU association, a stride controller.

- :class:`FaceTracker` moves every face box into the next frame with pyramidal Lucas-Kanade flow
  (``cv2.calcOpticalFlowPyrLK``) on corners found inside the box, on a downscaled grayscale frame.
  The box moves by the median point displacement and scales by the median change of pairwise
  point distances (Median Flow); points that fail the forward-backward check are dropped. Each
  track reports a confidence (share of points that survived; 0 when too few did, and then the
  box coasts on a constant-velocity model instead). Detections are associated to tracks by
  greedy IoU; ids are stable integers; tracks die when they leave the frame or are not
  re-detected for ``max_misses`` detections in a row.
- :class:`StridedFaceTracker` runs a detector every ``stride`` frames (the detection frames of
  one call in one batch), or after a gap in frame indices (dropped frames), and tracks in
  between. With a detector that offers them (FastMTCNN), each tracked box is re-fitted by the
  detector's last stage, and a face the re-fit (with the flow) or a detection lost is searched
  for near its track (``detect_near``) instead of bringing a full-frame detection forward; a box
  only the re-fit doubts keeps its flow box until the next detection. Without them, low
  tracking confidence brings the detection forward. It returns ``Faces`` with ``track_ids`` for
  every frame.

Frames are HxWx3 uint8 BGR images (or ``Frame`` records, whose ``.image`` is used). Boxes are
``xyxy`` in original-frame pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from ..types import Faces

log = logging.getLogger(__name__)


class Detector(Protocol):
    def detect(self, frames: list[Any]) -> list[Faces]: ...


def _image(f: Any) -> np.ndarray:
    img = getattr(f, "image", f)
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {getattr(img, 'shape', type(img))}")
    return img


def iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Na, Nb) IoU of two (N,4) xyxy box arrays."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, col) pairs with IoU >= threshold, highest IoU first."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


@dataclass
class Track:
    """One face followed across frames.

    xyxy: (4,) box in original pixels at frame ``index``; velocity: (4,) box change per frame.
    confidence: in [0, 1], how well the last flow step went (1 right after a detection).
    misses: detections in a row that did not match this track (0: it is reported).
    """

    track_id: int
    xyxy: np.ndarray
    score: float
    landmarks: np.ndarray | None
    index: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    confidence: float = 1.0
    misses: int = 0
    hits: int = 1
    searches: int = 0  # local searches that failed since this track was last missed
    confirmed_xyxy: np.ndarray | None = None  # box at the last detection / re-fit / search hit
    confirmed_index: int | None = None
    unconfirmed: int = 0  # frames processed since then (moved by the flow alone)

    @property
    def active(self) -> bool:
        return self.misses == 0


def _move_landmarks(lm: np.ndarray | None, old: np.ndarray, new: np.ndarray) -> np.ndarray | None:
    """Landmarks carried along with a box: same relative position inside it."""
    if lm is None:
        return None
    ow, oh = max(old[2] - old[0], 1e-6), max(old[3] - old[1], 1e-6)
    nw, nh = new[2] - new[0], new[3] - new[1]
    out = np.empty_like(lm)
    out[:, 0] = new[0] + (lm[:, 0] - old[0]) * (nw / ow)
    out[:, 1] = new[1] + (lm[:, 1] - old[1]) * (nh / oh)
    return out


class FaceTracker:
    """Optical-flow face tracker with IoU association (see the module doc).

    flow_max_side: the long side, in pixels, of the grayscale frame flow runs on (1080p -> 960
        by default: half resolution).
    max_points / min_points: corners seeded per face / fewest surviving for a flow update.
    fb_max_px: forward-backward error allowed, in flow-frame pixels.
    iou_threshold: smallest IoU to associate a detection with a track.
    max_misses: a track that misses this many detections in a row is dropped.
    max_searches: local searches (see :meth:`missed_once`) for a track a detection missed,
        before it waits for the next detection.
    min_visible: a track whose box keeps less than this share of its area inside the frame is
        dropped (the face left).
    """

    def __init__(
        self,
        flow_max_side: int = 960,
        max_points: int = 40,
        min_points: int = 6,
        fb_max_px: float = 1.0,
        iou_threshold: float = 0.3,
        max_misses: int = 2,
        max_searches: int = 3,
        min_visible: float = 0.5,
    ) -> None:
        self.flow_max_side = int(flow_max_side)
        self.max_points = int(max_points)
        self.min_points = int(min_points)
        self.fb_max_px = float(fb_max_px)
        self.iou_threshold = float(iou_threshold)
        self.max_misses = int(max_misses)
        self.max_searches = int(max_searches)
        self.min_visible = float(min_visible)
        self.tracks: list[Track] = []
        self._next_id = 1
        self._prev_gray: np.ndarray | None = None
        self._prev_index: int | None = None
        self._frame_wh: tuple[int, int] | None = None
        self._flow_scale = 1.0

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all tracks and the previous frame (ids keep counting up)."""
        self.tracks = []
        self._prev_gray = None
        self._prev_index = None
        self._frame_wh = None

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

    def set_reported(self, faces: Faces, ok: np.ndarray) -> None:
        """Replace the reported tracks' boxes with refined ones (same order as ``faces()``).

        A track whose refinement failed (``ok`` False: the last stage is unsure at this crop,
        e.g. a face turning, blurred or moved further than the flow could follow) keeps its
        flow-moved box and flow confidence; :meth:`relocate` then decides its fate."""
        act = [t for t in self.tracks if t.active]
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
        return bool(others) and float(iou_xyxy(np.asarray(box)[None], np.stack(others)).max()) >= self.iou_threshold

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
        self._advance(index, _image(frame))
        return self.faces()

    def update(self, index: int, frame: Any, detections: Faces) -> Faces:
        """Associate ``detections`` of frame ``index`` to the tracks (moving them into this frame
        first, if not done yet); returns the detections with their ``track_ids``."""
        img = _image(frame)
        if self._prev_index != index or self._prev_gray is None:
            self._advance(index, img)
        dets = detections
        n = len(dets)
        pred = np.stack([t.xyxy for t in self.tracks]) if self.tracks else np.zeros((0, 4))
        pairs = greedy_match(iou_xyxy(pred, dets.xyxy), self.iou_threshold)
        ids = np.zeros(n, np.int64)
        matched_tracks = set()
        for ti, di in pairs:
            t = self.tracks[ti]
            box = dets.xyxy[di].astype(np.float64)
            if t.misses > 0:  # re-found after coasting: its motion since is unknown
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
                t.misses += 1
                if t.misses > self.max_misses:
                    continue
            kept.append(t)
        self.tracks = kept
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
        pairs = greedy_match(iou_xyxy(boxes, detections.xyxy), self.iou_threshold)
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
            for k, m in enumerate(self._flow(a, b, boxes_now)):
                if m is None:
                    confs[k] = 0.0
                else:
                    boxes_now[k] = m[0]
                    confs[k] = min(confs[k], m[1])
        now = []
        for di, det_box, box, conf in zip(carry, start, boxes_now, confs):
            lm = None if detections.landmarks is None else _move_landmarks(detections.landmarks[di].astype(np.float64), det_box, box)
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
            self._flow_scale = min(1.0, self.flow_max_side / float(max(w, h)))
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if self._flow_scale < 1.0:
            size = (max(1, round(w * self._flow_scale)), max(1, round(h * self._flow_scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return gray

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
        moved = self._flow(prev, gray, [t.xyxy for t in active])
        for t, res in zip(active, moved):
            old = t.xyxy
            if res is None:
                new = old + t.velocity * dt
                t.confidence = 0.0
            else:
                new, t.confidence = res
                t.velocity = 0.5 * t.velocity + 0.5 * (new - old) / dt
            t.landmarks = _move_landmarks(t.landmarks, old, new)
            t.xyxy = new
            t.index = index
            t.unconfirmed += 1
        for t in self.tracks:
            if not t.active:  # coasting: constant velocity, not reported
                t.xyxy = t.xyxy + t.velocity * dt
                t.index = index
        w, h = self._frame_wh
        self.tracks = [t for t in self.tracks if self._visible_share(t.xyxy, w, h) >= self.min_visible]

    @staticmethod
    def _visible_share(b: np.ndarray, w: int, h: int) -> float:
        area = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
        if area <= 0:
            return 0.0
        iw = max(min(b[2], w) - max(b[0], 0.0), 0.0)
        ih = max(min(b[3], h) - max(b[1], 0.0), 0.0)
        return iw * ih / area

    def _seed_points(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Up to ``max_points`` corners (flow-frame pixels) in the inner 80% of ``box``."""
        s = self._flow_scale
        gh, gw = gray.shape
        bw, bh = (box[2] - box[0]) * s, (box[3] - box[1]) * s
        x0 = int(np.clip(box[0] * s + 0.1 * bw, 0, gw - 1))
        y0 = int(np.clip(box[1] * s + 0.1 * bh, 0, gh - 1))
        x1 = int(np.clip(box[2] * s - 0.1 * bw, x0 + 1, gw))
        y1 = int(np.clip(box[3] * s - 0.1 * bh, y0 + 1, gh))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return np.zeros((0, 2), np.float32)
        roi = gray[y0:y1, x0:x1]
        min_dist = max(1.0, min(x1 - x0, y1 - y0) / 12.0)
        pts = cv2.goodFeaturesToTrack(roi, maxCorners=self.max_points, qualityLevel=0.01, minDistance=min_dist, blockSize=3)
        if pts is None or len(pts) < self.min_points:
            # low texture: a grid instead (the forward-backward check weeds out bad points)
            gx, gy = np.meshgrid(np.linspace(0, x1 - x0 - 1, 6), np.linspace(0, y1 - y0 - 1, 6))
            pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        pts = np.asarray(pts, np.float32).reshape(-1, 2)
        pts[:, 0] += x0
        pts[:, 1] += y0
        return pts

    def _flow(self, prev: np.ndarray, cur: np.ndarray, boxes: list[np.ndarray]) -> list[tuple[np.ndarray, float] | None]:
        """Each box moved from ``prev`` to ``cur`` with its confidence, or None when too few
        points survived. One forward and one backward LK call for all boxes together."""
        if not boxes:
            return []
        seeds = [self._seed_points(prev, b) for b in boxes]
        counts = [len(p) for p in seeds]
        if sum(counts) == 0:
            return [None] * len(boxes)
        p0 = np.concatenate(seeds).reshape(-1, 1, 2)
        lk = {"winSize": (11, 11), "maxLevel": 3, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **lk)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **lk)
        fb = np.linalg.norm((p0 - p0b).reshape(-1, 2), axis=1)
        good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb <= self.fb_max_px)
        p0, p1 = p0.reshape(-1, 2), p1.reshape(-1, 2)
        out: list[tuple[np.ndarray, float] | None] = []
        start = 0
        s = self._flow_scale
        for box, n in zip(boxes, counts):
            sl = slice(start, start + n)
            start += n
            g = good[sl]
            ng = int(g.sum())
            if n == 0 or ng < self.min_points:
                out.append(None)
                continue
            a, b = p0[sl][g], p1[sl][g]
            shift = np.median(b - a, axis=0) / s
            iu = np.triu_indices(ng, k=1)
            d0 = np.linalg.norm(a[iu[0]] - a[iu[1]], axis=1)
            d1 = np.linalg.norm(b[iu[0]] - b[iu[1]], axis=1)
            ok = d0 > 2.0
            scale = float(np.clip(np.median(d1[ok] / d0[ok]), 0.8, 1.25)) if ok.sum() >= 3 else 1.0
            cx, cy = (box[0] + box[2]) / 2 + shift[0], (box[1] + box[3]) / 2 + shift[1]
            hw, hh = (box[2] - box[0]) / 2 * scale, (box[3] - box[1]) / 2 * scale
            out.append((np.array([cx - hw, cy - hh, cx + hw, cy + hh]), ng / n))
        return out


@dataclass
class StrideStats:
    """What :class:`StridedFaceTracker` did, over its lifetime."""

    frames: int = 0
    detected: int = 0  # frames given to the detector
    tracked: int = 0  # frames answered by the tracker alone
    early: int = 0  # detections brought forward by low tracking confidence
    gaps: int = 0  # detections forced by a gap in frame indices
    detect_calls: int = 0
    refined: int = 0  # tracked frames whose boxes the detector's last stage refined
    searched: int = 0  # lost tracks searched for near their expected place (detect_near)
    relocated: int = 0  # of those, found again
    kept_on_flow: int = 0  # tracked boxes the re-fit doubted, kept on their flow box (flow confident)
    coarse: int = 0  # scheduled detections without the finest pyramid level (fine_every > 1)
    late: int = 0  # background detections merged into a later frame (background mode)


class StridedFaceTracker:
    """Detect every ``stride``-th frame, track in between.

    detector: anything with ``detect(frames) -> list[Faces]`` (e.g. FastMTCNN, FacenetMTCNN).
    stride: frames from one scheduled detection to the next (1: detect every frame).
    min_confidence: a tracked frame whose lowest track confidence falls below this is detected
        right away (an extra detection; the stride schedule is unchanged).
    max_gap: a jump in frame index larger than this (dropped frames) forces a detection;
        default ``stride``.
    fine_every: with a detector that offers ``detect_coarse`` (FastMTCNN: no finest pyramid
        level, so no faces under ~1.41x its smallest), only every ``fine_every``-th scheduled
        detection (and the first, and the first after a restart) is a full one; the others are
        coarse. Faces already tracked are carried and re-fitted in between whatever their
        size; a new face of the smallest sizes is found up to ``stride * fine_every`` frames
        after it appears instead of ``stride``.
    refine: on tracked frames, re-fit the flow-moved boxes with the detector's ``refine``
        (MTCNN's O-Net) when it has one.
    search: a box the re-fit no longer calls a face, and the flow no longer follows well
        either, is searched for nearby with the detector's ``detect_near`` when it has one
        (see ``__init__``); without it, low flow confidence brings the next detection forward.
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
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.detector = detector
        self.stride = int(stride)
        self.min_confidence = float(min_confidence)
        self.max_gap = int(max_gap) if max_gap is not None else self.stride
        self.tracker = tracker if tracker is not None else FaceTracker()
        # Between detections, a detector that can (FastMTCNN.refine) re-fits each tracked box
        # with its last stage: exact boxes for a few ms instead of flow-only drift.
        self.refine = bool(refine) and hasattr(detector, "refine")
        # A track the re-fit loses (fast motion, blur) is searched for with the whole cascade in
        # a small window around it (FastMTCNN.detect_near) instead of a full-frame detection:
        # a few ms, and the track keeps its id. Not found and not followed by the flow, it
        # stops being reported until the next scheduled detection re-finds or drops it.
        self.search = self.refine and bool(search) and hasattr(detector, "detect_near")
        self.fine_every = 1
        self.set_fine_every(fine_every)
        self.stats = StrideStats()
        self._last_index: int | None = None  # the last frame processed (tracked or detected)
        self._schedule = _Schedule()
        # Background mode (live sources): detections run on a helper thread, merged when done.
        self.background = False
        self._pool: ThreadPoolExecutor | None = None
        self._pending: _Pending | None = None
        self._since_submit: int | None = None  # frames processed since the last background detection
        self._submitted = 0

    @property
    def device(self):
        return getattr(self.detector, "device", None)

    def set_background(self, on: bool) -> None:
        """Background mode, for live sources: a due detection runs on a helper thread
        (``rtvision-faces``) while the following frames are tracked, and is merged into the
        tracks of the frame at which it is done (:meth:`FaceTracker.merge_late`): no frame
        waits for a detection, so a detection no longer costs a live frame ~100 ms of latency
        (and the frames dropped meanwhile). A new face appears a few frames later (the
        detection's time) and is carried to the current frame by the flow. Needs the re-fit
        and the local search (FastMTCNN); off: every detection in line, as for files."""
        on = bool(on) and self.search
        if not on:
            self.close()
        self.background = on

    def close(self) -> None:
        """Stop background detection: drop a pending one and join the helper thread."""
        self._drop_pending()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _drop_pending(self) -> None:
        """Forget a background detection in flight; the next frame is detected in line."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.future.cancel()
        self._since_submit = None

    def set_fine_every(self, n: int) -> None:
        """Change ``fine_every`` (see the class doc); 1 for a detector without ``detect_coarse``."""
        if n < 1:
            raise ValueError(f"fine_every must be >= 1, got {n}")
        self.fine_every = int(n) if hasattr(self.detector, "detect_coarse") else 1

    def reset(self) -> None:
        self.tracker.reset()
        self._last_index = None
        self._schedule = _Schedule()
        self._drop_pending()

    def detect(self, frames: Sequence[Any]) -> list[Faces]:
        """The detector interface: frame indices from ``Frame.index``, else consecutive."""
        return self.process(list(frames))

    def plan(self, frames: Sequence[Any], indices: Sequence[int] | None = None) -> Plan:
        """Book the next frames (in order, each frame once) into the detection schedule.

        The schedule depends only on frame indices and sizes, never on what was found, so the
        frames of the next batch can be planned, and their detections run (:meth:`detect_planned`,
        on another thread), while the tracker still works on the current batch."""
        frames = list(frames)
        if indices is None:
            last = self._schedule.last
            start = -1 if last is None else last
            indices = [int(getattr(f, "index", start + 1 + i)) for i, f in enumerate(frames)]
        indices = [int(i) for i in indices]
        if len(indices) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(indices)} indices")
        detect, coarse = self._schedule.book(frames, indices, self.stride, self.max_gap, self.fine_every, self.stats)
        return Plan(indices, detect, coarse)

    def detect_planned(self, frames: Sequence[Any], plan: Plan) -> dict[int, Faces]:
        """The scheduled detections of ``plan`` (positions in ``frames`` -> Faces): one detector
        call for the full ones, one for the coarse ones. Touches no tracker state: safe on
        another thread than :meth:`process`."""
        out: dict[int, Faces] = {}
        for coarse in (False, True):
            planned = [i for i, d in enumerate(plan.detect) if d and plan.coarse[i] == coarse]
            if not planned:
                continue
            run = self.detector.detect_coarse if coarse else self.detector.detect
            out.update(zip(planned, run([frames[i] for i in planned])))
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
            if i in detections:
                faces = self._detected(frame, index, detections[i])
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

    def _detected(self, frame: Any, index: int, detections: Faces) -> Faces:
        """A frame with a detection of its own: the detections take over the tracks; tracks
        that the detection missed get their local search (:meth:`_search`)."""
        faces = self.tracker.update(index, frame, detections)
        self.stats.detected += 1
        if self.search:
            faces = self._search(frame, faces, np.zeros(0, np.int64))
        return faces

    def _refit(self, frame: Any, faces: Faces) -> Faces:
        """A tracked frame after the flow: the re-fit of the reported boxes, then the local
        search; the reported faces."""
        lost = np.zeros(0, np.int64)
        if self.refine and len(faces):
            refined, ok = self.detector.refine(frame, faces.xyxy)
            self.tracker.set_reported(refined, ok)
            self.stats.refined += 1
            # A box the re-fit doubts (a face turning, blurred) that the flow still follows
            # well stays on its flow box until the next detection, without a search: on the
            # test video this halved the searches at the same recall (mean matched IoU 0.921
            # -> 0.918). Only boxes the flow lost too are searched.
            # The flow alone carries a box for at most `stride` frames (a detection normally
            # comes first; background detections come later, and a face turning away would
            # otherwise be reported on its flow box until one does).
            followed = (self.tracker.confidences() >= self.min_confidence) & (self.tracker.unconfirmed() <= self.stride)
            lost = np.flatnonzero(~ok & ~followed)
            self.stats.kept_on_flow += int((~ok & followed).sum())
        if self.search:
            return self._search(frame, faces, lost)
        return self.tracker.faces() if self.refine and len(faces) else faces

    def _process_background(self, frames: list[Any], indices: Sequence[int] | None) -> list[Faces]:
        """:meth:`process` in background mode (see :meth:`set_background`)."""
        if indices is None:
            start = -1 if self._last_index is None else self._last_index
            indices = [int(getattr(f, "index", start + 1 + i)) for i, f in enumerate(frames)]
        if len(indices) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(indices)} indices")
        out: list[Faces] = []
        for frame, index in zip(frames, indices):
            index = int(index)
            self.stats.frames += 1
            if self._last_index is not None and index <= self._last_index:
                self.reset()  # went back (a source restart): old tracks and detections mean nothing
            gap = self._last_index is not None and index - self._last_index > self.max_gap
            faces = self.tracker.track(index, frame)
            p = self._pending
            if p is not None and p.grays[0].shape != self.tracker.gray.shape:
                # The frame size changed (a stream reconnecting at another resolution): the
                # tracker started over, and so does detection.
                self._drop_pending()
                p = None
            if self._since_submit is None and p is None:
                # The first frame (of a run, after a restart or a size change) is detected in
                # line: nothing is tracked yet, and a late detection would leave frames empty.
                faces = self._detected(frame, index, self.detector.detect([frame])[0])
                self.stats.detect_calls += 1
                self._since_submit = 0
                self._submitted += 1
                self._last_index = index
                out.append(faces)
                continue
            if p is not None:
                p.grays.append(self.tracker.gray)
                if len(p.grays) > MAX_CARRY_FRAMES:  # a very slow detection: coarser steps, bounded memory
                    del p.grays[1]
            if p is not None and p.future.done():
                self._pending = None
                self.tracker.merge_late(p.grays, p.snapshot, p.future.result())  # a failure raises here
                self.stats.detected += 1
                self.stats.late += 1
                faces = self.tracker.faces()
            faces = self._refit(frame, faces)
            self.stats.tracked += 1
            self._since_submit = None if self._since_submit is None else self._since_submit + 1
            if self._pending is None and (self._since_submit is None or self._since_submit >= self.stride or gap):
                self._submit(frame, index)
            self._last_index = index
            out.append(faces)
        return out

    def _submit(self, frame: Any, index: int) -> None:
        """Start a detection of ``frame`` (the current one) on the helper thread."""
        img = _image(frame)
        fine = self._submitted % self.fine_every == 0
        run = self.detector.detect if fine else self.detector.detect_coarse
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtvision-faces")
        future = self._pool.submit(lambda: run([img])[0])
        self._pending = _Pending(index, [self.tracker.gray], self.tracker.snapshot(), future)
        self._submitted += 1
        self._since_submit = 0
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
            self.tracker.relocate(lost, near, hit, self.min_confidence, self.stride)
        if missed:
            self.tracker.rescue(missed, near, hit, start=k)
        return self.tracker.faces()


MAX_CARRY_FRAMES = 32  # flow images kept per background detection (~0.5 MB each at 1080p)


@dataclass
class _Pending:
    """A background detection of frame ``index``: the tracks and the flow image at that frame."""

    index: int
    grays: list[np.ndarray]  # flow images of that frame and of every frame processed since
    snapshot: list[tuple[int, np.ndarray]]
    future: Future  # -> Faces of that frame


@dataclass
class Plan:
    """Frames booked into the detection schedule: their source indices, which of them get a
    scheduled detection, and which of those are coarse (no finest pyramid level)."""

    indices: list[int]
    detect: list[bool]
    coarse: list[bool]


@dataclass
class _Schedule:
    """Where the detection schedule stands after the frames booked so far."""

    last_detect: int | None = None
    last: int | None = None
    since: int = 0  # booked frames since the last scheduled detection
    since_fine: int = 0  # scheduled detections since the last full one
    wh: tuple[int, int] | None = None

    def book(
        self, frames: list[Any], indices: list[int], stride: int, max_gap: int, fine_every: int, stats: StrideStats
    ) -> tuple[list[bool], list[bool]]:
        """Which frames get a scheduled detection (stride, gaps, size changes, restarts), and
        which of those are coarse (all but every ``fine_every``-th; never the first one, nor
        the first after a restart or a size change)."""
        plan, coarse = [], []
        for frame, index in zip(frames, indices):
            h, w = _image(frame).shape[:2]
            gap = self.last is not None and index - self.last > max_gap
            # The stride counts processed frames: a live source that drops frames still gets
            # tracked frames between detections (a long gap forces one).
            fresh = self.last_detect is None or self.last is None or index <= self.last or self.wh != (w, h)
            detect = fresh or self.since + 1 >= stride or gap
            fine = fresh or self.since_fine + 1 >= fine_every
            if detect:
                if gap and self.since + 1 < stride:
                    stats.gaps += 1
                self.last_detect, self.since = index, 0
                self.since_fine = 0 if fine else self.since_fine + 1
                stats.coarse += not fine
            else:
                self.since += 1
            plan.append(detect)
            coarse.append(detect and not fine)
            self.last, self.wh = index, (w, h)
        return plan, coarse
