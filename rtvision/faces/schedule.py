"""The detection schedule of a tracking face stage: which frames get a detection.

A detection on the first frame, after a restart (frame indices going back), after a change of
frame size, on the first frame of a new shot (a hard cut, :mod:`rtvision.faces.shots`) and again
``CUT_SETTLE`` frames into it (unless one came in between), after
a gap in frame indices larger than ``max_gap`` (frames a live source dropped), and otherwise
when the picture has changed enough since the last detection (``motion_budget``: the sum of the
frames' changes, :func:`rtvision.faces.shots.change`), but never more than ``stride`` processed
frames after the last one and, for motion alone, never fewer than ``min_stride``. A still
scene is detected every ``stride`` frames; a moving one sooner. Of those, all but every
``fine_every``-th are *coarse* (no finest pyramid level, so no smallest faces; never the first
one, nor the first after a restart, a size change or a cut, nor the second one after a cut).

The schedule depends only on the frames themselves (indices, sizes and a tiny thumbnail),
never on what was found: the frames of the next batch can be booked (:meth:`Schedule.book`, a
:class:`Plan`) and their detections run on another thread while the tracker still works on the
current batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .frames import as_image
from .shots import ShotCuts

# A new shot is detected on its first frame and again this many frames into it. Its first
# detection sees each face at one instant, with no track to carry a face it did not see (one
# turning, half hidden, just below the detector's thresholds, or too small for a coarse
# detection). On the generated cut clip (bench --footage), 12 of the 17 faces >= 40 px missed
# were in the 5 frames after a cut; with this second look 7 were missed in all (recall >= 40 px
# 0.967 -> 0.987), for one detection more per 100 frames.
CUT_SETTLE = 2


@dataclass
class Plan:
    """Frames booked into the detection schedule: their source indices, which of them get a
    scheduled detection, which of those are coarse (no finest pyramid level), and which frames
    start a new shot (each of those gets a full detection)."""

    indices: list[int]
    detect: list[bool]
    coarse: list[bool]
    cut: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cut:
            self.cut = [False] * len(self.indices)


@dataclass
class Booked:
    """What booking brought forward: detections forced by a gap, by a cut, by motion."""

    gaps: int = 0
    cuts: int = 0
    motion: int = 0


@dataclass
class Schedule:
    """Where the detection schedule stands after the frames booked so far."""

    last_detect: int | None = None
    last: int | None = None
    since: int = 0  # booked frames since the last scheduled detection
    since_fine: int = 0  # scheduled detections since the last full one
    moved: float = 0.0  # the frames' changes summed since the last scheduled detection
    since_cut: int | None = None  # booked frames since a cut's detection, while its second one is due
    wh: tuple[int, int] | None = None
    shots: ShotCuts = field(default_factory=ShotCuts)

    def book(
        self, frames: list[Any], indices: list[int], stride: int, max_gap: int, fine_every: int,
        motion_budget: float | None = None, min_stride: int = 1,
    ) -> tuple[Plan, Booked]:
        """Book ``frames`` (source ``indices``, in order, each frame once): the :class:`Plan`,
        and how many of its detections came before the stride was due, and why."""
        plan, coarse, cuts = [], [], []
        booked = Booked()
        for frame, index in zip(frames, indices):
            img = as_image(frame)
            h, w = img.shape[:2]
            gap = self.last is not None and index - self.last > max_gap
            # The stride counts processed frames: a live source that drops frames still gets
            # tracked frames between detections (a long gap forces one).
            fresh = self.last_detect is None or self.last is None or index <= self.last or self.wh != (w, h)
            if fresh:
                self.shots.reset()
                self.since_cut = None
            cut = self.shots.step(img) and not fresh
            self.moved += self.shots.last_change
            due = self.since + 1 >= stride
            moving = motion_budget is not None and self.moved >= motion_budget and self.since + 1 >= min_stride
            settle = self.since_cut is not None and self.since_cut + 1 >= CUT_SETTLE
            detect = fresh or cut or due or gap or moving or settle
            fine = fresh or cut or settle or self.since_fine + 1 >= fine_every
            if detect:
                if not (fresh or due):
                    if cut or (settle and not (gap or moving)):
                        booked.cuts += 1
                    elif gap:
                        booked.gaps += 1
                    else:
                        booked.motion += 1
                self.last_detect, self.since, self.moved = index, 0, 0.0
                self.since_fine = 0 if fine else self.since_fine + 1
                self.since_cut = 0 if cut else None
            else:
                self.since += 1
                self.since_cut = None if self.since_cut is None else self.since_cut + 1
            plan.append(detect)
            coarse.append(detect and not fine)
            cuts.append(cut)
            self.last, self.wh = index, (w, h)
        return Plan(list(indices), plan, coarse, cuts), booked
