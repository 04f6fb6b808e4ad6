"""Measure the compression variants of ResNet-18/50 on this CPU, in one interleaved run per arch.

    python scripts/compression_table.py [--archs resnet18 resnet50] [--threads 2] [--out table.json]

Models are random-init (no ImageNet weights offline) with BatchNorm statistics re-estimated on
real frames, so they react to the input; agreement numbers therefore describe a random network,
not a trained one. Calibration and held-out frames are disjoint, spread over faces_1080p.mp4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rtvision.models import compress  # noqa: E402
from rtvision.optimize import Variant, compare_variants, read_frames, render_markdown  # noqa: E402


def variants_for(arch: str, calib_b: torch.Tensor, round_to: int | None) -> list[Variant]:
    torch.manual_seed(0)
    fp32 = compress.reestimate_bn(compress.build_resnet(arch), calib_b)
    out = [Variant(f"{arch} fp32", fp32, fp32), Variant(f"{arch} int8", compress.quantize_int8_batch(fp32, calib_b), fp32, "int8")]
    for ratio in (0.3, 0.5):
        p = compress.prune(fp32, ratio, "l1", calib_b[:1])
        compress.reestimate_bn(p, calib_b)  # cheap recovery after pruning
        tag = f"pruned{round(ratio * 100)}"
        out.append(Variant(f"{arch} {tag}", p, p))
        out.append(Variant(f"{arch} {tag} int8", compress.quantize_int8_batch(p, calib_b), p, "int8"))
    if round_to:
        p = compress.reestimate_bn(compress.prune(fp32, 0.3, "l1", calib_b[:1], round_to=round_to), calib_b)
        out.append(Variant(f"{arch} pruned30 r{round_to} int8", compress.quantize_int8_batch(p, calib_b), p, "int8"))
    order = ["fp32", "int8", "pruned30", "pruned50", "pruned30 int8", "pruned50 int8"]
    return sorted(out, key=lambda v: order.index(v.name.split(" ", 1)[1]) if v.name.split(" ", 1)[1] in order else 99)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "faces_1080p.mp4"))
    ap.add_argument("--calib-frames", type=int, default=32)
    ap.add_argument("--holdout-frames", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--round-to", type=int, default=16, help="also a pruned30 variant with widths multiple of N (0: no)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    calib, hold = read_frames(a.video, a.calib_frames, a.holdout_frames)
    reports = {}
    for arch in a.archs:
        pp = compress.preprocess_for(arch)
        calib_b, hold_b = compress.frames_to_batch(calib, pp), compress.frames_to_batch(hold, pp)
        t0 = time.perf_counter()
        vs = variants_for(arch, calib_b, a.round_to or None)
        build_s = time.perf_counter() - t0
        rep = compare_variants(vs, hold_b, batch_size=a.batch, repeats=a.repeats, iters=a.iters,
                               extra={"random_init": True, "calib_frames": len(calib), "build_s": build_s})
        reports[arch] = rep
        print(f"\n### {arch} (random init, BN re-estimated on {len(calib)} frames; built in {build_s:.0f} s)\n")
        print(render_markdown(rep), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
