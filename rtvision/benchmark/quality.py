"""Quality references: faces from full-resolution MTCNN (cached on disk) and fp32 top-1 labels.

Faces: facenet-pytorch ``MTCNN(keep_all=True)``, default thresholds, full resolution, every
frame, RGB input, one frame per ``detect`` call. Computed once per video and cached as JSON under
``~/.cache/rtvision/bench-reference/`` (or ``--cache-dir``); the key is the file's resolved path,
size and mtime plus the settings and the facenet-pytorch version. Only the frames a bench needs
are computed; later benches add to the same cache file.

Classifier: the fp32 model of the same arch and weights, with the pipeline's preprocessing, on
the same file frames (not cached: it depends on the weights, and takes seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import default_cache_dir
from ..metrics import face_quality, top1_agreement
from .record import RunRecording

log = logging.getLogger(__name__)

REFERENCE_SETTINGS = {
    "detector": "facenet_pytorch.MTCNN",
    "keep_all": True,
    "thresholds": "default",
    "min_face_size": "default",
    "scale": 1.0,
    "input": "RGB numpy, one frame per detect()",
}




def reference_key(video: str) -> dict:
    from .fingerprint import _version

    p = Path(video).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "settings": REFERENCE_SETTINGS, "facenet_pytorch": _version("facenet-pytorch")}


def reference_cache_path(video: str, cache_dir: str | Path | None) -> Path:
    key = reference_key(video)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    return base / "bench-reference" / f"{Path(video).stem}-{digest}.json"


def _load_cache(path: Path, key: dict) -> dict[int, np.ndarray]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("key") != key:
        return {}
    return {int(k): np.asarray(v, np.float32).reshape(-1, 5) for k, v in data.get("frames", {}).items()}


def _save_cache(path: Path, key: dict, frames: dict[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    payload = {"key": key, "frames": {str(k): np.round(v, 2).tolist() for k, v in sorted(frames.items())}}
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


class FP32Labels:
    """Top-1 of the fp32 classifier (same arch / weights, pipeline preprocessing)."""

    def __init__(self, arch: str, weights: str, device: torch.device) -> None:
        from ..backends.torch_runtime import TorchRuntime
        from ..models.classifier import Classifier
        from ..models.zoo import build_network

        net = build_network(arch, weights)
        runtime = TorchRuntime(net.module.to(device), net.preprocess, device, "fp32")
        self.clf = Classifier(arch, runtime, net.categories, net.preprocess, net.weights_id, f"{arch} fp32")

    def top1(self, images_bgr: list[np.ndarray]) -> list[int]:
        logits = self.clf.logits(self.clf.prepare(images_bgr))
        return logits.argmax(dim=1).tolist()


def compute_references(
    video: str,
    face_frames: set[int],
    label_frames: set[int],
    cache_dir: str | None,
    fp32: FP32Labels | None,
    device: torch.device,
    progress: bool = True,
) -> tuple[dict[int, np.ndarray], dict[int, int], dict]:
    """(faces per file frame (N,5: xyxy + score), fp32 top-1 per file frame, info) for the frames asked."""
    key = reference_key(video)
    cache = reference_cache_path(video, cache_dir)
    faces = _load_cache(cache, key)
    cached = len(faces)
    need_faces = {i for i in face_frames if i not in faces}
    need_labels = set(label_frames) if fp32 is not None else set()
    labels: dict[int, int] = {}
    if need_faces or need_labels:
        mtcnn = None
        if need_faces:
            from facenet_pytorch import MTCNN

            mtcnn = MTCNN(keep_all=True, device=device)
        last = max(need_faces | need_labels)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=last + 1, desc="reference (MTCNN full res / fp32)", unit="frame", leave=False, dynamic_ncols=True,
                       disable=None)
        cap = cv2.VideoCapture(video)
        pending: list[tuple[int, np.ndarray]] = []
        try:
            for idx in range(last + 1):
                ok, img = cap.read()
                if not ok:
                    break
                if idx in need_faces:
                    with torch.inference_mode():
                        boxes, probs = mtcnn.detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
                    faces[idx] = (np.zeros((0, 5), np.float32) if boxes is None
                                  else np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4),
                                                       np.asarray(probs, np.float32).reshape(-1, 1)], axis=1))
                if idx in need_labels:
                    pending.append((idx, img))
                    if len(pending) == 8:
                        labels.update(zip([i for i, _ in pending], fp32.top1([im for _, im in pending])))
                        pending.clear()
                if bar is not None:
                    bar.update(1)
            if pending:
                labels.update(zip([i for i, _ in pending], fp32.top1([im for _, im in pending])))
        finally:
            cap.release()
            if bar is not None:
                bar.close()
        if need_faces:
            _save_cache(cache, key, faces)
    info = {
        "faces_cache": str(cache),
        "faces_cached_frames_before": cached,
        "faces_computed_frames": len(need_faces),
        "settings": REFERENCE_SETTINGS,
        "reference_faces_in_measured_frames": int(sum(len(faces[i]) for i in face_frames if i in faces)),
        "fp32_label_frames": len(labels),
    }
    return faces, labels, info


def measured_file_frames(rec: RunRecording, warmup: int, file_frames: int) -> set[int]:
    return {r.index % file_frames for r in rec.records[warmup:]}


def run_quality(rec: RunRecording, warmup: int, file_frames: int, ref_faces: dict[int, np.ndarray], ref_top1: dict[int, int]) -> dict:
    """Face recall/precision vs the reference and top-1 agreement with fp32, over measured results."""
    measured = rec.records[warmup:]
    out: dict = {"frames": len(measured)}
    with_faces = [r for r in measured if r.faces_xyxy is not None and (r.index % file_frames) in ref_faces]
    if with_faces:
        out["faces"] = face_quality((ref_faces[r.index % file_frames][:, :4], r.faces_xyxy) for r in with_faces)
    else:
        out["faces"] = None
    with_labels = [r for r in measured if r.top1 is not None and (r.index % file_frames) in ref_top1]
    if with_labels:
        out["top1_agreement_fp32"] = top1_agreement([r.top1 for r in with_labels], [ref_top1[r.index % file_frames] for r in with_labels])
        out["top1_frames"] = len(with_labels)
    else:
        out["top1_agreement_fp32"] = None
        out["top1_frames"] = 0
    return out


MISS_CAUSES = ("after_cut", "new", "drift", "lost")


def miss_causes(ref_faces: dict[int, np.ndarray], pred_faces: dict[int, np.ndarray], cuts=(),
                min_height: float = 40.0, after_cut: int = 2) -> dict:
    """Why the reference faces at least ``min_height`` px tall that a run missed were missed,
    one cause per missed face, checked in this order:

    - ``after_cut``: within ``after_cut`` frames after the first frame of a new shot (``cuts``);
    - ``new``: the reference has no face there in the previous frame (IoU < 0.3 with all of
      them): it has just become detectable (entered, turned, unoccluded) between detections;
    - ``drift``: a predicted box overlaps it, but with an IoU under the match threshold (0.5);
    - ``lost``: no predicted box overlaps it.

    Returns ``{"missed": N, "faces": M, cause: count, ..., "frames": {cause: [frame, ...]}}``
    (frames: where each cause occurred, the first 50)."""
    from ..faces.boxes import iou_matrix, match_boxes
    from ..metrics import IOU_THRESHOLD, box_heights

    cut_frames = sorted(int(c) for c in cuts)
    out: dict = {"missed": 0, "faces": 0, **{c: 0 for c in MISS_CAUSES}, "frames": {c: [] for c in MISS_CAUSES}}
    for i in sorted(pred_faces):
        if i not in ref_faces:
            continue
        ref = np.asarray(ref_faces[i], np.float32).reshape(-1, 5)[:, :4]
        pred = np.asarray(pred_faces[i], np.float32).reshape(-1, 4)
        tall = np.flatnonzero(box_heights(ref) >= min_height)
        out["faces"] += len(tall)
        found = {r for r, _, _ in match_boxes(ref, pred, IOU_THRESHOLD)}
        prev = np.asarray(ref_faces.get(i - 1, np.zeros((0, 5))), np.float32).reshape(-1, 5)[:, :4]
        for r in tall:
            if r in found:
                continue
            box = ref[r : r + 1]
            if any(0 <= i - c <= after_cut for c in cut_frames):
                cause = "after_cut"
            elif i - 1 not in ref_faces or len(prev) == 0 or iou_matrix(box, prev).max() < 0.3:
                cause = "new"
            elif len(pred) and iou_matrix(box, pred).max() > 0:
                cause = "drift"
            else:
                cause = "lost"
            out["missed"] += 1
            out[cause] += 1
            if len(out["frames"][cause]) < 50:
                out["frames"][cause].append(int(i))
    return out
