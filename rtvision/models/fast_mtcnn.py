"""MTCNN face detection with facenet-pytorch's weights, kept on the device from end to end.

Two backends with one interface, ``detect(frames) -> list[Faces]``:

- :class:`FastMTCNN` re-implements facenet-pytorch's ``detect_face`` as batched tensor ops:
  P-Net over the whole batch of frames per pyramid level (channels_last, heads merged), one
  candidate gather for all levels, ``torchvision.ops.batched_nms`` with per-(frame, level) and
  per-frame groups, vectorized box regression / squaring / padding, and all R-Net (24x24) and
  O-Net (48x48) inputs gathered in one go from a summed-area table instead of one resize per
  box. The pyramid levels and the crops are *exactly* facenet's area resizes (``adaptive avg
  pool`` windows), so boxes match facenet-pytorch's to float precision. On the CPU the pyramid
  and the table come from ``cv2.integral`` + numpy gathers (cheaper than torch's area resize);
  on other devices from torch on the device. The host waits on the device only where a
  data-dependent count is needed (one mask per stage, the NMS calls, the final copy), never per
  box or per pyramid level.
- :class:`FacenetMTCNN` wraps facenet-pytorch's own ``MTCNN.detect`` (the reference).

``frames`` are same-size or mixed-size HxWx3 uint8 BGR images (numpy, as OpenCV gives them) or
objects with such an ``.image`` (``rtvision.types.Frame``). Boxes and landmarks come back in
original-frame pixels. "No faces" is ``Faces.empty()``.

``scale`` detects on the frame resized by ``scale`` (``cv2.INTER_AREA``, the same recipe in both
backends, so they agree at every scale); ``min_face_size`` is in those detector pixels (as in
facenet-pytorch), so the smallest face found, in original pixels, is about
``min_face_size / scale``. :func:`choose_scale` picks ``scale`` from the smallest face wanted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ..metrics import iou_matrix
from ..types import Faces

log = logging.getLogger(__name__)

DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
DEFAULT_FACTOR = 0.709

_PNET_STRIDE = 2
_PNET_CELL = 12
# detect_near: P-Net windows of NEAR_CROP level pixels on the levels where the lost face is
# NEAR_LEVEL_PX tall (P-Net's 12-px cell finds faces of about 12-24 level pixels); a detection
# that does not overlap the box is taken only within NEAR_MAX_SHIFT sides of it.
NEAR_CROP = 72
NEAR_LEVEL_PX = (8.0, 34.0)
NEAR_MAX_SHIFT = 1.25
# detect_near keeps only P-Net candidates that can still end as the pick (see _plausible): a
# side within NEAR_CAND_SIZE x the box's (the pick is within 1.5x) and a centre within
# NEAR_CAND_SHIFT sides (the pick is within NEAR_MAX_SHIFT); margins for R-/O-Net's re-fit.
NEAR_CAND_SIZE = 2.0
NEAR_CAND_SHIFT = 2.0
# detect_near reads its windows and crops from the summed-area table of the windows' region
# grown by this many sides of the largest box (crops beyond it fall back to the whole frame's).
NEAR_REGION_MARGIN = 1.0


def _pick_near(box: np.ndarray, cand: np.ndarray) -> int | None:
    """The candidate that overlaps ``box`` most, else the nearest of a similar size (within
    1.5x) whose centre is within NEAR_MAX_SHIFT sides of the box's; None when there is none."""
    if len(cand) == 0:
        return None
    iou = iou_matrix(box[None], cand)[0]
    if iou.max() > 0:
        return int(iou.argmax())
    side = max(box[2] - box[0], box[3] - box[1], 1.0)
    cside = np.maximum(cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1])
    dist = np.linalg.norm((cand[:, :2] + cand[:, 2:]) / 2 - (box[:2] + box[2:]) / 2, axis=1)
    near = (dist <= NEAR_MAX_SHIFT * side) & (cside >= side / 1.5) & (cside <= side * 1.5)
    return int(np.argmin(np.where(near, dist, np.inf))) if near.any() else None


def _plausible(cand: torch.Tensor, reg: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Mask of the search's P-Net candidates (K,4, with their regression K,4) that could still
    become the face :func:`_pick_near` takes for their box (K,4): after P-Net's regression,
    a side within NEAR_CAND_SIZE times the box's and a centre within NEAR_CAND_SHIFT sides of
    its centre. R-/O-Net only re-fit a candidate by a fraction of its size, so the others (the
    windows' background, face parts at the finest levels) cannot end as the pick; dropping them
    first makes a search several times cheaper (R-/O-Net crops are most of its cost)."""
    cw, ch = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
    c = cand + reg * torch.stack([cw, ch, cw, ch], dim=1)
    side = torch.maximum(c[:, 2] - c[:, 0], c[:, 3] - c[:, 1])
    bside = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]).clamp(min=1.0)
    dist = torch.linalg.vector_norm((c[:, :2] + c[:, 2:] - box[:, :2] - box[:, 2:]) / 2, dim=1)
    ratio = side / bside
    return (ratio >= 1 / NEAR_CAND_SIZE) & (ratio <= NEAR_CAND_SIZE) & (dist <= NEAR_CAND_SHIFT * bside)


def _window_index(h: int, w: int, lh: int, lw: int, ox: int, oy: int, size: int) -> tuple[np.ndarray, ...]:
    """Summed-area-table rows (start, end) and columns (start, end) of the pixels of a
    ``size`` x ``size`` window at (ox, oy) of the (lh, lw) area-resized level of an h x w frame
    (beyond the level its edge pixels repeat)."""
    rs, re = _area_windows_np(h, lh)
    cs, ce = _area_windows_np(w, lw)
    rows = np.clip(np.arange(oy, oy + size), 0, lh - 1)
    cols = np.clip(np.arange(ox, ox + size), 0, lw - 1)
    return rs[rows], re[rows], cs[cols], ce[cols]


def _level_window(table: np.ndarray | torch.Tensor, index: tuple[np.ndarray, ...], size: int) -> torch.Tensor:
    """``size`` x ``size`` x 3 window of a frame's area-resized pyramid level, normalized like
    :func:`_pyramid_cpu` (the same pixels, computed only where needed), from a summed-area
    table (rows, columns, 3) and the window's table rows and columns (:func:`_window_index`,
    shifted to the table's origin): a numpy table on the host (numpy's gathers are ~3x cheaper
    there for windows this small), a tensor on its device."""
    r0, r1, c0, c1 = index
    if isinstance(table, np.ndarray):
        band = table[r1] - table[r0]  # size, W+1, 3
        total = np.take(band, c1, axis=1)
        total -= np.take(band, c0, axis=1)
        count = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).astype(np.float32)[:, :, None]
        out = np.empty((size, size, 3), np.float32)
        # float32 division, like facenet's area resize, then its normalization
        np.divide(total, count, out=out, dtype=np.float32, casting="unsafe")
        out -= np.float32(127.5)
        out *= np.float32(0.0078125)
        return torch.from_numpy(out)
    r0, r1, c0, c1 = (torch.from_numpy(a).to(table.device) for a in (r0, r1, c0, c1))
    band = table.index_select(0, r1) - table.index_select(0, r0)
    total = band.index_select(1, c1) - band.index_select(1, c0)
    count = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).to(torch.float32)[:, :, None]
    return total.to(torch.float32).div_(count).sub_(127.5).mul_(0.0078125)


@dataclass
class _CropTable:
    """Where R-/O-Net crops are read from: the frames' summed-area tables (N, H+1, W+1, 3), or
    one frame's table of the region [x0, x1) x [y0, y1) only (a local search) with ``whole``,
    which makes the whole frame's table, for a crop that reaches out of the region."""

    table: torch.Tensor
    x0: int = 0
    y0: int = 0
    x1: int = 0
    y1: int = 0
    whole: Callable[[], torch.Tensor] | None = None

    def crops(self, rois: torch.Tensor, out: int) -> torch.Tensor:
        if self.whole is not None:
            inside = (rois[:, 1] >= self.x0) & (rois[:, 2] >= self.y0) & (rois[:, 3] <= self.x1) & (rois[:, 4] <= self.y1)
            if bool(inside.all()):
                shift = torch.tensor([0, self.x0, self.y0, self.x0, self.y0], dtype=rois.dtype, device=rois.device)
                return _area_crops(self.table, rois - shift, out)
            self.table, self.whole = self.whole(), None
        return _area_crops(self.table, rois, out)


def choose_scale(frame_wh: tuple[int, int], min_face_px: float, detector_min_face_px: float = DEFAULT_MIN_FACE_SIZE) -> float:
    """The detection scale at which a face ``min_face_px`` tall (original pixels) is
    ``detector_min_face_px`` tall, MTCNN's smallest. Never above 1.0; never so small that a face
    as tall as the frame's short side becomes undetectable."""
    w, h = frame_wh
    if min_face_px <= 0 or w <= 0 or h <= 0:
        raise ValueError(f"choose_scale: need positive sizes, got frame_wh={frame_wh}, min_face_px={min_face_px}")
    s = detector_min_face_px / float(min_face_px)
    s = max(s, detector_min_face_px / float(min(w, h)))
    return float(min(1.0, s))


def pyramid_scales(h: int, w: int, min_face_size: float, factor: float, scale: float = 1.0) -> list[float]:
    """facenet-pytorch's pyramid for an ``h x w`` frame resized by ``scale``; the returned
    scales are relative to the original frame."""
    m = 12.0 / min_face_size
    minl = min(h * scale, w * scale) * m
    scales = []
    s = m
    while minl >= 12:
        scales.append(s * scale)
        s *= factor
        minl *= factor
    return scales


def _as_image(f: Any) -> np.ndarray:
    img = getattr(f, "image", f)
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {getattr(img, 'shape', type(img))}")
    return img


def _group_by_size(images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape[:2], []).append(i)
    return groups


def _detect_grouped(images: list[np.ndarray], run) -> list[Faces]:
    out: list[Faces] = [Faces.empty()] * len(images)
    for idx in _group_by_size(images).values():
        for i, faces in zip(idx, run([images[i] for i in idx])):
            out[i] = faces
    return out


def _resize_for_detection(images: list[np.ndarray], scale: float) -> tuple[list[np.ndarray], float, float]:
    """Frames resized by ``scale`` (``cv2.INTER_AREA``) and the exact per-axis factors
    ``(sx, sy)`` of the integer resized size; unchanged frames and 1.0 when ``scale == 1``."""
    if scale == 1.0:
        return images, 1.0, 1.0
    h, w = images[0].shape[:2]
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    return [cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA) for img in images], rw / w, rh / h


def _to_original(faces: Faces, sx: float, sy: float) -> Faces:
    """Boxes and landmarks from resized-frame pixels back to original-frame pixels."""
    if (sx == 1.0 and sy == 1.0) or len(faces) == 0:
        return faces
    lm = None if faces.landmarks is None else faces.landmarks / np.array([sx, sy], np.float32)
    return Faces(faces.xyxy / np.array([sx, sy, sx, sy], np.float32), faces.scores, lm, faces.track_ids)


class _MaxPool2x2Ceil(nn.Module):
    """``nn.MaxPool2d(2, 2, ceil_mode=True)`` (P-Net's pool) as elementwise maxima of strided
    views: the same values, and about 2x faster on the CPU than ``max_pool2d``, whose CPU kernel
    also computes the argmax indices (on the finest pyramid level, the most costly P-Net op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        fh, fw = h // 2, w // 2
        out = torch.empty((n, c, h - fh, w - fw), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        top, bottom = x[:, :, 0 : 2 * fh : 2], x[:, :, 1 : 2 * fh : 2]
        out[:, :, :fh, :fw] = torch.maximum(
            torch.maximum(top[..., 0 : 2 * fw : 2], top[..., 1 : 2 * fw : 2]),
            torch.maximum(bottom[..., 0 : 2 * fw : 2], bottom[..., 1 : 2 * fw : 2]),
        )
        if w % 2:  # ceil_mode: the last column pools what is there
            out[:, :, :fh, fw] = torch.maximum(top[..., w - 1], bottom[..., w - 1])
        if h % 2:
            last = x[:, :, h - 1]
            out[:, :, fh, :fw] = torch.maximum(last[..., 0 : 2 * fw : 2], last[..., 1 : 2 * fw : 2])
            if w % 2:
                out[:, :, fh, fw] = last[..., w - 1]
        return out


class _PNetFused(nn.Module):
    """P-Net with its two 1x1 heads merged into one conv: channel 0 is the face logit margin
    (``l1 - l0``, so ``sigmoid`` of it is the softmax face probability), channels 1..4 the box
    regression. Runs in channels_last (about 2x faster on CPU)."""

    def __init__(self, pnet: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(pnet.conv1, pnet.prelu1, _MaxPool2x2Ceil(), pnet.conv2, pnet.prelu2, pnet.conv3, pnet.prelu3)
        head = nn.Conv2d(32, 5, kernel_size=1)
        with torch.no_grad():
            w1, b1 = pnet.conv4_1.weight, pnet.conv4_1.bias
            head.weight.copy_(torch.cat([w1[1:2] - w1[0:1], pnet.conv4_2.weight]))
            head.bias.copy_(torch.cat([b1[1:2] - b1[0:1], pnet.conv4_2.bias]))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _bgr_input(conv: nn.Conv2d) -> nn.Conv2d:
    """Make a first conv trained on RGB take BGR (its input channels reversed), in place."""
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))
    return conv


PAD_STEP = 16
PYRAMID_ROWS = 64  # pyramid rows made at a time on the host (cache-sized)


def _padded_batch(n: int) -> int:
    """The batch size ``n`` crops run at: ``n`` itself up to PAD_STEP (a re-fit of 5 tracked
    faces runs 5 O-Net crops, not 8: the nets' time is linear in the batch), then the next
    multiple of PAD_STEP (a detection's ~40-60 O-Net crops run as 48 or 64; 100 R-Net crops
    as 112): about 30 shapes per net at most for oneDNN's per-shape cache (~0.4 MB each,
    measured), and little padding waste."""
    return n if n <= PAD_STEP else -(-n // PAD_STEP) * PAD_STEP


def _pnet_out_hw(h: int, w: int) -> tuple[int, int]:
    # conv3 (-2), maxpool 2/2 ceil, conv3 (-2), conv3 (-2)
    return math.ceil((h - 2) / 2) - 4, math.ceil((w - 2) / 2) - 4


def _rerec(b: torch.Tensor) -> torch.Tensor:
    """Boxes (K,4) made square around their centres (side = the longer one), as facenet's rerec."""
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    side = torch.maximum(w, h)
    x1 = b[:, 0] + w * 0.5 - side * 0.5
    y1 = b[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _bbreg(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """R-/O-Net box regression (widths with facenet's +1)."""
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    return b + reg * torch.stack([w, h, w, h], dim=1)


def _crop_rois(boxes: torch.Tensor, img_idx: torch.Tensor, w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet's ``pad``: truncate, clip to the frame, crop rows ``[y-1, ey)`` and columns ``[x-1, ex)``.

    Returns integer rois (K,5) ``[frame, x0, y0, x1, y1]`` (half-open pixel ranges, always at
    least one pixel inside the frame) and a mask of the boxes whose crop is not empty (facenet
    skips those crops)."""
    t = boxes.trunc().long()
    x0 = t[:, 0].clamp(min=1) - 1
    y0 = t[:, 1].clamp(min=1) - 1
    x1 = t[:, 2].clamp(max=w)
    y1 = t[:, 3].clamp(max=h)
    valid = (x1 > x0) & (y1 > y0)
    x0 = x0.clamp(max=w - 1)
    y0 = y0.clamp(max=h - 1)
    x1 = torch.maximum(x1, x0 + 1)
    y1 = torch.maximum(y1, y0 + 1)
    return torch.stack([img_idx, x0, y0, x1, y1], dim=1), valid


def _area_windows_np(length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``out`` windows [s, e) over ``length`` inputs of ``adaptive_avg_pool`` (area resize)."""
    i = np.arange(out)
    return (i * length) // out, ((i + 1) * length + out - 1) // out


def _integral_cpu(images: list[np.ndarray]) -> np.ndarray:
    """Summed-area tables (N, H+1, W+1, 3) of BGR uint8 frames, exact (int32, or float64 when
    a frame is too big for int32)."""
    h, w = images[0].shape[:2]
    small = 255 * (h + 1) * (w + 1) < 2**31
    out = np.empty((len(images), h + 1, w + 1, 3), np.int32 if small else np.float64)
    for i, img in enumerate(images):
        cv2.integral(img, out[i], sdepth=cv2.CV_32S if small else cv2.CV_64F)  # written in place
    return out


def _pyramid_cpu(integral: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Pyramid levels (N, lh, lw, 3) float32 normalized BGR, each exactly
    ``F.interpolate(frame, (lh, lw), mode="area")`` (what facenet computes from the full frame),
    read off the summed-area table: a row gather and a column gather per level (leading-axis
    gathers and ``np.take``: numpy's fast paths), about 4x cheaper on the CPU than
    ``adaptive_avg_pool2d`` over the full frame for every level. Each level is made
    PYRAMID_ROWS rows at a time, so that its full-width row sums stay in the cache (~1.7x
    faster than whole levels at 1080p on one core)."""
    n, h, w = integral.shape[0], integral.shape[1] - 1, integral.shape[2] - 1
    levels = []
    for lh, lw in sizes:
        rs, re = _area_windows_np(h, lh)
        cs, ce = _area_windows_np(w, lw)
        count = ((re - rs)[:, None] * (ce - cs)[None, :]).astype(np.float32)[:, :, None]
        out = np.empty((n, lh, lw, 3), np.float32)
        for i in range(n):
            table = integral[i]
            for a in range(0, lh, PYRAMID_ROWS):
                b = min(lh, a + PYRAMID_ROWS)
                rows = table[re[a:b]] - table[rs[a:b]]  # rows, W+1, 3
                total = np.take(rows, ce, axis=1)
                total -= np.take(rows, cs, axis=1)  # rows, lw, 3 window sums
                level = out[i, a:b]
                # float32 division, like facenet's area resize, then its normalization
                np.divide(total, count[a:b], out=level, dtype=np.float32, casting="unsafe")
                level -= np.float32(127.5)
                level *= np.float32(0.0078125)
        levels.append(out)
    return levels


def _integral_torch(batch_u8: torch.Tensor) -> torch.Tensor:
    """Summed-area tables (N, H+1, W+1, 3) of a (N,H,W,3) uint8 batch on its device."""
    _, h, w, _ = batch_u8.shape
    dtype = torch.int32 if 255 * (h + 1) * (w + 1) < 2**31 else torch.int64
    table = batch_u8.to(dtype).cumsum(dim=2).cumsum(dim=1)
    return F.pad(table, (0, 0, 1, 0, 1, 0))


def _area_windows(start: torch.Tensor, length: torch.Tensor, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box (K,), the ``out`` input windows [s, e) of ``adaptive_avg_pool`` (area resize):
    ``s = floor(i*L/out)``, ``e = ceil((i+1)*L/out)``, offset by ``start``."""
    i = torch.arange(out, device=start.device)
    s = start[:, None] + (i[None, :] * length[:, None]) // out
    e = start[:, None] + ((i[None, :] + 1) * length[:, None] + out - 1) // out
    return s, e


def _area_crops(integral: torch.Tensor, rois: torch.Tensor, out: int, chunk: int = 2048) -> torch.Tensor:
    """(K,3,out,out) channels_last normalized BGR crops, each roi area-resized exactly as
    ``F.interpolate(mode="area")`` of the cropped frame would (what facenet does box by box),
    gathered from the (N, H+1, W+1, 3) summed-area table in one go: four row gathers of the
    flattened table (2-4x cheaper than 3-D advanced indexing), with ``np.take`` on the host
    (~1.3x faster there than ``index_select``)."""
    _, h1, w1, c = integral.shape
    flat = integral.reshape(-1, c)
    if integral.device.type == "cpu":
        host = flat.numpy()

        def gather(index: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.take(host, index.numpy(), axis=0))
    else:

        def gather(index: torch.Tensor) -> torch.Tensor:
            return flat.index_select(0, index)

    parts = []
    for k in range(0, rois.shape[0], chunk):
        r = rois[k : k + chunk]
        ys, ye = _area_windows(r[:, 2], r[:, 4] - r[:, 2], out)
        xs, xe = _area_windows(r[:, 1], r[:, 3] - r[:, 1], out)
        base = r[:, 0, None, None] * (h1 * w1)
        rs, re = (ys * w1)[:, :, None] + base, (ye * w1)[:, :, None] + base
        cs, ce = xs[:, None, :], xe[:, None, :]
        total = gather((re + ce).reshape(-1))
        total -= gather((rs + ce).reshape(-1))
        total -= gather((re + cs).reshape(-1))
        total += gather((rs + cs).reshape(-1))
        count = ((ye - ys)[:, :, None] * (xe - xs)[:, None, :]).unsqueeze(-1)
        parts.append(total.view(r.shape[0], out, out, c).float().div_(count).sub_(127.5).mul_(0.0078125))
    if not parts:
        return torch.zeros((0, 3, out, out), device=integral.device).contiguous(memory_format=torch.channels_last)
    return torch.cat(parts).permute(0, 3, 1, 2)


def _nms_min_numpy(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet's final NMS: overlap = intersection / smaller area (pixel-inclusive widths)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size > 0:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        order = rest[inter / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


class FastMTCNN:
    """MTCNN (facenet-pytorch weights) with all stages as batched torch ops.

    device: where the networks run (``cpu``/``cuda``).
    scale: detect on the frame resized by this factor (boxes are mapped back to full resolution).
    min_face_size: smallest face in detector pixels (after ``scale``), facenet's 20 by default.
    thresholds: P-, R-, O-Net face probability thresholds.
    factor: pyramid step.
    max_batch: frames per pass (bounds memory). Default 1 on the CPU, where whole 1080p batches
        measured slower than frame by frame (cache/memory bound), 8 elsewhere.
    host_preprocess: build the pyramid and the crop table with OpenCV/numpy on the host (exact,
        and about 4x cheaper than torch's area resize on the CPU) instead of with torch on the
        device. Default: on for the CPU, off elsewhere (frames then go to the device as uint8).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        scale: float = 1.0,
        min_face_size: float = DEFAULT_MIN_FACE_SIZE,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        factor: float = DEFAULT_FACTOR,
        max_batch: int | None = None,
        host_preprocess: bool | None = None,
    ) -> None:
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 (P-Net's cell), got {min_face_size}")
        if len(thresholds) != 3:
            raise ValueError("thresholds: three values (P-, R-, O-Net)")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.device = torch.device(device)
        self.scale = float(scale)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.max_batch = (1 if self.device.type == "cpu" else 8) if max_batch is None else max(1, int(max_batch))
        self.host_preprocess = self.device.type == "cpu" if host_preprocess is None else bool(host_preprocess)
        # R-/O-Net crops per pass: small on the CPU (cache-sized, little padding), large elsewhere.
        self.crop_chunk = 256 if self.device.type == "cpu" else 4096
        self.description = f"fast-mtcnn scale {self.scale:g}"
        # All three nets take BGR (first conv's input channels reversed) and run channels_last.
        pnet = PNet(pretrained=True).eval()
        _bgr_input(pnet.conv1)
        rnet, onet = RNet(pretrained=True).eval(), ONet(pretrained=True).eval()
        _bgr_input(rnet.conv1)
        _bgr_input(onet.conv1)
        self.pnet = _PNetFused(pnet).eval().to(self.device, memory_format=torch.channels_last)
        self.rnet = rnet.to(self.device, memory_format=torch.channels_last)
        self.onet = onet.to(self.device, memory_format=torch.channels_last)
        for net in (self.pnet, self.rnet, self.onet):
            net.requires_grad_(False)
        self._templates: dict[tuple[int, int], tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- public
    def detect(self, frames: Sequence[Any]) -> list[Faces]:
        """Faces for each frame (HxWx3 uint8 BGR arrays or ``Frame``s), in original pixels."""
        return self._detect(frames, 0)

    def detect_coarse(self, frames: Sequence[Any]) -> list[Faces]:
        """``detect`` without the finest pyramid level (the one that finds only faces from
        ``min_face_size`` to ``min_face_size / factor``, ~1.41x): about a third less work at
        1080p (that level is the largest image P-Net runs on, and yields about a third of the
        R-Net crops). Every other level, and so every larger face, is found as by ``detect``.
        A pyramid of one level runs whole."""
        return self._detect(frames, 1)

    def _detect(self, frames: Sequence[Any], skip: int) -> list[Faces]:
        images = [_as_image(f) for f in frames]
        if not images:
            return []

        def run(group: list[np.ndarray]) -> list[Faces]:
            out: list[Faces] = []
            for i in range(0, len(group), self.max_batch):
                out.extend(self._detect_same_size(group[i : i + self.max_batch], skip))
            return out

        return _detect_grouped(images, run)

    # -------------------------------------------------------------- internals
    def _level_template(self, h: int, w: int) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """Per pyramid level its (height, width); for every P-Net output cell of every level,
        in level order, its candidate box (T,4) in original pixels and its level id (T,)."""
        key = (h, w)
        if key not in self._templates:
            sizes, boxes, level_ids = [], [], []
            for k, s in enumerate(pyramid_scales(h, w, self.min_face_size, self.factor)):
                lh, lw = int(h * s + 1), int(w * s + 1)
                oh, ow = _pnet_out_hw(lh, lw)
                if oh < 1 or ow < 1:
                    break
                sizes.append((lh, lw))
                yy, xx = torch.meshgrid(torch.arange(oh, dtype=torch.float32), torch.arange(ow, dtype=torch.float32), indexing="ij")
                bb = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
                q1 = ((_PNET_STRIDE * bb + 1) / s).floor()
                q2 = ((_PNET_STRIDE * bb + _PNET_CELL) / s).floor()
                boxes.append(torch.cat([q1, q2], dim=1))
                level_ids.append(torch.full((oh * ow,), k, dtype=torch.int64))
            if not sizes:
                self._templates[key] = (sizes, torch.zeros((0, 4), device=self.device), torch.zeros((0,), dtype=torch.int64, device=self.device))
            else:
                self._templates[key] = (sizes, torch.cat(boxes).to(self.device), torch.cat(level_ids).to(self.device))
        return self._templates[key]

    def _pyramid(self, images: list[np.ndarray], sizes: list[tuple[int, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pyramid levels (N,3,lh,lw) channels_last normalized BGR on the device, and the
        frames' (N, H+1, W+1, 3) summed-area table on the device (for the R-/O-Net crops).

        With ``host_preprocess`` both come from ``cv2.integral`` (see :func:`_pyramid_cpu`);
        otherwise the frames are uploaded once as uint8 and everything is computed there."""
        if self.host_preprocess:
            integral = _integral_cpu(images)
            levels = [torch.from_numpy(lv).permute(0, 3, 1, 2).to(self.device, non_blocking=True) for lv in _pyramid_cpu(integral, sizes)]
            return levels, torch.from_numpy(integral).to(self.device, non_blocking=True)
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)  # N,H,W,3 BGR
        x = batch.permute(0, 3, 1, 2).float().contiguous()
        levels = [
            F.interpolate(x, size=size, mode="area").sub_(127.5).mul_(0.0078125).contiguous(memory_format=torch.channels_last)
            for size in sizes
        ]
        return levels, _integral_torch(batch)

    def _detect_same_size(self, images: list[np.ndarray], skip: int = 0) -> list[Faces]:
        # Same recipe as FacenetMTCNN (and so the same boxes): resize on the host first (cheap,
        # and fewer bytes to upload), detect, map back with the exact per-axis factors.
        small, sx, sy = _resize_for_detection(images, self.scale)
        return [_to_original(f, sx, sy) for f in self._detect_full(small, skip)]

    @torch.inference_mode()
    def _detect_full(self, images: list[np.ndarray], skip: int = 0) -> list[Faces]:
        """The cascade on same-size frames; ``skip``: leave out that many of the finest pyramid
        levels (never all of them)."""
        n = len(images)
        h, w = images[0].shape[:2]
        sizes, tmpl_boxes, tmpl_levels = self._level_template(h, w)
        if not sizes:
            return [Faces.empty() for _ in range(n)]
        skip = max(0, min(skip, len(sizes) - 1))
        if skip:  # the template's cells are in level order: drop the skipped levels' cells
            first = sum(oh * ow for oh, ow in (_pnet_out_hw(*size) for size in sizes[:skip]))
            tmpl_boxes, tmpl_levels = tmpl_boxes[first:], tmpl_levels[first:]
        levels, integral = self._pyramid(images, sizes[skip:])
        t1 = self.thresholds[0]

        # Stage 1: P-Net over the pyramid (all frames of the batch in one call per level).
        margins, regs = [], []
        for level in levels:
            out = self.pnet(level)
            margins.append(out[:, 0].reshape(n, -1))
            regs.append(out[:, 1:].reshape(n, 4, -1))
        margin = torch.cat(margins, dim=1)  # N,T
        reg_all = torch.cat(regs, dim=2)  # N,4,T
        prob = torch.sigmoid(margin)
        img_idx, cell = (prob >= t1).nonzero(as_tuple=True)  # host sync 1
        if img_idx.numel() == 0:
            return [Faces.empty() for _ in range(n)]
        boxes = tmpl_boxes[cell]
        scores = prob[img_idx, cell]
        reg = reg_all[img_idx, :, cell]
        levels = tmpl_levels[cell]
        return self._cascade(boxes, scores, reg, img_idx * len(sizes) + levels, img_idx, img_idx, integral, n, w, h)

    def _cascade(self, boxes: torch.Tensor, scores: torch.Tensor, reg: torch.Tensor, level_group: torch.Tensor,
                 group: torch.Tensor, frame_idx: torch.Tensor, integral: torch.Tensor | _CropTable, n: int, w: int, h: int) -> list[Faces]:
        """Everything after P-Net, as facenet does it: NMS per (group, level) at 0.5 and per
        group at 0.7, box regression, R-Net, NMS, O-Net, final NMS. ``group`` is what a result
        belongs to (0..n-1: a frame, or a search window), ``frame_idx`` the frame in
        ``integral`` (summed-area tables, or a :class:`_CropTable`) that crops are taken from."""
        table = integral if isinstance(integral, _CropTable) else _CropTable(integral)
        _, t2, t3 = self.thresholds
        keep = batched_nms(boxes, scores, level_group, 0.5)
        keep = keep[batched_nms(boxes[keep], scores[keep], group[keep], 0.7)]
        boxes, group, frame_idx, reg = boxes[keep], group[keep], frame_idx[keep], reg[keep]
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        boxes = _rerec(boxes + reg * torch.stack([bw, bh, bw, bh], dim=1))

        # Stage 2: R-Net on 24x24 crops.
        rois, valid = _crop_rois(boxes, frame_idx, w, h)
        crops = table.crops(rois, 24)
        reg, p = self._run_chunked(self.rnet, crops)
        scores = p[:, 1]
        ok = ((scores > t2) & valid).nonzero(as_tuple=True)[0]
        boxes, group, frame_idx, reg, scores = boxes[ok], group[ok], frame_idx[ok], reg[ok], scores[ok]
        if boxes.shape[0] == 0:
            return [Faces.empty() for _ in range(n)]
        keep = batched_nms(boxes, scores, group, 0.7)
        boxes, group, frame_idx, reg = boxes[keep], group[keep], frame_idx[keep], reg[keep]
        boxes = _rerec(_bbreg(boxes, reg))

        # Stage 3: O-Net on 48x48 crops, landmarks.
        rois, valid = _crop_rois(boxes, frame_idx, w, h)
        crops = table.crops(rois, 48)
        reg, pts, p = self._run_chunked(self.onet, crops)
        scores = p[:, 1]
        ok = (scores > t3) & valid
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        lx = bw[:, None] * pts[:, :5] + boxes[:, 0:1] - 1
        ly = bh[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1
        landmarks = torch.stack([lx, ly], dim=2)  # K,5,2
        boxes = _bbreg(boxes, reg)
        packed = torch.cat([boxes, scores[:, None], group[:, None].to(boxes.dtype), ok[:, None].to(boxes.dtype), landmarks.reshape(-1, 10)], dim=1)
        packed = packed.cpu().numpy()  # the one transfer back
        packed = packed[packed[:, 6] > 0.5]

        results: list[Faces] = []
        for i in range(n):
            rows = packed[packed[:, 5] == i]
            if len(rows) == 0:
                results.append(Faces.empty())
                continue
            rows = rows[_nms_min_numpy(rows[:, :4], rows[:, 4], 0.7)]
            results.append(Faces(rows[:, :4], rows[:, 4], rows[:, 7:17].reshape(-1, 5, 2)))
        return results

    @torch.inference_mode()
    def refine(self, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
        """O-Net on boxes carried into ``frame`` by a tracker: MTCNN's own last stage gives each
        its exact box, score and landmarks, for a fraction of a detection's cost (no pyramid,
        no P-/R-Net). Returns (one refined face per input box, mask of boxes O-Net still calls a
        face at the third threshold). Boxes are in original-frame pixels.
        """
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return Faces.empty(), np.zeros((0,), bool)
        img = _as_image(frame)
        h, w = img.shape[:2]
        sq = _rerec(torch.from_numpy(boxes)).round()
        crops = []
        for x1, y1, x2, _ in sq.tolist():
            # Pad outside the frame with zeros, as facenet's crops do.
            x1, y1, side = int(x1), int(y1), max(1, int(x2 - x1))
            patch = np.zeros((side, side, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x1 + side), min(h, y1 + side)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = img[sy1:sy2, sx1:sx2]
            crops.append(cv2.resize(patch, (48, 48), interpolation=cv2.INTER_AREA))
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float()
        x = x.sub_(127.5).mul_(0.0078125).contiguous(memory_format=torch.channels_last)
        reg, pts, p = self._run_chunked(self.onet, x)
        sq = sq.to(self.device)
        bw = sq[:, 2] - sq[:, 0] + 1
        bh = sq[:, 3] - sq[:, 1] + 1
        lx = bw[:, None] * pts[:, :5] + sq[:, 0:1] - 1
        ly = bh[:, None] * pts[:, 5:] + sq[:, 1:2] - 1
        out = _bbreg(sq, reg)
        scores = p[:, 1]
        ok = (scores > self.thresholds[2]).cpu().numpy()
        faces = Faces(out.cpu().numpy(), scores.cpu().numpy(), torch.stack([lx, ly], dim=2).cpu().numpy())
        return faces, ok

    @torch.inference_mode()
    def detect_near(self, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
        """Search for each lost face near where it was expected, with the full detector's own
        pixels: for the few pyramid levels at which a face of the box's size is found (the face
        ``NEAR_LEVEL_PX`` level pixels tall), a fixed ``NEAR_CROP`` x ``NEAR_CROP`` window of
        that *full-frame level*, centred on the box and aligned to P-Net's stride, computed
        exactly from the frame's summed-area table; P-Net on all windows in one batch, then the
        usual R-/O-Net cascade with crops from the full frame. Every P-Net cell inside a window
        is the full detection's cell, so a face the full detector finds near the box is found
        the same way, for a few ms. One window shape: no new shapes over a long run.

        Returns (one face per input box: the detection that overlaps the box most, else the
        nearest one of a similar size within ``NEAR_MAX_SHIFT`` sides of its centre; a mask of
        the boxes for which one was found). Boxes are in original-frame pixels; rows whose mask
        is False are the input boxes.
        """
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        n = len(boxes)
        if n == 0:
            return Faces.empty(), np.zeros((0,), bool)
        (small,), sx, sy = _resize_for_detection([_as_image(frame)], self.scale)
        h, w = small.shape[:2]
        sizes, _, _ = self._level_template(h, w)
        scales = pyramid_scales(h, w, self.min_face_size, self.factor)[: len(sizes)]
        det_boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        lo, hi = NEAR_LEVEL_PX
        meta, index = [], []  # meta: (box, level, ox, oy); index: the window's table rows/columns
        for bi, (x1, y1, x2, y2) in enumerate(det_boxes.tolist()):
            side = max(x2 - x1, y2 - y1, 1.0)
            for k, (sk, (lh, lw)) in enumerate(zip(scales, sizes)):
                if not lo <= side * sk <= hi:
                    continue
                ox = 2 * round(((x1 + x2) / 2 * lw / w - NEAR_CROP / 2) / 2)
                oy = 2 * round(((y1 + y2) / 2 * lh / h - NEAR_CROP / 2) / 2)
                meta.append((bi, k, ox, oy))
                index.append(_window_index(h, w, lh, lw, ox, oy, NEAR_CROP))
        if not meta:
            return Faces(boxes.copy(), np.zeros(n, np.float32), np.zeros((n, 5, 2), np.float32)), np.zeros(n, bool)
        if self.host_preprocess:
            # The summed-area table of the windows' region only (with a margin for the R-/O-Net
            # crops of what is found there), not of the whole frame: its sums are the same.
            margin = int(NEAR_REGION_MARGIN * float(np.max(np.maximum(det_boxes[:, 2] - det_boxes[:, 0], det_boxes[:, 3] - det_boxes[:, 1]))))
            ty0 = max(0, int(min(i[0].min() for i in index)) - margin)
            ty1 = min(h, int(max(i[1].max() for i in index)) + margin)
            tx0 = max(0, int(min(i[2].min() for i in index)) - margin)
            tx1 = min(w, int(max(i[3].max() for i in index)) + margin)
            table = _integral_cpu([small[ty0:ty1, tx0:tx1]])
            crops = [_level_window(table[0], (r0 - ty0, r1 - ty0, c0 - tx0, c1 - tx0), NEAR_CROP) for r0, r1, c0, c1 in index]
            integral = _CropTable(torch.from_numpy(table), tx0, ty0, tx1, ty1, lambda: torch.from_numpy(_integral_cpu([small])))
        else:  # one uint8 upload; the table and the windows are computed on the device
            table = _integral_torch(torch.from_numpy(small[None]).to(self.device))
            crops = [_level_window(table[0], i, NEAR_CROP) for i in index]
            integral = _CropTable(table)
        x = torch.stack(crops).to(self.device).permute(0, 3, 1, 2)
        m = x.shape[0]
        size = _padded_batch(m)  # few shapes
        if size != m:
            x = torch.cat([x, x.new_zeros((size - m, *x.shape[1:]))])
        out = self.pnet(x.contiguous(memory_format=torch.channels_last))[:m]
        q_h, q_w = out.shape[2], out.shape[3]
        mt = torch.tensor(meta, dtype=torch.int64, device=out.device)  # M,4
        sk = torch.tensor([scales[k] for _, k, _, _ in meta], dtype=torch.float32, device=out.device)
        lim = torch.tensor([_pnet_out_hw(*sizes[k]) for _, k, _, _ in meta], dtype=torch.int64, device=out.device)  # M,2 (oh, ow)
        gy = mt[:, 3, None] // 2 + torch.arange(q_h, device=out.device)[None, :]  # M,Qh global cell rows
        gx = mt[:, 2, None] // 2 + torch.arange(q_w, device=out.device)[None, :]
        inside = ((gy >= 0) & (gy < lim[:, 0:1]))[:, :, None] & ((gx >= 0) & (gx < lim[:, 1:2]))[:, None, :]
        prob = torch.sigmoid(out[:, 0]) * inside
        mi, yi, xi = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
        found: list[Faces] = [Faces.empty() for _ in range(n)]
        if mi.numel():
            cell = torch.stack([gx[mi, xi], gy[mi, yi]], dim=1).float()
            s_ = sk[mi, None]
            cand = torch.cat([((_PNET_STRIDE * cell + 1) / s_).floor(), ((_PNET_STRIDE * cell + _PNET_CELL) / s_).floor()], dim=1)
            reg = out[mi, 1:, yi, xi]
            bidx = mt[mi, 0]
            near = _plausible(cand, reg, torch.from_numpy(det_boxes).to(cand.device)[bidx])
            mi, cand, reg, bidx, score = mi[near], cand[near], reg[near], bidx[near], prob[mi, yi, xi][near]
            if mi.numel():
                found = self._cascade(cand, score, reg, mi, bidx, torch.zeros_like(bidx), integral, n, w, h)
        out_boxes = boxes.copy()
        out_scores = np.zeros(n, np.float32)
        out_lms = np.zeros((n, 5, 2), np.float32)
        ok = np.zeros(n, bool)
        for i, faces in enumerate(found):
            if not len(faces):
                continue
            faces = _to_original(faces, sx, sy)
            j = _pick_near(boxes[i], faces.xyxy)
            if j is None:
                continue
            out_boxes[i], out_scores[i], ok[i] = faces.xyxy[j], faces.scores[j], True
            if faces.landmarks is not None:
                out_lms[i] = faces.landmarks[j]
        return Faces(out_boxes, out_scores, out_lms), ok

    def _run_chunked(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``net`` over a batch of crops whose count changes every call: chunks of
        ``self.crop_chunk``, the last one padded (:func:`_padded_batch`).

        The CPU backend (oneDNN) caches a compiled primitive per input shape, about 1 MB each:
        unpadded, a long run creates hundreds of shapes and RSS climbs by hundreds of MB before
        the cache fills; this way R-/O-Net see about 20 shapes at most. Small chunks on the CPU
        (256) also bound the padding waste."""
        outs = []
        chunk = self.crop_chunk
        for i in range(0, x.shape[0], chunk):
            part = x[i : i + chunk]
            n = part.shape[0]
            size = _padded_batch(n)
            if size != n:
                pad = part.new_zeros((size - n, *part.shape[1:])).contiguous(memory_format=torch.channels_last)
                part = torch.cat([part, pad]).contiguous(memory_format=torch.channels_last)
            outs.append(tuple(o[:n] for o in net(part)))
        if len(outs) == 1:
            return outs[0]
        return tuple(torch.cat(parts) for parts in zip(*outs))


class FacenetMTCNN:
    """facenet-pytorch's own ``MTCNN.detect`` behind the same interface as :class:`FastMTCNN`.

    With ``scale < 1`` each frame is resized with ``cv2.INTER_AREA`` first, and boxes and
    landmarks are mapped back by the exact per-axis factors of the integer resized size.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        scale: float = 1.0,
        min_face_size: float = DEFAULT_MIN_FACE_SIZE,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        factor: float = DEFAULT_FACTOR,
    ) -> None:
        from facenet_pytorch import MTCNN

        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.device = torch.device(device)
        self.scale = float(scale)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.description = f"facenet-mtcnn scale {self.scale:g}"
        self.mtcnn = MTCNN(
            keep_all=True,
            device=self.device,
            min_face_size=self.min_face_size,
            thresholds=list(self.thresholds),
            factor=self.factor,
        )

    def detect(self, frames: Sequence[Any]) -> list[Faces]:
        images = [_as_image(f) for f in frames]
        if not images:
            return []
        return _detect_grouped(images, self._detect_same_size)

    def _detect_same_size(self, images: list[np.ndarray]) -> list[Faces]:
        small, sx, sy = _resize_for_detection(images, self.scale)
        rgb = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for img in small]
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(rgb, landmarks=True)
        out: list[Faces] = []
        for b, p, lm in zip(boxes, probs, points):
            if b is None:
                out.append(Faces.empty())
                continue
            faces = Faces(np.asarray(b, np.float32), np.asarray(p, np.float32), np.asarray(lm, np.float32))
            out.append(_to_original(faces, sx, sy))
        return out
