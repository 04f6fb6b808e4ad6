"""MTCNN face detection with facenet-pytorch's weights, kept on the device from end to end.

Two backends with one interface (:class:`rtvision.faces.protocols.Detector`),
``detect(frames) -> list[Faces]``:

- :class:`FastMTCNN` re-implements facenet-pytorch's ``detect_face`` as batched tensor ops:
  P-Net over the whole batch of frames per pyramid level (channels_last, heads merged), one
  candidate gather for all levels, then the cascade (:mod:`rtvision.faces.cascade`) with all
  R-Net (24x24) and O-Net (48x48) inputs gathered in one go from a summed-area table instead of
  one resize per box. The pyramid levels and the crops are *exactly* facenet's area resizes
  (:mod:`rtvision.faces.pyramid`), so boxes match facenet-pytorch's to float precision. On the
  CPU the pyramid and the table come from ``cv2.integral`` + numpy gathers; on other devices
  from torch on the device. It is also a :class:`~rtvision.faces.protocols.TrackableDetector`:
  ``detect_coarse``, and ``refine`` / ``detect_near`` (:mod:`rtvision.faces.search`).
- :class:`FacenetMTCNN` wraps facenet-pytorch's own ``MTCNN.detect`` (the reference).

``frames`` are same-size or mixed-size HxWx3 uint8 BGR images (numpy, as OpenCV gives them) or
``rtvision.types.Frame`` records. Boxes and landmarks come back in original-frame pixels. "No
faces" is ``Faces.empty()``.

``scale`` detects on the frame resized by ``scale`` (``cv2.INTER_AREA``, the same recipe in both
backends, so they agree at every scale); ``min_face_size`` is in those detector pixels (as in
facenet-pytorch), so the smallest face found, in original pixels, is about
``min_face_size / scale``. :func:`choose_scale` picks ``scale`` from the smallest face wanted.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..types import Faces
from . import search
from .cascade import Cascade
from .frames import as_image, detect_grouped, resize_for_detection, to_original
from .nets import load_nets, pnet_out_hw
from .pyramid import integral_cpu, integral_torch, level_template, pyramid_cpu, pyramid_scales

DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
DEFAULT_FACTOR = 0.709
COARSE_BOX_MARGIN = 1.3  # see FastMTCNN.coarse_blind_below


class ThreadStreams:
    """A CUDA stream of its own for each thread that calls a detector (nothing on other devices).

    The pipeline calls one detector from several threads at once: the overlapped file loop's
    helpers, a live stream's background detection and its worker's re-fits, the streams of one
    process. On the one default stream their kernels queue behind each other, and behind the
    classifier's, so that each thread waits for all the others' GPU work. Each thread's
    detection is self-contained (frames in from the host, boxes back to the host, which waits
    for that stream only), so it runs on a stream of the thread's own; the networks' weights
    and the cached templates are written once, and the device synchronized, before any stream
    reads them. PyTorch's streams do not synchronize with the legacy default stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._local = threading.local()

    def __call__(self):
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(stream)


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
        self.pnet, self.rnet, self.onet = load_nets(self.device)
        self.cascade = Cascade(self.rnet, self.onet, self.thresholds, self.crop_chunk)
        self._templates: dict[tuple[int, int], tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]] = {}
        self._templates_lock = threading.Lock()
        self.stream = ThreadStreams(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the weights, before another stream reads them

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
        images = [as_image(f) for f in frames]
        if not images:
            return []

        def run(group: list[np.ndarray]) -> list[Faces]:
            out: list[Faces] = []
            for i in range(0, len(group), self.max_batch):
                out.extend(self._detect_same_size(group[i : i + self.max_batch], skip))
            return out

        with self.stream():
            return detect_grouped(images, run)

    def coarse_blind_below(self) -> float:
        """Box height (original pixels) under which ``detect_coarse`` may miss a face: the
        finest level finds faces up to ``min_face_size / factor`` (detector pixels), and MTCNN's
        boxes come out up to ~1.3x taller than the face side they were found at."""
        return COARSE_BOX_MARGIN * self.min_face_size / self.factor / self.scale

    def refine(self, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
        """O-Net on boxes carried into ``frame`` by a tracker (see :func:`rtvision.faces.search.refine`)."""
        with self.stream():
            return search.refine(self, frame, xyxy)

    def detect_near(self, frame: Any, xyxy: np.ndarray) -> tuple[Faces, np.ndarray]:
        """The local search for lost faces (see :func:`rtvision.faces.search.detect_near`)."""
        with self.stream():
            return search.detect_near(self, frame, xyxy)

    def with_pnet_threshold(self, threshold: float) -> FastMTCNN:
        """The same detector (networks, templates, streams shared) with another P-Net threshold:
        a higher one passes fewer candidates to R- and O-Net, so a detection takes less time, and
        drops the faces that only a weaker P-Net response found."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"P-Net threshold must be in (0, 1), got {threshold}")
        other = copy.copy(self)
        other.thresholds = (float(threshold), *self.thresholds[1:])
        other.description = f"{self.description} P-Net {threshold:g}"
        return other

    def warm_up(self, h: int, w: int) -> None:
        """Every network once on an ``h x w`` frame (blank): P-Net on each pyramid level (and the
        size's template built), then a re-fit (crops, O-Net) and R-Net on a blank crop. The first
        calls on a device cost far more than the next ones (CUDA loads its kernels and makes its
        library handles on first use); a live source calls this before its capture starts, so
        that the first frames are not dropped waiting for them."""
        blank = np.zeros((h, w, 3), np.uint8)
        self.detect([blank])
        side = max(1.0, min(h, w, 48) - 1.0)
        self.refine(blank, np.array([[0.0, 0.0, side, side]], np.float32))
        with self.stream(), torch.inference_mode():
            self.cascade.run(self.rnet, torch.zeros((1, 3, 24, 24), device=self.device))

    # -------------------------------------------------------------- internals
    def level_template(self, h: int, w: int) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """:func:`rtvision.faces.pyramid.level_template` for ``h x w`` detector frames, cached."""
        key = (h, w)
        with self._templates_lock:
            if key not in self._templates:
                template = level_template(h, w, self.min_face_size, self.factor, self.device)
                if self.device.type == "cuda":
                    torch.cuda.current_stream(self.device).synchronize()  # before other streams read it
                self._templates[key] = template
            return self._templates[key]

    def _pyramid(self, images: list[np.ndarray], sizes: list[tuple[int, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pyramid levels (N,3,lh,lw) channels_last normalized BGR on the device, and the
        frames' (N, H+1, W+1, 3) summed-area table on the device (for the R-/O-Net crops).

        With ``host_preprocess`` both come from ``cv2.integral`` (see :func:`pyramid_cpu`);
        otherwise the frames are uploaded once as uint8 and everything is computed there."""
        if self.host_preprocess:
            integral = integral_cpu(images)
            levels = [torch.from_numpy(lv).permute(0, 3, 1, 2).to(self.device, non_blocking=True) for lv in pyramid_cpu(integral, sizes)]
            return levels, torch.from_numpy(integral).to(self.device, non_blocking=True)
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)  # N,H,W,3 BGR
        x = batch.permute(0, 3, 1, 2).float().contiguous()
        levels = [
            F.interpolate(x, size=size, mode="area").sub_(127.5).mul_(0.0078125).contiguous(memory_format=torch.channels_last)
            for size in sizes
        ]
        return levels, integral_torch(batch)

    def _detect_same_size(self, images: list[np.ndarray], skip: int = 0) -> list[Faces]:
        # Same recipe as FacenetMTCNN (and so the same boxes): resize on the host first (cheap,
        # and fewer bytes to upload), detect, map back with the exact per-axis factors.
        small, sx, sy = resize_for_detection(images, self.scale)
        return [to_original(f, sx, sy) for f in self._detect_full(small, skip)]

    @torch.inference_mode()
    def _detect_full(self, images: list[np.ndarray], skip: int = 0) -> list[Faces]:
        """The cascade on same-size frames; ``skip``: leave out that many of the finest pyramid
        levels (never all of them)."""
        n = len(images)
        h, w = images[0].shape[:2]
        sizes, tmpl_boxes, tmpl_levels = self.level_template(h, w)
        if not sizes:
            return [Faces.empty() for _ in range(n)]
        skip = max(0, min(skip, len(sizes) - 1))
        if skip:  # the template's cells are in level order: drop the skipped levels' cells
            first = sum(oh * ow for oh, ow in (pnet_out_hw(*size) for size in sizes[:skip]))
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
        return self.cascade.after_pnet(boxes, scores, reg, img_idx * len(sizes) + levels, img_idx, img_idx, integral, n, w, h)



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

    def warm_up(self, h: int, w: int) -> None:
        """One detection of a blank ``h x w`` frame (see :meth:`FastMTCNN.warm_up`)."""
        self.detect([np.zeros((h, w, 3), np.uint8)])

    def detect(self, frames: Sequence[Any]) -> list[Faces]:
        images = [as_image(f) for f in frames]
        if not images:
            return []
        return detect_grouped(images, self._detect_same_size)

    def _detect_same_size(self, images: list[np.ndarray]) -> list[Faces]:
        small, sx, sy = resize_for_detection(images, self.scale)
        h, w = small[0].shape[:2]
        if not pyramid_scales(h, w, self.min_face_size, self.factor):
            return [Faces.empty() for _ in images]  # too small for any face (facenet's own would fail on it)
        rgb = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for img in small]
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(rgb, landmarks=True)
        out: list[Faces] = []
        for b, p, lm in zip(boxes, probs, points):
            if b is None:
                out.append(Faces.empty())
                continue
            faces = Faces(np.asarray(b, np.float32), np.asarray(p, np.float32), np.asarray(lm, np.float32))
            out.append(to_original(faces, sx, sy))
        return out
