"""Classifier accuracy against real labels: a folder of photos with a ``labels.csv``.

``labels.csv`` has a header and the columns ``file`` and ``class_id`` (0-based, the model's class
order; for ImageNet-1k, torchvision's order); other columns (``wnid``, ``name``) are ignored.
``rtvision optimize`` and ``rtvision bench`` take such a folder as ``--eval-images``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import InputError

MIN_DISTINCT_CLASSES = 10  # below this, agreement with fp32 says nothing (a constant model agrees)


@dataclass(frozen=True)
class LabelledImages:
    """Photos (BGR uint8) with their class ids, in ``labels.csv`` order."""

    root: Path
    files: tuple[str, ...]
    class_ids: np.ndarray  # (N,) int64
    images: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.files)

    def split(self, n_first: int, stride: int | None = None) -> tuple[LabelledImages, LabelledImages]:
        """(every ``stride``-th image up to ``n_first`` of them, the rest): two disjoint sets, the
        first spread over the whole folder (e.g. calibration), the second everything else."""
        n = len(self)
        stride = stride or max(1, n // max(1, n_first))
        pick = set(range(0, n, stride)[:n_first])
        a = [i for i in range(n) if i in pick]
        b = [i for i in range(n) if i not in pick]
        return self.subset(a), self.subset(b)

    def subset(self, idx: list[int]) -> LabelledImages:
        return LabelledImages(self.root, tuple(self.files[i] for i in idx), self.class_ids[idx],
                              tuple(self.images[i] for i in idx))


def read_labelled_images(folder: str | Path, limit: int | None = None, num_classes: int | None = None) -> LabelledImages:
    """The photos and labels of ``folder``. Raises InputError (one line) for a missing folder, a
    missing or malformed ``labels.csv``, a class id below 0 or, with ``num_classes`` (the
    network's), not one of its classes, or an unreadable photo."""
    root = Path(folder)
    csv_path = root / "labels.csv"
    if not root.is_dir():
        raise InputError(f"--eval-images {folder}: not a folder")
    if not csv_path.is_file():
        raise InputError(f"--eval-images {folder}: no labels.csv (columns: file, class_id)")
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: cannot read ({exc.__class__.__name__})") from None
    if not rows or not {"file", "class_id"} <= set(rows[0]):
        raise InputError(f"{csv_path}: needs a header with the columns file and class_id")
    rows = rows[:limit] if limit else rows
    files, ids, images = [], [], []
    for line, row in enumerate(rows, start=2):
        short = [key for key in ("file", "class_id") if row.get(key) is None]  # csv gives None for missing fields
        if short:
            raise InputError(f"{csv_path}:{line}: a short row, with no {short[0]}")
        try:
            cid = int(row["class_id"])
        except (TypeError, ValueError):
            raise InputError(f"{csv_path}:{line}: class_id {row['class_id']!r} is not an integer") from None
        if cid < 0 or (num_classes is not None and cid >= num_classes):
            top = f"0..{num_classes - 1}, the network's {num_classes} classes" if num_classes is not None else ">= 0"
            raise InputError(f"{csv_path}:{line}: class_id {cid} is outside {top}")
        if not row["file"]:
            raise InputError(f"{csv_path}:{line}: no file named (columns: file, class_id)")
        path = root / row["file"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if img is None:
            raise InputError(f"{csv_path}:{line}: cannot read the photo {row['file']}")
        files.append(row["file"])
        ids.append(cid)
        images.append(img)
    return LabelledImages(root, tuple(files), np.asarray(ids, np.int64), tuple(images))


def topk_accuracy(logits: torch.Tensor, class_ids: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy of (N, C) logits against the true class ids."""
    if logits.shape[0] != len(class_ids) or len(class_ids) == 0:
        raise ValueError(f"{logits.shape[0]} logits for {len(class_ids)} labels")
    truth = torch.as_tensor(class_ids).view(-1, 1)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return {
        "top1": float((top5[:, :1] == truth).any(1).float().mean()),
        "top5": float((top5 == truth).any(1).float().mean()),
        "images": int(len(class_ids)),
    }


def informative(reference_logits: torch.Tensor) -> bool:
    """Whether agreement with this reference means anything: it must answer at least
    MIN_DISTINCT_CLASSES different classes on the evaluation set (a random-init network answers
    one class for everything, which every variant then "agrees" with)."""
    return int(reference_logits.argmax(1).unique().numel()) >= MIN_DISTINCT_CLASSES


# ---------------------------------------------------------------- variants compared side by side


def agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    """Agreement of ``logits`` with a reference on the same images.

    top1: argmax equal. top5: the reference's top-1 class is among the variant's top-5.
    kl: mean KL(p_ref || p_variant) of the softmax, nats per image.
    """
    import torch.nn.functional as F

    if ref_logits.shape != logits.shape or ref_logits.shape[0] == 0:
        raise ValueError(f"logits shapes differ or are empty: {tuple(ref_logits.shape)} vs {tuple(logits.shape)}")
    ref_top1 = ref_logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == ref_top1[:, None]).any(1)
    kl = F.kl_div(F.log_softmax(logits.float(), 1), F.log_softmax(ref_logits.float(), 1), reduction="batchmean", log_target=True)
    return {"top1": float((logits.argmax(1) == ref_top1).float().mean()), "top5": float(top5.float().mean()),
            "kl": max(0.0, float(kl))}


def run_all(runtime, images_bgr, batch_size: int = 32) -> torch.Tensor:
    """(N, classes) float32 CPU logits of a runtime (``rtvision.backends``) over BGR images."""
    outs = []
    for i in range(0, len(images_bgr), batch_size):
        outs.append(runtime.run(runtime.prepare(list(images_bgr[i : i + batch_size]))).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def measure_speed(runtimes: dict[str, object], images_bgr, batch_sizes: tuple[int, ...], repeats: int = 3,
                  iters: int = 10, warmup: int = 2) -> dict[str, dict]:
    """Model time of each runtime at each batch size, interleaved, on real prepared images.

    Every repeat runs every variant in turn (a slow phase of a shared machine hits all of them),
    so ratios are taken within one run. Preprocessing is outside the timing (it is the same
    work for every variant). Per variant and batch size: images_per_s = batch / median call
    time (robust to the stalls of a shared machine), latency_ms_p50/p90 of one call.
    """
    import statistics
    import time

    inputs = {(name, b): rt.prepare([images_bgr[i % len(images_bgr)] for i in range(b)])
              for name, rt in runtimes.items() for b in batch_sizes}
    calls: dict[tuple[str, int], list[float]] = {k: [] for k in inputs}
    for (name, b), x in inputs.items():
        for _ in range(warmup):
            runtimes[name].run(x)
    for _ in range(repeats):
        for (name, b), x in inputs.items():
            rt = runtimes[name]
            for _ in range(iters):
                t0 = time.perf_counter()
                rt.run(x)
                calls[(name, b)].append(time.perf_counter() - t0)
    out: dict[str, dict] = {name: {} for name in runtimes}
    for (name, b), c in calls.items():
        c = sorted(c)
        out[name][f"batch{b}"] = {"images_per_s": b / statistics.median(c), "latency_ms_p50": 1000 * statistics.median(c),
                                  "latency_ms_p90": 1000 * float(np.percentile(c, 90))}
    return out
