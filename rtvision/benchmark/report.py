"""The bench report: aggregation over repeats, Markdown tables, JSON and the plot."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .fingerprint import fingerprint_line
from .record import STAGES

SCHEMA_VERSION = 1


# -- aggregation ---------------------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def aggregate(runs: list[dict]) -> dict[str, dict[str, float]]:
    """min / median / max over repeats of every numeric statistic (dotted keys, NaNs ignored)."""
    flat = [_flatten(r) for r in runs]
    keys = sorted({k for f in flat for k in f})
    out = {}
    for k in keys:
        vals = [f[k] for f in flat if k in f and not math.isnan(f[k])]
        if vals:
            out[k] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}
        else:
            out[k] = {"min": float("nan"), "median": float("nan"), "max": float("nan"), "n": 0}
    return out


def med(agg: dict | None, key: str) -> float:
    if not agg or key not in agg:
        return float("nan")
    return agg[key]["median"]


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) and b > 0 else float("nan")


def add_ratios(variants: list[dict]) -> None:
    """Each variant's ratio to naive: throughput fps (higher is better), live p50/p99 latency
    (naive / variant, higher is better) and live frames processed per second."""
    naive = next((v for v in variants if v["name"] == "naive"), None)
    for v in variants:
        for mode in ("throughput", "live"):
            m = v.get(mode)
            n = naive.get(mode) if naive else None
            if not m:
                continue
            r = {}
            if n:
                r["fps"] = _ratio(med(m["summary"], "fps"), med(n["summary"], "fps"))
                if mode == "live":
                    r["latency_p50"] = _ratio(med(n["summary"], "latency_ms.p50"), med(m["summary"], "latency_ms.p50"))
                    r["latency_p99"] = _ratio(med(n["summary"], "latency_ms.p99"), med(m["summary"], "latency_ms.p99"))
            m["ratio_to_naive"] = r


# -- Markdown ------------------------------------------------------------------------------------

def f(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.{nd}f}"


def _mmm(agg: dict, key: str, nd: int = 1) -> str:
    """'median (min–max)' when there are several repeats, else the one value."""
    if key not in agg:
        return "n/a"
    a = agg[key]
    if a["n"] > 1:
        return f"{f(a['median'], nd)} ({f(a['min'], nd)}–{f(a['max'], nd)})"
    return f(a["median"], nd)


def _drift(a: dict, repeats: int = 1) -> str:
    ratio = med(a, "drift.ratio")
    if math.isnan(ratio):
        return "n/a (too few results)"
    out = f"{f(med(a, 'drift.first_p99_ms'), 0)} → {f(med(a, 'drift.last_p99_ms'), 0)} ({f(ratio, 2)}x)"
    lo, hi = med(a, "drift.window_p99_min_ms"), med(a, "drift.window_p99_max_ms")
    if not (math.isnan(lo) or math.isnan(hi)):
        out += f"; every window {f(lo, 0)}–{f(hi, 0)}"
    n = a["drift.ratio"]["n"]
    if n < repeats:  # the other runs had too few results for it
        out += f" (from {n} of {repeats} runs)"
    return out


def _drops(runs: list[dict]) -> str:
    """The dropped frames and their share, both of the run with the median drop count (medians
    taken apart may pair a count and a share that no run had)."""
    runs = sorted((r for r in runs if "dropped_measured" in r), key=lambda r: r["dropped_measured"])
    if not runs:
        return "n/a"
    r = runs[(len(runs) - 1) // 2]
    return f"{f(r['dropped_measured'], 0)} ({f(100 * r['drop_share_measured'], 1)}%)"


def _detections(v: dict, a: dict) -> str:
    """Face detections per 100 processed frames (the naive loop detects on every frame)."""
    if v["name"] == "naive":
        return "100"
    return _mmm(a, "face_detections_per_100", 1) if "face_detections_per_100" in a else "—"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_markdown(report: dict) -> str:
    s, src = report["settings"], report["source"]
    lines = [
        "# rtvision bench",
        "",
        f"- **Machine**: {fingerprint_line(report['machine'])}",
        f"- **Source**: `{src['path']}` ({src['resolution_wh'][0]}x{src['resolution_wh'][1]}, {f(src['fps'])} fps, "
        f"{src['frame_count']} frames in the file; looped by reopening when more are asked)",
        f"- **Frames**: {s['frames']} per pipeline run, {s['naive_frames']} for naive (throughput); warmup {s['warmup']} results excluded; "
        f"repeat {s['repeat']} (interleaved, one process){'; soak ' + f(s['soak_minutes']) + ' min' if s.get('soak_minutes') else ''}",
        f"- **Classifier weights**: {report['weights']['note']}",
        f"- **Result written**: {s['sink']}",
        f"- **Started** {report['created_utc']} UTC, took {f(report.get('wall_s'), 0)} s",
    ]
    variants = report["variants"]
    if any(v.get("throughput") for v in variants):
        lines += ["", "## Throughput (file, lossless, decode → result written)", ""]
        rows = []
        for v in variants:
            m = v.get("throughput")
            if not m:
                continue
            a = m["summary"]
            rows.append([v["name"], v["classifier"], v["faces"], str(v["batch"]), f(med(a, "frames_measured"), 0),
                         _mmm(a, "fps", 2), _mmm(a, "latency_ms.p50", 0), f(m["ratio_to_naive"].get("fps"), 2) + "x",
                         _detections(v, a)])
        lines += _table(["variant", "classifier", "faces", "batch", "frames measured", "fps", "latency p50 ms", "vs naive",
                         "face detections / 100 frames"], rows)
    if any(v.get("live") for v in variants):
        lines += ["", f"## Live (file paced at {f(src['fps'])} fps, drops allowed; latency = frame due → result written)", ""]
        rows = []
        for v in variants:
            m = v.get("live")
            if v.get("live_same_as"):
                rows.append([v["name"], f"= {v['live_same_as']} (one configuration in live mode)"] + [""] * 9)
                continue
            if not m:
                continue
            a = m["summary"]
            rows.append([
                v["name"], f(med(a, "frames_measured"), 0),
                _drops(m["runs"]),
                _mmm(a, "fps", 1), _mmm(a, "latency_ms.p50", 0), _mmm(a, "latency_ms.p95", 0), _mmm(a, "latency_ms.p99", 0),
                _mmm(a, "latency_ms.max", 0),
                _drift(a, len(m["runs"])),
                f(m["ratio_to_naive"].get("latency_p50"), 2) + "x",
                _detections(v, a),
            ])
        lines += _table(["variant", "processed", "dropped (share)", "fps", "p50 ms", "p95 ms", "p99 ms", "max ms",
                         "p99 first → last (ratio)", "p50 latency: naive / variant", "face detections / 100 frames"], rows)
        basis = next((r["drift"]["basis"] for v in variants if v.get("live") for r in v["live"]["runs"] if "drift" in r), None)
        if basis and basis != "too few results":
            lines.append(f"\nDrift: p99 {basis}; target: last within 20% of first (≤ 1.20x)."
                         + (" \"every window\": the lowest and highest p99 among the run's consecutive windows of that"
                            " length, the spread any one window shows." if basis.startswith("first vs last") and "s" in basis else ""))
    lines += ["", "## Time per frame by stage (ms, median over repeats)", ""]
    rows = []
    for v in variants:
        for mode in ("throughput", "live"):
            m = v.get(mode)
            if m:
                rows.append([v["name"], mode] + [f(med(m["summary"], f"stage_ms.{k}"), 2) for k in STAGES])
    lines += _table(["variant", "mode", *STAGES], rows)
    lines += ["", "## Memory (MB)", ""]
    rows = []
    for v in variants:
        for mode in ("throughput", "live"):
            m = v.get(mode)
            if m:
                a = m["summary"]
                row = [v["name"], mode, f(med(a, "rss_start_mb"), 0), f(med(a, "rss_end_mb"), 0),
                       f(med(a, "rss_peak_run_mb"), 0), f(med(a, "process_peak_rss_mb"), 0), f(med(a, "rss_slope_mb_per_1000"), 1),
                       f(med(a, "rss_slope_late_mb_per_1000"), 1)]
                if "gpu_peak_allocated_mb" in a:
                    row += [f(med(a, "gpu_peak_allocated_mb"), 0), f(med(a, "gpu_peak_reserved_mb"), 0)]
                rows.append(row)
    header = ["variant", "mode", "RSS start", "RSS end", "peak RSS (run, sampled)", "peak RSS (process so far)", "slope MB/1000 frames",
              "slope, last 3/4 of the run"]
    if any(len(r) > len(header) for r in rows):
        header += ["GPU peak allocated", "GPU peak reserved"]
    lines += _table(header, rows)
    lines += ["", "## Quality (vs MTCNN full resolution, IoU ≥ 0.5; classifier vs fp32 same weights)", ""]
    rows = []
    for v in variants:
        for mode, q in (v.get("quality") or {}).items():
            fq = q.get("faces")
            o = fq["overall"] if fq else {}
            t = fq["tall"] if fq else {}
            rows.append([v["name"], mode, str(q["frames"]), f(o.get("recall"), 3), f(o.get("precision"), 3),
                         f(t.get("recall"), 3), f(t.get("precision"), 3), f(o.get("mean_iou"), 3),
                         f"{o.get('ref_found', 'n/a')}/{o.get('ref_boxes', 'n/a')}", f(q.get("top1_agreement_fp32"), 3)])
    if rows:
        lines += _table(["variant", "mode", "frames", "face recall", "face precision", "recall ≥40px", "precision ≥40px",
                         "mean IoU (matched)", "found/reference", "top-1 agreement"], rows)
    else:
        lines.append("(quality not measured: --no-quality)")
    fo = report.get("footage")
    if fo:
        lines += ["", "## Faces on generated footage (file mode; each clip against its own full-resolution reference)", ""]
        lines.append(f"Clips made from the source by `rtvision.benchmark.footage` (in `{fo['folder']}`): "
                     + "; ".join(f"`{name}` {c['frames']} frames {c['resolution_wh'][0]}x{c['resolution_wh'][1]}"
                                 + (f", cuts before frames {', '.join(map(str, c['cuts']))}" if c.get("cuts") else "")
                                 for name, c in fo["clips"].items()) + ".")
        lines.append("")
        rows = []
        for name, c in fo["clips"].items():
            for vname, r in c["variants"].items():
                fq = r.get("faces") or {}
                o, t = fq.get("overall", {}), fq.get("tall", {})
                m = r.get("misses_tall") or {}
                causes = "/".join(str(m.get(c, "-")) for c in ("after_cut", "new", "drift", "lost")) if m else "n/a"
                rows.append([name, vname, str(r["frames"]), f(t.get("recall"), 3), f(o.get("recall"), 3), f(o.get("precision"), 3),
                             f(t.get("precision"), 3), f"{o.get('ref_found', 'n/a')}/{o.get('ref_boxes', 'n/a')}",
                             f(r.get("face_detections_per_100"), 1), f(r.get("fps"), 1), causes])
        lines += _table(["clip", "variant", "frames", "recall ≥40px", "recall", "precision", "precision ≥40px", "found/reference",
                         "face detections / 100 frames", "fps", "missed ≥40px: after a cut / new / drift / lost"], rows)
        lines += ["", "Missed faces >= 40 px by cause (`rtvision.benchmark.quality.miss_causes`): within 2 frames after a "
                      "cut; *new*, not in the reference's previous frame (it has just become detectable: entered, turned, "
                      "unoccluded); *drift*, a box overlaps it below IoU 0.5; *lost*, no box overlaps it."]
    ev = report.get("eval")
    if ev:
        lines += ["", f"## Classifier accuracy against labels ({ev['images']} photos in `{ev['folder']}`)", ""]
        rows = [["fp32 reference", "torch fp32", f(ev["fp32"]["top1"], 3), f(ev["fp32"]["top5"], 3), "—", "—"]]
        for v in variants:
            a = v.get("accuracy")
            if a:
                rows.append([v["name"], a["classifier"], f(a["top1"], 3), f(a["top5"], 3), f(a["agreement"]["top1"], 3),
                             f(a["agreement"]["kl"], 4)])
        lines += _table(["variant", "classifier", "top-1", "top-5", "agrees with fp32 (top-1)", "KL to fp32"], rows)
        if not ev.get("informative", True):
            lines.append("\nAgreement is UNINFORMATIVE here: fp32 answers fewer than 10 distinct classes on these photos.")
    if any(v.get("startup") for v in variants):
        lines += ["", "## Start-up (a fresh `rtvision --max-frames 1` process per run; the first run fills the model cache)", ""]
        rows = []
        for v in variants:
            st = v.get("startup") or {}
            first, second = st.get("first") or {}, st.get("second") or {}
            if not second:
                continue
            rows.append([v["name"], str(second.get("classifier")), f(first.get("first_result_s"), 2), f(second.get("first_result_s"), 2),
                         f(second.get("import_baseline_mb"), 0), f(second.get("peak_rss_mb"), 0), f(second.get("peak_above_baseline_mb"), 0)])
        lines += _table(["variant", "classifier", "first result s (1st run)", "first result s (cached)", "import baseline MB",
                         "peak RSS MB", "peak above baseline MB"], rows)
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


# -- JSON and plot -------------------------------------------------------------------------------

def _clean(o):
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        try:
            o = o.item()
        except (ValueError, AttributeError):
            return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json(report: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_clean(report), indent=2, allow_nan=False), encoding="utf-8")


def write_plot(report: dict, series: dict, path: str | Path) -> None:
    """Throughput per variant, live latency distribution, RSS over time (matplotlib, Agg)."""
    from matplotlib.figure import (
        Figure,  # no pyplot: Agg renders the PNG, no global backend change
    )

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    names, meds, lo, hi = [], [], [], []
    for v in report["variants"]:
        m = v.get("throughput")
        if m and "fps" in m["summary"]:
            a = m["summary"]["fps"]
            names.append(v["name"])
            meds.append(a["median"])
            lo.append(a["median"] - a["min"])
            hi.append(a["max"] - a["median"])
    if names:
        ax1.bar(names, meds, yerr=[lo, hi], capsize=4, color="tab:blue")
        for i, val in enumerate(meds):
            ax1.annotate(f"{val:.2f}", (i, val), ha="center", va="bottom")
    else:
        ax1.text(0.5, 0.5, "no throughput run (--live-only)", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_title("Throughput (file), frames/s")
    ax1.set_ylabel("fps (median, min–max)")
    lat = {k[0]: s["latency_ms"] for k, s in series.items() if k[1] == "live" and s["latency_ms"]}
    if lat:
        ax2.boxplot(list(lat.values()), tick_labels=list(lat.keys()), showfliers=True)
        ax2.set_yscale("log")
    else:
        ax2.text(0.5, 0.5, "no live run (--live)", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_title("Live latency distribution (ms)")
    for ax in (ax1, ax2):  # long variant names side by side
        ax.tick_params(axis="x", labelrotation=25, labelsize=8)
    for (name, mode), s in series.items():
        if s["rss"]:
            t0 = s["rss"][0][0]
            ax3.plot([t - t0 for t, _ in s["rss"]], [mb for _, mb in s["rss"]], label=f"{name} {mode}")
    ax3.set_title("RSS over time (first repeat)")
    ax3.set_xlabel("s since run start")
    ax3.set_ylabel("MB")
    ax3.legend(fontsize=7)
    fig.suptitle(f"rtvision bench: {Path(report['source']['path']).name}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=90)
