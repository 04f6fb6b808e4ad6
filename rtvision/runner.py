"""The consumer end of the pipeline: writes the sinks, keeps the live statistics, publishes the
latest result for a window, and builds the end-of-run summary.

Headless, ``Runner.run()`` runs on the main thread (so Ctrl-C lands there). With the window it
runs on a thread of its own and the window polls ``latest``; the window never blocks it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .annotate import annotate, status_line
from .config import RunConfig
from .errors import EXIT_OK, Interrupted, RtvisionError
from .faces.protocols import CountingFaceStage
from .pipeline import Pipeline
from .sinks import JsonlSink, StoppedWhileWriting, VideoSink
from .specs import redact_text as redact_url_text
from .specs import redact_url
from .stats import LatencyHistogram, RateMeter, gpu_memory_mb, peak_rss_mb, process_age_s, rss_mb
from .types import Result

log = logging.getLogger(__name__)

RECENT_RESULTS = 16  # results kept for the window (bounded: a slow window skips, never queues)

STAGES = ("decode", "queue_wait", "preprocess", "classifier", "faces", "annotate", "sink")


def write_counted(r: Result, img, jsonl: JsonlSink | None, video: VideoSink | None, add: Callable[[float], None]) -> None:
    """One result to its sinks, the JSONL first, then ``add(sink_ms)`` to count it. A record the
    JSONL refuses (a broken pipe, a full disk) is in no output and is not counted; a frame whose
    record was written counts even if the video then fails. So the summary's frames agree with
    the JSONL's lines, and the video never has a frame the two lack (it had one: the frame went
    to the video before the JSONL write failed)."""
    t1 = time.perf_counter()
    if jsonl is not None:
        jsonl.write(r)
    try:
        if video is not None:
            video.write(img)
    except BaseException:
        if jsonl is not None:
            add((time.perf_counter() - t1) * 1000.0)
        raise
    add((time.perf_counter() - t1) * 1000.0)


@dataclass
class LiveStats:
    """Statistics the window and the summary read (updated by the consumer thread only)."""

    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    infer_rate: RateMeter = field(default_factory=RateMeter)
    processed: int = 0
    stage_ms_total: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in STAGES})
    started_at: float = field(default_factory=time.monotonic)
    first_result_at: float | None = None
    first_result_age_s: float | None = None  # seconds from process start to the first result
    first_batch: int = 0  # results of the first batch (written together, at first_result_at)
    last_result_at: float | None = None
    last_batch: int = 0
    first_result_cpu_s: float | None = None  # the process's CPU time (all threads) at the first result
    last_result_cpu_s: float | None = None
    rss_samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))  # (processed, t, MB)
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=600))  # (t, fps, latency)

    def add(self, r: Result, annotate_ms: float, sink_ms: float) -> None:
        now = time.monotonic()
        self.processed += 1
        self.last_batch = r.batch_size
        self.latency.add(r.latency_ms)
        self.infer_rate.tick(1, now)
        cpu = time.process_time()
        if self.first_result_at is None:
            self.first_result_at, self.first_batch = now, r.batch_size
            self.first_result_age_s = process_age_s()
            self.first_result_cpu_s = cpu
        self.last_result_at = now
        self.last_result_cpu_s = cpu
        for k in ("decode", "queue_wait", "preprocess", "classifier", "faces"):
            self.stage_ms_total[k] += r.timings_ms.get(k, 0.0)
        self.stage_ms_total["annotate"] += annotate_ms
        self.stage_ms_total["sink"] += sink_ms
        if not self.rss_samples or now - self.rss_samples[-1][1] >= 0.5:
            self.rss_samples.append((self.processed, now, rss_mb()))
        if not self.history or now - self.history[-1][0] >= 0.1:
            self.history.append((now, self.infer_rate.rate(now), r.latency_ms))

    @property
    def cpu_cores(self) -> float:
        """CPU cores the whole process kept busy from the first result to the last (its CPU time,
        every thread, over that wall time; start-up excluded); NaN before two results."""
        if self.first_result_cpu_s is None or self.last_result_cpu_s is None or not self.last_result_at:
            return float("nan")
        span = self.last_result_at - self.first_result_at
        return (self.last_result_cpu_s - self.first_result_cpu_s) / span if span > 0 else float("nan")


def rss_slope_mb_per_1000(samples) -> float:
    """Least-squares slope of RSS against frames processed, in MB per 1,000 frames."""
    pts = list(samples)
    if len(pts) < 3:
        return float("nan")
    n = len(pts)
    xs = [p[0] for p in pts]
    ys = [p[2] for p in pts]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return 1000.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def pipeline_held(pipeline) -> bool:
    """Whether a pipeline can do no more until its results are consumed: its results queue is
    full, or its worker is done."""
    worker = getattr(pipeline, "worker", None)
    return pipeline.out.full() or (worker is not None and not worker.is_alive())


class Pauses:
    """The window's pause and step, for a consumer of results (:class:`Runner`, and the
    multi-stream ``MultiRunner``): a gate the consumer waits at before each result.

    Pausing holds the consumer only: the worker goes on until the results queue is full (then a
    file source waits, and a live one drops at its ring buffer, as it must). So the time taken
    out of latencies, rates and CPU use is the time the pipeline was *held*: paused and
    ``held()`` (the results queue full, or the worker done), checked every ``POLL_S`` while
    the consumer waits at the gate; work the pipeline did while paused counts as work.
    ``stop``: the run's stop event (a stop lets the consumer through; :meth:`wake` it)."""

    POLL_S = 0.02

    def __init__(self, stop: threading.Event, held: Callable[[], bool] | None = None) -> None:
        self._stop = stop
        self._held = held or (lambda: True)
        self._gate = threading.Condition()
        self._paused = False
        self._steps = 0
        self._spans: list[list] = []  # [start, end or None, cpu at start, cpu at end]: held (monotonic, process CPU s)

    @property
    def paused(self) -> bool:
        return self._paused

    def _track(self) -> None:
        """Open or close the held span (under the gate's lock)."""
        is_open = bool(self._spans) and self._spans[-1][1] is None
        held = self._paused and self._held()
        if held and not is_open:
            self._spans.append([time.monotonic(), None, time.process_time(), None])
        elif is_open and not held:
            self._spans[-1][1], self._spans[-1][3] = time.monotonic(), time.process_time()

    def pause(self) -> None:
        with self._gate:
            self._paused = True
            self._track()

    def resume(self) -> None:
        with self._gate:
            self._paused = False
            self._steps = 0
            self._track()
            self._gate.notify_all()

    def step(self, n: int = 1) -> None:
        """While paused, let ``n`` more results through."""
        with self._gate:
            self._steps += n
            self._gate.notify_all()

    def wake(self) -> None:
        """A stop was asked: let a waiting consumer see it."""
        with self._gate:
            self._gate.notify_all()

    def wait(self) -> None:
        """Wait while paused (a step lets one result through; a stop, all)."""
        with self._gate:
            while self._paused and self._steps == 0 and not self._stop.is_set():
                self._track()
                self._gate.wait(self.POLL_S)
            if self._paused and self._steps:
                self._steps -= 1
            self._track()

    def between(self, a: float, b: float) -> float:
        """Seconds the pipeline was held by a pause between ``a`` and ``b`` (monotonic)."""
        now = time.monotonic()
        return sum(max(0.0, min(b, end if end is not None else now) - max(a, start)) for start, end, *_ in list(self._spans))

    def cpu_between(self, a: float, b: float) -> float:
        """The process's CPU seconds during those held times (a live source still decodes)."""
        now, now_cpu = time.monotonic(), time.process_time()
        total = 0.0
        for start, end, c0, c1 in list(self._spans):
            e = end if end is not None else now
            lo, hi = max(a, start), min(b, e)
            if hi > lo and e > start:  # the span's CPU, pro rata of its part within [a, b]
                total += ((c1 if c1 is not None else now_cpu) - c0) * (hi - lo) / (e - start)
        return total

    def unpaused(self, r: Result) -> Result:
        """``r`` with the time the pipeline was held between its capture and its result
        (``paused_s``), which its latency leaves out."""
        if self._spans:
            paused = self.between(r.frame.captured_at, r.done_at)
            if paused > 0:
                return dataclasses.replace(r, paused_s=paused)
        return r

    def cpu_cores(self, s: LiveStats) -> float:
        """:attr:`LiveStats.cpu_cores` with the held times (and their CPU) left out."""
        if s.first_result_cpu_s is None or s.last_result_cpu_s is None or not s.last_result_at:
            return float("nan")
        a, b = s.first_result_at, s.last_result_at
        span = b - a - self.between(a, b)
        cpu = s.last_result_cpu_s - s.first_result_cpu_s - self.cpu_between(a, b)
        return cpu / span if span > 0 else float("nan")


class PauseControls:
    """The window's controls on a runner that has ``pauses`` (:class:`Pauses`)."""

    pauses: Pauses

    @property
    def paused(self) -> bool:
        return self.pauses.paused

    def pause(self) -> None:
        self.pauses.pause()

    def resume(self) -> None:
        self.pauses.resume()

    def step(self, n: int = 1) -> None:
        """While paused, let ``n`` more results through."""
        self.pauses.step(n)


class Runner(PauseControls):
    """Consumes a started pipeline. ``request_stop()`` ends the run cleanly from any thread."""

    def __init__(self, cfg: RunConfig, pipeline: Pipeline, import_baseline_mb: float | None = None) -> None:
        """import_baseline_mb: RSS once torch, torchvision and OpenCV are imported, before any
        model is built (the summary reports memory above it); default: RSS now."""
        self.cfg = cfg
        self.pipeline = pipeline
        self.stats = LiveStats()
        self.latest: Result | None = None  # read by the window (a single reference swap)
        # the last few results, for a window that plays a file's batches frame by frame
        self.recent: collections.deque[Result] = collections.deque(maxlen=RECENT_RESULTS)
        self.error: BaseException | None = None
        self.exit_code = EXIT_OK
        self.summary: dict | None = None
        self.rss_start_mb = rss_mb()
        self.import_baseline_mb = import_baseline_mb if import_baseline_mb is not None else self.rss_start_mb
        self.listeners: list[Callable[[Result], None]] = []  # called per result on the consumer thread
        self._stop = threading.Event()
        self.pauses = Pauses(self._stop, held=lambda: pipeline_held(pipeline))  # the window's pause and step

    def paused_between(self, a: float, b: float) -> float:
        """Seconds the run was paused between ``a`` and ``b``: taken out of latencies and rates
        (a user's pause is not the pipeline's time)."""
        return self.pauses.between(a, b)

    def interrupt(self, exit_code: int) -> None:
        """A signal asked us to stop: finish cleanly, then exit with ``exit_code`` (129/130/143).

        Safe to call from a signal handler: it only sets events, so no write is cut in half.
        """
        self.exit_code = exit_code
        self.request_stop()

    @property
    def stop_requested(self) -> bool:
        """Whether the run was ended from outside (window closed, q/Esc, a signal)."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        self.pipeline.request_stop()
        self.pauses.wake()

    def run(self) -> dict:
        """Consume every result until the end of the stream or a stop request; the outputs are
        finalized before it returns. It only asks the pipeline to stop (its owner stops it and
        joins its threads); the summary it returns is rebuilt by the owner after that
        (``build_summary``), with any thread that did not stop."""
        cfg = self.cfg
        progress = None
        try:
            with contextlib.ExitStack() as outputs:
                jsonl = outputs.enter_context(JsonlSink(cfg.results_path, cfg.results_verbose, stopped=self._stop.is_set)) if cfg.results_path else None
                video = outputs.enter_context(VideoSink(cfg.save_path, self.pipeline.info.fps)) if cfg.save_path else None
                progress = self._progress_bar()
                try:
                    results = self.pipeline.results()
                    while True:
                        self.pauses.wait()
                        if self._stop.is_set():
                            break
                        r = next(results, None)
                        if r is None:
                            break
                        r = self.pauses.unpaused(r)
                        t0 = time.perf_counter()
                        img = annotate(r, status=status_line(r, self.stats.infer_rate.rate())) if video else None
                        annotate_ms = (time.perf_counter() - t0) * 1000.0
                        write_counted(r, img, jsonl, video, lambda ms: self.stats.add(r, annotate_ms, ms))
                        self.recent.append(r)
                        self.latest = r
                        for listener in self.listeners:
                            listener(r)
                        if progress is not None:
                            progress.update(1)
                except KeyboardInterrupt:
                    self.exit_code = Interrupted().exit_code
                    log.warning("interrupted; finalizing outputs")
                except StoppedWhileWriting as exc:  # the stop's own exit code stands
                    log.warning("%s", exc)
                except Interrupted as exc:
                    self.exit_code = exc.exit_code
                    log.warning("terminated; finalizing outputs")
                finally:
                    self.pipeline.request_stop()  # the sinks finalize while the threads wind down
        except RtvisionError as exc:
            self.error = exc
            self.exit_code = exc.exit_code
        except BaseException as exc:  # noqa: BLE001 - reported, never a silent hang
            self.error = exc
            self.exit_code = 1
        finally:
            self.pipeline.request_stop()
            if progress is not None:
                progress.close()
            self.summary = self.build_summary()
        return self.summary

    def _progress_bar(self):
        info = self.pipeline.info
        if not self.cfg.progress or info.live or self.cfg.source.realtime:
            return None
        from tqdm import tqdm

        total = info.frame_count
        if self.cfg.source.max_frames:
            total = min(total or self.cfg.source.max_frames, self.cfg.source.max_frames)
        return tqdm(total=total, unit="frame", desc="rtvision", dynamic_ncols=True, leave=False, disable=None)  # None: a terminal only

    def build_summary(self) -> dict:
        p, s = self.pipeline, self.stats
        cap = p.capture.stats if p.capture else None
        read = cap.read if cap else 0
        dropped = p.frames_dropped
        end = s.last_result_at or time.monotonic()
        paused = self.paused_between(s.started_at, end)
        elapsed = end - s.started_at - paused  # a pause in the window is not the pipeline's time
        # From the first result on: the frames of the batches after the first one (the first
        # batch's results are all written at first_result_at; counting them would inflate it).
        span = (s.last_result_at - s.first_result_at - self.paused_between(s.first_result_at, s.last_result_at)
                if s.last_result_at and s.first_result_at else 0.0)
        steady = (s.processed - s.first_batch) / span if s.processed > s.first_batch and span > 0 else float("nan")
        models = p.models
        summary = {
            "source": p.info.name if p.info else redact_url(self.cfg.source.spec),
            "live": p.live,
            # the source's own info: a camera that came back at another size is reported at it
            "resolution_wh": list((getattr(p.source, "info", None) or p.info).resolution_wh) if p.info else None,
            "source_fps": p.info.fps if p.info else None,
            "device": str(models.device) if models else None,
            "classifier": models.classifier_variant if models else None,
            "faces": models.face_mode if models else None,
            "batch": p.batch,
            "frames_read": read,
            "frames_processed": s.processed,
            "frames_dropped": dropped,
            # read but neither processed nor dropped: in the buffer or the worker's batches when
            # the run was stopped (0 when a run reaches its end)
            "frames_unfinished": max(0, read - s.processed - dropped),
            "drop_share": dropped / read if read else 0.0,
            "frames_corrupt": cap.corrupt if cap else 0,
            "reconnects": cap.reconnects if cap else 0,
            "elapsed_s": elapsed,
            "paused_s": round(paused, 3),
            "throughput_fps": s.processed / elapsed if elapsed > 0 else float("nan"),
            "steady_fps": steady,
            "cpu_cores": self.pauses.cpu_cores(s),
            "latency_ms": s.latency.summary(),
            "stage_ms": {k: v / s.processed for k, v in s.stage_ms_total.items()} if s.processed else {},
            "first_result_s": s.first_result_age_s,
            "import_baseline_mb": self.import_baseline_mb,
            "rss_start_mb": self.rss_start_mb,
            "rss_end_mb": rss_mb(),
            "peak_rss_mb": peak_rss_mb(),
            "peak_above_baseline_mb": peak_rss_mb() - self.import_baseline_mb,
            "rss_slope_mb_per_1000": rss_slope_mb_per_1000(s.rss_samples),
            "face_counts": p.faces.counts() if isinstance(p.faces, CountingFaceStage) else None,
            "warnings": list(models.warnings) if models else [],
            "stuck_threads": list(p.stuck_threads),
            "exit_code": self.exit_code,
            "error": redact_url_text(str(self.error)) if self.error else None,
        }
        summary.update(gpu_memory_mb())
        return summary


def format_summary(s: dict) -> str:
    def f(v, nd=1):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"

    lat = s.get("latency_ms", {})
    lines = [
        f"rtvision summary: {s['source']} ({'live' if s['live'] else 'file'}, "
        f"{'x'.join(map(str, s['resolution_wh'] or []))} @ {f(s['source_fps'])} fps)",
        f"  models      classifier {s['classifier']} | faces {s['faces']} | device {s['device']} | batch {s['batch']}",
        f"  frames      read {s['frames_read']} | processed {s['frames_processed']} | dropped {s['frames_dropped']} "
        f"({100 * s['drop_share']:.1f}%) | corrupt {s['frames_corrupt']} | reconnects {s['reconnects']}"
        + (f" | unfinished at the stop {s['frames_unfinished']}" if s.get("frames_unfinished") else ""),
        f"  throughput  {f(s['throughput_fps'])} fps over {f(s['elapsed_s'])} s (steady {f(s['steady_fps'])} fps, "
        f"{f(s.get('cpu_cores'), 2)} CPU cores busy)",
        f"  latency     p50 {f(lat.get('p50'))} | p95 {f(lat.get('p95'))} | p99 {f(lat.get('p99'))} | max {f(lat.get('max'))} ms",
        "  stages ms   " + " | ".join(f"{k} {f(v, 2)}" for k, v in s.get("stage_ms", {}).items()),
        f"  start-up    first result {f(s.get('first_result_s'), 2)} s after the process started",
        f"  memory      peak RSS {f(s['peak_rss_mb'], 0)} MB, {f(s.get('peak_above_baseline_mb'), 0)} MB above the import "
        f"baseline {f(s.get('import_baseline_mb'), 0)} MB (start {f(s['rss_start_mb'], 0)}, end {f(s['rss_end_mb'], 0)})",
    ]
    fc = s.get("face_counts")
    if fc and fc.get("frames"):
        why = ", ".join(f"{k} {fc[k]}" for k in ("cuts", "motion", "gaps", "early") if fc.get(k))
        lines.append(f"  faces       {f(fc['detections_per_100'])} detections per 100 frames ({fc['detected']} of {fc['frames']})"
                     + (f"; brought forward by {why}" if why else ""))
    if "gpu_peak_allocated_mb" in s:
        lines.append(
            f"  gpu memory  peak allocated {f(s['gpu_peak_allocated_mb'], 0)} MB | peak reserved {f(s['gpu_peak_reserved_mb'], 0)} MB"
        )
    for w in s.get("warnings", []):
        lines.append(f"  WARNING     {w}")
    if s.get("stuck_threads"):
        lines.append(f"  WARNING     threads did not stop: {', '.join(s['stuck_threads'])}")
    return "\n".join(lines)
