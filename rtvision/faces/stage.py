"""The face stage of a run: MTCNN (facenet-pytorch's weights from its wheel) in one of three modes.

``--faces``:

* ``full``  the reference behaviour: the detector on every frame at full resolution
            (:class:`EveryFrameFaces`).
* ``fast``  tuned for live use (:class:`TrackedFaces`): the reference's own image pyramid
            without the levels that only find faces smaller than ``--min-face`` (original
            pixels), so every face it keeps gets the reference's boxes; detection every
            ``--face-stride``-th frame, optical-flow tracking in between with each tracked box
            re-fitted by MTCNN's last stage (O-Net), a local search (``FastMTCNN.detect_near``)
            for faces the re-fit or a detection lost, and stable track ids. ``--small-face-every
            N``: only every N-th detection runs the finest pyramid level (the smallest faces,
            ``--min-face`` to 1.41x it); the others skip it, about a third of a detection's work
            at 1080p (files, and live sources detecting in the background; live detections in
            line run it every time). Live sources detect in the background (a helper thread; each detection merged into the tracks when done) unless
            ``--no-face-background``.
            ``--face-scale`` instead detects on a resized frame (``choose_scale`` picks one from
            the frame size and ``--min-face``): cheaper, but its boxes differ from the reference.
* ``off``   no face stage.

Both stages are :class:`~rtvision.faces.protocols.FaceStage`\\ s: ``detect(frames: list[Frame])
-> list[Faces]``, "no faces" is ``Faces.empty()``, never None; boxes are in original-frame
pixels; ``start()`` / ``close()`` bracket a run (the tracking stage's background thread).
:class:`TrackedFaces` and :class:`EveryFrameFaces` are also
:class:`~rtvision.faces.protocols.PlannedFaceStage`\\ s (the file loop detects ahead). The
detector backend is ``FastMTCNN`` (batched torch re-implementation) or ``FacenetMTCNN``
(facenet-pytorch itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..types import Faces, Frame
from .detector import DEFAULT_FACTOR, DEFAULT_MIN_FACE_SIZE, FacenetMTCNN, FastMTCNN, choose_scale
from .protocols import Detector, FaceStage
from .schedule import Plan
from .strided import StrideStats, StridedFaceTracker

BACKENDS = ("fast", "facenet")


@dataclass(frozen=True)
class FastDefaults:
    """``--faces fast`` defaults per device kind (measured with ``rtvision bench``; see README).

    stride: the most frames between two detections (a still scene); motion_budget: a detection
    comes sooner once the frames since the last one have changed this much in all
    (:func:`rtvision.faces.shots.change`), but never sooner than min_stride frames after it."""

    min_face: int
    stride: int
    small_face_every: int
    motion_budget: float | None = None
    min_stride: int = 1


# CPU: on the shared 1080p street clip (frames change by 0.07 a frame, median) a detection
# comes every ~2.5 frames (39 per 100); with every 2nd or 3rd frame dropped every 2; a still
# scene every 6. Motion budget 0.15 at every frame size: at 1080p it is the one measured that
# keeps recall >= 40 px at 0.97 or more on every generated clip (bench --footage; 0.25: skip2
# 0.959; 0.18 and 0.2, in scratch runs: the street clip 0.966-0.968) while the default still runs at 28.9 fps
# end to end (bench, 3 repeats; 37.2 at 0.25), above the 25 fps floor.
FAST_DEFAULTS = {
    "cpu": FastDefaults(min_face=28, stride=6, small_face_every=2, motion_budget=0.15, min_stride=2),  # live in line: every 1
    # CUDA: a detection of every frame. On an H200 (16 cores), 1080p clip, MobileNetV2 fp16: 56.3
    # fps and recall 0.999 (>= 40 px: 1.000), against 44.1 fps and 0.975 (0.983) for the tracking
    # stage at stride 2, whose flow and re-fits run on the host (assets/bench-gpu-h200-2026-11-30.md).
    "cuda": FastDefaults(min_face=20, stride=1, small_face_every=1),
}


def default_min_face(d: FastDefaults, resolution_wh: tuple[int, int] | None) -> float:
    """``--min-face`` when not given: ``d.min_face`` for frames of 1080 lines and more; below,
    the same share of the frame's short side, down to MTCNN's own smallest face (20 px; at
    770 lines and fewer). The finest pyramid levels that a larger minimum leaves out are most of
    a 1080p detection's work, but on a small frame the whole pyramid costs less than the
    1080p default's (640x360: 54 against 141 ms a detection, one thread), and its faces are
    small: at 640x360 the shared street clip's median face is 27 px tall."""
    if resolution_wh is None:
        return float(d.min_face)
    short = min(resolution_wh)
    return float(max(DEFAULT_MIN_FACE_SIZE, min(d.min_face, d.min_face * short / 1080.0)))


def pyramid_min_face(min_face: float) -> float:
    """The detector's ``min_face_size`` that keeps the reference pyramid (min face 20) minus the
    finest levels, which only find faces smaller than ``min_face``: 20 / 0.709**k, k as large as
    ``min_face`` allows. Level sizes then equal the reference's, so its boxes are reproduced."""
    k = 0
    while DEFAULT_MIN_FACE_SIZE / DEFAULT_FACTOR ** (k + 1) <= min_face * 1.01:
        k += 1
    return DEFAULT_MIN_FACE_SIZE / DEFAULT_FACTOR**k


class EveryFrameFaces:
    """A detector on every frame (the stage interface); no threads of its own. Also a
    :class:`~rtvision.faces.protocols.PlannedFaceStage` (every frame planned), so that the file
    loop runs a batch's detection ahead, beside the classifier of the batch before."""

    background = False  # every frame is detected in line (or ahead, by the file loop)

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.description = detector.description
        self._frames = 0

    def set_live(self, live: bool) -> None:
        """Nothing differs between files and live sources."""

    def detect(self, frames: list[Frame]) -> list[Faces]:
        self._frames += len(frames)
        return self.detector.detect(frames)

    def plan(self, frames: list[Frame]) -> Plan:
        n = len(frames)
        return Plan([f.index for f in frames], [True] * n, [False] * n)

    def detect_planned(self, frames: list[Frame], plan: Plan) -> dict[int, Faces]:
        return dict(enumerate(self.detector.detect(frames)))

    def finish(self, frames: list[Frame], plan: Plan, detections: dict[int, Faces]) -> list[Faces]:
        if len(detections) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(detections)} detections")
        self._frames += len(frames)
        return [detections[i] for i in range(len(frames))]

    def counts(self) -> dict[str, float]:
        n = self._frames
        return {"frames": n, "detected": n, "detections_per_100": 100.0 if n else float("nan")}

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class TrackedFaces:
    """A detector run every ``stride``-th frame with tracking in between (the stage interface)."""

    def __init__(
        self, detector: Detector, stride: int, small_face_every: int = 1, small_face_every_live: int | None = None,
        background: bool = True, motion_budget: float | None = None, min_stride: int = 1,
        live_pnet_threshold: float | None = None,
    ) -> None:
        self.detector = detector
        self._background = background
        # Live sources' background detections: a P-Net threshold of their own (shorter
        # detections, so that a new face waits less for one); re-fits and searches keep the detector's.
        quick = getattr(detector, "with_pnet_threshold", None)
        background_detector = quick(live_pnet_threshold) if live_pnet_threshold is not None and quick is not None else None
        # Live sources drop frames whenever the worker is slower than the camera; flow plus the
        # O-Net re-fit bridges a few dropped frames, so only a long gap forces a detection.
        self.tracker = StridedFaceTracker(detector, stride=stride, max_gap=3 * stride, fine_every=small_face_every,
                                          motion_budget=motion_budget, min_stride=min(min_stride, stride),
                                          background_detector=background_detector)
        self.stride = stride
        self._every = {False: small_face_every, True: small_face_every_live or small_face_every}
        sooner = f", sooner with motion (from {min(min_stride, stride)})" if motion_budget is not None and min_stride < stride else ""
        self.description = f"{detector.description}, stride {stride}{sooner} + tracking"
        files, live = self._every[False], self._every[True]
        if self.tracker.trackable and max(files, live) > 1:
            self.description += f", smallest faces every {files} detections" + ("" if live == files else f" (live: every {live})")
        if background_detector is not None and background:
            self.description += f", live detections at P-Net {live_pnet_threshold:g}"

    def set_live(self, live: bool) -> None:
        """The run's source kind (the pipeline says it before :meth:`start`): the smallest-face
        cadence for files, or for live sources (see :func:`build_face_setup`: the files' one
        when detections run in the background, the full pyramid every time in line), and,
        live, detections in the background (see ``StridedFaceTracker.set_background``) unless
        built with ``background=False``."""
        self.tracker.set_fine_every(self._every[bool(live)])
        self.tracker.set_background(bool(live) and self._background)

    @property
    def background(self) -> bool:
        """Whether detections run on a helper thread of the face stage's own (live sources)."""
        return self.tracker.background

    def share_detections(self, pool) -> None:
        """Background detections on ``pool``, shared with other streams' stages (see
        ``StridedFaceTracker.share_detections``); before :meth:`start`."""
        self.tracker.share_detections(pool)

    def start(self) -> None:
        """Start of a run: the background detection thread, if detections run in the background."""
        self.tracker.start()

    def close(self) -> None:
        """End of a run: join the background detection thread, if any."""
        self.tracker.close()

    @property
    def stats(self) -> StrideStats:
        return self.tracker.stats

    def counts(self) -> dict[str, float]:
        return self.tracker.stats.counts()

    def detect(self, frames: list[Frame]) -> list[Faces]:
        return self.tracker.process(frames, [f.index for f in frames])

    # The same in two steps, so that the scheduled detections can run ahead on another thread
    # (see InferenceWorker): plan() and detect_planned() for a batch, then finish() it, in
    # frame order.
    def plan(self, frames: list[Frame]) -> Plan:
        return self.tracker.plan(frames, [f.index for f in frames])

    def detect_planned(self, frames: list[Frame], plan: Plan) -> dict[int, Faces]:
        return self.tracker.detect_planned(frames, plan)

    def finish(self, frames: list[Frame], plan: Plan, detections: dict[int, Faces]) -> list[Faces]:
        return self.tracker.process(frames, plan=plan, detections=detections)


class FaceSetup:
    """The face side of a set of models (a :class:`~rtvision.faces.protocols.FaceStageFactory`):
    the detector, whose networks are built once, and the mode's settings. :meth:`new_stage` makes
    the per-run stage over the same networks, so that a bench reusing the models, or many streams
    sharing them, never share tracks, schedules, statistics or threads."""

    def __init__(self, detector: Detector, stride: int = 1, small_face_every: int = 1,
                 small_face_every_live: int | None = None, background: bool = True,
                 motion_budget: float | None = None, min_stride: int = 1, live_pnet_threshold: float | None = None) -> None:
        self.detector = detector
        self.stride = stride
        self._settings = (small_face_every, small_face_every_live, background, motion_budget, min_stride, live_pnet_threshold)
        self.description = self.new_stage().description

    def new_stage(self) -> FaceStage:
        if self.stride > 1:
            return TrackedFaces(self.detector, self.stride, *self._settings)
        return EveryFrameFaces(self.detector)


def build_face_setup(
    mode: str,
    device: torch.device,
    scale: float | None = None,
    stride: int | None = None,
    min_face: int | None = None,
    resolution_wh: tuple[int, int] | None = None,
    backend: str = "fast",
    small_face_every: int | None = None,
    background: bool = True,
    live_pnet_threshold: float | None = None,
) -> FaceSetup | None:
    """The face side for ``--faces full|fast|off`` (None when off); explicit knobs win over the mode."""
    if mode == "off":
        return None
    if backend not in BACKENDS:
        raise ValueError(f"face backend must be one of {BACKENDS}")
    detector_min = float(DEFAULT_MIN_FACE_SIZE)
    every = every_live = small_face_every or 1
    # live_pnet_threshold (--live-pnet-threshold) has no default of its own: 0.8 measured ~110
    # against ~145 ms a detection on the 2-core CPU and found new faces sooner (recall >= 40 px
    # +0.4 to +1 point), but its boxes drift more (precision >= 40 px 0.956 against 0.983 in one
    # bench; assets/experiment-live-pnet-cpu-2026-11-30.md).
    budget, min_stride = None, 1
    if mode == "full":
        s, k = scale or 1.0, stride or 1
        if min_face is not None:  # the finest levels, which find only smaller faces, left out
            detector_min = pyramid_min_face(min_face * s)
    elif mode == "fast":
        d = FAST_DEFAULTS.get(device.type, FAST_DEFAULTS["cpu"])
        mf = min_face or default_min_face(d, resolution_wh)
        k = stride or d.stride
        every = small_face_every or d.small_face_every
        # Live sources: the same cadence when their detections run in the background, where a
        # coarse detection is done sooner (it skips about a third of the work), so a new face is
        # carried sooner. In one bench (live, 5 repeats, assets/bench-live-cadence-cpu-2026-12-01.md)
        # recall >= 40 px 0.948 against 0.935 with the full pyramid every time, precision 0.968
        # against 0.974, overall recall 0.934 against 0.914. Detections in line (--no-face-background)
        # keep the full pyramid every time: there the coarse ones cost recall (0.951 against
        # 0.981, before background detections existed).
        if background:
            every_live = small_face_every or d.small_face_every
        budget, min_stride = d.motion_budget, d.min_stride
        if scale is None and min_face is not None and resolution_wh is not None and min_face > 2 * DEFAULT_MIN_FACE_SIZE:
            s = choose_scale(resolution_wh, mf)  # only big faces wanted: a smaller frame is enough
        elif scale is None:
            s, detector_min = 1.0, pyramid_min_face(mf)
        else:
            s = scale
            if min_face is not None:
                detector_min = pyramid_min_face(min_face * s)
    else:
        raise ValueError(f"unknown face mode {mode!r}")
    cls = FastMTCNN if backend == "fast" else FacenetMTCNN
    det = cls(device, scale=round(s, 4), min_face_size=detector_min)
    if detector_min != DEFAULT_MIN_FACE_SIZE:
        det.description += f" min face {detector_min:.0f}px"
    det.description = f"{mode}: {det.description}" + (", every frame" if mode == "fast" and k == 1 else "")
    return FaceSetup(det, k, every, every_live, background, budget, min_stride, live_pnet_threshold)


def build_face_stage(*args, **kwargs) -> FaceStage | None:
    """One stage for one run: ``build_face_setup(...).new_stage()`` (None when off)."""
    setup = build_face_setup(*args, **kwargs)
    return None if setup is None else setup.new_stage()
