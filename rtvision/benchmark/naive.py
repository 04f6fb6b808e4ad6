"""The naive baseline: the textbook loop every speed-up is measured against.

One Python thread does everything, one frame at a time, with no batching and no buffer::

    cap = cv2.VideoCapture(path)
    while True:
        ok, frame = cap.read()
        pil = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        logits = resnet(weights.transforms()(pil).unsqueeze(0))     # fp32 torchvision ResNet
        boxes, probs = MTCNN(keep_all=True).detect(pil)            # full resolution
        jsonl.write(json.dumps(record))                             # "result written"

The classifier is the bench's ``--classifier`` (ResNet-50 by default) with the same weights as
the variants. torch keeps its default intra-op threads ("one thread" means one Python thread
and no pipeline, as in the textbook, not a crippled torch).

Live mode emulates a camera as generously as possible for the loop: frames fall due at the
file's fps; when the loop comes back for a frame it takes the newest one due (decoding and
discarding the ones it missed: they count as dropped) and, when it is early, it waits. Latency
is from the moment a frame fell due to its result written.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..sources import LoopingFileSource
from ..stats import gpu_memory_mb, peak_rss_mb
from .record import ResultRecord, RunRecording, summarize


class NaiveLoop:
    """The textbook models, built once (reused across repeats)."""

    def __init__(self, arch: str, weights: str, device: str = "cpu") -> None:
        import torchvision.transforms as T
        from facenet_pytorch import MTCNN

        from ..models.zoo import build_network

        self.device = torch.device(device)
        self.arch = arch
        net = build_network(arch, weights)  # the same network and weights as the variants
        self.model = net.module.eval().to(self.device)
        pp = net.preprocess
        # torchvision's textbook eval transform (PIL in, tensor out), with the weights' own numbers
        self.transform = T.Compose([T.Resize(pp.resize), T.CenterCrop(pp.crop), T.ToTensor(), T.Normalize(pp.mean, pp.std)])
        self.mtcnn = MTCNN(keep_all=True, device=self.device)
        self.description = f"naive: cv2 loop, {arch} fp32 {self.device.type}, facenet MTCNN full res, batch 1, 1 thread"

    def process(self, img: np.ndarray) -> tuple[dict, np.ndarray, int, list]:
        """(stage ms, face boxes (N,4), top-1 id, top-5 ids) of one BGR frame."""
        from PIL import Image

        t0 = time.perf_counter()
        pil = Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        x = self.transform(pil).unsqueeze(0).to(self.device)
        t1 = time.perf_counter()
        with torch.no_grad():
            logits = self.model(x)
        top5 = logits.topk(5, dim=1).indices[0].tolist()
        t2 = time.perf_counter()
        boxes, _probs = self.mtcnn.detect(pil)
        t3 = time.perf_counter()
        xyxy = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        ms = {"preprocess": (t1 - t0) * 1e3, "classifier": (t2 - t1) * 1e3, "faces": (t3 - t2) * 1e3}
        return ms, xyxy, int(top5[0]), top5

    def run(self, source: str, frames: int, live: bool, warmup: int, progress_desc: str | None = None) -> tuple[dict, RunRecording]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rec = RunRecording(capacity=frames)
        cap = LoopingFileSource(source, frames)
        fps = cap.open().fps or 25.0
        bar = None
        if progress_desc is not None:
            from tqdm import tqdm

            bar = tqdm(total=frames, desc=progress_desc, unit="frame", leave=False, dynamic_ncols=True, disable=None)
        dropped = 0
        try:
            with tempfile.TemporaryDirectory(prefix="rtvision-naive-") as tmp, open(Path(tmp) / "results.jsonl", "w", encoding="utf-8") as fh:
                rec.started_at = t_start = time.monotonic()
                next_idx = 0
                while next_idx < frames:
                    if live:
                        due_idx = int((time.monotonic() - t_start) * fps)
                        if due_idx < next_idx:
                            time.sleep(max(0.0, t_start + next_idx / fps - time.monotonic()))
                            due_idx = next_idx
                        index = min(due_idx, frames - 1)
                    else:
                        index = next_idx
                    d0 = time.perf_counter()
                    for _ in range(index - next_idx):
                        cap.grab()
                    dropped += index - next_idx
                    img = cap.read()
                    if img is None:
                        raise RuntimeError(f"cannot read a frame from {source}")
                    d1 = time.perf_counter()
                    decoded_at = time.monotonic()
                    ms, xyxy, top1, top5 = self.process(img)
                    s0 = time.perf_counter()
                    fh.write(json.dumps({"frame": index, "faces": xyxy.round(1).tolist(), "labels": top5}) + "\n")
                    fh.flush()
                    s1 = time.perf_counter()
                    now = time.monotonic()
                    ms.update(decode=(d1 - d0) * 1e3, queue_wait=0.0, annotate=0.0, sink=(s1 - s0) * 1e3)
                    if live:
                        latency = (now - (t_start + index / fps)) * 1e3
                    else:
                        latency = (d1 - d0) * 1e3 + (now - decoded_at) * 1e3
                    rec.add(ResultRecord(index, now, latency, ms, xyxy, top1, batch=index))
                    next_idx = index + 1
                    if bar is not None:
                        bar.update(next_idx - bar.n)
        finally:
            cap.close()
            if bar is not None:
                bar.close()
        read = len(rec) + dropped
        stats = summarize(rec, warmup, live, read, dropped)
        stats["process_peak_rss_mb"] = peak_rss_mb()
        stats.update(gpu_memory_mb())
        return stats, rec
