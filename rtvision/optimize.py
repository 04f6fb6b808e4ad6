"""``rtvision optimize``: build compressed classifier variants, measure them against fp32, save one artifact.

Also the comparison report used by ``scripts/compression_table.py``:
``compare_variants`` (JSON-serializable dict) and ``render_markdown``.

Exit codes of ``run_optimize``: 0 ok, 2 bad argument, 3 bad input (missing/corrupt weights,
labels or video, offline ImageNet weights), always with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rtvision.argtypes import int_at_least
from rtvision.errors import InputError, ModelError, OutputError, UsageError
from rtvision.models import artifact, compress
from rtvision.models.classifier import WeightsUnavailable, build_resnet

log = logging.getLogger(__name__)

EXIT_OK = 0


# ---------------------------------------------------------------- report


@dataclass
class Variant:
    """One model to compare. ``float_model``: the float model with the same widths (for MACs)."""

    name: str
    module: nn.Module
    float_model: nn.Module
    precision: str = "fp32"


def agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> dict:
    """Agreement of ``logits`` with the reference on the same images.

    top1: argmax equal. top5: the reference's top-1 class is among the variant's top-5.
    kl: mean KL(p_ref || p_variant) of the softmax, nats per image.
    """
    if ref_logits.shape != logits.shape or ref_logits.shape[0] == 0:
        raise ValueError(f"logits shapes differ or are empty: {tuple(ref_logits.shape)} vs {tuple(logits.shape)}")
    ref_top1 = ref_logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == ref_top1[:, None]).any(1)
    kl = F.kl_div(F.log_softmax(logits.float(), 1), F.log_softmax(ref_logits.float(), 1), reduction="batchmean", log_target=True)
    return {
        "top1": float((logits.argmax(1) == ref_top1).float().mean()),
        "top5": float(top5.float().mean()),
        "kl": max(0.0, float(kl)),
    }


@torch.no_grad()
def _time_calls(module: nn.Module, x: torch.Tensor, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        module(x)
        out.append(time.perf_counter() - t0)
    return out


def measure_speed(
    variants: Sequence[Variant],
    crop: int,
    batch_size: int,
    repeats: int = 3,
    iters: int = 10,
    warmup: int = 2,
) -> dict[str, dict]:
    """Throughput/latency of each variant at batch 1 and ``batch_size``, interleaved.

    Every repeat runs every variant in turn (a slow phase of a shared machine hits all
    of them), so ratios are taken within one run. Per variant and batch size:
    images_per_s = batch / median call time (robust to the stalls of a shared machine),
    images_per_s_mean (median over repeats of images / total time), latency_ms p50/p90 of one call.
    """
    sizes = sorted({1, int(batch_size)})
    inputs = {b: torch.randn(b, 3, crop, crop, generator=torch.Generator().manual_seed(b)) for b in sizes}
    calls: dict[tuple[str, int], list[float]] = {(v.name, b): [] for v in variants for b in sizes}
    rates: dict[tuple[str, int], list[float]] = {(v.name, b): [] for v in variants for b in sizes}
    with torch.no_grad():
        for v in variants:
            v.module.eval()
            for b in sizes:
                _time_calls(v.module, inputs[b], warmup)
        for _ in range(repeats):
            for v in variants:
                for b in sizes:
                    t = _time_calls(v.module, inputs[b], iters)
                    calls[(v.name, b)].extend(t)
                    rates[(v.name, b)].append(b * len(t) / sum(t))
    out: dict[str, dict] = {}
    for v in variants:
        out[v.name] = {}
        for b in sizes:
            c = sorted(calls[(v.name, b)])
            out[v.name][f"batch{b}"] = {
                "images_per_s": b / statistics.median(c),
                "images_per_s_mean": statistics.median(rates[(v.name, b)]),
                "latency_ms_p50": 1000 * statistics.median(c),
                "latency_ms_p90": 1000 * c[min(len(c) - 1, int(0.9 * len(c)))],
            }
    return out


def compare_variants(
    variants: Sequence[Variant],
    holdout: torch.Tensor,
    *,
    batch_size: int = 4,
    repeats: int = 3,
    iters: int = 10,
    sizes_bytes: dict[str, int] | None = None,
    extra: dict | None = None,
) -> dict:
    """Compare every variant to the first one (fp32): size, MACs, speed, agreement.

    holdout: (N,3,crop,crop) preprocessed frames NOT used for calibration/distillation.
    sizes_bytes: serialized artifact size per variant name (measured if missing).
    Returns a JSON-serializable dict: {"reference", "batch_size", "threads", "holdout_frames",
    "variants": [{name, precision, params, macs, file_bytes, speed, agreement, ratios}], ...}.
    """
    if not variants:
        raise ValueError("no variants to compare")
    crop = int(holdout.shape[-1])
    ref = variants[0]
    speed = measure_speed(variants, crop, batch_size, repeats=repeats, iters=iters)
    ref_logits = compress.logits_of(ref.module, holdout)
    sizes_bytes = dict(sizes_bytes or {})
    rows = []
    for v in variants:
        if v.name not in sizes_bytes:
            sizes_bytes[v.name] = artifact.serialized_size(
                v.module, arch=_arch_of(v.float_model), class_names=_dummy_names(v.float_model), preprocess=_pp(crop)
            )
        rows.append(
            {
                "name": v.name,
                "precision": v.precision,
                "params": compress.count_params(v.module),
                "macs": compress.count_macs(v.float_model, crop),
                "file_bytes": int(sizes_bytes[v.name]),
                "speed": speed[v.name],
                "agreement": agreement(ref_logits, compress.logits_of(v.module, holdout)),
            }
        )
    r0 = rows[0]
    for r in rows:
        r["ratios"] = {
            "params": r["params"] / r0["params"],
            "macs": r["macs"] / r0["macs"],
            "file_bytes": r["file_bytes"] / r0["file_bytes"],
            **{
                f"speed_{k}": r["speed"][k]["images_per_s"] / r0["speed"][k]["images_per_s"]
                for k in r["speed"]
            },
        }
    report = {
        "reference": ref.name,
        "batch_size": int(batch_size),
        "threads": torch.get_num_threads(),
        "holdout_frames": int(holdout.shape[0]),
        "repeats": int(repeats),
        "iters": int(iters),
        "torch": str(torch.__version__),
        "variants": rows,
    }
    if extra:
        report.update(extra)
    return json.loads(json.dumps(report))  # guarantees plain python


def _arch_of(model: nn.Module) -> str:
    spec = compress.channel_spec(model)
    n_blocks = sum(1 for n in spec["convs"] if n.endswith(".conv1"))
    bottleneck = any(n.endswith(".conv3") for n in spec["convs"])
    table = {(8, False): "resnet18", (16, False): "resnet34", (16, True): "resnet50", (33, True): "resnet101"}
    return table.get((n_blocks, bottleneck), "resnet50")


def _dummy_names(model: nn.Module) -> list[str]:
    return [f"class_{i}" for i in range(compress.channel_spec(model)["fc"][1])]


def _pp(crop: int) -> dict:
    return {"resize": crop, "crop": crop, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def render_markdown(report: dict) -> str:
    """The report as a Markdown table (ratios are to the first row, fp32, same run)."""
    b = report["batch_size"]
    keys = ["batch1"] + ([f"batch{b}"] if b != 1 else [])
    head = ["variant", "params (M)", "MACs (G)", "file (MB)"]
    for k in keys:
        head += [f"img/s b{k[5:]}", f"x fp32 b{k[5:]}", f"p50 ms b{k[5:]}"]
    head += ["top-1 agr", "top-5 agr", "KL"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["variants"]:
        cells = [r["name"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}", _mb(r["file_bytes"])]
        for k in keys:
            s = r["speed"][k]
            cells += [f"{s['images_per_s']:.1f}", f"{r['ratios']['speed_' + k]:.2f}", f"{s['latency_ms_p50']:.1f}"]
        a = r["agreement"]
        cells += [f"{a['top1']:.3f}", f"{a['top5']:.3f}", f"{a['kl']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nthreads={report['threads']}, batch={b}, held-out frames={report['holdout_frames']}, "
        f"{report['repeats']}x{report['iters']} interleaved timed calls per variant and batch size, torch {report['torch']}"
    )
    return "\n".join(lines) + note


# ---------------------------------------------------------------- inputs


def read_frames(path: str | Path, n_calib: int, n_holdout: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Disjoint calibration and held-out BGR frames spread evenly over the clip.

    Picks n_calib + n_holdout evenly spaced frame indices, alternating them between the two
    sets so both cover the whole clip. Fewer frames in the video: both sets shrink.
    Raises InputError for a missing/unreadable video or one with fewer than 2 frames.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"calibration video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"cannot open calibration video {path}")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        want = n_calib + n_holdout
        if total <= 0:  # unknown length: read everything (bounded)
            frames = []
            while len(frames) < 20000:
                ok, img = cap.read()
                if not ok:
                    break
                frames.append(img)
            total, pool = len(frames), frames
        else:
            pool = None
        picks = np.unique(np.linspace(0, max(total - 1, 0), num=min(want, max(total, 0))).round().astype(int))
        chosen: dict[int, np.ndarray] = {}
        if pool is not None:
            chosen = {i: pool[i] for i in picks if i < len(pool)}
        else:
            wanted = set(int(i) for i in picks)
            for i in range(int(picks.max()) + 1 if len(picks) else 0):
                if i in wanted:
                    ok, img = cap.read()
                    if not ok:
                        break
                    chosen[i] = img
                elif not cap.grab():
                    break
    finally:
        cap.release()
    frames = [chosen[i] for i in sorted(chosen) if chosen[i] is not None and chosen[i].size]
    if len(frames) < 2:
        raise InputError(f"{path}: could not read frames (need at least 2, got {len(frames)})")
    # Every k-th picked frame goes to the held-out set, in proportion to the requested sizes.
    n_hold = min(len(frames) - 1, max(1, round(len(frames) * n_holdout / want)))
    hold_idx = set(np.linspace(0, len(frames) - 1, num=n_hold).round().astype(int).tolist())
    calib = [f for i, f in enumerate(frames) if i not in hold_idx]
    holdout = [f for i, f in enumerate(frames) if i in hold_idx]
    return calib, holdout


def load_weights(arch: str, weights: str, labels_path: str | None = None) -> tuple[nn.Module, list[str], str]:
    """(float model, class names, weights id), through the pipeline's own classifier loader.

    Raises ModelError (exit 5) for a missing/broken/unfitting checkpoint or labels file, and for
    ImageNet weights that are neither cached nor downloadable.
    """
    try:
        model, names, _, weights_id = build_resnet(arch, weights, labels_path)
    except WeightsUnavailable as e:
        raise ModelError(f"{e}; pass --weights FILE (a torchvision {arch} state_dict)") from None
    return model, names, weights_id


# ---------------------------------------------------------------- command


# Every ResNet here has 64-channel layers (the stem and layer1). torch-pruning keeps
# int(64 * (1 - ratio)) of their channels and skips a layer it would empty, so above 63/64 those
# layers are left whole, and from 0.995 on the artifact would be labelled "pruned100".
NARROWEST_PRUNED_LAYER = 64
MAX_PRUNE = 1.0 - 1.0 / NARROWEST_PRUNED_LAYER  # 0.984375: one channel left in the narrowest layers
MIN_PRUNE = 0.01  # artifacts are labelled in whole percent ("pruned30"); less would read "pruned0"


def _ratio(text: str) -> float:
    """``--prune``: 0 (none), or a ratio in [0.01, 63/64] that leaves every layer a channel."""
    what = f"0 or a ratio in [{MIN_PRUNE:g}, {MAX_PRUNE:.3f}]"
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if math.isnan(v) or not (v == 0.0 or MIN_PRUNE <= v <= MAX_PRUNE):
        why = f" (it would leave the {NARROWEST_PRUNED_LAYER}-channel layers no channel)" if v > MAX_PRUNE else ""
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}{why}")
    return v


def check_prune_args(prune: float, round_to: int | None) -> None:
    """UsageError when ``--round-to`` would round the narrowest layers' kept channels to zero."""
    if prune <= 0 or not round_to:
        return
    kept = int(NARROWEST_PRUNED_LAYER * (1.0 - prune))
    if kept < round_to:
        raise UsageError(f"--prune {prune:g} --round-to {round_to}: the {NARROWEST_PRUNED_LAYER}-channel layers keep "
                         f"{kept} channels, which rounds to none; use a smaller --prune or --round-to")


def add_optimize_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``optimize`` on an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "optimize",
        help="prune / quantize the classifier, measure it against fp32, write a .rtv artifact",
        description="Build compressed variants of a ResNet classifier, compare them to fp32 on held-out "
        "frames (speed, size, agreement), and save the final one as an .rtv artifact.",
    )
    p.add_argument("--classifier", choices=compress.ARCHS, default="resnet50")
    p.add_argument("--weights", default="imagenet", help="imagenet (torchvision cache/download) or a state_dict FILE")
    p.add_argument("--calib", required=True, metavar="VIDEO", help="video file for calibration and held-out frames")
    p.add_argument("--calib-frames", type=int_at_least(1), default=64, metavar="N")
    p.add_argument("--holdout-frames", type=int_at_least(1), default=32, metavar="N")
    p.add_argument("--prune", type=_ratio, default=0.0, metavar="RATIO", help="channel pruning ratio, 0 = none")
    p.add_argument("--importance", choices=compress.IMPORTANCES, default="l1")
    p.add_argument("--round-to", type=int_at_least(1), default=None, metavar="N", help="pruned widths multiple of N")
    p.add_argument("--quantize", choices=("int8", "none"), default="int8")
    p.add_argument("--distill", type=int_at_least(0), default=0, metavar="STEPS", help="recovery fine-tune steps")
    p.add_argument("--batch", type=int_at_least(1), default=4, metavar="N", help="batch size for throughput")
    p.add_argument("--bench-repeats", type=int_at_least(1), default=3, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--bench-iters", type=int_at_least(1), default=10, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, metavar="FILE.rtv")
    p.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line")
    return p


def run_optimize(args: argparse.Namespace) -> int:
    """Run ``optimize``; prints the report table; returns the exit code.

    Bad input raises the pipeline's errors (one line, documented exit code, via ``cli.main``):
    InputError 3 (calibration video), ModelError 5 (weights, labels), OutputError 6 (--out).
    """
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    arch = args.classifier
    check_prune_args(args.prune, args.round_to)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise OutputError(f"output folder does not exist: {out.parent}")
    teacher, names, weights_id = load_weights(arch, args.weights, args.labels)
    preprocess = compress.preprocess_for(arch)
    calib, holdout = read_frames(args.calib, args.calib_frames, args.holdout_frames)
    log.info("%d calibration frames, %d held-out frames from %s", len(calib), len(holdout), args.calib)
    calib_b = compress.frames_to_batch(calib, preprocess)
    hold_b = compress.frames_to_batch(holdout, preprocess)

    variants = [Variant(f"{arch} fp32", teacher, teacher)]
    extra: dict = {"arch": arch, "weights": weights_id, "calibration": {"source": Path(args.calib).name, "frames": len(calib)}}
    final, final_float = teacher, teacher
    distilled = False
    if args.quantize == "int8" and args.prune > 0:
        variants.append(Variant(artifact.variant_name(arch, 0, "int8"), compress.quantize_int8_batch(teacher, calib_b), teacher, "int8"))
    if args.prune > 0:
        pruned = compress.prune(
            teacher,
            args.prune,
            args.importance,
            calib_b[:1],
            calib_batch=calib_b[:8],
            teacher=teacher,
            round_to=args.round_to,
        )
        if args.distill > 0:
            extra["distill"] = compress.distill(pruned, teacher, calib_b, args.distill, holdout=hold_b)
            distilled = True
        variants.append(Variant(artifact.variant_name(arch, args.prune, "fp32", distilled), pruned, pruned))
        final = final_float = pruned
    elif args.distill > 0:
        log.warning("--distill needs --prune > 0; nothing to distill")
    if args.quantize == "int8":
        q = compress.quantize_int8_batch(final_float, calib_b)
        variants.append(Variant(artifact.variant_name(arch, args.prune, "int8", distilled), q, final_float, "int8"))
        final = q
    final_name = variants[-1].name

    common = {"arch": arch, "class_names": names, "preprocess": preprocess}
    sizes = {v.name: artifact.serialized_size(v.module, **common) for v in variants}
    report = compare_variants(
        variants,
        hold_b,
        batch_size=args.batch,
        repeats=args.bench_repeats,
        iters=args.bench_iters,
        sizes_bytes=sizes,
        extra={**extra, "prune": args.prune, "importance": args.importance, "artifact_variant": final_name},
    )
    try:
        _save(out, final, common, final_name, args, extra, report, weights_id)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from None
    print(render_markdown(report))
    print(f"\nwrote {out} ({final_name}) and {out.name}.report.json")
    return EXIT_OK


def _save(out: Path, final: nn.Module, common: dict, final_name: str, args, extra: dict, report: dict, weights_id: str) -> None:
    artifact.save_artifact(
        out,
        final,
        **common,
        variant=final_name,
        calibration=extra["calibration"] if args.quantize == "int8" else None,
        report=report,
        metadata={"weights": weights_id, "prune": args.prune, "importance": args.importance, "round_to": args.round_to},
    )
    out.with_name(out.name + ".report.json").write_text(json.dumps(report, indent=2))
