"""Sparse optical flow that carries face boxes from one frame to the next (Median Flow).

:class:`LKFlow` runs pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) on corners found
inside each box, on a downscaled grayscale frame (the flow image). A box moves by the median
point displacement and scales by the median change of pairwise point distances; points that
fail the forward-backward check are dropped. Each moved box comes with a confidence: the share
of its points that survived (None instead when too few did).

Boxes are ``xyxy`` in original-frame pixels; points are in flow-image pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


class LKFlow:
    """Lucas-Kanade box flow.

    max_side: the long side, in pixels, of the flow image (1080p -> 960 by default: half
        resolution).
    max_points / min_points: corners seeded per box / fewest surviving for a move.
    fb_max_px: forward-backward error allowed, in flow-image pixels.
    """

    def __init__(self, max_side: int = 960, max_points: int = 40, min_points: int = 6, fb_max_px: float = 1.0) -> None:
        self.max_side = int(max_side)
        self.max_points = int(max_points)
        self.min_points = int(min_points)
        self.fb_max_px = float(fb_max_px)
        self.scale = 1.0  # flow-image pixels per original pixel

    def set_frame_size(self, w: int, h: int) -> None:
        """Frames of ``w x h`` from now on: the flow image's scale."""
        self.scale = min(1.0, self.max_side / float(max(w, h)))

    def gray(self, img: np.ndarray) -> np.ndarray:
        """The flow image of a BGR frame (grayscale, at :attr:`scale`)."""
        h, w = img.shape[:2]
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if self.scale < 1.0:
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return gray

    def seed_points(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Up to ``max_points`` corners (flow-frame pixels) in the inner 80% of ``box``."""
        s = self.scale
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

    def move(self, prev: np.ndarray, cur: np.ndarray, boxes: list[np.ndarray]) -> list[tuple[np.ndarray, float] | None]:
        """Each box moved from ``prev`` to ``cur`` with its confidence, or None when too few
        points survived. One forward and one backward LK call for all boxes together."""
        if not boxes:
            return []
        seeds = [self.seed_points(prev, b) for b in boxes]
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
        s = self.scale
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
            zoom = float(np.clip(np.median(d1[ok] / d0[ok]), 0.8, 1.25)) if ok.sum() >= 3 else 1.0
            cx, cy = (box[0] + box[2]) / 2 + shift[0], (box[1] + box[3]) / 2 + shift[1]
            hw, hh = (box[2] - box[0]) / 2 * zoom, (box[3] - box[1]) / 2 * zoom
            out.append((np.array([cx - hw, cy - hh, cx + hw, cy + hh]), ng / n))
        return out

