"""``MultiPipeline``: N streams, one inference worker, the networks built once.

    stream A: source ──> capture thread ──> ring buffer ─┐
    stream B: source ──> capture thread ──> ring buffer ─┼─> FairBatcher ─> worker ─> results queue
    stream C: source ──> capture thread ──> ring buffer ─┘   (one batch for    (classifier on the whole batch,
                                                               all streams)     each stream's own face stage)

Every stream keeps its own policy (a file loses nothing, a live source keeps its freshest frames
and counts drops), its own face stage (tracks, schedule and ids are per stream) and its own
counters. The worker runs the classifier once per batch over the frames of all streams, then each
stream's face stage on that stream's frames, in order; results carry the stream's name.

A stream that fails (it does not open, too many corrupt frames, reconnects exhausted) is marked
failed with its error and removed; the others go on. With several streams the face stages of a
batch run side by side on a pool of helper threads (``rtvision-faces``, one per core at most)
while the worker runs the classifier; torch's and OpenCV's threads are then one per thread, the
way the single-stream overlap splits them. A live stream's stage detects in the background (its
own helper thread, as in a single-stream run), so that frames a slow worker had to drop do not
turn every frame into a full detection.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import torch

from ..buffer import RingBuffer
from ..config import RunConfig, SourceConfig
from ..errors import RtvisionError
from ..faces.protocols import FaceStage, PlannedFaceStage
from ..models.build import Models
from ..sources import CaptureThread, Source, SourceInfo, open_interruptibly, open_source
from ..specs import is_live_spec
from ..stats import StageTimer
from ..types import Faces, Frame, Labels, Result
from ..worker import END, ThreadCounts, drain, emit
from .spec import StreamSpec

log = logging.getLogger(__name__)

DETECT_THREAD = "rtvision-detect"  # the threads of the shared background detections


def detect_workers(asked: int | None, streams: int) -> int:
    """Threads shared by the live streams' background detections (0: each stream its own).

    By default one per core, at most one per stream, so that 16 cameras do not mean 16
    detections at once. Fewer threads than that trade recall for frames: 4 live 1080p streams
    on 2 cores processed 19.7 frames/s in all (recall 0.76 for faces >= 40 px) with 2 shared
    threads and 27.3 (recall 0.70) with 1 (``assets/bench-streams4-long-cpu-2026-11-30.md``)."""
    if streams < 2:
        return 0
    if asked is None:
        return max(1, min(streams, os.cpu_count() or 1))
    return min(asked, streams)



@dataclass(eq=False)
class Stream:
    """One stream of a multi-stream run. ``state``: starting | running | ended | failed."""

    name: str
    cfg: SourceConfig
    source: Source | None = None
    info: SourceInfo | None = None
    live: bool = False  # once open: its source's word (or --realtime)
    buffer: RingBuffer[Frame] | None = None
    capture: CaptureThread | None = None
    faces: FaceStage | None = None
    state: str = "starting"
    error: BaseException | None = None
    processed: int = field(default=0)

    @property
    def active(self) -> bool:
        return self.state == "running"

    @property
    def is_live(self) -> bool:
        """Live once open (its source's word), or, for a stream that never opened (a camera that
        does not answer), as its spec says."""
        return self.live if self.info is not None else (is_live_spec(self.cfg.spec) or self.cfg.realtime)


class FairBatcher:
    """Forms one batch of at most ``batch`` frames from the streams that have frames ready.

    Round robin: each batch starts with the first stream after the last one served, every stream
    first gets an even share (at least one frame), then what room is left goes to the streams
    with more frames waiting. A stream's frames are taken oldest first, so each stream stays in
    order, and a stream with frames waiting is served at least once every ``ceil(streams / batch)``
    batches (in every batch when there are no more streams than frames in a batch).
    """

    def __init__(self, batch: int) -> None:
        self.batch = max(1, batch)
        self._cursor = 0  # index (in the full stream list) of the stream to serve first

    def take(self, streams: list[Stream]) -> list[tuple[Stream, list[Frame]]]:
        ready = [i for i, s in enumerate(streams) if s.active and s.buffer is not None]
        if not ready:
            return []
        first = next((k for k, i in enumerate(ready) if i >= self._cursor), 0)
        order = ready[first:] + ready[:first]
        share = max(1, self.batch // len(order))
        taken: dict[int, list[Frame]] = {}
        room = self.batch
        for pass_share in (share, self.batch):
            for i in order:
                if room <= 0:
                    break
                got = streams[i].buffer.get_batch(min(pass_share, room), timeout_s=0.0)
                if got:
                    taken.setdefault(i, []).extend(got)
                    room -= len(got)
        served = [i for i in order if i in taken]
        if served:
            self._cursor = (served[-1] + 1) % len(streams) if len(served) < len(order) else (order[0] + 1) % len(streams)
        return [(streams[i], taken[i]) for i in served]


def _timed_detect(stage: FaceStage, frames: list[Frame]) -> tuple[list[Faces], float]:
    t0 = time.perf_counter()
    faces = stage.detect(frames)
    return faces, (time.perf_counter() - t0) * 1000.0


class MultiWorker(threading.Thread):
    """The one inference worker of a multi-stream run (see the module docstring)."""

    def __init__(self, streams: list[Stream], out: queue.Queue, stop: threading.Event, wake: threading.Event,
                 classifier, batch: int, topk: int, cuda_sync: bool, face_pool: ThreadPoolExecutor | None = None) -> None:
        super().__init__(name="rtvision-worker", daemon=True)
        self.face_pool = face_pool
        self.streams = streams
        self.out = out
        self.stop_event = stop
        self.wake = wake
        self.classifier = classifier
        self.batcher = FairBatcher(batch)
        self.topk = topk
        self.cuda_sync = cuda_sync
        self.error: BaseException | None = None
        self.batches = 0
        self.thread_counts = ThreadCounts()  # as found; MultiPipeline.stop restores them once all threads stopped

    def run(self) -> None:
        threads = self.thread_counts.torch
        try:
            split = self.face_pool is not None and threads > 1
            if split:  # the face stages run beside the classifier: one thread each
                torch.set_num_threads(1)
                cv2.setNumThreads(1)
            if self.classifier is not None:
                self.classifier.set_num_threads(1 if split else None)
            self._loop()
        except BaseException as exc:
            self.error = exc
            log.error("inference worker failed: %s: %s", exc.__class__.__name__, exc)
            for s in self.streams:
                if s.buffer is not None:
                    s.buffer.close()  # the captures stop
        finally:
            # END after every result already made (see Worker.run); the thread counts: restored
            # by MultiPipeline.stop (ThreadCounts)
            self._emit(END, force=True)
            if self.error is not None:
                self.stop_event.set()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.wake.clear()
            # every pass, not only when no stream has frames: a stream that ended (or failed)
            # while the others kept the worker busy is reported so at once, and a stop asked
            # later does not call it "stopped"
            self._retire_finished()
            groups = self.batcher.take(self.streams)
            if not groups:
                if not any(s.active for s in self.streams):
                    return
                self.wake.wait(0.05)
                continue
            for r in self.process(groups):
                if not self._emit(r):
                    return

    def _retire_finished(self) -> None:
        """Streams whose capture has ended and whose buffer is empty: ended, or failed."""
        for s in self.streams:
            if s.active and s.buffer is not None and s.buffer.drained and s.capture is not None and not s.capture.is_alive():
                if s.capture.error is not None:
                    s.state, s.error = "failed", s.capture.error
                    log.warning("stream %s failed: %s", s.name, s.capture.error)
                else:
                    s.state = "ended"

    def _emit(self, item, force: bool = False) -> bool:
        return emit(self.out, item, self.stop_event, force)

    def process(self, groups: list[tuple[Stream, list[Frame]]]) -> list[Result]:
        frames = [f for _, fs in groups for f in fs]
        n = len(frames)
        # each stream's faces on the pool (its stage is used by one thread at a time: batches are
        # processed one after the other), while the classifier runs here
        pending = {}
        if self.face_pool is not None and len(groups) > 1:
            pending = {id(s): self.face_pool.submit(_timed_detect, s.faces, fs) for s, fs in groups if s.faces is not None}
        timings = {"queue_wait": 0.0, "preprocess": 0.0, "classifier": 0.0}
        labels: list[Labels] = [Labels.empty()] * n
        if self.classifier is not None:
            with StageTimer(self.cuda_sync) as t:
                batch = self.classifier.prepare([f.image for f in frames])
            timings["preprocess"] = t.ms / n
            with StageTimer(self.cuda_sync) as t:
                labels = self.classifier.top_k(self.classifier.logits(batch), self.topk)
            timings["classifier"] = t.ms / n
        out: list[Result] = []
        k = 0
        for stream, fs in groups:
            faces: list[Faces] = [Faces.empty()] * len(fs)
            face_ms = 0.0
            if id(stream) in pending:
                faces, ms = pending[id(stream)].result()
                face_ms = ms / len(fs)
            elif stream.faces is not None:
                with StageTimer(self.cuda_sync) as t:
                    faces = stream.faces.detect(fs)
                face_ms = t.ms / len(fs)
            done = time.monotonic()
            for i, f in enumerate(fs):
                tm = dict(timings, faces=face_ms, decode=f.decode_ms)
                tm["total"] = tm["preprocess"] + tm["classifier"] + face_ms
                out.append(Result(f, faces[i], labels[k + i], tm, n, done, stream=stream.name))
            k += len(fs)
            stream.processed += len(fs)
        self.batches += 1
        return out


class MultiPipeline:
    """The owner of a multi-stream run: ``with MultiPipeline(cfg, specs) as p: for r in
    p.results(): ...``. ``cfg.source`` is the template of every stream's settings (realtime,
    buffer, reconnects...); each stream's ``spec`` comes from ``specs``."""

    def __init__(self, cfg: RunConfig, specs: list[StreamSpec], models: Models | None = None,
                 sources: dict[str, Source] | None = None) -> None:
        self.cfg = cfg
        self.streams = [Stream(s.name, dataclasses.replace(cfg.source, spec=s.spec)) for s in specs]
        self.models = models
        self._given_sources = sources or {}
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.out: queue.Queue = queue.Queue(maxsize=64)
        self.worker: MultiWorker | None = None
        self.face_pool: ThreadPoolExecutor | None = None
        self.detect_pool: ThreadPoolExecutor | None = None
        self.batch = 1
        self.stuck_threads: list[str] = []
        self._started = False
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> MultiPipeline:
        cfg = self.cfg
        try:
            for s in self.streams:
                try:
                    s.source = self._given_sources.get(s.name) or open_source(s.cfg)
                    s.info = open_interruptibly(s.source)
                    s.live = s.info.live or s.cfg.realtime
                    s.state = "running"
                except RtvisionError as exc:
                    s.state, s.error = "failed", exc
                    log.warning("stream %s: %s", s.name, exc)
            opened = [s for s in self.streams if s.state == "running"]
            if not opened:
                raise self.streams[0].error  # nothing to run: the first stream's own error
            if self.models is None:
                from ..models.build import build_models

                # int8 calibrates on the first stream that opened; the face stage is per stream
                self.models = build_models(cfg.model, opened[0].source, opened[0].info)
            any_live = any(s.live for s in opened)
            self.batch = cfg.batch or (len(opened) if any_live else max(4, len(opened)))
            if any_live:
                from ..models.build import warm_up

                for size in {s.info.resolution_wh for s in opened if s.live}:
                    warm_up(self.models, size, self.batch)  # before the live streams' frames arrive
            self.out = queue.Queue(maxsize=max(16, 4 * self.batch))
            for s in opened:
                capacity = s.cfg.buffer_size or (2 if s.live else 8)
                s.buffer = RingBuffer(capacity, drop_oldest=s.live, on_put=self.wake.set)
                paced = s.info.kind == "demo" or (s.cfg.realtime and not s.info.live)
                s.capture = CaptureThread(s.source, s.buffer, self.stop_event, s.cfg, s.live, paced)
                s.capture.name = f"rtvision-capture-{s.name}"
                if self.models.faces is not None:
                    s.faces = self.models.faces.new_stage()
                    if isinstance(s.faces, PlannedFaceStage):
                        s.faces.set_live(s.live)
                    share = getattr(s.faces, "share_detections", None)
                    workers = detect_workers(cfg.detect_workers, len(opened))
                    if share is not None and workers and s.live and getattr(s.faces, "background", False):
                        if self.detect_pool is None:
                            self.detect_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=DETECT_THREAD)
                        share(self.detect_pool)
                    s.faces.start()
            if self.models.faces is not None and len(opened) > 1:
                workers = max(1, min(len(opened), os.cpu_count() or 1))
                self.face_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rtvision-faces")
            self.worker = MultiWorker(self.streams, self.out, self.stop_event, self.wake, self.models.classifier,
                                      self.batch, cfg.model.topk, self.models.device.type == "cuda", self.face_pool)
        except BaseException:  # whatever failed (Ctrl-C during a slow open too): undo what was made
            for pool in (self.face_pool, self.detect_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            for s in self.streams:
                for part in (s.faces, s.source):
                    if part is not None:
                        try:
                            part.close()
                        except Exception:  # pragma: no cover - best effort; the first error is raised
                            log.debug("closing stream %s after a failed start failed", s.name, exc_info=True)
            raise
        for s in opened:
            s.capture.start()
        self.worker.start()
        self._started = True
        return self

    def results(self) -> Iterator[Result]:
        """Results as they come: each stream's in frame order. A worker failure is raised here;
        a stream's own failure is not (see ``Stream.state``/``error``)."""
        assert self._started, "start() first"
        yield from drain(self.out, self.worker)
        if self.worker.error is not None:
            err = self.worker.error
            if isinstance(err, RtvisionError):
                raise err
            raise RuntimeError(f"{self.worker.name} failed: {err.__class__.__name__}: {err}") from err

    def request_stop(self) -> None:
        self.stop_event.set()
        for s in self.streams:
            if s.buffer is not None:
                s.buffer.close()
        self.wake.set()

    def stop(self) -> list[str]:
        """Stop every thread, join them with a timeout, close the face stages and the sources.
        Idempotent; returns the names of the threads that did not stop."""
        if self._stopped:
            return self.stuck_threads
        self.request_stop()
        # (A camera's or a stream's blocking calls run on a thread of their own, SourceIO: a
        # capture thread blocked in one still stops at once.)
        join_s = self.cfg.join_timeout_s
        deadline = time.monotonic() + join_s
        stuck = []
        threads = [s.capture for s in self.streams if s.capture is not None] + ([self.worker] if self.worker else [])
        for t in threads:
            if not t.ident:
                continue
            while t.is_alive() and time.monotonic() < deadline:
                try:
                    while True:
                        self.out.get_nowait()
                except queue.Empty:
                    pass
                t.join(timeout=0.05)
            if t.is_alive():
                stuck.append(t.name)
                log.error("thread %s did not stop within %.0fs", t.name, join_s)
        worker_stuck = self.worker is not None and self.worker.name in stuck
        if self.face_pool is not None and not worker_stuck:
            self.face_pool.shutdown(wait=True, cancel_futures=True)  # its threads are joined here
        for s in self.streams:
            if s.faces is not None and not worker_stuck:
                try:
                    s.faces.close()
                except Exception as exc:
                    log.warning("closing stream %s's face stage failed: %s", s.name, exc)
        if self.detect_pool is not None and not worker_stuck:
            self.detect_pool.shutdown(wait=True, cancel_futures=True)
        if self.worker is not None and not worker_stuck:
            self.worker.thread_counts.restore()  # no thread computes any more
        for s in self.streams:
            if s.source is not None and not (s.capture is not None and s.capture.name in stuck):
                try:
                    if s.capture is not None:
                        s.capture.close_source()  # after a read in progress, if one is blocked
                    else:
                        s.source.close()
                except Exception:  # pragma: no cover - best effort
                    log.debug("source close failed", exc_info=True)
            if s.state == "running":  # stopped before its end
                s.state = "failed" if s.capture is not None and s.capture.error is not None else "stopped"
                s.error = s.capture.error if s.capture is not None else None
        self.stuck_threads = stuck
        self._stopped = True
        return stuck

    def __enter__(self) -> MultiPipeline:
        return self if self._started else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
