"""Per-result records of one measured run, and the statistics computed from them.

Every statistic of a run is computed here from the records *after* the first ``warmup`` results,
never from the runner's whole-run summary (where warmup is mixed in). Records are small (no
images): a 10-minute soak at 25 fps keeps 15,000 of them.

Latency is "decode start to result written": the frame's decode time plus the time from the end
of its decode to the moment its result was written by the sinks (for the naive loop: to the end
of its JSONL write). For a paced (live) file that is the time from the frame's due moment to
its result on disk, give or take the decoder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..stats import rss_mb

STAGES = ("decode", "queue_wait", "preprocess", "classifier", "faces", "annotate", "sink")


@dataclass
class ResultRecord:
    """What a run keeps of one result.

    index: frame index in the (looped) stream; ``index % file_frames`` is the file's frame.
    written_at: ``time.monotonic()`` when its result was written.
    latency_ms: decode start to result written.
    stage_ms: per-stage time attributed to this frame (keys of STAGES).
    faces_xyxy: (N, 4) float32 face boxes, original pixels (None when the face stage is off).
    top1: the classifier's top-1 class id (None when the classifier is off).
    batch: serial number of the batch it came from (its results are written together); -1: unknown.
    """

    index: int
    written_at: float
    latency_ms: float
    stage_ms: dict[str, float]
    faces_xyxy: np.ndarray | None
    top1: int | None
    batch: int = -1


class RunRecording:
    """Records of one run, stored as columns, plus RSS samples ``(results so far, monotonic s, MB)``.

    A soak keeps tens of thousands of records while it measures RSS, so the recorder must not
    grow the heap it measures: the columns are numpy arrays allocated up front for
    ``capacity`` results (doubled if more come), ~60 bytes a result, and face boxes are kept
    only with ``keep_faces`` (needed for face quality). A list of ``ResultRecord`` objects
    costs ~0.85 MB per 1,000 results: about the whole RSS slope target of a soak.
    ``records`` rebuilds the objects on demand, after the run.
    """

    def __init__(self, capacity: int = 1024, keep_faces: bool = True, rss_every_s: float = 0.25) -> None:
        self.started_at = time.monotonic()
        self.rss: list[tuple[int, float, float]] = []
        self.rss_every_s = float(rss_every_s)
        self.rss_start_mb = rss_mb()
        self.keep_faces = bool(keep_faces)
        self.n = 0
        cap = max(16, int(capacity))
        self._index = np.empty(cap, np.int64)
        self._written = np.empty(cap, np.float64)
        self._latency = np.empty(cap, np.float64)
        self._stages = np.empty((cap, len(STAGES)), np.float32)
        self._top1 = np.empty(cap, np.int64)  # -1: no classifier
        self._batch = np.empty(cap, np.int64)
        self._faces: list[np.ndarray | None] = []
        self._records: list[ResultRecord] | None = None  # built once after the run

    def __len__(self) -> int:
        return self.n

    def add(self, rec: ResultRecord) -> None:
        i = self.n
        if i == len(self._index):
            self._grow()
        self._index[i] = rec.index
        self._written[i] = rec.written_at
        self._latency[i] = rec.latency_ms
        self._stages[i] = [rec.stage_ms.get(k, 0.0) for k in STAGES]
        self._top1[i] = -1 if rec.top1 is None else rec.top1
        self._batch[i] = rec.batch
        if self.keep_faces:
            self._faces.append(rec.faces_xyxy)
        self.n = i + 1
        self._records = None
        if not self.rss or rec.written_at - self.rss[-1][1] >= self.rss_every_s:
            self.rss.append((self.n, rec.written_at, rss_mb()))

    def _grow(self) -> None:
        for name in ("_index", "_written", "_latency", "_stages", "_top1", "_batch"):
            a = getattr(self, name)
            b = np.empty((2 * a.shape[0], *a.shape[1:]), a.dtype)
            b[: a.shape[0]] = a
            setattr(self, name, b)

    @property
    def records(self) -> list[ResultRecord]:
        """The records as objects (built on first use after the last ``add``)."""
        if self._records is not None:
            return self._records
        out = []
        for i in range(self.n):
            t = int(self._top1[i])
            out.append(ResultRecord(
                index=int(self._index[i]),
                written_at=float(self._written[i]),
                latency_ms=float(self._latency[i]),
                stage_ms={k: float(v) for k, v in zip(STAGES, self._stages[i])},
                faces_xyxy=self._faces[i] if self.keep_faces else None,
                top1=None if t < 0 else t,
                batch=int(self._batch[i]),
            ))
        self._records = out
        return out


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max / mean in ms (exact percentiles, linear interpolation)."""
    if not len(values):
        return {k: float("nan") for k in ("p50", "p95", "p99", "max", "mean")}
    arr = np.asarray(values, np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def rss_slope_mb_per_1000(samples: Sequence[tuple[int, float, float]]) -> float:
    """Least-squares slope of RSS (MB) against results written, per 1,000 frames; NaN under 3 samples."""
    if len(samples) < 3:
        return float("nan")
    x = np.array([s[0] for s in samples], np.float64)
    y = np.array([s[2] for s in samples], np.float64)
    if np.ptp(x) == 0:
        return float("nan")
    return float(1000.0 * np.polyfit(x, y, 1)[0])


def latency_drift(records: Sequence[ResultRecord], window_s: float = 60.0) -> dict:
    """p99 latency at the start vs the end of a run.

    Runs of at least two ``window_s`` windows compare the first and last minute; shorter runs
    compare the first and last quarter of their results. ``ratio`` = last / first; the target is
    ``ratio <= 1.2`` (p99 in the last window within 20% of the first).
    """
    if len(records) < 8:
        return {"basis": "too few results", "first_p99_ms": float("nan"), "last_p99_ms": float("nan"),
                "ratio": float("nan"), "within_20pct": None}
    t0, t1 = records[0].written_at, records[-1].written_at
    if t1 - t0 >= 2 * window_s:
        first = [r.latency_ms for r in records if r.written_at - t0 <= window_s]
        last = [r.latency_ms for r in records if t1 - r.written_at <= window_s]
        basis = f"first vs last {window_s:g} s"
    else:
        q = max(1, len(records) // 4)
        first = [r.latency_ms for r in records[:q]]
        last = [r.latency_ms for r in records[-q:]]
        basis = "first vs last quarter of results"
    a, b = _pct(first, 99), _pct(last, 99)
    ratio = b / a if a > 0 else float("nan")
    out = {
        "basis": basis,
        "first_p99_ms": a,
        "last_p99_ms": b,
        "ratio": ratio,
        "within_20pct": bool(ratio <= 1.2) if not math.isnan(ratio) else None,
    }
    if t1 - t0 >= 2 * window_s:
        # p99 of every window in between too (from the start; a remainder of at least half a
        # window is one of its own): shows whether first vs last is a trend or the spread a
        # shared machine gives any one window
        span = t1 - t0
        n_win = math.ceil(span / window_s)
        if span - (n_win - 1) * window_s < window_s / 2:  # a short remainder joins the window before
            n_win -= 1
        lat = np.array([r.latency_ms for r in records], np.float64)
        at = np.array([r.written_at for r in records], np.float64)
        win = np.minimum(((at - t0) // window_s).astype(np.int64), n_win - 1)
        out["window_p99_ms"] = [_pct(lat[win == i], 99) for i in range(n_win)]
        out["window_p99_min_ms"] = float(np.nanmin(out["window_p99_ms"]))
        out["window_p99_max_ms"] = float(np.nanmax(out["window_p99_ms"]))
    return out


def summarize(rec: RunRecording, warmup: int, live: bool, frames_read: int | None = None,
              frames_dropped_total: int | None = None) -> dict:
    """Statistics of one run after the first ``warmup`` results (see module doc)."""
    records = rec.records
    # The warm-up ends with the batch of its last result: the results of one batch are written
    # together, so measuring from inside a batch would count its other frames in no time.
    first = min(warmup, len(records))
    if first > 0:
        while first < len(records) and records[first].batch >= 0 and records[first].batch == records[first - 1].batch:
            first += 1
    measured = records[first:]
    n = len(measured)
    out: dict = {
        "results_total": len(records),
        "warmup_results": first,
        "frames_measured": n,
    }
    if n == 0:
        out.update(fps=float("nan"), latency_ms=latency_summary([]), stage_ms={k: float("nan") for k in STAGES})
        return out
    t_start = records[first - 1].written_at if first > 0 else rec.started_at
    span = measured[-1].written_at - t_start
    out["elapsed_s"] = span
    out["fps"] = n / span if span > 0 else float("nan")
    out["latency_ms"] = latency_summary([r.latency_ms for r in measured])
    out["stage_ms"] = {k: float(np.mean([r.stage_ms.get(k, 0.0) for r in measured])) for k in STAGES}
    samples = [s for s in rec.rss if s[0] > first]
    out["rss_start_mb"] = rec.rss_start_mb
    out["rss_end_mb"] = rec.rss[-1][2] if rec.rss else float("nan")
    # the run's peak: its start counts too (a run whose samples all fall below it peaked there)
    out["rss_peak_run_mb"] = max([s[2] for s in rec.rss] + [rec.rss_start_mb], default=float("nan"))
    out["rss_slope_mb_per_1000"] = rss_slope_mb_per_1000(samples)
    # The same over the last three quarters of the run (by time): allocator pools and the
    # backend's per-shape caches fill early, so this is the slope a long run keeps.
    if samples:
        t_a, t_b = samples[0][1], samples[-1][1]
        out["rss_slope_late_mb_per_1000"] = rss_slope_mb_per_1000([x for x in samples if x[1] >= t_a + 0.25 * (t_b - t_a)])
    if live:
        # drops inside the measured window, the one fps is measured over: from the last warm-up
        # result (exclusive) to the last measured one; without a warm-up, from the first measured
        span_frames = measured[-1].index - (records[first - 1].index if first > 0 else measured[0].index - 1)
        out["dropped_measured"] = span_frames - n
        out["drop_share_measured"] = (span_frames - n) / span_frames if span_frames else 0.0
        out["frames_read"] = frames_read
        out["frames_dropped"] = frames_dropped_total
        out["drop_share"] = (frames_dropped_total / frames_read) if frames_read else float("nan")
        out["drift"] = latency_drift(measured)
    return out
