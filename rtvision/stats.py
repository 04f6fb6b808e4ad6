"""Rates, latency percentiles and memory, in constant memory (safe for runs of hours)."""

from __future__ import annotations

import collections
import math
import resource
import sys
import threading
import time

import numpy as np
import psutil


class RateMeter:
    """Events per second over a sliding window of ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0, maxlen: int = 4096) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for _ in range(n):
                self._times.append(now)
            self.count += n

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and now - self._times[0] > self.window_s:
                self._times.popleft()
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], 1e-6)
            return (len(self._times) - 1) / span if span < self.window_s * 0.5 else len(self._times) / span


class LatencyHistogram:
    """Percentiles of a stream of millisecond values from log-spaced bins (constant memory).

    Bins are 2% wide from 0.01 ms to 1e6 ms, so a percentile is exact to about 1%.
    Also keeps the last ``recent`` raw values for "last"/rolling views.
    """

    LO, HI, STEP = 0.01, 1e6, 1.02

    def __init__(self, recent: int = 1024) -> None:
        self._nbins = int(math.log(self.HI / self.LO) / math.log(self.STEP)) + 2
        self._counts = np.zeros(self._nbins, np.int64)
        self.n = 0
        self.total = 0.0
        self.max = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=recent)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        v = min(max(ms, self.LO), self.HI)
        b = int(math.log(v / self.LO) / math.log(self.STEP))
        with self._lock:
            self._counts[b] += 1
            self.n += 1
            self.total += ms
            self.max = max(self.max, ms)
            self.recent.append(ms)

    @property
    def last(self) -> float:
        return self.recent[-1] if self.recent else float("nan")

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    def percentile(self, q: float) -> float:
        with self._lock:
            if self.n == 0:
                return float("nan")
            target = q / 100.0 * self.n
            cum = np.cumsum(self._counts)
            b = int(np.searchsorted(cum, max(target, 1), side="left"))
        # bin centre (geometric)
        return min(self.LO * self.STEP ** (b + 0.5), self.max)

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max if self.n else float("nan"),
            "mean": self.mean,
        }


_PROC = psutil.Process()


def rss_mb() -> float:
    return _PROC.memory_info().rss / 2**20


def process_age_s() -> float:
    """Seconds since this process started (what a user waits, imports included)."""
    return max(0.0, time.time() - _PROC.create_time())


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB.

    Linux: ``VmHWM`` of /proc/self/status, the peak of this program's own memory.
    ``getrusage``'s ``ru_maxrss`` survives ``exec``, so a process started by a big one (the
    bench's start-up runs) would report its parent's peak; it is the fallback elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 2**20)


def gpu_memory_mb() -> dict[str, float]:
    """Allocated / reserved / peak CUDA memory of this process, or {} without CUDA in use."""
    try:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return {}
        return {
            "gpu_allocated_mb": torch.cuda.memory_allocated() / 2**20,
            "gpu_reserved_mb": torch.cuda.memory_reserved() / 2**20,
            "gpu_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
            "gpu_peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
        }
    except Exception:  # pragma: no cover - never let stats break a run
        return {}


class StageTimer:
    """Times a block in ms; with ``sync``, waits for the calling thread's CUDA stream before
    reading the clock. Its own stream only: a device-wide synchronize would also wait for the
    GPU work of the threads beside it (the face detections running ahead), and so make the
    stages it times one after the other."""

    def __init__(self, sync: bool = False) -> None:
        self.sync = sync
        self.ms = 0.0

    def __enter__(self) -> StageTimer:
        if self.sync:
            import torch

            torch.cuda.current_stream().synchronize()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.sync:
            import torch

            torch.cuda.current_stream().synchronize()
        self.ms = (time.perf_counter() - self._t) * 1000.0
