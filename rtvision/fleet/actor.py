"""One actor of a fleet: a ``MultiPipeline`` over its share of the streams, results in chunks.

``FleetActor`` knows nothing of Ray: the driver wraps it with ``ray.remote`` (CPUs, GPUs and
restarts declared there), and tests can run it in process. Its life:

* ``start(cfg, assignments)`` opens the streams, builds the models (once, shared by the streams)
  and starts the pipeline on a thread of its own; it returns at once with what the pipeline is
  (device, classifier, each stream's state) or why it could not start.
* ``poll(wait_s)`` hands out the results made since the last call (JSON records, each with its
  ``stream`` key; each stream's in frame order) and every stream's counters; it waits up to
  ``wait_s`` for a result when there is none. The last poll says ``done`` and carries the
  pipeline's own summary.
* ``stop()`` ends the run early and hands out what is left.

A stream assigned with ``first_index > 0`` is resumed (``ResumedSource``): a file skips the frames
before it and goes on numbering from there, so the driver receives exactly the frames it has not
received yet; a live source (camera, stream, demo) cannot go back and starts from its live edge,
its frames numbered on from ``first_index``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from typing import TYPE_CHECKING

from ..config import RunConfig
from ..errors import EXIT_INTERNAL, RtvisionError
from ..sources import CorruptFrame, Source, SourceInfo, open_source
from ..streams.spec import StreamSpec

if TYPE_CHECKING:  # the pipeline (torch) is imported where it runs, in the actor: the driver never loads it
    from ..streams.engine import MultiPipeline, Stream
    from ..streams.runner import MultiRunner
    from ..types import Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """One stream given to an actor: its name, its source, and the first frame wanted."""

    name: str
    spec: str
    first_index: int = 0


class ResumedSource:
    """A source that starts at frame ``first_index``.

    A file (not live) skips the frames before it: the first by reading it (a ``FileSource`` has
    already decoded its first frame to check the file), the others with ``grab()``, which decodes
    but does not convert, so the resume is exact, at the cost of decoding the skipped frames once
    (seeking by ``CAP_PROP_POS_FRAMES`` lands on keyframes in some files, which would renumber
    frames silently). A corrupt frame skipped counts as a frame, as the capture thread counts it.
    A live source starts where it is; its frames are numbered from ``first_index`` on.
    """

    def __init__(self, inner: Source, first_index: int) -> None:
        self.inner = inner
        self.first_index = first_index
        self.skipped = 0  # frames of a file skipped to reach first_index (fewer: the file ended first)
        self.skip_s = 0.0
        self._opened = False
        self.info = getattr(inner, "info", None)

    @property
    def blocking_io(self) -> bool:  # a camera's or a stream's calls may block (see SourceIO)
        return bool(getattr(self.inner, "blocking_io", False))

    @property
    def last_pts_s(self) -> float | None:  # files whose fps header is not believed (see FileSource)
        return getattr(self.inner, "last_pts_s", None)

    def open(self) -> SourceInfo:
        info = self.inner.open()
        if not info.live and not self._opened:
            t0 = time.perf_counter()
            self.skipped = self._skip(self.first_index)
            self.skip_s = time.perf_counter() - t0
        self._opened = True
        self.info = dataclasses.replace(info, first_index=self.first_index)
        return self.info

    def _skip(self, n: int) -> int:
        grab = getattr(self.inner, "grab", None)
        done = 0
        while done < n:
            try:
                if done == 0 or grab is None:
                    if self.inner.read() is None:
                        break
                elif not grab():
                    break
            except CorruptFrame:
                pass  # a frame slot all the same
            done += 1
        return done

    def read(self) -> np.ndarray | None:
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def stream_row(s: Stream) -> dict:
    """One stream's state and counters, as plain values."""
    cap = s.capture.stats if s.capture is not None else None
    return {
        "state": s.state,
        "error": str(s.error) if s.error is not None else None,
        "live": s.is_live,
        "source": s.info.name if s.info is not None else None,
        "resolution_wh": list(s.info.resolution_wh) if s.info is not None else None,
        "source_fps": s.info.fps if s.info is not None else None,
        "frames_read": cap.read if cap else 0,
        "frames_dropped": s.buffer.dropped if s.buffer is not None else 0,
        "frames_corrupt": cap.corrupt if cap else 0,
        "reconnects": cap.reconnects if cap else 0,
        "frames_processed": s.processed,
    }


class FleetActor:
    """See the module docstring. ``index``: the actor's number in the fleet."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pipeline: MultiPipeline | None = None
        self.runner: MultiRunner | None = None
        self.thread: threading.Thread | None = None
        self.verbose = False
        self._records: collections.deque[dict] = collections.deque()
        self._cond = threading.Condition()
        self._finished = False
        self._summary: dict | None = None
        self._sources: dict[str, ResumedSource] = {}

    def pid(self) -> int:
        return os.getpid()

    # -- start -------------------------------------------------------------------------------------
    def start(self, cfg: RunConfig, assignments: list[Assignment]) -> dict:
        """Open the streams, build the models, start the pipeline. Never raises: a failure is
        ``{"ok": False, "error", "exit_code", "streams_failed"}`` (``streams_failed``: every stream
        failed on its own, e.g. no file opened; otherwise the actor itself cannot run, e.g. a bad
        model file)."""
        from ..streams.engine import MultiPipeline
        from ..streams.runner import MultiRunner

        base = {"pid": os.getpid(), "host": socket.gethostname()}
        if self.thread is not None:
            return base | {"ok": False, "error": "this actor already runs its streams", "exit_code": EXIT_INTERNAL,
                           "streams_failed": False, "streams": {}}
        cfg = dataclasses.replace(cfg, results_path=None, save_path=None, headless=True, progress=False)
        self.verbose = cfg.results_verbose
        sources: dict[str, Source] = {}
        for a in assignments:
            if a.first_index > 0:
                try:
                    sources[a.name] = self._sources[a.name] = ResumedSource(
                        open_source(dataclasses.replace(cfg.source, spec=a.spec)), a.first_index)
                except RtvisionError:
                    pass  # the pipeline builds it again and reports the stream's error
        pipeline = MultiPipeline(cfg, [StreamSpec(a.name, a.spec) for a in assignments], sources=sources)
        try:
            pipeline.start()
        except RtvisionError as exc:
            return base | {"ok": False, "error": str(exc), "exit_code": exc.exit_code,
                           "streams_failed": all(s.state == "failed" for s in pipeline.streams),
                           "streams": {s.name: stream_row(s) for s in pipeline.streams}}
        except Exception as exc:  # noqa: BLE001 - reported to the driver in one line
            log.debug("actor %d failed to start", self.index, exc_info=True)
            return base | {"ok": False, "error": f"{exc.__class__.__name__}: {exc}", "exit_code": EXIT_INTERNAL,
                           "streams_failed": False, "streams": {}}
        self.pipeline = pipeline
        self.runner = MultiRunner(cfg, pipeline)
        self.runner.listeners.append(self._collect)
        self.thread = threading.Thread(target=self._run, name=f"rtvision-fleet-actor{self.index}", daemon=True)
        self.thread.start()
        models = pipeline.models
        return base | {
            "ok": True,
            "device": str(models.device),
            "classifier": models.classifier_variant,
            "faces": models.face_mode,
            "batch": pipeline.batch,
            "warnings": list(models.warnings),
            "streams": {s.name: stream_row(s) for s in pipeline.streams},
            "skipped": {name: {"frames": src.skipped, "seconds": round(src.skip_s, 3)}
                        for name, src in self._sources.items()},
        }

    def _collect(self, r: Result) -> None:
        rec = r.to_json(self.verbose)
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()

    def _run(self) -> None:
        summary = None
        try:
            self.runner.run()
        finally:
            try:
                self.pipeline.stop()
                summary = self.runner.build_summary()
            except Exception as exc:  # the driver must still hear that this run is over
                log.error("actor %d: stopping its pipeline failed: %s: %s", self.index, exc.__class__.__name__, exc)
                summary = {"exit_code": EXIT_INTERNAL, "error": f"{exc.__class__.__name__}: {exc}", "streams": []}
            finally:
                with self._cond:
                    self._summary = summary
                    self._finished = True
                    self._cond.notify_all()

    # -- results -----------------------------------------------------------------------------------
    def poll(self, wait_s: float = 0.25, max_records: int = 1000) -> dict:
        """The results made since the last poll (at most ``max_records``), every stream's counters,
        and ``done`` once the run is over and everything is handed out (then ``summary`` too)."""
        if self.pipeline is None:
            return {"records": [], "streams": {}, "done": True, "summary": None, "pid": os.getpid()}
        with self._cond:
            if not self._records and not self._finished:
                self._cond.wait(wait_s)
            records = [self._records.popleft() for _ in range(min(max_records, len(self._records)))]
            done = self._finished and not self._records
        return {
            "records": records,
            "streams": {s.name: stream_row(s) for s in self.pipeline.streams},
            "done": done,
            "summary": self._summary if done else None,
            "pid": os.getpid(),
        }

    def stop(self, timeout_s: float = 10.0) -> dict:
        """End the run now (the pipeline's threads joined) and hand out every result left."""
        if self.runner is not None:
            self.runner.request_stop()
        if self.thread is not None:
            self.thread.join(timeout_s)
        reply = self.poll(0.0, max_records=1 << 30)
        reply["stopped"] = self.thread is None or not self.thread.is_alive()
        return reply
