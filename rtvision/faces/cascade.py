"""MTCNN's cascade after P-Net, as facenet-pytorch runs it, batched over frames (or windows).

:class:`Cascade` takes P-Net's candidates: NMS per (group, level) and per group, box regression,
R-Net on 24x24 crops, NMS, O-Net on 48x48 crops with landmarks, the final NMS. The box helpers
(:func:`rerec`, :func:`bbreg`, :func:`crop_rois`, :func:`nms_min_numpy`) are facenet's own.
Crops come from summed-area tables (:class:`rtvision.faces.pyramid.CropTable`). The host waits
on the device only where a data-dependent count is needed (one mask per stage, the NMS calls,
the final copy), never per box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from ..types import Faces
from .nets import run_chunked
from .pyramid import CropTable


def rerec(b: torch.Tensor) -> torch.Tensor:
    """Boxes (K,4) made square around their centres (side = the longer one), as facenet's rerec."""
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    side = torch.maximum(w, h)
    x1 = b[:, 0] + w * 0.5 - side * 0.5
    y1 = b[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def bbreg(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """R-/O-Net box regression (widths with facenet's +1)."""
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    return b + reg * torch.stack([w, h, w, h], dim=1)


def crop_rois(boxes: torch.Tensor, img_idx: torch.Tensor, w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def nms_min_numpy(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
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


class Cascade:
    """R- and O-Net with their thresholds (``thresholds``: P-, R-, O-Net's), run on crops in
    chunks of ``crop_chunk`` (see :func:`rtvision.faces.nets.run_chunked`)."""

    def __init__(self, rnet: nn.Module, onet: nn.Module, thresholds: Sequence[float], crop_chunk: int) -> None:
        self.rnet = rnet
        self.onet = onet
        self.thresholds = tuple(float(t) for t in thresholds)
        self.crop_chunk = int(crop_chunk)

    def run(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``net`` on a batch of crops (K,3,s,s), padded chunks."""
        return run_chunked(net, x, self.crop_chunk)

    def after_pnet(self, boxes: torch.Tensor, scores: torch.Tensor, reg: torch.Tensor, level_group: torch.Tensor,
                   group: torch.Tensor, frame_idx: torch.Tensor, integral: torch.Tensor | CropTable, n: int, w: int,
                   h: int) -> list[Faces]:
        """Everything after P-Net, as facenet does it: NMS per (group, level) at 0.5 and per
        group at 0.7, box regression, R-Net, NMS, O-Net, final NMS. ``group`` is what a result
        belongs to (0..n-1: a frame, or a search window), ``frame_idx`` the frame in
        ``integral`` (summed-area tables, or a :class:`CropTable`) that crops are taken from."""
        table = integral if isinstance(integral, CropTable) else CropTable(integral)
        _, t2, t3 = self.thresholds
        keep = batched_nms(boxes, scores, level_group, 0.5)
        keep = keep[batched_nms(boxes[keep], scores[keep], group[keep], 0.7)]
        boxes, group, frame_idx, reg = boxes[keep], group[keep], frame_idx[keep], reg[keep]
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        boxes = rerec(boxes + reg * torch.stack([bw, bh, bw, bh], dim=1))

        # Stage 2: R-Net on 24x24 crops.
        rois, valid = crop_rois(boxes, frame_idx, w, h)
        crops = table.crops(rois, 24)
        reg, p = self.run(self.rnet, crops)
        scores = p[:, 1]
        ok = ((scores > t2) & valid).nonzero(as_tuple=True)[0]
        boxes, group, frame_idx, reg, scores = boxes[ok], group[ok], frame_idx[ok], reg[ok], scores[ok]
        if boxes.shape[0] == 0:
            return [Faces.empty() for _ in range(n)]
        keep = batched_nms(boxes, scores, group, 0.7)
        boxes, group, frame_idx, reg = boxes[keep], group[keep], frame_idx[keep], reg[keep]
        boxes = rerec(bbreg(boxes, reg))

        # Stage 3: O-Net on 48x48 crops, landmarks.
        rois, valid = crop_rois(boxes, frame_idx, w, h)
        crops = table.crops(rois, 48)
        reg, pts, p = self.run(self.onet, crops)
        scores = p[:, 1]
        ok = (scores > t3) & valid
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        lx = bw[:, None] * pts[:, :5] + boxes[:, 0:1] - 1
        ly = bh[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1
        landmarks = torch.stack([lx, ly], dim=2)  # K,5,2
        boxes = bbreg(boxes, reg)
        packed = torch.cat([boxes, scores[:, None], group[:, None].to(boxes.dtype), ok[:, None].to(boxes.dtype), landmarks.reshape(-1, 10)], dim=1)
        packed = packed.cpu().numpy()  # the one transfer back
        packed = packed[packed[:, 6] > 0.5]

        results: list[Faces] = []
        for i in range(n):
            rows = packed[packed[:, 5] == i]
            if len(rows) == 0:
                results.append(Faces.empty())
                continue
            rows = rows[nms_min_numpy(rows[:, :4], rows[:, 4], 0.7)]
            results.append(Faces(rows[:, :4], rows[:, 4], rows[:, 7:17].reshape(-1, 5, 2)))
        return results
