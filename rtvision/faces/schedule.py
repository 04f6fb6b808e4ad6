"""The detection schedule of a tracking face stage: which frames get a detection.

A detection every ``stride`` processed frames, and also on the first frame, after a restart
(frame indices going back), after a change of frame size, and after a gap in frame indices
larger than ``max_gap`` (frames a live source dropped). Of those, all but every
``fine_every``-th are *coarse* (no finest pyramid level, so no smallest faces; never the first
one, nor the first after a restart or a size change).

The schedule depends only on frame indices and sizes, never on what was found: the frames of
the next batch can be booked (:meth:`Schedule.book`, a :class:`Plan`) and their detections run
on another thread while the tracker still works on the current batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .frames import as_image


@dataclass
class Plan:
    """Frames booked into the detection schedule: their source indices, which of them get a
    scheduled detection, and which of those are coarse (no finest pyramid level)."""

    indices: list[int]
    detect: list[bool]
    coarse: list[bool]


@dataclass
class Schedule:
    """Where the detection schedule stands after the frames booked so far."""

    last_detect: int | None = None
    last: int | None = None
    since: int = 0  # booked frames since the last scheduled detection
    since_fine: int = 0  # scheduled detections since the last full one
    wh: tuple[int, int] | None = None

    def book(self, frames: list[Any], indices: list[int], stride: int, max_gap: int, fine_every: int) -> tuple[Plan, int]:
        """Book ``frames`` (source ``indices``, in order, each frame once): the :class:`Plan`,
        and how many of its detections a gap forced before the stride was due."""
        plan, coarse = [], []
        gaps = 0
        for frame, index in zip(frames, indices):
            h, w = as_image(frame).shape[:2]
            gap = self.last is not None and index - self.last > max_gap
            # The stride counts processed frames: a live source that drops frames still gets
            # tracked frames between detections (a long gap forces one).
            fresh = self.last_detect is None or self.last is None or index <= self.last or self.wh != (w, h)
            detect = fresh or self.since + 1 >= stride or gap
            fine = fresh or self.since_fine + 1 >= fine_every
            if detect:
                if gap and self.since + 1 < stride:
                    gaps += 1
                self.last_detect, self.since = index, 0
                self.since_fine = 0 if fine else self.since_fine + 1
            else:
                self.since += 1
            plan.append(detect)
            coarse.append(detect and not fine)
            self.last, self.wh = index, (w, h)
        return Plan(list(indices), plan, coarse), gaps
