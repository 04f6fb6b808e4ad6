"""Fake stages that satisfy the worker's interfaces, for tests that must control speed or failure."""

from __future__ import annotations

import time

import numpy as np
import torch

from rtvision.models.build import Models
from rtvision.types import Faces, Frame, Labels


class FakeClassifier:
    """Returns one fixed label; optionally sleeps per batch or raises on the n-th batch."""

    variant = "fake"

    def __init__(self, sleep_s: float = 0.0, fail_on_batch: int | None = None, decode=None) -> None:
        self.sleep_s = sleep_s
        self.fail_on_batch = fail_on_batch
        self.decode = decode  # image -> int (e.g. an index clip's frame index), carried in the batch
        self.batches = 0
        self.prepare_threads: list[str] = []
        self.seen: list[list[int]] = []  # per logits() call, the decoded values of its batch

    def prepare(self, images):
        import threading

        self.prepare_threads.append(threading.current_thread().name)
        if self.decode is None:
            return torch.zeros(len(images), 1)
        return torch.tensor([[float(self.decode(img))] for img in images])

    def logits(self, batch):
        self.seen.append([int(v) for v in batch[:, 0].tolist()])
        self.batches += 1
        if self.fail_on_batch is not None and self.batches >= self.fail_on_batch:
            raise RuntimeError("fake classifier failure")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return torch.zeros(batch.shape[0], 3)

    def set_num_threads(self, n):
        self.threads_set = n

    def top_k(self, logits, k):
        return [Labels(np.array([1]), np.array([0.9], np.float32), ["fake"]) for _ in range(logits.shape[0])]


class FakeFaces:
    """A FaceStage: one fixed box per frame; records the threads its detect() ran on, and its
    start()/close() calls."""

    description = "fake faces"

    def start(self) -> None:
        self.__dict__.setdefault("lifecycle", []).append("start")

    def close(self) -> None:
        self.__dict__.setdefault("lifecycle", []).append("close")

    def detect(self, frames: list[Frame]) -> list[Faces]:
        import threading

        self.__dict__.setdefault("threads", []).append(threading.current_thread().name)
        return [Faces(np.array([[10, 20, 50, 80]], np.float32), np.array([0.99], np.float32)) for _ in frames]


class SameStage:
    """A FaceStageFactory whose every run gets the one given (fake) stage, so tests can look at
    what the run did to it."""

    def __init__(self, stage) -> None:
        self.stage = stage
        self.description = stage.description

    def new_stage(self):
        return self.stage


def fake_models(classifier=None, faces=None) -> Models:
    return Models(torch.device("cpu"), classifier, SameStage(faces) if faces is not None else None, [])


class FakeTrackedFaces(FakeFaces):
    """A PlannedFaceStage: the tracking stage's three-step interface (plan, detect_planned on the
    worker's helper thread, finish); records where and how its detections ran, and can fail.
    Never in background mode."""

    background = False

    def __init__(self, fail_on_call: int | None = None, detect_s: float = 0.0) -> None:
        import threading

        self.fail_on_call = fail_on_call
        self.detect_s = detect_s  # each detect_planned call takes this long (a sleep: no CPU)
        self._lock = threading.Lock()
        self.active = 0  # detect_planned calls running now
        self.most_active = 0  # the most that ever ran at once
        self.calls: list[tuple[list[int], str, int]] = []  # (frame indices, thread name, torch threads)
        self.events: list[tuple[str, int]] = []  # ("plan" | "finish", first frame index), in order
        self.live: bool | None = None  # what the pipeline said at start (set_live)

    def set_live(self, live: bool) -> None:
        self.live = live

    def plan(self, frames: list[Frame]) -> list[int]:
        self.events.append(("plan", frames[0].index))
        return [f.index for f in frames]

    def detect_planned(self, frames: list[Frame], plan: list[int]) -> dict[int, Faces]:
        import threading

        import time

        with self._lock:
            self.calls.append((plan, threading.current_thread().name, torch.get_num_threads()))
            n = len(self.calls)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.fail_on_call is not None and n >= self.fail_on_call:
                raise RuntimeError("fake detector failure")
            time.sleep(self.detect_s)
            return dict(enumerate(self.detect(frames)))
        finally:
            with self._lock:
                self.active -= 1

    def finish(self, frames: list[Frame], plan: list[int], detections: dict[int, Faces]) -> list[Faces]:
        assert plan == [f.index for f in frames]
        self.events.append(("finish", frames[0].index))
        return [detections[i] for i in range(len(frames))]


def run_to_end(cfg, models=None, source=None, listen=None):
    """A whole run as its owner does it: ``with Pipeline(...)`` around the runner; the summary is
    built once the pipeline has stopped (threads joined, stuck ones named). Returns
    (summary, pipeline, runner); ``listen(result)`` is called for every result."""
    from rtvision.pipeline import Pipeline
    from rtvision.runner import Runner

    with Pipeline(cfg, models=models, source=source) as pipe:
        runner = Runner(cfg, pipe)
        if listen is not None:
            runner.listeners.append(listen)
        runner.run()
    return runner.build_summary(), pipe, runner
