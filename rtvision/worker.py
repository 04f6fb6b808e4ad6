"""The inference worker: takes batches from the ring buffer, runs both models, emits Results.

Files fill their batches (nothing is lost, throughput matters); live sources take what is there
and never wait long for more (latency matters). Results go to a small bounded queue in frame
order; when the consumer is slow the worker waits, the ring buffer fills, and a live source
drops at the buffer: no queue anywhere grows without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

import torch

from .buffer import RingBuffer
from .models.classifier import Classifier
from .models.faces import FaceDetector
from .stats import StageTimer
from .types import Faces, Frame, Labels, Result

log = logging.getLogger(__name__)

END = object()  # put on the results queue after the last result


class ClassifierStage(Protocol):
    def prepare(self, images_bgr: list) -> torch.Tensor: ...
    def logits(self, batch: torch.Tensor) -> torch.Tensor: ...
    def top_k(self, logits: torch.Tensor, k: int) -> list[Labels]: ...


class InferenceWorker(threading.Thread):
    def __init__(
        self,
        buffer: RingBuffer[Frame],
        out: queue.Queue,
        stop: threading.Event,
        classifier: Classifier | ClassifierStage | None,
        faces: FaceDetector | None,
        batch: int,
        live: bool,
        topk: int = 5,
        cuda_sync: bool = False,
        fill_timeout_s: float = 1.0,
    ) -> None:
        super().__init__(name="rtvision-worker", daemon=True)
        self.buffer = buffer
        self.out = out
        self.stop_event = stop
        self.classifier = classifier
        self.faces = faces
        self.batch = batch
        self.live = live
        self.topk = topk
        self.cuda_sync = cuda_sync
        self.fill_timeout_s = fill_timeout_s
        self.error: BaseException | None = None
        self.processed = 0
        self.batches = 0
        self.paused = threading.Event()  # set: hold (the window's pause on a file)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            log.error("inference worker failed: %s: %s", exc.__class__.__name__, exc)
            self.stop_event.set()
            self.buffer.close()
        finally:
            self._emit(END, force=True)

    def _emit(self, item, force: bool = False) -> bool:
        while True:
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self.stop_event.is_set():
                    if not force:
                        return False
                    try:  # make room for the END marker so the consumer can finish
                        self.out.get_nowait()
                    except queue.Empty:
                        pass

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            if self.paused.is_set():
                self.stop_event.wait(0.02)
                continue
            t_wait = time.perf_counter()
            frames = self.buffer.get_batch(
                self.batch, timeout_s=0.1, fill=not self.live, fill_timeout_s=self.fill_timeout_s
            )
            wait_ms = (time.perf_counter() - t_wait) * 1000.0
            if not frames:
                if self.buffer.drained:
                    return
                continue
            for r in self.process(frames, wait_ms):
                if not self._emit(r):
                    return

    def process(self, frames: list[Frame], wait_ms: float = 0.0) -> list[Result]:
        """Run both models on one batch; timings of batch stages are divided over its frames."""
        n = len(frames)
        images = [f.image for f in frames]
        timings = {"queue_wait": wait_ms / n, "preprocess": 0.0, "classifier": 0.0, "faces": 0.0}
        labels: list[Labels] = [Labels.empty()] * n
        faces: list[Faces] = [Faces.empty()] * n
        if self.classifier is not None:
            with StageTimer(self.cuda_sync) as t:
                batch = self.classifier.prepare(images)
            timings["preprocess"] = t.ms / n
            with StageTimer(self.cuda_sync) as t:
                logits = self.classifier.logits(batch)
                labels = self.classifier.top_k(logits, self.topk)
            timings["classifier"] = t.ms / n
        if self.faces is not None:
            with StageTimer(self.cuda_sync) as t:
                faces = self.faces.detect(frames)
            timings["faces"] = t.ms / n
        done = time.monotonic()
        timings["total"] = sum(timings.values())
        self.processed += n
        self.batches += 1
        return [Result(f, faces[i], labels[i], dict(timings, decode=f.decode_ms), n, done) for i, f in enumerate(frames)]
