"""The image pyramid and the summed-area tables that MTCNN's inputs are read from.

Every pyramid level and every R-/O-Net crop is *exactly* facenet-pytorch's area resize
(``adaptive_avg_pool`` windows), computed from a frame's summed-area table (N, H+1, W+1, 3):

- :func:`pyramid_scales` / :func:`level_template`: facenet's pyramid, and for every P-Net
  output cell of every level its candidate box and level.
- On the host (the CPU): :func:`integral_cpu` (``cv2.integral``) and :func:`pyramid_cpu`
  (numpy gathers; cheaper than torch's area resize). On a device: :func:`integral_torch`.
- :func:`area_crops`: R-/O-Net crops of many boxes in one gather; :class:`CropTable`: where
  they are read from (a whole frame's table, or only a region's, for a local search).
- :func:`window_index` / :func:`level_window`: one small window of a full-frame level, computed
  only where needed (the local search).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .nets import PNET_CELL, PNET_STRIDE, pnet_out_hw

PYRAMID_ROWS = 64  # pyramid rows made at a time on the host (cache-sized)


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


def level_template(h: int, w: int, min_face_size: float, factor: float,
                   device: torch.device) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
    """Per pyramid level its (height, width); for every P-Net output cell of every level,
    in level order, its candidate box (T,4) in original pixels and its level id (T,)."""
    sizes, boxes, level_ids = [], [], []
    for k, s in enumerate(pyramid_scales(h, w, min_face_size, factor)):
        lh, lw = int(h * s + 1), int(w * s + 1)
        oh, ow = pnet_out_hw(lh, lw)
        if oh < 1 or ow < 1:
            break
        sizes.append((lh, lw))
        yy, xx = torch.meshgrid(torch.arange(oh, dtype=torch.float32), torch.arange(ow, dtype=torch.float32), indexing="ij")
        bb = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
        q1 = ((PNET_STRIDE * bb + 1) / s).floor()
        q2 = ((PNET_STRIDE * bb + PNET_CELL) / s).floor()
        boxes.append(torch.cat([q1, q2], dim=1))
        level_ids.append(torch.full((oh * ow,), k, dtype=torch.int64))
    if not sizes:
        return sizes, torch.zeros((0, 4), device=device), torch.zeros((0,), dtype=torch.int64, device=device)
    return sizes, torch.cat(boxes).to(device), torch.cat(level_ids).to(device)


def area_windows_np(length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``out`` windows [s, e) over ``length`` inputs of ``adaptive_avg_pool`` (area resize)."""
    i = np.arange(out)
    return (i * length) // out, ((i + 1) * length + out - 1) // out


def integral_cpu(images: list[np.ndarray]) -> np.ndarray:
    """Summed-area tables (N, H+1, W+1, 3) of BGR uint8 frames, exact (int32, or float64 when
    a frame is too big for int32)."""
    h, w = images[0].shape[:2]
    small = 255 * (h + 1) * (w + 1) < 2**31
    out = np.empty((len(images), h + 1, w + 1, 3), np.int32 if small else np.float64)
    for i, img in enumerate(images):
        # A view of part of a frame (the local search's region) is copied first: OpenCV 5.0's
        # integral of a 3-channel region that is not contiguous reads up to 64 bytes past its
        # last pixel, which crashed a live run (SIGSEGV) when the frame ended at the end of
        # its thread's malloc arena (tests/test_faces_pyramid.py, a frame before a guard page).
        img = np.ascontiguousarray(img)
        cv2.integral(img, out[i], sdepth=cv2.CV_32S if small else cv2.CV_64F)  # written in place
    return out


def pyramid_cpu(integral: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
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
        rs, re = area_windows_np(h, lh)
        cs, ce = area_windows_np(w, lw)
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


def integral_torch(batch_u8: torch.Tensor) -> torch.Tensor:
    """Summed-area tables (N, H+1, W+1, 3) of a (N,H,W,3) uint8 batch on its device."""
    _, h, w, _ = batch_u8.shape
    dtype = torch.int32 if 255 * (h + 1) * (w + 1) < 2**31 else torch.int64
    table = batch_u8.to(dtype).cumsum(dim=2).cumsum(dim=1)
    return F.pad(table, (0, 0, 1, 0, 1, 0))


def area_windows(start: torch.Tensor, length: torch.Tensor, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box (K,), the ``out`` input windows [s, e) of ``adaptive_avg_pool`` (area resize):
    ``s = floor(i*L/out)``, ``e = ceil((i+1)*L/out)``, offset by ``start``."""
    i = torch.arange(out, device=start.device)
    s = start[:, None] + (i[None, :] * length[:, None]) // out
    e = start[:, None] + ((i[None, :] + 1) * length[:, None] + out - 1) // out
    return s, e


def area_crops(integral: torch.Tensor, rois: torch.Tensor, out: int, chunk: int = 2048) -> torch.Tensor:
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
        ys, ye = area_windows(r[:, 2], r[:, 4] - r[:, 2], out)
        xs, xe = area_windows(r[:, 1], r[:, 3] - r[:, 1], out)
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


def window_index(h: int, w: int, lh: int, lw: int, ox: int, oy: int, size: int) -> tuple[np.ndarray, ...]:
    """Summed-area-table rows (start, end) and columns (start, end) of the pixels of a
    ``size`` x ``size`` window at (ox, oy) of the (lh, lw) area-resized level of an h x w frame
    (beyond the level its edge pixels repeat)."""
    rs, re = area_windows_np(h, lh)
    cs, ce = area_windows_np(w, lw)
    rows = np.clip(np.arange(oy, oy + size), 0, lh - 1)
    cols = np.clip(np.arange(ox, ox + size), 0, lw - 1)
    return rs[rows], re[rows], cs[cols], ce[cols]


def level_window(table: np.ndarray | torch.Tensor, index: tuple[np.ndarray, ...], size: int) -> torch.Tensor:
    """``size`` x ``size`` x 3 window of a frame's area-resized pyramid level, normalized like
    :func:`pyramid_cpu` (the same pixels, computed only where needed), from a summed-area
    table (rows, columns, 3) and the window's table rows and columns (:func:`window_index`,
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
class CropTable:
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
                return area_crops(self.table, rois - shift, out)
            self.table, self.whole = self.whole(), None
        return area_crops(self.table, rois, out)

