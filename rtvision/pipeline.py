"""The one place where the stages are wired, and the one owner of a run's threads and resources:

    source ──> ring buffer ──> inference worker ──> results queue ──> consumer (sinks, window, bench)
    (capture thread)           (worker thread,       (bounded)
                                + the face stage's helper thread)

``with Pipeline(cfg) as p: for r in p.results(): ...``: entering opens the source, builds the
models (or takes shared ones), makes the run's own face stage over their networks, decides the
worker's loop and starts the threads; leaving stops everything on one event, joins every thread
with a timeout (naming any that do not stop), closes the face stage and the source. Consumers
(the runner, the window, the bench, the Python API) only read results and ask for a stop
(``request_stop``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator

from .buffer import RingBuffer
from .config import RunConfig
from .errors import RtvisionError
from .faces.protocols import FaceStage, PlannedFaceStage
from .models.build import Models
from .sources import CaptureThread, Source, SourceInfo, open_interruptibly, open_source
from .types import Frame, Result
from .worker import InferenceWorker, LoopPlan, drain

log = logging.getLogger(__name__)


class PipelineError(RtvisionError):
    """An unexpected failure inside a pipeline thread (exit code 1)."""


class Pipeline:
    """One run over one source (see the module docstring). ``start()``/``stop()`` are what ``with``
    does; ``stop()`` is idempotent.

    ``models`` may be given (tests, the bench: networks built once, shared by runs); otherwise
    they are built from ``cfg.model``. ``source`` may be given (fault-injection tests); otherwise it
    is opened from ``cfg.source``.
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
        self.faces: FaceStage | None = None  # this run's face stage
        self.loop: LoopPlan | None = None
        self.batch = cfg.batch or 4  # resolved in start() once we know whether the source is live
        self.out: queue.Queue = queue.Queue(maxsize=8)
        self.stuck_threads: list[str] = []
        self._started = False
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Pipeline:
        if self._started or self._stopped:
            raise RuntimeError("a Pipeline starts once; make a new one for another run")
        cfg = self.cfg
        if self.source is None:
            self.source = open_source(cfg.source)
        self.info = open_interruptibly(self.source)
        try:
            self.live = self.info.live or cfg.source.realtime
            paced = self.info.kind == "demo" or (cfg.source.realtime and not self.info.live)
            if self.models is None:
                from .models.build import build_models

                self.models = build_models(cfg.model, self.source, self.info)
            self.batch = cfg.batch or (1 if self.live else 4)
            if self.live:
                from .models.build import warm_up

                warm_up(self.models, self.info.resolution_wh, self.batch)  # before its frames arrive
            self.faces = self.models.faces.new_stage() if self.models.faces is not None else None
            if isinstance(self.faces, PlannedFaceStage):
                self.faces.set_live(self.live)
            self.loop = self.loop_plan()
            self.out = queue.Queue(maxsize=max(8, 2 * self.batch))
            capacity = cfg.source.buffer_size or (self.batch if self.live else max(8, 2 * self.batch))
            self.buffer = RingBuffer(capacity, drop_oldest=self.live)
            self.capture = CaptureThread(self.source, self.buffer, self.stop_event, cfg.source, self.live, paced)
            self.worker = InferenceWorker(self.buffer, self.out, self.stop_event, self.models.classifier, self.faces,
                                          self.loop)
            if self.faces is not None:
                self.faces.start()  # its helper thread (live: background detections)
        except BaseException:
            if self.faces is not None:
                self.faces.close()
            self.source.close()
            raise
        self.capture.start()
        self.worker.start()
        self._started = True
        return self

    def loop_plan(self) -> LoopPlan:
        """The worker's loop for this run. Files with a planned face stage (``--faces fast`` and
        ``full``) overlap the models: the next batches' detections run ahead on helper threads
        (``--no-overlap`` turns it off). Live sources never look ahead (latency); their tracking
        stage detects in the background instead. On the CPU, whenever a helper thread works beside
        the worker, the threads are split between the two."""
        planned = isinstance(self.faces, PlannedFaceStage)
        overlap = planned and not self.live and self.cfg.overlap
        background = planned and self.faces.background
        device = self.models.device.type
        # On the CPU the batches ahead are detected side by side, a helper thread each, up to one per core.
        helpers = max(1, min(self.cfg.lookahead, os.cpu_count() or 1)) if overlap and device == "cpu" else 1
        return LoopPlan(batch=self.batch, fill=not self.live, overlap=overlap, lookahead=self.cfg.lookahead,
                        helpers=helpers, split_threads=device == "cpu" and (overlap or background),
                        topk=self.cfg.model.topk, cuda_sync=device == "cuda")

    def results(self) -> Iterator[Result]:
        """Results in frame order until the stream ends, ``stop()`` is called, or a thread fails.

        A failure in a thread is raised here (after the results before it were yielded).
        """
        assert self._started, "start() first"
        yield from drain(self.out, self.worker)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        for thread in (self.worker, self.capture):
            err = getattr(thread, "error", None)
            if err is None:
                continue
            if isinstance(err, RtvisionError):
                raise err
            raise PipelineError(f"{thread.name} failed: {err.__class__.__name__}: {err}") from err

    def request_stop(self) -> None:
        """Ask every thread to stop (any thread; returns at once). ``stop()`` waits for them."""
        self.stop_event.set()
        if self.buffer is not None:
            self.buffer.close()

    def stop(self) -> list[str]:
        """Stop the run: the stop event, every wait unblocked, every thread joined with a timeout,
        then the face stage and the source closed. Idempotent. Returns (and logs) the names of the
        threads that did not stop; what they use is left open rather than pulled from under them."""
        if self._stopped:
            return self.stuck_threads
        self.request_stop()
        stuck = []
        # (A camera's or a stream's blocking calls run on a thread of their own, SourceIO: a
        # capture thread blocked in one still stops at once.)
        join_s = self.cfg.join_timeout_s
        deadline = time.monotonic() + join_s
        for thread in (self.capture, self.worker):
            if thread is None or not thread.is_alive() and not thread.ident:
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
                log.error("thread %s did not stop within %.0fs", thread.name, join_s)
        if self.faces is not None and "rtvision-worker" not in stuck:
            try:
                self.faces.close()  # joins the face stage's helper thread
            except Exception as exc:  # never hides the run's own outcome
                log.warning("closing the face stage failed: %s", exc)
        if self.worker is not None and "rtvision-worker" not in stuck:
            self.worker.thread_counts.restore()  # no thread computes any more
        if self.source is not None and "rtvision-capture" not in stuck:
            try:
                if self.capture is not None:
                    self.capture.close_source()  # after a read in progress, if one is blocked
                else:
                    self.source.close()
            except Exception:  # pragma: no cover - closing is best effort
                log.debug("source close failed", exc_info=True)
        self.stuck_threads = stuck
        self._stopped = True
        return stuck

    def __enter__(self) -> Pipeline:
        return self if self._started else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- counters ------------------------------------------------------------------------------
    @property
    def frames_read(self) -> int:
        return self.capture.stats.read if self.capture is not None else 0

    @property
    def frames_dropped(self) -> int:
        return self.buffer.dropped if self.buffer is not None else 0
