"""``rtvision bench --streams N``: N cameras in one process against N processes, same machine,
same run.

The source is played N times, each copy paced at its own fps (``--realtime``: N live cameras).
Both arms run as fresh ``rtvision`` processes, so they pay the same start-up and their memory
is measured the same way (each process's own peak, ``VmHWM``):

* one process, N streams (``--source s0=CLIP ... --source sN=CLIP``): one worker batching
  across the streams, the networks loaded once;
* the same with ``--detect-workers 1``: one thread runs the background face detections of all
  the streams (the default is one per core), leaving the rest of the CPU to tracking;
* N processes, one stream each, started together.

A third arm, **one failing stream**: the same one process, but its last stream is a network
camera on 127.0.0.1 (``rtvision.benchmark.camera``: the clip served as a live MPEG-TS stream)
that goes offline after a third of its frames; its reconnects fail and the stream is removed.
Reported: the failing stream's state and error, the exit code (7), the wall time (nothing
hangs), and each other stream's fps against its own fps in an all-healthy one-process arm of the same length.

Every stream reads ``--frames`` frames; a clip shorter than that starts over (``--loop``) in the
healthy arms, and the failing arm reads at most the clip's own frames (``--loop`` does not apply
to its network camera). Reported per arm: aggregate processed fps (the sum of the
streams' processed frames over their own elapsed time), each stream's fps, drops and p99
latency, the spread between the slowest and the fastest stream, and the peak RSS (summed over
the processes); and the ratios of one process to N processes. ``--repeat K`` alternates the arms.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import EXIT_STREAM_FAILED

log = logging.getLogger(__name__)


def _common_flags(args, frames: int, loop: bool = False) -> list[str]:
    flags = ["--headless", "--no-progress", "--realtime", "--max-frames", str(frames),
             "--classifier", args.classifier, "--weights", args.weights, "--device", args.device]
    if loop:
        flags.append("--loop")
    if args.cache_dir:
        flags += ["--cache-dir", args.cache_dir]
    return flags


def clip_frames(path: str) -> int:
    """Frames OpenCV decodes from the clip (the arms' streams start over after these)."""
    import cv2

    cap = cv2.VideoCapture(path)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def _streams_of(summary: dict, name: str = "s0") -> list[dict]:
    """Per-stream rows from a single- or a multi-stream summary (``name``: a single stream's)."""
    if "streams" in summary:
        return summary["streams"]
    return [{"stream": name, "frames_read": summary["frames_read"], "frames_processed": summary["frames_processed"],
             "frames_dropped": summary["frames_dropped"], "drop_share": summary["drop_share"],
             "throughput_fps": summary["throughput_fps"], "latency_ms": summary["latency_ms"], "state": "ended",
             "face_counts": summary.get("face_counts")}]


def _read_boxes(paths: list[Path], names: list[str]) -> dict[str, dict[int, list]]:
    """{stream: {frame: boxes}} from the arm's JSONL files (a file without a ``stream`` key is the
    stream of the same position in ``names``)."""
    out: dict[str, dict[int, list]] = {}
    for k, path in enumerate(paths):
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                name = row.get("stream", names[k] if k < len(names) else f"s{k}")
                out.setdefault(name, {})[int(row["frame"])] = [f["xyxy"] for f in row.get("faces", [])]
    return out


def _arm(name: str, argvs: list[list[str]], tmp: Path, expect_rc: int = 0, names: list[str] | None = None) -> dict:
    procs = []
    results = []
    t0 = time.monotonic()
    for k, argv in enumerate(argvs):
        out = tmp / f"{name}-{k}.json"
        results.append(tmp / f"{name}-{k}.jsonl")
        results[-1].unlink(missing_ok=True)
        procs.append((subprocess.Popen([sys.executable, "-m", "rtvision", *argv, "--summary-json", str(out),
                                        "--results", str(results[-1])],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out))
    summaries = []
    for proc, out in procs:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode != expect_rc or not out.is_file():
            lines = err.strip().splitlines() or ["no output"]
            if proc.returncode < 0:  # killed by a signal: a native crash, its stack (faulthandler) in the log
                log.error("%s: an rtvision process died of signal %d; the end of its stderr:\n%s", name, -proc.returncode,
                          "\n".join(lines[-40:]))
            raise RuntimeError(f"{name}: an rtvision process failed (exit {proc.returncode}): {lines[-1]}")
        summaries.append(json.loads(out.read_text()))
    streams = [row for k, s in enumerate(summaries) for row in _streams_of(s, f"s{k}")]
    fps = [r["throughput_fps"] for r in streams]
    return {
        "processes": len(argvs),
        "exit_codes": [proc.returncode for proc, _ in procs],
        "wall_s": time.monotonic() - t0,
        "aggregate_fps": sum(fps),
        "streams": [{k: r.get(k) for k in ("stream", "frames_read", "frames_processed", "frames_dropped", "drop_share",
                                           "throughput_fps", "state", "error")} | {"p99_ms": (r.get("latency_ms") or {}).get("p99")}
                    for r in streams],
        "slowest_over_fastest": min(fps) / max(fps) if fps and max(fps) > 0 else None,
        "peak_rss_mb": sum(s["peak_rss_mb"] for s in summaries),
        # CPU cores the arm kept busy (each process's CPU time from its first result to its last,
        # over that time; start-up excluded), summed over its processes
        "cpu_cores": _sum_or_none(s.get("cpu_cores") for s in summaries),
        "classifier": summaries[0].get("classifier"),
        "detections_per_100": [((r.get("face_counts") or {}).get("detections_per_100")) for r in streams],
        "boxes": _read_boxes(results, names or [f"s{k}" for k in range(len(argvs))]),
    }


def run_streams_bench(args) -> dict:
    n = args.streams
    clip = clip_frames(args.source)
    if clip < 1:
        raise RuntimeError(f"no frame decoded from {args.source}")
    flags = _common_flags(args, args.frames, loop=args.frames > clip)
    one = [[*(a for k in range(n) for a in ("--source", f"s{k}={args.source}")), *flags]]
    one_shared1 = [[*one[0], "--detect-workers", "1"]]
    many = [["--source", args.source, *flags] for _ in range(n)]
    runs: dict[str, list[dict]] = {"one_process": [], "one_process_detect1": [], "processes": []}
    failing: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rtvision-streams-bench-") as tmp:
        for rep in range(args.repeat):
            order = (("one_process", one), ("one_process_detect1", one_shared1), ("processes", many))
            order = order if rep % 2 == 0 else order[::-1]
            for name, argvs in order:
                log.info("streams bench: %s, repeat %d", name, rep + 1)
                runs[name].append(_arm(name, argvs, Path(tmp)))
            # The failing arm reads the clip once (its network camera cannot start over): its
            # healthy streams are compared with an all-healthy arm of that same length, since a
            # longer run spreads its start over more frames and reads a higher rate.
            healthy = runs["one_process"][-1]
            if args.frames > clip:
                log.info("streams bench: all healthy, %d frames, repeat %d", clip, rep + 1)
                short = [[*(a for k in range(n) for a in ("--source", f"s{k}={args.source}")), *_common_flags(args, clip)]]
                healthy = _arm("one_process_short", short, Path(tmp))
            log.info("streams bench: one failing stream, repeat %d", rep + 1)
            failing.append(_failing_arm(args, min(args.frames, clip), Path(tmp), healthy))
    _add_recall([*runs["one_process"], *runs["one_process_detect1"], *runs["processes"], *failing], args, clip)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("aggregate_fps", "peak_rss_mb", "slowest_over_fastest")}
           for name, rs in runs.items()}
    for name, rs in runs.items():
        med[name]["cpu_cores"] = _median(r["cpu_cores"] for r in rs)
        med[name]["recall_tall"] = _median(r["recall"]["tall"] for r in rs)
        med[name]["recall_overall"] = _median(r["recall"]["overall"] for r in rs)
    return {
        "failing": failing,
        "failing_median": {
            "others_fps_ratio_min": statistics.median(f["others_fps_ratio_min"] for f in failing),
            "wall_s": statistics.median(f["wall_s"] for f in failing),
        },
        "streams": n,
        "frames_per_stream": args.frames,
        "clip_frames": clip,
        "failing_frames_per_stream": min(args.frames, clip),
        "source": args.source,
        "repeat": args.repeat,
        "runs": runs,
        "median": med,
        "ratios": {
            "aggregate_fps_one_over_many": med["one_process"]["aggregate_fps"] / med["processes"]["aggregate_fps"],
            "peak_rss_one_over_many": med["one_process"]["peak_rss_mb"] / med["processes"]["peak_rss_mb"],
            "aggregate_fps_detect1_over_many": med["one_process_detect1"]["aggregate_fps"] / med["processes"]["aggregate_fps"],
            "peak_rss_detect1_over_many": med["one_process_detect1"]["peak_rss_mb"] / med["processes"]["peak_rss_mb"],
        },
    }


def _add_recall(arms: list[dict], args, clip: int) -> None:
    """Face recall of every arm on the frames it processed (each stream's, and all streams'
    pooled), against the full-resolution every-frame MTCNN reference of the source clip (cached,
    as the main bench's); the arms' raw boxes are dropped from the report afterwards."""
    import torch

    from ..metrics import MIN_FACE_HEIGHT_PX, BoxCounts, frame_counts
    from .quality import compute_references

    frames = {i % clip for arm in arms for boxes in arm["boxes"].values() for i in boxes}  # looped: the clip's frame
    ref, _, _ = compute_references(args.source, frames, set(), args.cache_dir, None, torch.device("cpu"), progress=False)
    for arm in arms:
        pooled = {"tall": BoxCounts(), "overall": BoxCounts()}
        per: dict[str, dict] = {}
        for name, boxes in arm.pop("boxes").items():
            c = {"tall": BoxCounts(), "overall": BoxCounts()}
            for i, pred in boxes.items():
                if i % clip not in ref:
                    continue
                c["tall"] += frame_counts(ref[i % clip], pred, min_height=MIN_FACE_HEIGHT_PX)
                c["overall"] += frame_counts(ref[i % clip], pred)
            for k in c:
                pooled[k] += c[k]
            per[name] = {k: _recall(c[k]) for k in c}
        arm["recall"] = {k: _recall(pooled[k]) for k in pooled} | {"per_stream": per}
        for row in arm["streams"]:
            row["recall_tall"] = per.get(row["stream"], {}).get("tall")


def _recall(c) -> float | None:
    return c.recall if c.ref else None  # None (JSON null), never NaN: no reference face in those frames


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


FAILING_RECONNECTS = 2  # the failing camera's reconnect attempts (they fail: it is offline)
FAILING_AT = 1 / 3  # of the stream's frames


def _failing_arm(args, frames: int, tmp: Path, healthy: dict) -> dict:
    """One process, N streams of ``frames`` frames, the last one a network camera that goes
    offline (see the module docstring); ``healthy``: an all-healthy one-process arm of the
    same repeat and the same length, which the other streams' fps are compared with."""
    from .camera import OfflineCamera, streamable_clip

    n = args.streams
    flags = _common_flags(args, frames)
    offline_after = max(1, round(frames * FAILING_AT))
    with OfflineCamera(streamable_clip(args.source, tmp), offline_after_frames=offline_after) as cam:
        argv = [*(a for k in range(n - 1) for a in ("--source", f"s{k}={args.source}")),
                "--source", f"s{n - 1}={cam.url}", *flags, "--reconnect", str(FAILING_RECONNECTS)]
        arm = _arm("one_failing", [argv], tmp, expect_rc=EXIT_STREAM_FAILED)
        sent = cam.packets_sent
    before = {s["stream"]: s["throughput_fps"] for s in healthy["streams"]}
    others = [s for s in arm["streams"] if s["stream"] != f"s{n - 1}"]
    ratios = {s["stream"]: s["throughput_fps"] / before[s["stream"]] for s in others if before.get(s["stream"])}
    bad = next(s for s in arm["streams"] if s["stream"] == f"s{n - 1}")
    return arm | {
        "failing_stream": bad["stream"],
        "failing_state": bad["state"],
        "failing_error": bad.get("error"),
        "offline_after_frames": offline_after,
        "camera_frames_sent": sent,
        "others_completed": all(s["state"] == "ended" and s["frames_read"] == frames for s in others),
        "others_fps_ratio": ratios,
        "healthy_frames_read": {s["stream"]: s["frames_read"] for s in healthy["streams"]},  # what they are compared with
        "others_fps_ratio_min": min(ratios.values()) if ratios else None,
    }


def _sum_or_none(values) -> float | None:
    """The sum, or None when any value is missing (NaN or None)."""
    vals = list(values)
    return None if any(v is None or v != v for v in vals) else float(sum(vals))


def _cell(v, fmt: str) -> str:
    return "n/a" if v is None or v != v else format(v, fmt)


def render_markdown(report: dict, machine_line: str) -> str:
    r = report
    lines = [
        f"# rtvision bench --streams {r['streams']}",
        "",
        f"- **Machine**: {machine_line}",
        f"- **Source**: `{r['source']}` played {r['streams']} times, each copy paced at its fps (live), "
        f"{r['frames_per_stream']} frames per stream"
        + (f" (the {r['clip_frames']}-frame clip starting over, `--loop`; the failing arm "
           f"{r['failing_frames_per_stream']})" if r.get("clip_frames") and r["frames_per_stream"] > r["clip_frames"] else "")
        + f"; repeat {r['repeat']} (arms alternated)",
        f"- **Classifier**: {r['runs']['one_process'][0]['classifier']}",
        "",
        "| arm | processes | aggregate fps (median) | slowest / fastest stream | peak RSS MB (sum) | CPU cores busy (sum) "
        "| face recall >= 40 px | overall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("one_process", "one process, all streams"),
                        ("one_process_detect1", "one process, all streams, `--detect-workers 1`"),
                        ("processes", "one process per stream")):
        m = r["median"][name]
        lines.append(f"| {label} | {r['runs'][name][0]['processes']} | {m['aggregate_fps']:.1f} | "
                     f"{m['slowest_over_fastest']:.2f} | {m['peak_rss_mb']:.0f} | {_cell(m.get('cpu_cores'), '.2f')} | "
                     f"{_cell(m['recall_tall'], '.3f')} | "
                     f"{_cell(m['recall_overall'], '.3f')} |")
    q = r["ratios"]
    lines += ["", f"One process against {r['streams']} processes: aggregate fps x{q['aggregate_fps_one_over_many']:.2f}, "
                  f"peak RSS x{q['peak_rss_one_over_many']:.2f}; with `--detect-workers 1` (one thread detects for all "
                  f"the streams): aggregate fps x{q['aggregate_fps_detect1_over_many']:.2f}, peak RSS "
                  f"x{q['peak_rss_detect1_over_many']:.2f}. Face recall: on the frames each arm processed, against "
                  "the clip's full-resolution every-frame MTCNN reference. CPU cores busy: each process's CPU time "
                  "(all its threads) from its first result to its last, over that time, summed over the arm's "
                  "processes.", "", "Per stream (first repeat):", "",
              "| arm | stream | read | processed | dropped | fps | p99 ms | detections / 100 frames | recall >= 40 px |",
              "|---|---|---|---|---|---|---|---|---|"]

    for name in ("one_process", "one_process_detect1", "processes"):
        arm = r["runs"][name][0]
        for s, det in zip(arm["streams"], arm["detections_per_100"]):
            lines.append(f"| {name} | {s['stream']} | {s['frames_read']} | {s['frames_processed']} | {s['frames_dropped']} | "
                         f"{s['throughput_fps']:.1f} | {_cell(s['p99_ms'], '.0f')} | {_cell(det, '.1f')} | "
                         f"{_cell(s.get('recall_tall'), '.3f')} |")
    f = r["failing"][0]
    lines += ["", f"**One failing stream** (first repeat): stream {f['failing_stream']} is a network camera on 127.0.0.1 "
                  f"(the clip as live MPEG-TS over HTTP) that goes offline after sending {f['camera_frames_sent']} frames; "
                  f"{FAILING_RECONNECTS} reconnects. Exit code "
                  f"{f['exit_codes'][0]}, wall {f['wall_s']:.1f} s; the stream ended `{f['failing_state']}`: "
                  f"{f['failing_error']}. The other streams "
                  + ("read all their frames" if f["others_completed"] else "did NOT all read their frames")
                  + ", at x" + ", x".join(f"{v:.2f}" for v in f["others_fps_ratio"].values())
                  + " of their fps in an all-healthy one-process arm of the same length (median over repeats of the lowest: "
                  f"x{r['failing_median']['others_fps_ratio_min']:.2f}).", "",
              "| stream | read | processed | dropped | fps | state |", "|---|---|---|---|---|---|"]
    for s in f["streams"]:
        lines.append(f"| {s['stream']} | {s['frames_read']} | {s['frames_processed']} | {s['frames_dropped']} | "
                     f"{s['throughput_fps']:.1f} | {s['state']} |")
    return "\n".join(lines) + "\n"
