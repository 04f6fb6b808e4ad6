"""The inference worker: takes batches from the ring buffer, runs both models, emits Results.

Files fill their batches (nothing is lost, throughput matters); live sources take what is there
and never wait long for more (latency matters). Results go to a small bounded queue in frame
order; when the consumer is slow the worker waits, the ring buffer fills, and a live source
drops at the buffer: no queue anywhere grows without bound.

Files with a planned face stage (``--faces fast`` and ``full``) also overlap the two models
(``overlap``): the face detections of batches k+1..k+``lookahead`` run on helper threads
(``rtvision-faces``) while the worker runs the classifier (and the face tracking) of batch k. On
CUDA each thread's detections run on a CUDA stream of its own (``FastMTCNN``), and the stage
clocks wait for the worker's own stream only (``StageTimer``). On the CPU there is one helper
per batch ahead, up to one per core (``LoopPlan.helpers``; 2 cores: 2), so that the detections of
two batches run side by side: a detection scales only ~1.5x from one intra-op thread to two (the
pyramid, the crops and the cascade's bookkeeping are single-threaded), so one helper left part of
the second core idle: on the 1080p clip, 21.4 fps with one helper against 28.5 with two, the
same results (``assets/bench-helpers-cpu-2026-11-30.md``). Torch's intra-op threads are split between the worker and its helpers (2 cores: one
each). On the CPU the helpers also make the classifier's input batches (resize, crop, normalize)
of the batches they run ahead. With one batch ahead the threads meet at every batch and the
faster one waits whenever the other has a slow batch. Live sources keep the plain loop:
looking a batch ahead would add a batch of latency; their face stage detects in the background
instead (``StridedFaceTracker.set_background``), on a helper thread of its own, which the pipeline
starts (``faces.start()``) and joins (``faces.close()``) once the worker has ended, with the threads
split the same way. The pipeline decides the loop (:class:`LoopPlan`).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import torch

from .buffer import RingBuffer
from .faces.protocols import FaceStage, PlannedFaceStage
from .faces.schedule import Plan
from .models.classifier import Classifier
from .stats import StageTimer
from .types import Faces, Frame, Labels, Result

log = logging.getLogger(__name__)

END = object()  # put on the results queue after the last result


_counts_lock = threading.Lock()
_counts_found: tuple[int, int] = (0, 0)  # torch's and OpenCV's counts before the first run that holds them
_counts_holders = 0  # runs (workers) that may have changed them and not restored them yet


class ThreadCounts:
    """torch's and OpenCV's thread counts, as a worker found them: it changes them while it runs
    (split between the classifier and the face stage's threads), and its owner puts them back
    with :meth:`restore` once every thread that computes (the face stages' helpers too) has
    stopped: changing them while another thread is inside a parallel section is not safe.

    They are process-wide: with several runs at once in one process (the Python API from two
    threads), each finds them as they were before the first of them, and the last one to
    restore puts them back (the second run used to take the first one's split counts for the
    process's own, and leave them)."""

    def __init__(self) -> None:
        global _counts_found, _counts_holders
        with _counts_lock:
            if _counts_holders == 0:
                _counts_found = (torch.get_num_threads(), cv2.getNumThreads())
            _counts_holders += 1
            self.torch, self.cv = _counts_found
        self._held = True

    def restore(self) -> None:
        global _counts_holders
        with _counts_lock:
            if not self._held:
                return
            self._held = False
            _counts_holders -= 1
            if _counts_holders:
                return  # another run still computes with its share
            if torch.get_num_threads() != self.torch:
                torch.set_num_threads(self.torch)
            if cv2.getNumThreads() != self.cv:
                cv2.setNumThreads(self.cv)


def emit(out: queue.Queue, item, stop_event: threading.Event, force: bool = False) -> bool:
    """Put ``item`` on a worker's bounded results queue, waiting for room. Once a stop is asked:
    give up (False), or with ``force`` (the END marker) make room by dropping the oldest result,
    so that the consumer can finish."""
    while True:
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            if stop_event.is_set():
                if not force:
                    return False
                try:
                    out.get_nowait()
                except queue.Empty:
                    pass


def drain(out: queue.Queue, worker: threading.Thread):
    """A worker's results from ``out`` until its END marker, or until it has died with the queue
    empty (its error, if any, is the caller's to raise)."""
    while True:
        try:
            item = out.get(timeout=0.1)
        except queue.Empty:
            if not worker.is_alive() and out.empty():
                return
            continue
        if item is END:
            return
        yield item


class ClassifierStage(Protocol):
    def prepare(self, images_bgr: list) -> Any: ...
    def logits(self, batch: Any) -> torch.Tensor: ...
    def top_k(self, logits: torch.Tensor, k: int) -> list[Labels]: ...
    def set_num_threads(self, n: int | None) -> None: ...


@dataclass(frozen=True)
class LoopPlan:
    """How the worker loops; the pipeline decides it (``Pipeline.loop_plan``) from the source and
    the stages.

    batch: most frames per batch. fill: wait up to ``fill_timeout_s`` for a full batch (files; live
    sources take what is there). overlap: the next batches' face detections run ahead on
    ``helpers`` helper threads (files, a planned face stage), at most ``lookahead`` batches
    ahead. split_threads: share torch's, OpenCV's and the classifier runtime's threads between
    the worker and the threads working beside it (CPU; the overlap's helpers, or a face stage
    detecting in the background: one).
    cuda_sync: synchronize CUDA before reading stage clocks.
    """

    batch: int
    fill: bool
    overlap: bool = False
    lookahead: int = 1
    helpers: int = 1
    split_threads: bool = False
    topk: int = 5
    cuda_sync: bool = False
    fill_timeout_s: float = 1.0


@dataclass
class _Ahead:
    """A batch whose face detections were started on the helper thread."""

    frames: list[Frame]
    wait_ms: float
    plan: Plan  # the face stage's
    detections: Future  # -> (detections, ms)
    prepared: Future | None = None  # -> (the classifier's input batch, ms), made on the helper


def _timed(fn: Callable, *args) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000.0


class InferenceWorker(threading.Thread):
    """The worker thread of one run: ``loop`` says how it batches and whether the face
    detections run ahead (see :class:`LoopPlan`); ``faces`` is the run's own face stage."""

    def __init__(
        self,
        buffer: RingBuffer[Frame],
        out: queue.Queue,
        stop: threading.Event,
        classifier: Classifier | ClassifierStage | None,
        faces: FaceStage | None,
        loop: LoopPlan,
    ) -> None:
        super().__init__(name="rtvision-worker", daemon=True)
        if loop.overlap and not isinstance(faces, PlannedFaceStage):
            raise ValueError("the overlapped loop needs a face stage that plans its detections")
        self.buffer = buffer
        self.out = out
        self.stop_event = stop
        self.classifier = classifier
        self.faces = faces
        self.loop = loop
        self.error: BaseException | None = None
        self.processed = 0
        self.batches = 0
        self.paused = threading.Event()  # set: hold (the window's pause on a file)
        self.thread_counts = ThreadCounts()  # as found; the owner restores them once all threads stopped

    def run(self) -> None:
        threads, cv_threads = self.thread_counts.torch, self.thread_counts.cv
        try:
            split = self.loop.split_threads and threads > 1
            sharing = 1 + (self.loop.helpers if self.loop.overlap else 1)  # the worker and its helper(s)
            if split:  # threads created after this (the helpers) start with the same count
                torch.set_num_threads(max(1, threads // sharing))
                cv2.setNumThreads(max(1, cv_threads // sharing))  # the tracker's flow and resizes
            if self.classifier is not None:
                # a runtime with threads of its own (OpenVINO) takes the worker's share too
                self.classifier.set_num_threads(max(1, threads // sharing) if split else None)
            if self.loop.overlap:
                self._loop_overlapped()
            else:
                self._loop()
        except BaseException as exc:
            self.error = exc
            log.error("inference worker failed: %s: %s", exc.__class__.__name__, exc)
            self.buffer.close()  # the capture stops
        finally:
            # END after every result already made, in order: the stop is asked only once END is
            # queued, so that emit() does not drop a finished result to make room for it (only a
            # stop the consumer asks for does). The thread counts: restored by the owner.
            self._emit(END, force=True)
            if self.error is not None:
                self.stop_event.set()

    def _emit(self, item, force: bool = False) -> bool:
        return emit(self.out, item, self.stop_event, force)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            if self.paused.is_set():
                self.stop_event.wait(0.02)
                continue
            t_wait = time.perf_counter()
            frames = self.buffer.get_batch(
                self.loop.batch, timeout_s=0.1, fill=self.loop.fill, fill_timeout_s=self.loop.fill_timeout_s
            )
            wait_ms = (time.perf_counter() - t_wait) * 1000.0
            if not frames:
                if self.buffer.drained:
                    return
                continue
            for r in self.process(frames, wait_ms):
                if not self._emit(r):
                    return

    def _loop_overlapped(self) -> None:
        """The file loop with the face detections ``lookahead`` batches ahead (see the module
        docstring): batch k is finished here while the detections of batches k+1..k+lookahead
        run (or wait their turn) on the helper threads."""
        pool = ThreadPoolExecutor(max_workers=max(1, self.loop.helpers), thread_name_prefix="rtvision-faces")
        ahead: collections.deque[_Ahead] = collections.deque()
        drained = False
        try:
            while not self.stop_event.is_set():
                if self.paused.is_set():
                    while ahead:  # finish what was taken, then hold
                        if not self._emit_all(self._finish(ahead.popleft())):
                            return
                    self.stop_event.wait(0.02)
                    continue
                while not drained and len(ahead) <= self.loop.lookahead:
                    t_wait = time.perf_counter()
                    frames = self.buffer.get_batch(self.loop.batch, timeout_s=0.1, fill=True, fill_timeout_s=self.loop.fill_timeout_s)
                    wait_ms = (time.perf_counter() - t_wait) * 1000.0
                    if not frames:
                        drained = self.buffer.drained
                        break  # nothing yet (or the end): finish what is in flight
                    ahead.append(self._start(pool, frames, wait_ms))
                if ahead:
                    if not self._emit_all(self._finish(ahead.popleft())):
                        return
                elif drained:
                    return
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # the helper threads are joined here

    def _emit_all(self, results: list[Result]) -> bool:
        return all(self._emit(r) for r in results)

    def _start(self, pool: ThreadPoolExecutor, frames: list[Frame], wait_ms: float) -> _Ahead:
        """Book the batch into the face stage's schedule and start its detections."""
        plan = self.faces.plan(frames)
        prepared = None
        # On the CPU the helper also makes the classifier's input batch: with the coarse
        # detections (--small-face-every) it has time to spare, and the worker has none.
        if self.loop.split_threads and self.classifier is not None:  # first: the classifier needs it first
            prepared = pool.submit(_timed, self.classifier.prepare, [f.image for f in frames])
        return _Ahead(frames, wait_ms, plan, pool.submit(_timed, self.faces.detect_planned, frames, plan), prepared)

    def _finish(self, a: _Ahead) -> list[Result]:
        def faces_of(frames: list[Frame]) -> tuple[list[Faces], float, float]:
            t0 = time.perf_counter()
            detections, detect_ms = a.detections.result()
            t1 = time.perf_counter()
            faces = self.faces.finish(frames, a.plan, detections)
            return faces, detect_ms + (time.perf_counter() - t1) * 1000.0, (t1 - t0) * 1000.0

        return self.process(a.frames, a.wait_ms, faces_of, None if a.prepared is None else a.prepared.result())

    def process(
        self,
        frames: list[Frame],
        wait_ms: float = 0.0,
        faces_of: Callable[[list[Frame]], tuple[list[Faces], float, float]] | None = None,
        prepared: tuple[torch.Tensor, float] | None = None,
    ) -> list[Result]:
        """Run both models on one batch; timings of batch stages are divided over its frames.
        ``faces_of`` (overlapped loop): the face stage's results, its time (detections on the
        helper thread plus the rest here) and the time spent waiting for the helper.
        ``prepared``: the classifier's input batch and its time, made on the helper thread."""
        n = len(frames)
        images = [f.image for f in frames]
        timings = {"queue_wait": wait_ms / n, "preprocess": 0.0, "classifier": 0.0, "faces": 0.0}
        labels: list[Labels] = [Labels.empty()] * n
        faces: list[Faces] = [Faces.empty()] * n
        if self.classifier is not None:
            if prepared is not None:
                batch, prep_ms = prepared
            else:
                with StageTimer(self.loop.cuda_sync) as t:
                    batch = self.classifier.prepare(images)
                prep_ms = t.ms
            timings["preprocess"] = prep_ms / n
            with StageTimer(self.loop.cuda_sync) as t:
                logits = self.classifier.logits(batch)
                labels = self.classifier.top_k(logits, self.loop.topk)
            timings["classifier"] = t.ms / n
        if faces_of is not None:
            faces, ms, waited = faces_of(frames)
            timings["faces"] = ms / n
            timings["faces_wait"] = waited / n
        elif self.faces is not None:
            with StageTimer(self.loop.cuda_sync) as t:
                faces = self.faces.detect(frames)
            timings["faces"] = t.ms / n
        done = time.monotonic()
        timings["total"] = sum(v for k, v in timings.items() if k != "faces_wait")
        self.processed += n
        self.batches += 1
        return [Result(f, faces[i], labels[i], dict(timings, decode=f.decode_ms), n, done) for i, f in enumerate(frames)]
