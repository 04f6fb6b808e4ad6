"""The interfaces the face code meets through: what a detector offers, and what a face stage does.

- :class:`Detector`: faces in frames. :class:`TrackableDetector` adds the cheap calls a tracker
  uses between detections (FastMTCNN has them; facenet-pytorch's MTCNN does not).
- :class:`FaceStage`: what the inference worker runs (``--faces full``: a detector on every
  frame). :class:`CountingFaceStage` also counts its detections (the run summary). :class:`PlannedFaceStage` adds the tracking stage's schedule (``--faces fast``): the
  worker runs each batch's detections ahead on its helper thread (files), or the stage detects
  in the background on a thread of its own (live sources).

All are ``runtime_checkable``: the one place that needs to know which a stage or a detector is
checks it once, with ``isinstance``, when it is built (never ``hasattr``).

Frames are ``Frame`` records or HxWx3 uint8 BGR images; boxes are ``xyxy`` in original-frame
pixels; "no faces" is ``Faces.empty()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..types import Faces, Frame
from .schedule import Plan


@runtime_checkable
class Detector(Protocol):
    """A face detector: one ``Faces`` per frame, in order."""

    description: str

    def detect(self, frames: Sequence[Any]) -> list[Faces]: ...


@runtime_checkable
class TrackableDetector(Detector, Protocol):
    """A detector with the calls a tracker makes between full detections."""

    def detect_coarse(self, frames: Sequence[Any]) -> list[Faces]:
        """``detect`` without the finest pyramid level (the smallest faces): cheaper."""
        ...

    def coarse_blind_below(self) -> float:
        """Box height (original pixels) under which ``detect_coarse`` may miss a face that
        ``detect`` finds."""
        ...

    def refine(self, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
        """The last stage on boxes (N,4) carried into ``frame``: (one face per box, mask (N,) of
        the boxes it still calls a face)."""
        ...

    def detect_near(self, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
        """The detector in small windows around boxes (N,4): (one face per box, mask (N,) of the
        boxes a face was found for; the other rows are the input boxes)."""
        ...


@runtime_checkable
class FaceStage(Protocol):
    """The face stage of a run. ``start()`` before the first ``detect`` (threads of its own, if
    any), ``close()`` at the end (joins them; idempotent)."""

    description: str

    def detect(self, frames: list[Frame]) -> list[Faces]: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class CountingFaceStage(FaceStage, Protocol):
    """A face stage that says what it did over its run (the run summary, the bench)."""

    def counts(self) -> dict[str, float]:
        """At least ``frames`` (processed), ``detected`` (frames given to the full detector) and
        ``detections_per_100`` (NaN before the first frame); a tracking stage adds why its
        detections came when they did (``cuts``, ``motion``, ``gaps``) and its searches."""
        ...


@runtime_checkable
class PlannedFaceStage(FaceStage, Protocol):
    """A face stage with a detection schedule: ``detect`` in three steps, so that a batch's
    detections can run ahead on another thread: ``plan`` (in frame order, each frame once),
    ``detect_planned`` (any thread), ``finish`` (in frame order)."""

    @property
    def background(self) -> bool:
        """Whether detections run on a helper thread of the stage's own (live sources)."""
        ...

    def set_live(self, live: bool) -> None:
        """The run's source kind, said before ``start()``."""
        ...

    def plan(self, frames: list[Frame]) -> Plan: ...

    def detect_planned(self, frames: list[Frame], plan: Plan) -> dict[int, Faces]: ...

    def finish(self, frames: list[Frame], plan: Plan, detections: dict[int, Faces]) -> list[Faces]: ...


@runtime_checkable
class FaceStageFactory(Protocol):
    """What a set of models keeps of the face side: the networks, built once, and the mode's
    settings. ``new_stage()`` makes a fresh per-run stage (tracks, schedule, statistics, its
    helper thread) over the same networks: one per run, and one per stream."""

    description: str

    def new_stage(self) -> FaceStage: ...
