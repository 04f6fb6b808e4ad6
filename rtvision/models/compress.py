"""Compressed variants of a classifier: pruning (torch-pruning, any network of ``zoo``),
torch.ao int8 (ResNets), fp16, distillation, calibration images, and the layer-shape records
that rebuild a pruned network.

torch.ao int8 goes through ``quant_backend`` (the only module that touches
``torch.ao.quantization``); OpenVINO int8 through ``rtvision.backends.openvino_runtime``.
Saving/loading lives in ``artifact.py``; the comparison report and the ``optimize`` command in
``rtvision/optimize.py``.

Shapes: frames are HxWx3 uint8 BGR (OpenCV); batches are (N,3,crop,crop) float32 RGB,
normalized with the preprocess dict ``{"resize": int, "crop": int, "mean": [3], "std": [3]}``.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rtvision.metrics import top1_agreement
from rtvision.models import quant_backend

log = logging.getLogger(__name__)

IMPORTANCES = ("l1", "taylor")


# ---------------------------------------------------------------- preprocessing


MAX_INPUT_SIDE = 2048  # a classifier's resize/crop; ImageNet models take 224-600


def check_preprocess(preprocess: dict) -> dict:
    """Validate a preprocess dict; returns it. Raises ValueError. Sizes are bounded (an edited
    artifact asking for a 60000-pixel crop would take all the memory) and every value finite (a
    NaN std makes every input the same)."""
    try:
        resize, crop = int(preprocess["resize"]), int(preprocess["crop"])
        mean = [float(v) for v in preprocess["mean"]]
        std = [float(v) for v in preprocess["std"]]
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"bad preprocess dict {preprocess!r}: {e}") from None
    if not (0 < crop <= resize <= MAX_INPUT_SIDE) or len(mean) != 3 or len(std) != 3:
        raise ValueError(f"bad preprocess dict {preprocess!r}: crop <= resize <= {MAX_INPUT_SIDE}, three means and stds")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ValueError(f"bad preprocess dict {preprocess!r}: means and stds must be finite, stds > 0")
    return {"resize": resize, "crop": crop, "mean": mean, "std": std}


def frames_to_batch(frames_bgr: Sequence[np.ndarray], preprocess: dict) -> torch.Tensor:
    """BGR uint8 frames -> (N,3,crop,crop) float32 RGB batch, normalized: the pipeline's own
    preprocessing (``classifier.Preprocess``), so compressed variants see exactly what runs."""
    from .classifier import Preprocess

    return Preprocess.from_dict(check_preprocess(preprocess)).batch(list(frames_bgr))


def calibration_images(frames_bgr: Sequence[np.ndarray], crops_per_frame: int = 3, seed: int = 0) -> list[np.ndarray]:
    """The images int8 calibration sees: every frame, plus ``crops_per_frame`` square crops of it
    at random positions and scales (a quarter of the short side up to all of it).

    The classifier is only ever shown a frame's centre, but calibration sets the activation
    ranges, and the frames of one video are alike: crops at other scales give the range of
    content a camera sees over time. Measured on the 500 labelled photos, calibrating on 32
    frames of the 1080p street clip: MobileNetV2 int8 (OpenVINO/NNCF) top-1 0.794 on the frames
    alone, 0.808 with 3 crops each, against 0.812 in fp32. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for im in frames_bgr:
        out.append(im)
        h, w = im.shape[:2]
        for _ in range(crops_per_frame):
            side = min(min(h, w), max(8, int(min(h, w) * rng.uniform(0.25, 1.0))))  # a frame under 8 px: itself
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append(np.ascontiguousarray(im[y : y + side, x : x + side]))
    return out


def iter_batches(batch: torch.Tensor, size: int):
    for i in range(0, batch.shape[0], size):
        yield batch[i : i + size]


# ---------------------------------------------------------------- models


@torch.no_grad()
def reestimate_bn(model: nn.Module, batch: torch.Tensor, batch_size: int = 16) -> nn.Module:
    """Re-estimate BatchNorm running statistics on ``batch`` (in place; returns the model, eval mode).

    A cheap recovery step after pruning, and what makes a random-init model react to its
    input at all (tests and the measurement script use it on real frames).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all chunks
    model.train()
    try:
        for chunk in iter_batches(batch, batch_size):
            model(chunk)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    return model


def count_params(model: nn.Module) -> int:
    """Number of weights; for an int8 model, the weights of its quantized layers."""
    if not quant_backend.is_quantized(model):
        return sum(p.numel() for p in model.parameters())
    n = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if callable(w):  # quantized conv/linear expose weight() and bias()
            n += w().numel()
            b = m.bias() if callable(getattr(m, "bias", None)) else None
            n += b.numel() if b is not None else 0
    return n


def count_macs(model: nn.Module, crop: int = 224) -> int:
    """Multiply-accumulates of one (1,3,crop,crop) forward pass of a float model (torch-pruning)."""
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, crop, crop))
    return int(macs)


# ---------------------------------------------------------------- pruning


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(teacher || student) of the (tempered) softmax, per image."""
    t = F.log_softmax(teacher_logits / temperature, dim=1)
    s = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def prune(
    model: nn.Module,
    ratio: float,
    importance: str = "l1",
    example_input: torch.Tensor | None = None,
    *,
    calib_batch: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    round_to: int | None = None,
    head: str = "fc",
) -> nn.Module:
    """Structural channel pruning (torch-pruning); returns a new, physically smaller model.

    ratio: fraction of channels removed in every prunable group (0 <= ratio < 1); MACs drop
    roughly by (1-ratio)^2. The ``head`` layer (the final Linear) is kept whole: its inputs shrink,
    its outputs (the classes) stay.
    importance: ``l1`` (weight magnitude) or ``taylor`` (first-order, needs gradients: the loss
    is KL to ``teacher``'s softmax on ``calib_batch`` if a teacher is given, else the model's own
    output entropy on ``calib_batch`` or ``example_input``).
    round_to: keep channel counts multiples of this (e.g. 16 is faster for int8 kernels).
    The input model is left untouched.
    """
    import torch_pruning as tp

    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    model = copy.deepcopy(model).eval()
    if ratio == 0.0:
        return model
    for p in model.parameters():
        p.requires_grad_(True)  # torch-pruning leaves frozen parameters alone
    if example_input is None:
        example_input = torch.zeros(1, 3, 224, 224)
    imp = tp.importance.MagnitudeImportance(p=1) if importance == "l1" else tp.importance.TaylorImportance()
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=imp,
        pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(head)],
        round_to=round_to,
    )
    if importance == "taylor":
        batch = calib_batch if calib_batch is not None else example_input
        model.zero_grad()
        with torch.enable_grad():
            logits = model(batch)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher.eval()(batch)
                loss = kl_to_teacher(logits, target)
            else:
                loss = _entropy(logits)
            loss.backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


# ---------------------------------------------------------------- int8 / fp16


def quantize_int8(
    model: nn.Module,
    calib_frames_bgr: Sequence[np.ndarray],
    preprocess: dict,
    *,
    backend: str = quant_backend.BACKEND,
    batch_size: int = 8,
) -> nn.Module:
    """Static post-training int8 quantization (CPU) calibrated on real BGR frames.

    Works on pruned models. Returns a new eval-mode int8 module that takes the same float
    (N,3,crop,crop) batch as the float model and returns float logits; ``model`` is untouched.
    """
    if len(calib_frames_bgr) == 0:
        raise ValueError("int8 calibration needs at least one frame")
    batch = frames_to_batch(calib_frames_bgr, preprocess)
    return quantize_int8_batch(model, batch, backend=backend, batch_size=batch_size)


def quantize_int8_batch(
    model: nn.Module, calib_batch: torch.Tensor, *, backend: str = quant_backend.BACKEND, batch_size: int = 8
) -> nn.Module:
    """``quantize_int8`` on an already preprocessed (N,3,H,W) batch."""
    float_model = copy.deepcopy(model).cpu().float().eval()
    prepared = quant_backend.prepare(float_model, calib_batch[:1], backend)
    seen = quant_backend.calibrate(prepared, iter_batches(calib_batch, batch_size))
    log.info("int8 calibration: %d images, backend %s", seen, backend)
    return quant_backend.convert(prepared, backend)


def to_fp16_cuda(model: nn.Module, device: str | torch.device = "cuda") -> nn.Module:
    """fp16, channels_last, on a CUDA device, eval mode (a new module). Inputs must be
    ``batch.to(device, torch.float16, memory_format=torch.channels_last)``.
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError("fp16 needs a CUDA device; use int8 on the CPU")
    if quant_backend.is_quantized(model):
        raise ValueError("an int8 model cannot be converted to fp16; start from the float model")
    m = copy.deepcopy(model).eval()
    return m.to(device=device, dtype=torch.float16, memory_format=torch.channels_last)


# ---------------------------------------------------------------- distillation


@torch.no_grad()
def logits_of(model: nn.Module, batch: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Eval-mode float32 logits (N, classes) on the CPU, in chunks."""
    model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    outs = []
    for chunk in iter_batches(batch, batch_size):
        x = chunk.to(dev, dtype)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    frames: torch.Tensor | Sequence[np.ndarray],
    steps: int,
    *,
    preprocess: dict | None = None,
    holdout: torch.Tensor | None = None,
    batch_size: int = 8,
    lr: float = 1e-4,
    temperature: float = 2.0,
    seed: int = 0,
) -> dict:
    """Fine-tune ``student`` (in place) on the soft targets of ``teacher`` (KL, unlabeled frames).

    frames: BGR frames (needs ``preprocess``) or a preprocessed (N,3,H,W) batch. BatchNorm
    statistics stay frozen (tiny batches would wreck them); random horizontal flips augment.
    Returns {"steps", "loss_first", "loss_last", "top1_before", "top1_after"}; agreement is
    measured on ``holdout`` (a preprocessed batch) if given, else on the training frames.
    """
    batch = frames if isinstance(frames, torch.Tensor) else frames_to_batch(frames, preprocess)
    if batch.shape[0] == 0:
        raise ValueError("distillation needs frames")
    evalb = holdout if holdout is not None else batch
    teacher.eval()
    t_eval = logits_of(teacher, evalb)
    before = top1_agreement(t_eval.argmax(1).tolist(), logits_of(student, evalb).argmax(1).tolist())
    t_train = logits_of(teacher, batch)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    student.train()
    for m in student.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, batch.shape[0], (min(batch_size, batch.shape[0]),), generator=gen)
        x, t = batch[idx], t_train[idx]
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = kl_to_teacher(student(x), t, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    student.eval()
    after = top1_agreement(t_eval.argmax(1).tolist(), logits_of(student, evalb).argmax(1).tolist())
    return {
        "steps": int(steps),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "top1_before": before,
        "top1_after": after,
    }


# ---------------------------------------------------------------- architecture records


def channel_spec(model: nn.Module) -> dict:
    """The shapes of every Conv2d, BatchNorm2d and Linear of a float network (pruned or not), by
    module name, as plain python: ``{"conv": {name: [in, out, groups]}, "bn": {name: features},
    "linear": {name: [in, out]}}``. With the architecture's name it is enough to rebuild the
    network's skeleton (``rebuild``), which its state_dict is then loaded into."""
    conv: dict[str, list[int]] = {}
    bn: dict[str, int] = {}
    linear: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            conv[name] = [int(m.in_channels), int(m.out_channels), int(m.groups)]
        elif isinstance(m, nn.BatchNorm2d):
            bn[name] = int(m.num_features)
        elif isinstance(m, nn.Linear):
            linear[name] = [int(m.in_features), int(m.out_features)]
    if not conv or not linear:
        raise ValueError("no Conv2d / Linear layers: not a supported classifier")
    return {"conv": conv, "bn": bn, "linear": linear}


@functools.lru_cache(maxsize=None)
def reference_spec(arch: str) -> dict:
    """The shapes of ``arch`` unpruned (1000 classes)."""
    from .zoo import empty_module

    return channel_spec(empty_module(arch))


def check_spec_bounds(arch: str, spec: dict) -> None:
    """Pruning only narrows layers, so every width a record gives must be a positive integer no
    larger than the unpruned architecture's (the classifier's class count aside): a tampered
    record cannot make ``rebuild`` allocate more than the network it claims to be (a 15 KB file
    that declared a 400000-class head took 2.8 GB before it was refused). Raises ValueError."""
    ref = reference_spec(arch)
    try:
        head = list(spec["linear"])[-1]
        for kind in ("conv", "bn", "linear"):
            for name, shape in spec[kind].items():
                if name not in ref[kind]:
                    raise ValueError(f"the record names a layer {arch} does not have: {name}")
                given = shape if isinstance(shape, list) else [shape]
                limit = ref[kind][name] if isinstance(ref[kind][name], list) else [ref[kind][name]]
                if kind == "linear" and name == head:  # its class count is the model's own
                    given, limit = given[:1], limit[:1]
                ok = len(given) == len(limit) and all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= r for v, r in zip(given, limit))
                if not ok:
                    raise ValueError(f"layer {name} is {shape}, not within {arch}'s {ref[kind][name]}")
        fout = spec["linear"][head][1]
        if not (isinstance(fout, int) and not isinstance(fout, bool) and fout >= 1):
            raise ValueError(f"the classifier's class count {fout!r}")
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"malformed architecture record ({exc})") from None


def num_classes_of(spec: dict) -> int:
    """Output classes of the network a spec describes (its last Linear layer)."""
    return int(list(spec["linear"].values())[-1][1])


def _resize_conv(m: nn.Conv2d, cin: int, cout: int, groups: int) -> None:
    m.in_channels, m.out_channels, m.groups = cin, cout, groups
    m.weight = nn.Parameter(torch.empty(cout, cin // groups, *m.kernel_size))
    if m.bias is not None:
        m.bias = nn.Parameter(torch.empty(cout))


def _resize_bn(m: nn.BatchNorm2d, n: int) -> None:
    m.num_features = n
    if m.affine:
        m.weight, m.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
    if m.track_running_stats:
        m.running_mean, m.running_var = torch.zeros(n), torch.ones(n)


def _resize_linear(m: nn.Linear, fin: int, fout: int) -> None:
    m.in_features, m.out_features = fin, fout
    m.weight = nn.Parameter(torch.empty(fout, fin))
    if m.bias is not None:
        m.bias = nn.Parameter(torch.empty(fout))


def rebuild(arch: str, spec: dict) -> nn.Module:
    """A random-init ``arch`` with the layer shapes of ``spec`` (see ``channel_spec``); the layers
    are resized in place, so their classes (timm's BatchNormAct2d, a padded conv) are kept.
    Raises ValueError when the spec does not describe this architecture."""
    from .zoo import empty_module

    try:
        model = empty_module(arch, num_classes_of(spec))
        kinds = {"conv": (nn.Conv2d, _resize_conv), "bn": (nn.BatchNorm2d, _resize_bn), "linear": (nn.Linear, _resize_linear)}
        seen = {k: set() for k in kinds}
        for name, m in model.named_modules():
            for kind, (cls, resize) in kinds.items():
                if isinstance(m, cls):
                    if name not in spec[kind]:
                        raise ValueError(f"the record has no shape for {name}")
                    shape = spec[kind][name]
                    resize(m, *(shape if isinstance(shape, list) else [shape]))
                    seen[kind].add(name)
                    break
        for kind in kinds:
            extra = set(spec[kind]) - seen[kind]
            if extra:
                raise ValueError(f"the record names layers {arch} does not have: {sorted(extra)[:3]}")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed architecture record ({exc})") from None
    return model.eval()


# ---------------------------------------------------------------- pipeline adapter


def sample_video_frames(path: str, n: int, max_unknown: int = 20000) -> list[np.ndarray]:
    """Up to ``n`` BGR frames spread evenly over a video file (sequential decode, grab() to skip).
    A file that does not say how many frames it has (raw MJPEG, some streams' recordings) is
    counted first with grab(), at most ``max_unknown`` frames, then read again for its picks:
    only the picked frames are ever held (keeping every frame took 2.7 GB for 315 1080p frames)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened() or n <= 0:
            return []
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if total <= 0:  # unknown length: count, then start over
            total = 0
            while total < max_unknown and cap.grab():
                total += 1
            cap.release()
            cap = cv2.VideoCapture(str(path))
            if total <= 0 or not cap.isOpened():
                return []
        wanted = set(np.linspace(0, total - 1, num=min(n, total)).round().astype(int).tolist())
        frames = []
        for i in range(max(wanted) + 1):
            if i in wanted:
                ok, img = cap.read()
                if ok and img is not None:
                    frames.append(img)
            elif not cap.grab():
                break
        return frames
    finally:
        cap.release()
