"""The one place where the stages are wired:

    source ──> ring buffer ──> inference worker ──> results queue ──> consumer (sinks, window, bench)
    (capture thread)           (worker thread)       (bounded)

``Pipeline`` opens the source, builds the models, starts both threads, yields results in frame
order and stops everything on one event, joining every thread with a timeout. The face stage's own
thread (live sources: background detections) is started here and closed by the worker before its END.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

from .buffer import RingBuffer
from .config import RunConfig
from .errors import RtvisionError
from .faces.protocols import PlannedFaceStage
from .models.build import Models
from .sources import CaptureThread, Source, SourceInfo, open_source
from .types import Frame, Result
from .worker import END, InferenceWorker

log = logging.getLogger(__name__)


class PipelineError(RtvisionError):
    """An unexpected failure inside a pipeline thread (exit code 1)."""


class Pipeline:
    """Start with ``start()`` (or ``with``), consume ``results()``, always ``stop()``.

    ``models`` may be given (tests, bench); otherwise they are built from ``cfg.model``.
    ``source`` may be given (fault-injection tests); otherwise it is opened from ``cfg.source``.
    """

    def __init__(self, cfg: RunConfig, models: Models | None = None, source: Source | None = None) -> None:
        self.cfg = cfg
        self.models = models
        self.source = source
        self.info: SourceInfo | None = None
        self.live = False
        self.stop_event = threading.Event()
        self.buffer: RingBuffer[Frame] | None = None
        self.capture: CaptureThread | None = None
        self.worker: InferenceWorker | None = None
        self.batch = cfg.batch or 4  # resolved in start() once we know whether the source is live
        self.out: queue.Queue = queue.Queue(maxsize=8)
        self.stuck_threads: list[str] = []
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Pipeline:
        cfg = self.cfg
        if self.source is None:
            self.source = open_source(cfg.source)
        self.info = self.source.open()
        try:
            self.live = self.info.live or cfg.source.realtime
            paced = self.info.kind == "demo" or (cfg.source.realtime and not self.info.live)
            if self.models is None:
                from .models.build import build_models

                self.models = build_models(cfg.model, self.source, self.info)
            self.batch = cfg.batch or (1 if self.live else 4)
            if isinstance(self.models.faces, PlannedFaceStage):
                self.models.faces.set_live(self.live)
            self.out = queue.Queue(maxsize=max(8, 2 * self.batch))
            capacity = cfg.source.buffer_size or (self.batch if self.live else max(8, 2 * self.batch))
            self.buffer = RingBuffer(capacity, drop_oldest=self.live)
            self.capture = CaptureThread(self.source, self.buffer, self.stop_event, cfg.source, self.live, paced)
            self.worker = InferenceWorker(
                self.buffer,
                self.out,
                self.stop_event,
                self.models.classifier,
                self.models.faces,
                batch=self.batch,
                live=self.live,
                topk=cfg.model.topk,
                cuda_sync=self.models.device.type == "cuda",
                overlap=None if cfg.overlap else False,
                split_threads=self.models.device.type == "cpu",
                lookahead=cfg.lookahead,
            )
            if self.models.faces is not None:
                # The face stage's own thread (live: background detections); the worker closes it before END.
                self.models.faces.start()
        except BaseException:
            if self.models is not None and self.models.faces is not None:
                self.models.faces.close()
            self.source.close()
            raise
        self.capture.start()
        self.worker.start()
        self._started = True
        return self

    def results(self) -> Iterator[Result]:
        """Results in frame order until the stream ends, ``stop()`` is called, or a thread fails.

        A failure in a thread is raised here (after the results before it were yielded).
        """
        assert self._started, "start() first"
        while True:
            try:
                item = self.out.get(timeout=0.1)
            except queue.Empty:
                if not self.worker.is_alive() and self.out.empty():
                    break
                continue
            if item is END:
                break
            yield item
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        for thread in (self.worker, self.capture):
            err = getattr(thread, "error", None)
            if err is None:
                continue
            if isinstance(err, RtvisionError):
                raise err
            raise PipelineError(f"{thread.name} failed: {err.__class__.__name__}: {err}") from err

    def stop(self) -> list[str]:
        """Set the stop event, unblock every wait, join every thread with a timeout.

        Returns (and logs) the names of threads that did not stop.
        """
        self.stop_event.set()
        if self.buffer is not None:
            self.buffer.close()
        stuck = []
        deadline = time.monotonic() + self.cfg.join_timeout_s
        for thread in (self.capture, self.worker):
            if thread is None:
                continue
            while thread.is_alive() and time.monotonic() < deadline:
                # drain, so a worker blocked on a full results queue sees the stop event
                try:
                    while True:
                        self.out.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=0.05)
            if thread.is_alive():
                stuck.append(thread.name)
                log.error("thread %s did not stop within %.0fs", thread.name, self.cfg.join_timeout_s)
        self.stuck_threads = stuck
        return stuck

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- counters ------------------------------------------------------------------------------
    @property
    def frames_read(self) -> int:
        return self.capture.stats.read if self.capture is not None else 0

    @property
    def frames_dropped(self) -> int:
        return self.buffer.dropped if self.buffer is not None else 0
