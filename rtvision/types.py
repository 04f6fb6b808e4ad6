"""Plain records that flow through the pipeline (numpy only, validated when built).

Units and formats are in the names: ``xyxy`` boxes in original-frame pixels,
``pts_s`` source timestamps in seconds, ``*_ms`` durations in milliseconds,
``captured_at`` / ``done_at`` values of :func:`time.monotonic`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def is_bgr(img: object) -> bool:
    """Whether ``img`` is an image the models take: an HxWx3 uint8 array (BGR, as OpenCV gives)."""
    return isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def check_bgr(img: object, what: str = "image") -> np.ndarray:
    """``img`` if it is an HxWx3 uint8 array, else ValueError naming ``what`` and what it is."""
    if not is_bgr(img):
        got = f"{img.shape} {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{what} must be an HxWx3 uint8 BGR array, got {got}")
    return img


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    index: 0-based position in its source (gaps mean dropped or skipped frames).
    pts_s: source timestamp in seconds (file position, or wall time since start for live sources).
    captured_at: ``time.monotonic()`` when the frame was taken: when it fell due for a paced
        source (a file standing in for a camera), else when its read began.
    image: HxWx3 uint8, BGR as OpenCV gives it.
    """

    index: int
    pts_s: float
    captured_at: float
    image: np.ndarray
    decode_ms: float = 0.0

    def __post_init__(self) -> None:
        check_bgr(self.image, "Frame.image")
        if self.index < 0:
            raise ValueError(f"Frame.index must be >= 0, got {self.index}")

    @property
    def resolution_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class Faces:
    """Face detections of one frame. "No faces" is ``Faces.empty()``, never ``None``.

    xyxy: (N, 4) float32 boxes in original-frame pixels.
    scores: (N,) float32 detector confidences in [0, 1].
    landmarks: (N, 5, 2) float32 in original-frame pixels, or None.
    track_ids: (N,) int64 stable ids across frames, or None when not tracked.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = len(xyxy)
        if len(scores) != n:
            raise ValueError(f"Faces: {n} boxes but {len(scores)} scores")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        if self.landmarks is not None:
            lm = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
            if len(lm) != n:
                raise ValueError(f"Faces: {n} boxes but {len(lm)} landmark sets")
            object.__setattr__(self, "landmarks", lm)
        if self.track_ids is not None:
            ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if len(ids) != n:
                raise ValueError(f"Faces: {n} boxes but {len(ids)} track ids")
            object.__setattr__(self, "track_ids", ids)

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def to_json(self) -> list[dict]:
        out = []
        for i in range(len(self)):
            d: dict = {
                "xyxy": [round(float(v), 1) for v in self.xyxy[i]],
                "score": round(float(self.scores[i]), 4),
            }
            if self.track_ids is not None:
                d["track_id"] = int(self.track_ids[i])
            out.append(d)
        return out

    def to_supervision(self):
        """``supervision.Detections``: xyxy, confidence, tracker_id (None untracked), class_id 0 and
        ``data["class_name"] == "face"``."""
        import supervision as sv

        n = len(self)
        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32, copy=True),
            confidence=self.scores.astype(np.float32, copy=True),
            class_id=np.zeros(n, dtype=int),
            tracker_id=None if self.track_ids is None else self.track_ids.astype(int, copy=True),
            data={"class_name": np.array(["face"] * n, dtype=object)},
        )


@dataclass(frozen=True)
class Labels:
    """Top-k classifier output of one frame, best first.

    class_ids: (K,) int64; scores: (K,) float32 softmax probabilities; names: K class names.
    """

    class_ids: np.ndarray
    scores: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if not (len(ids) == len(scores) == len(self.names)):
            raise ValueError("Labels: class_ids, scores and names must have the same length")
        object.__setattr__(self, "class_ids", ids)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "names", tuple(self.names))

    @classmethod
    def empty(cls) -> Labels:
        return cls(np.zeros((0,), np.int64), np.zeros((0,), np.float32), ())

    def __len__(self) -> int:
        return len(self.class_ids)

    def to_json(self) -> list[dict]:
        return [
            {"label": self.names[i], "class_id": int(self.class_ids[i]), "score": round(float(self.scores[i]), 4)}
            for i in range(len(self))
        ]


@dataclass(frozen=True)
class Result:
    """What the worker produces for one frame.

    timings_ms: per-stage time attributed to this frame (batch stages are divided by the batch size):
        keys among queue_wait, preprocess, classifier, faces, total.
    latency_ms: capture to result, ``(done_at - frame.captured_at - paused_s) * 1000``.
    paused_s: of that time, how long the window's user had the run paused (not the pipeline's).
    """

    frame: Frame
    faces: Faces
    labels: Labels
    timings_ms: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    done_at: float = 0.0
    stream: str | None = None  # the stream's name in a multi-stream run
    paused_s: float = 0.0

    @property
    def latency_ms(self) -> float:
        return max(0.0, (self.done_at - self.frame.captured_at - self.paused_s) * 1000.0)

    def to_json(self, verbose: bool = False) -> dict:
        """The JSON Lines record.

        The keys ``frame, pts_s, faces, labels, latency_ms`` are a contract and are the only
        top-level keys by default (a multi-stream run adds ``stream``, first); ``verbose`` adds
        ``batch_size`` and ``timings_ms``.
        """
        out = {"stream": self.stream} if self.stream is not None else {}
        out |= {
            "frame": self.frame.index,
            "pts_s": round(self.frame.pts_s, 4),
            "faces": self.faces.to_json(),
            "labels": self.labels.to_json(),
            "latency_ms": round(self.latency_ms, 2),
        }
        if verbose:
            out["batch_size"] = self.batch_size
            out["timings_ms"] = {k: round(v, 3) for k, v in self.timings_ms.items()}
        return out

    def to_supervision(self):
        """The faces as ``supervision.Detections`` (boxes, scores, track ids, class name "face"),
        for supervision's annotators, zones and trackers (``pip install -e '.[supervision]'``)."""
        return self.faces.to_supervision()
