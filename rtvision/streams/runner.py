"""The consumer of a multi-stream run: one JSON Lines file for all streams (each record names its
``stream``; each stream's records in frame order), one annotated video per stream (``--save``
with ``{stream}`` in its name), per-stream live statistics, and the summary: one line per stream
and a total."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time

from ..annotate import annotate, status_line
from ..config import RunConfig
from ..errors import EXIT_OK, EXIT_STREAM_FAILED, Interrupted, RtvisionError
from ..faces.protocols import CountingFaceStage
from ..runner import LiveStats, PauseControls, Pauses, pipeline_held, write_counted
from ..sinks import JsonlSink, StoppedWhileWriting, VideoSink
from ..specs import redact_text
from ..stats import peak_rss_mb, process_age_s, rss_mb
from ..types import Result
from .engine import MultiPipeline

log = logging.getLogger(__name__)

SAVE_FIELD = "{stream}"


def save_path(pattern: str, stream: str) -> str:
    return pattern.replace(SAVE_FIELD, stream)


class MultiRunner(PauseControls):
    """Consumes a started ``MultiPipeline``; ``request_stop()`` ends the run from any thread.

    Headless, ``run()`` runs on the main thread; with the window (``rtvision.gui.grid``) it runs
    on a thread of its own and the window polls ``latest`` (stream name -> its newest Result; one
    dict item assignment per result) and the live statistics; it never blocks this consumer.
    """

    def __init__(self, cfg: RunConfig, pipeline: MultiPipeline, import_baseline_mb: float | None = None) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.stats = {s.name: LiveStats() for s in pipeline.streams}
        self.total = LiveStats()
        self.error: BaseException | None = None
        self.exit_code = EXIT_OK
        self.import_baseline_mb = import_baseline_mb if import_baseline_mb is not None else rss_mb()
        self.listeners: list = []
        self.latest: dict[str, Result] = {}  # read by the window
        self._stop = threading.Event()
        self.pauses = Pauses(self._stop, held=lambda: pipeline_held(pipeline))  # the grid window's pause and step
        self.started_at = time.monotonic()

    def interrupt(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.request_stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        self.pipeline.request_stop()
        self.pauses.wake()

    def run(self) -> None:
        cfg = self.cfg
        try:
            with contextlib.ExitStack() as outputs:
                jsonl = outputs.enter_context(JsonlSink(cfg.results_path, cfg.results_verbose, stopped=self._stop.is_set)) if cfg.results_path else None
                videos = {}
                if cfg.save_path:
                    for s in self.pipeline.streams:
                        if s.info is not None:
                            videos[s.name] = outputs.enter_context(VideoSink(save_path(cfg.save_path, s.name), s.info.fps))
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
                        st = self.stats[r.stream]
                        video = videos.get(r.stream)
                        img = annotate(r, status=f"{r.stream} | " + status_line(r, st.infer_rate.rate())) if video else None
                        annotate_ms = (time.perf_counter() - t0) * 1000.0

                        def add(ms: float, st=st, r=r, annotate_ms=annotate_ms) -> None:
                            st.add(r, annotate_ms, ms)
                            self.total.add(r, 0.0, 0.0)

                        write_counted(r, img, jsonl, video, add)
                        self.latest[r.stream] = r
                        for listener in self.listeners:
                            listener(r)
                except KeyboardInterrupt:
                    self.exit_code = Interrupted().exit_code
                except StoppedWhileWriting as exc:  # the stop's own exit code stands
                    log.warning("%s", exc)
                except Interrupted as exc:
                    self.exit_code = exc.exit_code
                finally:
                    self.pipeline.request_stop()
        except RtvisionError as exc:
            self.error, self.exit_code = exc, exc.exit_code
        except BaseException as exc:  # noqa: BLE001 - reported, never a silent hang
            self.error, self.exit_code = exc, 1

    def build_summary(self) -> dict:
        """Per stream and in total; build it once the owner has stopped the pipeline."""
        streams = []
        failed = []
        for s in self.pipeline.streams:
            st = self.stats[s.name]
            cap = s.capture.stats if s.capture is not None else None
            read = cap.read if cap else 0
            dropped = s.buffer.dropped if s.buffer is not None else 0
            end = st.last_result_at or time.monotonic()
            elapsed = end - self.started_at - self.pauses.between(self.started_at, end)  # a pause is not the pipeline's time
            row = {
                "stream": s.name,
                # a stream that never opened: its spec, every URL in it masked (not only a spec
                # that starts with one), and whether it was asked to run live
                "source": s.info.name if s.info else redact_text(s.cfg.spec),
                "live": s.is_live,
                "state": s.state,
                "error": redact_text(str(s.error)) if s.error is not None else None,
                "resolution_wh": list(s.info.resolution_wh) if s.info else None,
                "source_fps": s.info.fps if s.info else None,
                "frames_read": read,
                "frames_processed": st.processed,
                "frames_dropped": dropped,
                # read but neither processed nor dropped: left in the buffer or the worker when
                # the run was stopped (read = processed + dropped + unfinished)
                "frames_unfinished": max(0, read - st.processed - dropped),
                "drop_share": dropped / read if read else 0.0,
                "frames_corrupt": cap.corrupt if cap else 0,
                "reconnects": cap.reconnects if cap else 0,
                "throughput_fps": st.processed / elapsed if elapsed > 0 and st.processed else 0.0,
                "latency_ms": st.latency.summary(),
                "face_counts": s.faces.counts() if isinstance(s.faces, CountingFaceStage) else None,
            }
            streams.append(row)
            if s.state == "failed":
                failed.append(s.name)
        t = self.total
        end = t.last_result_at or time.monotonic()
        paused = self.pauses.between(self.started_at, end)
        elapsed = end - self.started_at - paused
        models = self.pipeline.models
        exit_code = self.exit_code
        if exit_code == EXIT_OK and failed and self.error is None:
            exit_code = EXIT_STREAM_FAILED
        return {
            "streams": streams,
            "failed_streams": failed,
            "device": str(models.device) if models else None,
            "classifier": models.classifier_variant if models else None,
            "faces": models.face_mode if models else None,
            "batch": self.pipeline.batch,
            "frames_processed": t.processed,
            "elapsed_s": elapsed,
            "paused_s": round(paused, 3),
            "throughput_fps": t.processed / elapsed if elapsed > 0 else None,
            "cpu_cores": self.pauses.cpu_cores(t),
            "latency_ms": t.latency.summary(),
            "first_result_s": t.first_result_age_s,
            "import_baseline_mb": self.import_baseline_mb,
            "peak_rss_mb": peak_rss_mb(),
            "peak_above_baseline_mb": peak_rss_mb() - self.import_baseline_mb,
            "process_age_s": process_age_s(),
            "warnings": list(models.warnings) if models else [],
            "stuck_threads": list(self.pipeline.stuck_threads),
            "exit_code": exit_code,
            "error": str(self.error) if self.error else None,
        }


def format_summary(s: dict) -> str:
    def f(v, nd=1):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"

    lines = [f"rtvision summary: {len(s['streams'])} streams | classifier {s['classifier']} | faces {s['faces']} | "
             f"device {s['device']} | batch {s['batch']} (across streams)"]
    width = max(len(r["stream"]) for r in s["streams"])
    for r in s["streams"]:
        lat = r["latency_ms"] or {}
        state = r["state"] + (f": {r['error']}" if r["error"] else "")
        lines.append(
            f"  {r['stream']:<{width}}  {'live' if r['live'] else 'file'} | read {r['frames_read']} | processed "
            f"{r['frames_processed']} | dropped {r['frames_dropped']} ({100 * r['drop_share']:.1f}%) | {f(r['throughput_fps'])} fps | "
            f"p50 {f(lat.get('p50'))} p99 {f(lat.get('p99'))} ms | "
            + (f"{f(r['face_counts']['detections_per_100'])} face detections/100 | " if r.get("face_counts") else "") + state)
    lat = s["latency_ms"] or {}
    lines.append(f"  {'total':<{width}}  processed {s['frames_processed']} | {f(s['throughput_fps'])} fps over "
                 f"{f(s['elapsed_s'])} s | {f(s.get('cpu_cores'), 2)} CPU cores busy | p50 {f(lat.get('p50'))} p99 {f(lat.get('p99'))} ms | peak RSS "
                 f"{f(s['peak_rss_mb'], 0)} MB ({f(s['peak_above_baseline_mb'], 0)} above the import baseline)")
    for w in s.get("warnings", []):
        lines.append(f"  WARNING     {w}")
    if s["failed_streams"]:
        lines.append(f"  FAILED      {', '.join(s['failed_streams'])}")
    if s.get("stuck_threads"):
        lines.append(f"  WARNING     threads did not stop: {', '.join(s['stuck_threads'])}")
    return "\n".join(lines)
