"""``rtvision bench``: every performance claim of the project comes from here.

It measures variants of the pipeline side by side with the naive textbook loop, on the same
machine in the same run, prints a Markdown report and saves it (``--out`` JSON, ``--md``,
``--plot`` PNG). See ``rtvision bench --help`` and :mod:`rtvision.benchmark` for the parts.

Design decisions (also stated in the report):

* **One process, interleaved.** All variants run one after another in this process; with
  ``--repeat K`` the order is repeat → mode → variant, so slow drift of a shared machine hits
  every variant alike. Same process means the same warm caches, allocator and torch threads for
  everyone, and every model is built once and reused across modes and repeats. The price: peak
  RSS (``ru_maxrss``) only ever grows in a process, so each run also reports its own sampled
  peak, start and end RSS.
* **Frames beyond the file loop it**: the file is closed and reopened, so every frame is
  really decoded (``--frames 300`` on a 105-frame file decodes 300 frames).
* **"Result written"** is real: pipeline variants write each result to a JSON Lines file in a
  temporary folder through the Runner's sink (``--save-video`` adds an annotated H.264 video);
  the naive loop writes its own JSON line per frame.
* **Warmup**: the first ``--warmup`` results of every run are left out of every statistic;
  statistics come from per-result records (a Runner listener), not from the runner's summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import logging
import tempfile
import time
from pathlib import Path

import torch

from .argtypes import int_at_least, non_negative_int, positive_float, positive_int
from .benchmark import quality as qmod
from .benchmark.fingerprint import machine_fingerprint
from .benchmark.naive import NaiveLoop
from .benchmark.report import (
    SCHEMA_VERSION,
    add_ratios,
    aggregate,
    render_markdown,
    write_json,
    write_plot,
)
from .benchmark.runs import run_pipeline
from .benchmark.variants import (
    NAIVE,
    VARIANTS,
    BenchContext,
    VariantPlan,
    build_variant_models,
    plan_variant,
)
from .config import CLASSIFIERS, DEVICES
from .evaluation import agreement, informative, read_labelled_images, run_all, topk_accuracy
from .errors import UsageError
from .specs import redact_url

log = logging.getLogger(__name__)

NAIVE_MIN_FRAMES = 60  # fewer frames measure the naive loop's warm-up more than its speed
STARTUP_VARIANTS = ("default", "fp32", "int8", "pruned-int8")  # classifier settings whose start-up is measured


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="measure throughput, latency, memory and quality of variants against the naive loop",
        description="Benchmark rtvision variants side by side with the naive textbook loop (always measured, "
        "in the same process and run). Prints a Markdown report; --out/--md/--plot save it.",
        epilog=f"Variants: {', '.join(VARIANTS)}. Example: rtvision bench --source ../shared/data/faces_1080p.mp4 "
        "--frames 105 --live --out bench.json --md bench.md --plot bench.png",
    )
    p.add_argument("--source", required=True, help="a video file (looped by reopening when --frames exceeds its length)")
    p.add_argument("--frames", type=positive_int, default=100, help="frames per pipeline run (default: %(default)s)")
    p.add_argument("--naive-frames", type=int_at_least(NAIVE_MIN_FRAMES), default=None,
                   help=f"frames for the naive loop's throughput run (default: --frames, at least {NAIVE_MIN_FRAMES}; "
                        "its live run, paced, reads --frames)")
    p.add_argument("--warmup", type=non_negative_int, default=5, help="first N results of each run left out of every statistic (default: %(default)s)")
    p.add_argument("--repeat", type=positive_int, default=1, help="repeat every run K times, interleaved; reports min/median/max")
    p.add_argument("--variants", default="naive,default", help="comma-separated variant names; naive is always added (default: %(default)s)")
    p.add_argument("--live", action="store_true", help="also measure live mode: the file paced at its fps, drops allowed")
    p.add_argument("--live-only", action="store_true", help="measure live mode only (no throughput runs)")
    p.add_argument("--soak", type=positive_float, default=None, metavar="MINUTES",
                   help="live runs of pipeline variants last this long (file looped) to show leaks and latency drift")
    p.add_argument("--classifier", choices=[c for c in CLASSIFIERS if c != "none"], default="resnet50", help="ResNet of every variant and of naive")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet, or a torchvision state_dict FILE; offline without a FILE, random-init weights are used (said in the report)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device of every variant (default: %(default)s)")
    p.add_argument("--model", default=None, help="optimized .rtv artifact for the pruned-int8 variant")
    p.add_argument("--cache-dir", default=None, help="cache for the face reference and quantized models (default: ~/.cache/rtvision)")
    p.add_argument("--save-video", action="store_true", help="pipeline runs also write an annotated H.264 video (default: JSONL only)")
    p.add_argument("--no-quality", action="store_true", help="skip face recall/precision and classifier agreement")
    p.add_argument("--eval-images", default=None, metavar="DIR",
                   help="labelled photos (labels.csv: file, class_id): top-1/top-5 of every variant's classifier, "
                        "with its agreement with fp32 and the KL divergence")
    p.add_argument("--streams", type=int_at_least(2), default=None, metavar="N",
                   help="N cameras: the source played N times, each live-paced; one process with N streams against N "
                        "processes, measured in this run (aggregate fps, per-stream fps, drops and p99, memory)")
    p.add_argument("--footage", action="store_true",
                   help="also measure every face variant on clips made from --source (rtvision.benchmark.footage: hard cuts "
                        "between spliced, mirrored and zoomed segments; the same at 640x360; every 2nd and every 3rd frame "
                        "dropped), file mode, one run each: face recall against each clip's own full-resolution reference, "
                        "detections per 100 frames, fps. The clips are written once under the cache dir")
    p.add_argument("--no-startup", action="store_true",
                   help="skip the start-up runs (fresh processes: time to the first result, memory above the import baseline)")
    p.add_argument("--out", default=None, help="write the full report as JSON")
    p.add_argument("--md", default=None, help="write the Markdown report")
    p.add_argument("--plot", default=None, help="write a PNG: throughput per variant, live latency distribution, RSS over time")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    return p


# -- setup ---------------------------------------------------------------------------------------

def resolve_weights(arch: str, weights: str) -> tuple[str, str, dict]:
    """(network, weights, description) every variant and the naive loop use: trained weights,
    with the run's own rule when ImageNet weights of ``arch`` cannot be had (MobileNetV2, whose
    weights ship offline; said in the report). Raises ModelError / UsageError up front."""
    from .models import zoo

    said: list[str] = []
    try:
        choice = zoo.choose_weights(arch, weights, said.append)
    except zoo.WeightsUnavailable as exc:
        raise UsageError(f"{exc}; the bench needs trained weights: pass --weights FILE") from None
    for msg in said:
        log.warning(msg)
    kind = "imagenet" if zoo.is_imagenet(choice.weights) else "file"
    note = f"{choice.arch}: " + (f"ImageNet ({choice.weights_id.removeprefix('imagenet:')})" if kind == "imagenet"
                                 else f"state_dict file `{choice.weights}` ({choice.weights_id[:15]}…)")
    if said:
        note += f" (**fallback**: {arch}'s ImageNet weights unavailable here)"
    return choice.arch, choice.weights, {"arg": weights, "kind": kind, "arch": choice.arch, "asked": arch,
                                         "fallback": bool(said), "note": note}


def source_facts(path: str) -> dict:
    from .sources import FileSource

    src = FileSource(path)
    info = src.open()
    src.close()
    return {"path": redact_url(path), "fps": info.fps, "resolution_wh": list(info.resolution_wh), "frame_count": info.frame_count}


def report_arguments(args: argparse.Namespace) -> dict:
    """The plain-valued arguments as the report records them, URL secrets masked."""
    return {k: redact_url(v) if isinstance(v, str) else v for k, v in vars(args).items()
            if isinstance(v, (str, int, float, bool, type(None)))}


def variant_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    out = [NAIVE]
    for n in names:
        if n not in out:
            out.append(n)
    return out


# -- the run -------------------------------------------------------------------------------------

def check_bench_outputs(args: argparse.Namespace) -> None:
    """Before any measurement: ``--out``, ``--md`` and ``--plot`` can be written, are files of their
    own, and none of them is an input (the source video, the weights, the artifact, the photos):
    UsageError (exit 2), or OutputError (exit 6) for a folder or an unwritable path."""
    from .outputs import STDOUT, check_not_inputs, check_outputs, check_plot_extension, weights_file

    outputs = {"--out": args.out, "--md": args.md, "--plot": None if args.streams else args.plot}
    if STDOUT in outputs.values():
        raise UsageError("--out, --md and --plot are files; the Markdown report is also printed on standard output")
    check_plot_extension("--plot", outputs["--plot"])
    check_outputs(args.source, outputs)
    check_not_inputs(outputs, {"--weights": weights_file(args.weights),
                               "--model": args.model, "--eval-images": args.eval_images})


def _write_text(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def run_bench(args: argparse.Namespace) -> int:
    check_bench_outputs(args)
    if args.streams:
        return run_streams(args)
    started = time.monotonic()
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    unknown = [n for n in variant_names(args.variants) if n not in VARIANTS]
    if unknown:  # before the weights are resolved (which may try a download)
        raise UsageError(f"unknown variant{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(VARIANTS)}")
    naive_frames = args.naive_frames or max(args.frames, NAIVE_MIN_FRAMES)
    if args.warmup >= min(args.frames, naive_frames):
        raise UsageError(f"--warmup {args.warmup} leaves nothing to measure (frames {args.frames}, naive frames {naive_frames})")
    modes = (["throughput"] if not args.live_only else []) + (["live"] if (args.live or args.live_only or args.soak) else [])
    source = source_facts(args.source)
    fps = source["fps"] or 25.0
    file_frames = source["frame_count"] or args.frames
    arch, weights, weights_info = resolve_weights(args.classifier, args.weights)
    eval_set = read_labelled_images(args.eval_images) if args.eval_images else None
    ctx = BenchContext(args.source, arch, weights, args.device, args.model, args.cache_dir)
    plans = [plan_variant(n, ctx) for n in variant_names(args.variants)]
    fingerprint = machine_fingerprint()
    models = {}
    for plan in plans:  # every model before any measurement: an unavailable variant fails fast
        log.info("building %s", plan.name)
        if plan.is_naive:
            from .models.build import resolve_device

            models[plan.name] = NaiveLoop(arch, weights, str(resolve_device(args.device)))
        else:
            models[plan.name] = build_variant_models(plan, ctx)
    soak_frames = int(round(args.soak * 60 * fps)) if args.soak else None
    same_live = live_duplicates(plans)
    runs: dict[tuple[str, str], list[dict]] = {}
    first_rec = {}
    for rep in range(args.repeat):
        for mode in modes:
            live = mode == "live"
            for plan in plans:
                if live and same_live.get(plan.name):
                    continue  # the same configuration as an earlier variant in live mode: not run twice
                # The naive live run is paced by the source (its length costs the same time
                # whatever the loop's speed): it reads --frames, like the variants.
                if plan.is_naive:
                    n = args.frames if live else naive_frames
                else:
                    n = soak_frames if live and soak_frames else args.frames
                desc = None if args.no_progress else f"{plan.name} {mode} {rep + 1}/{args.repeat}"
                if plan.is_naive:
                    stats, rec = models[plan.name].run(args.source, n, live, args.warmup, desc)
                else:
                    stats, rec = run_pipeline(plan, models[plan.name], args.source, n, live, args.warmup, args.save_video, desc,
                                              keep_faces=not args.no_quality)
                stats["repeat"] = rep
                stats["frames_asked"] = n
                runs.setdefault((plan.name, mode), []).append(stats)
                if rep == 0:
                    first_rec[(plan.name, mode)] = rec
                else:
                    del rec
    quality, ref_info = ({}, None)
    if not args.no_quality:
        quality, ref_info = measure_quality(args, arch, plans, models, first_rec, file_frames, weights)
    footage = measure_footage(args, plans, models) if args.footage else None
    accuracy = measure_accuracy(arch, weights, plans, models, eval_set) if eval_set is not None else None
    startup = measure_startup(args, ctx, plans) if not args.no_startup else None
    variants = []
    for plan in plans:
        m = models[plan.name]
        v = {
            "name": plan.name,
            "description": plan.description,
            "classifier": f"{arch} fp32 torch (textbook transforms)" if plan.is_naive else m.classifier_variant,
            "faces": "facenet-mtcnn full res" if plan.is_naive else m.face_mode,
            "batch": plan.batch or "auto (4 file, 1 live)",
            "config": dataclasses.asdict(plan.model) if plan.model is not None else None,
            "warnings": [] if plan.is_naive else list(m.warnings),
            "quality": quality.get(plan.name),
        }
        for mode in ("throughput", "live"):
            r = runs.get((plan.name, mode))
            v[mode] = {"runs": r, "summary": aggregate(r)} if r else None
        if same_live.get(plan.name) and "live" in modes:
            v["live_same_as"] = same_live[plan.name]
        if accuracy is not None and plan.name in accuracy["variants"]:
            v["accuracy"] = accuracy["variants"][plan.name]
        if startup is not None and plan.name in startup:
            v["startup"] = startup[plan.name]
        variants.append(v)
    add_ratios(variants)
    report = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": created,
        "arguments": report_arguments(args),
        "machine": fingerprint,
        "source": source,
        "weights": weights_info,
        "settings": {
            "frames": args.frames, "naive_frames": naive_frames, "warmup": args.warmup, "repeat": args.repeat,
            "modes": modes, "soak_minutes": args.soak, "soak_frames": soak_frames, "classifier": args.classifier,
            "device": args.device, "variants": [p.name for p in plans],
            "sink": "JSON Lines per result through the Runner's sink (temp file)" + (" + annotated H.264 video" if args.save_video else "")
            + "; naive: its own JSON line per frame",
            "process": "one process, variants interleaved (repeat → mode → variant), models built once",
        },
        "reference": ref_info,
        "eval": {k: v for k, v in accuracy.items() if k != "variants"} if accuracy is not None else None,
        "footage": footage,
        "variants": variants,
        "notes": _notes(args, weights_info, modes),
        "wall_s": time.monotonic() - started,
    }
    md = render_markdown(report)
    print(md)
    if args.out:
        write_json(report, args.out)
    if args.md:
        _write_text(args.md, md)
    if args.plot:
        series = {k: {"latency_ms": [r.latency_ms for r in rec.records[args.warmup:]],
                      "rss": [(t, mb) for _, t, mb in rec.rss]} for k, rec in first_rec.items()}
        write_plot(report, series, args.plot)
    return 0


def measure_quality(args, arch: str, plans: list[VariantPlan], models: dict, recs: dict, file_frames: int,
                    weights: str) -> tuple[dict, dict]:
    """Quality per variant and mode from the first repeat's records."""
    from .models.build import resolve_device

    face_frames: set[int] = set()
    label_frames: set[int] = set()
    for (name, _mode), rec in recs.items():
        ids = qmod.measured_file_frames(rec, args.warmup, file_frames)
        if any(r.faces_xyxy is not None for r in rec.records):
            face_frames |= ids
        if any(r.top1 is not None for r in rec.records):
            label_frames |= ids
    device = resolve_device(args.device)
    fp32 = qmod.FP32Labels(arch, weights, device) if label_frames else None
    ref_faces, ref_top1, info = qmod.compute_references(
        args.source, face_frames, label_frames, args.cache_dir, fp32, device, progress=not args.no_progress
    )
    out: dict = {}
    for (name, mode), rec in recs.items():
        out.setdefault(name, {})[mode] = qmod.run_quality(rec, args.warmup, file_frames, ref_faces, ref_top1)
    return out, info


def run_streams(args: argparse.Namespace) -> int:
    """``--streams N`` (see ``rtvision.benchmark.streams``)."""
    from .benchmark.fingerprint import fingerprint_line
    from .benchmark.streams import render_markdown as streams_markdown
    from .benchmark.streams import run_streams_bench

    source_facts(args.source)  # a file that opens, or a one-line error now
    report = run_streams_bench(args)
    report["machine"] = machine_fingerprint()
    md = streams_markdown(report, fingerprint_line(report["machine"]))
    print(md)
    if args.out:
        write_json(report, args.out)
    if args.md:
        _write_text(args.md, md)
    return 0


def measure_footage(args, plans: list[VariantPlan], models: dict) -> dict:
    """Every face variant on the clips generated from the source (``--footage``), file mode, one
    run each over the whole clip: face quality against the clip's own reference (cached like the
    source's), detections per 100 frames, fps. A clip of another frame size gets the face side
    built for that size, as a run on it would (the defaults follow the frame size); the
    classifier is reused."""
    import dataclasses as dc

    from .benchmark.footage import make_footage
    from .config import default_cache_dir
    from .faces.stage import build_face_setup

    folder = Path(args.cache_dir or default_cache_dir()) / "footage"
    clips = make_footage(args.source, folder)
    face_plans = [p for p in plans if not p.is_naive and models[p.name].faces is not None]
    out: dict = {"folder": str(next(iter(clips.values())).path.parent), "clips": {}}
    device = None
    for clip in clips.values():
        facts = source_facts(str(clip.path))
        n = facts["frame_count"] or len(clip.source_frames)
        wh = tuple(facts["resolution_wh"])
        recs = {}
        for plan in face_plans:
            m = models[plan.name]
            device = m.device
            if plan.build is None and wh != tuple(source_facts(args.source)["resolution_wh"]):
                cfg = plan.model
                m = dc.replace(m, faces=build_face_setup(
                    cfg.faces, m.device, cfg.face_scale, cfg.face_stride, cfg.min_face, resolution_wh=wh,
                    backend=cfg.face_backend, small_face_every=cfg.small_face_every, background=cfg.face_background))
            desc = None if args.no_progress else f"{plan.name} on {clip.name}"
            recs[plan.name] = run_pipeline(plan, m, str(clip.path), n, False, args.warmup, False, desc, keep_faces=True)
        frames = set()
        for _, rec in recs.values():
            frames |= qmod.measured_file_frames(rec, args.warmup, n)
        ref, _, _ = qmod.compute_references(str(clip.path), frames, set(), args.cache_dir, None, device or torch.device("cpu"),
                                            progress=not args.no_progress)
        variants = {}
        for name, (stats, rec) in recs.items():
            q = qmod.run_quality(rec, args.warmup, n, ref, {})
            preds = {r.index % n: r.faces_xyxy for r in rec.records[args.warmup:] if r.faces_xyxy is not None}
            variants[name] = {"frames": q["frames"], "faces": q["faces"], "fps": stats.get("fps"),
                              "face_detections_per_100": stats.get("face_detections_per_100"),
                              "misses_tall": qmod.miss_causes(ref, preds, clip.cuts)}
        out["clips"][clip.name] = {"path": str(clip.path), "frames": n, "resolution_wh": list(wh), "cuts": clip.cuts,
                                   "variants": variants}
    return out


def live_duplicates(plans: list[VariantPlan]) -> dict[str, str]:
    """{variant: the earlier variant it is identical to in live mode}. Live sources never overlap
    the models or look ahead, run batch 1 by default and, detecting in line
    (``face_background=False``), look for the smallest faces on every detection, so variants
    that differ only there are one configuration live: measured once."""
    seen: dict[tuple, str] = {}
    out = {}
    for plan in plans:
        if plan.model is None:
            continue
        cfg = plan.model
        every = cfg.small_face_every if cfg.face_background or cfg.small_face_every not in (None, 1) else None
        key = (dataclasses.replace(cfg, small_face_every=every), plan.batch or 1, plan.build)
        if key in seen:
            out[plan.name] = seen[key]
        else:
            seen[key] = plan.name
    return out


def measure_accuracy(arch: str, weights: str, plans: list[VariantPlan], models: dict, eval_set) -> dict:
    """Top-1/top-5 of every variant's classifier against the labels, its agreement with fp32
    (same network and weights, torch) and the KL divergence; variants that run the same
    classifier are measured once."""
    from .backends.torch_runtime import TorchRuntime
    from .models.zoo import build_network

    net = build_network(arch, weights)
    ref = run_all(TorchRuntime(net.module, net.preprocess, torch.device("cpu"), "fp32"), eval_set.images)
    out = {"folder": str(eval_set.root), "images": len(eval_set), "fp32": topk_accuracy(ref, eval_set.class_ids),
           "informative": informative(ref), "variants": {}}
    by_classifier: dict[str, dict] = {}
    for plan in plans:
        clf = None if plan.is_naive else models[plan.name].classifier
        if clf is None:
            continue
        if clf.variant not in by_classifier:
            logits = run_all(clf.runtime, eval_set.images)
            by_classifier[clf.variant] = {"classifier": clf.variant, **topk_accuracy(logits, eval_set.class_ids),
                                          "agreement": agreement(ref, logits)}
        out["variants"][plan.name] = by_classifier[clf.variant]
    return out


def measure_startup(args, ctx: BenchContext, plans: list[VariantPlan]) -> dict:
    """Fresh ``rtvision`` processes on the source with ``--max-frames 1``, twice per classifier
    setting (the first fills the model cache, the second is the measured start), interleaved:
    time from process start to the first result, and peak memory above the import baseline."""
    import json
    import subprocess
    import sys

    chosen = [p for p in plans if p.name in STARTUP_VARIANTS and p.model is not None and p.build is None]
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rtvision-startup-") as tmp:
        for attempt in ("first", "second"):
            for plan in chosen:
                cfg = plan.model
                summary = Path(tmp) / f"{plan.name}-{attempt}.json"
                argv = [sys.executable, "-m", "rtvision", "--source", args.source, "--headless", "--max-frames", "1",
                        "--no-progress", "--classifier", cfg.classifier, "--device", cfg.device,
                        "--backend", cfg.backend, "--precision", cfg.precision, "--faces", cfg.faces,
                        "--summary-json", str(summary)]
                # an artifact holds its own weights (--weights with --model is a usage error)
                argv += ["--model", cfg.model_path] if cfg.model_path else ["--weights", cfg.weights]
                if cfg.cache_dir:
                    argv += ["--cache-dir", cfg.cache_dir]
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
                if proc.returncode != 0 or not summary.is_file():
                    log.warning("start-up run of %s failed (exit %d): %s", plan.name, proc.returncode,
                                (proc.stderr.strip().splitlines() or ["no output"])[-1])
                    continue
                s = json.loads(summary.read_text())
                out.setdefault(plan.name, {})[attempt] = {k: s.get(k) for k in (
                    "first_result_s", "import_baseline_mb", "peak_rss_mb", "peak_above_baseline_mb", "classifier")}
    return out


def _notes(args, weights_info: dict, modes: list[str]) -> list[str]:
    notes = []
    if weights_info.get("fallback"):
        notes.append(f"{weights_info['asked']}'s ImageNet weights are not available on this machine: every variant and the naive "
                     f"loop run {weights_info['arch']} instead, as a plain run does (its weights ship offline).")
    notes.append("naive = the textbook loop (one Python thread, batch 1, no buffer, torchvision transforms, MTCNN full res); "
                 "ratios to naive are measured in this same run and process.")
    if "live" in modes:
        notes.append("Live latency = frame due (when a camera would have taken it) → result written, for the pipeline as for "
                     "the naive loop, so a capture that falls behind counts; naive live takes the newest due frame "
                     "(missed frames are decoded and dropped) like a camera. Variants that are one configuration in live "
                     "mode (overlap and lookahead are file-only, and so is the smallest-face cadence with the detections in line) "
                     "are measured once.")
    notes.append("Per-stage times of batched stages are divided over the frames of the batch; queue_wait is the worker "
                 "waiting for frames (idle time, not work). In file mode the face detections of the batches ahead run on "
                 "helper threads (on the CPU one per batch ahead, at most one per core) while the worker runs the "
                 "classifier (no-overlap: one after the other), so the stages add up to more than the time per frame; "
                 "on the CPU the threads then share the cores, so each stage takes longer.")
    notes.append("Peak RSS (process so far) only grows within one process; use the sampled per-run peak and the slope.")
    notes.append("Face quality: reference = facenet-pytorch MTCNN(keep_all=True), default thresholds, full resolution, every "
                 "frame, RGB; recall/precision at IoU ≥ 0.5, overall and for faces ≥ 40 px tall.")
    return notes
