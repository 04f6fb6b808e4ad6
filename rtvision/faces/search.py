"""The detector calls a tracker makes between full detections, on a :class:`FastMTCNN`:

- :func:`refine`: MTCNN's last stage (O-Net) on boxes carried into a frame by the flow: each
  box's exact box, score and landmarks for a fraction of a detection's cost.
- :func:`detect_near`: the local search for a face the re-fit (or a detection) lost: the whole
  cascade on small windows of the full-frame pyramid levels around each box, so that a face
  the full detector finds near the box is found the same way, for a few ms.

Boxes are ``xyxy`` in original-frame pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from ..types import Faces
from .boxes import iou_matrix
from .cascade import bbreg, rerec
from .frames import as_image, resize_for_detection, to_original
from .nets import PNET_CELL, PNET_STRIDE, padded_batch, pnet_out_hw
from .pyramid import CropTable, integral_cpu, integral_torch, level_window, pyramid_scales, window_index

if TYPE_CHECKING:
    from .detector import FastMTCNN

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


@torch.inference_mode()
def refine(det: FastMTCNN, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
    """O-Net on boxes carried into ``frame`` by a tracker: MTCNN's own last stage gives each
    its exact box, score and landmarks, for a fraction of a detection's cost (no pyramid,
    no P-/R-Net). Returns (one refined face per input box, mask of boxes O-Net still calls a
    face at the third threshold). Boxes are in original-frame pixels.
    """
    boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return Faces.empty(), np.zeros((0,), bool)
    img = as_image(frame)
    h, w = img.shape[:2]
    sq = rerec(torch.from_numpy(boxes)).round()
    crops = []
    for x1, y1, x2, _ in sq.tolist():
        # Pad outside the frame with zeros, as facenet's crops do.
        x1, y1, side = int(x1), int(y1), max(1, int(x2 - x1))
        patch = np.zeros((side, side, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x1 + side), min(h, y1 + side)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = img[sy1:sy2, sx1:sx2]
        crops.append(cv2.resize(patch, (48, 48), interpolation=cv2.INTER_AREA))
    x = torch.from_numpy(np.stack(crops)).to(det.device).permute(0, 3, 1, 2).float()
    x = x.sub_(127.5).mul_(0.0078125).contiguous(memory_format=torch.channels_last)
    reg, pts, p = det.cascade.run(det.onet, x)
    sq = sq.to(det.device)
    bw = sq[:, 2] - sq[:, 0] + 1
    bh = sq[:, 3] - sq[:, 1] + 1
    lx = bw[:, None] * pts[:, :5] + sq[:, 0:1] - 1
    ly = bh[:, None] * pts[:, 5:] + sq[:, 1:2] - 1
    out = bbreg(sq, reg)
    scores = p[:, 1]
    ok = (scores > det.thresholds[2]).cpu().numpy()
    faces = Faces(out.cpu().numpy(), scores.cpu().numpy(), torch.stack([lx, ly], dim=2).cpu().numpy())
    return faces, ok


@torch.inference_mode()
def detect_near(det: FastMTCNN, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
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
    (small,), sx, sy = resize_for_detection([as_image(frame)], det.scale)
    h, w = small.shape[:2]
    sizes, _, _ = det.level_template(h, w)
    scales = pyramid_scales(h, w, det.min_face_size, det.factor)[: len(sizes)]
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
            index.append(window_index(h, w, lh, lw, ox, oy, NEAR_CROP))
    if not meta:
        return Faces(boxes.copy(), np.zeros(n, np.float32), np.zeros((n, 5, 2), np.float32)), np.zeros(n, bool)
    if det.host_preprocess:
        # The summed-area table of the windows' region only (with a margin for the R-/O-Net
        # crops of what is found there), not of the whole frame: its sums are the same.
        margin = int(NEAR_REGION_MARGIN * float(np.max(np.maximum(det_boxes[:, 2] - det_boxes[:, 0], det_boxes[:, 3] - det_boxes[:, 1]))))
        ty0 = max(0, int(min(i[0].min() for i in index)) - margin)
        ty1 = min(h, int(max(i[1].max() for i in index)) + margin)
        tx0 = max(0, int(min(i[2].min() for i in index)) - margin)
        tx1 = min(w, int(max(i[3].max() for i in index)) + margin)
        table = integral_cpu([small[ty0:ty1, tx0:tx1]])
        crops = [level_window(table[0], (r0 - ty0, r1 - ty0, c0 - tx0, c1 - tx0), NEAR_CROP) for r0, r1, c0, c1 in index]
        integral = CropTable(torch.from_numpy(table), tx0, ty0, tx1, ty1, lambda: torch.from_numpy(integral_cpu([small])))
    else:  # one uint8 upload; the table and the windows are computed on the device
        table = integral_torch(torch.from_numpy(small[None]).to(det.device))
        crops = [level_window(table[0], i, NEAR_CROP) for i in index]
        integral = CropTable(table)
    x = torch.stack(crops).to(det.device).permute(0, 3, 1, 2)
    m = x.shape[0]
    size = padded_batch(m)  # few shapes
    if size != m:
        x = torch.cat([x, x.new_zeros((size - m, *x.shape[1:]))])
    out = det.pnet(x.contiguous(memory_format=torch.channels_last))[:m]
    q_h, q_w = out.shape[2], out.shape[3]
    mt = torch.tensor(meta, dtype=torch.int64, device=out.device)  # M,4
    sk = torch.tensor([scales[k] for _, k, _, _ in meta], dtype=torch.float32, device=out.device)
    lim = torch.tensor([pnet_out_hw(*sizes[k]) for _, k, _, _ in meta], dtype=torch.int64, device=out.device)  # M,2 (oh, ow)
    gy = mt[:, 3, None] // 2 + torch.arange(q_h, device=out.device)[None, :]  # M,Qh global cell rows
    gx = mt[:, 2, None] // 2 + torch.arange(q_w, device=out.device)[None, :]
    inside = ((gy >= 0) & (gy < lim[:, 0:1]))[:, :, None] & ((gx >= 0) & (gx < lim[:, 1:2]))[:, None, :]
    prob = torch.sigmoid(out[:, 0]) * inside
    mi, yi, xi = (prob >= det.thresholds[0]).nonzero(as_tuple=True)
    found: list[Faces] = [Faces.empty() for _ in range(n)]
    if mi.numel():
        cell = torch.stack([gx[mi, xi], gy[mi, yi]], dim=1).float()
        s_ = sk[mi, None]
        cand = torch.cat([((PNET_STRIDE * cell + 1) / s_).floor(), ((PNET_STRIDE * cell + PNET_CELL) / s_).floor()], dim=1)
        reg = out[mi, 1:, yi, xi]
        bidx = mt[mi, 0]
        near = _plausible(cand, reg, torch.from_numpy(det_boxes).to(cand.device)[bidx])
        mi, cand, reg, bidx, score = mi[near], cand[near], reg[near], bidx[near], prob[mi, yi, xi][near]
        if mi.numel():
            found = det.cascade.after_pnet(cand, score, reg, mi, bidx, torch.zeros_like(bidx), integral, n, w, h)
    out_boxes = boxes.copy()
    out_scores = np.zeros(n, np.float32)
    out_lms = np.zeros((n, 5, 2), np.float32)
    ok = np.zeros(n, bool)
    for i, faces in enumerate(found):
        if not len(faces):
            continue
        faces = to_original(faces, sx, sy)
        j = _pick_near(boxes[i], faces.xyxy)
        if j is None:
            continue
        out_boxes[i], out_scores[i], ok[i] = faces.xyxy[j], faces.scores[j], True
        if faces.landmarks is not None:
            out_lms[i] = faces.landmarks[j]
    return Faces(out_boxes, out_scores, out_lms), ok

