"""One measured run of the real pipeline (Pipeline + Runner), in throughput or live mode.

* Throughput: the file is read losslessly, as fast as the pipeline goes. "Result written" is
  real: the Runner writes every result to a JSON Lines file in a temporary folder (and, with
  ``save_video``, an annotated H.264 video), so the sink's cost is in the numbers.
* Live: the file is paced at its own fps (``SourceConfig.realtime``); the ring buffer drops the
  oldest frames when the worker falls behind, as with a camera.

Files shorter than the frames asked for are looped: at the end the file is closed and reopened
(:class:`LoopingFileSource`), so every frame is really decoded and the reopen cost lands in the
decode time of the first frame of each loop. Frame indices keep counting across loops.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from ..config import RunConfig, SourceConfig
from ..errors import EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM, Interrupted
from ..models.build import Models
from ..pipeline import Pipeline
from ..runner import Runner
from ..sources import LoopingFileSource
from ..stats import gpu_memory_mb, peak_rss_mb
from ..types import Result
from .record import ResultRecord, RunRecording, summarize
from .variants import VariantPlan

log = logging.getLogger(__name__)


def run_pipeline(
    plan: VariantPlan,
    models: Models,
    source: str,
    frames: int,
    live: bool,
    warmup: int,
    save_video: bool = False,
    progress_desc: str | None = None,
    keep_faces: bool = True,
) -> tuple[dict, RunRecording]:
    """Run ``plan`` on ``frames`` frames of ``source``; returns (statistics, recording).
    ``keep_faces``: keep every result's face boxes (for face quality)."""
    import torch

    if torch.cuda.is_available() and models.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rec = RunRecording(capacity=frames, keep_faces=keep_faces, rss_every_s=0.25 if frames <= 3000 else 1.0)
    with tempfile.TemporaryDirectory(prefix="rtvision-bench-") as tmp:
        cfg = RunConfig(
            source=SourceConfig(spec=source, realtime=live, max_frames=frames),
            model=plan.model,
            batch=plan.batch,
            overlap=plan.overlap,
            lookahead=plan.lookahead,
            results_path=str(Path(tmp) / "results.jsonl"),
            save_path=str(Path(tmp) / "annotated.mp4") if save_video else None,
            headless=True,
            progress=False,
        )
        src = LoopingFileSource(source, frames)
        pipeline = Pipeline(cfg, models=models, source=src)
        bar = _bar(progress_desc, frames)
        rec.started_at = time.monotonic()
        pipeline.start()
        runner = Runner(cfg, pipeline)
        stage_totals = dict(runner.stats.stage_ms_total)
        batch = {"done_at": None, "n": -1}  # results of one batch share the worker's done_at

        def listen(r: Result) -> None:
            now = time.monotonic()
            totals = runner.stats.stage_ms_total
            stage = dict(r.timings_ms)
            stage["annotate"] = totals["annotate"] - stage_totals["annotate"]
            stage["sink"] = totals["sink"] - stage_totals["sink"]
            stage_totals.update(totals)
            if r.done_at != batch["done_at"]:
                batch.update(done_at=r.done_at, n=batch["n"] + 1)
            rec.add(
                ResultRecord(
                    index=r.frame.index,
                    written_at=now,
                    latency_ms=(now - r.frame.captured_at) * 1000.0,
                    stage_ms=stage,
                    faces_xyxy=r.faces.xyxy.copy() if keep_faces and models.faces is not None else None,
                    top1=int(r.labels.class_ids[0]) if models.classifier is not None and len(r.labels) else None,
                    batch=batch["n"],
                )
            )
            if bar is not None:
                bar.update(r.frame.index + 1 - bar.n)

        runner.listeners.append(listen)
        try:
            with pipeline:  # the owner: stops and joins the run's threads, closes its face stage
                runner.run()
            summary = runner.build_summary()
        finally:
            if bar is not None:
                bar.close()
    if runner.error is not None:
        raise runner.error
    if summary["exit_code"] in (EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM):  # a stop signal: stop the bench, not just this run
        raise Interrupted(summary["exit_code"])
    stats = summarize(rec, warmup, live, summary["frames_read"], summary["frames_dropped"])
    stats["process_peak_rss_mb"] = peak_rss_mb()
    stats["runner_summary"] = {k: summary[k] for k in ("frames_read", "frames_processed", "frames_dropped", "drop_share", "throughput_fps", "elapsed_s")}
    stats["loops"] = src.loops
    fc = summary.get("face_counts")
    if fc:  # the whole run's (warm-up included): the schedule is a property of the run
        stats["face_detections_per_100"] = fc["detections_per_100"]
    stats.update(gpu_memory_mb())
    return stats, rec


def _bar(desc: str | None, total: int):
    if desc is None:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False, dynamic_ncols=True, disable=None)
