"""``rtvision bench``: a short real bench end to end, live drops with a slowed-down model, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import shared_file
import torch

from rtvision.benchmark import quality as qmod
from rtvision.benchmark.variants import VARIANTS, VariantPlan, VariantSpec
from rtvision.cli import main
from rtvision.config import ModelConfig
from rtvision.models.build import Models
from rtvision.types import Labels


@pytest.fixture(scope="module")
def small_faces_clip(faces_video, tmp_path_factory):
    """The first 8 frames of faces_1080p.mp4 at 640x360 (real faces, cheap MTCNN), 25 fps."""
    path = tmp_path_factory.mktemp("clips") / "faces_360p.mp4"
    cap = cv2.VideoCapture(str(faces_video))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 360))
    for _ in range(8):
        ok, img = cap.read()
        assert ok
        writer.write(cv2.resize(img, (640, 360), interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return path


def _table_rows(md: str, heading: str) -> list[list[str]]:
    """Cells of the Markdown table under ``## heading…`` (header row first, separator skipped)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## " + heading))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_short_bench_writes_json_markdown_and_plot(small_faces_clip, tmp_path, capsys):
    """A trained network (MobileNetV2, weights offline) so that accuracy and agreement can fail:
    40 labelled photos as --eval-images."""
    out, md_path, png = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "bench.png"
    cache = tmp_path / "cache"
    photos = shared_file("imagenet-sample/labels.csv").parent
    rows = (photos / "labels.csv").read_text().splitlines()
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "labels.csv").write_text(
        "\n".join([rows[0]] + [f"{photos / r.split(',')[0]},{r.split(',', 1)[1]}" for r in rows[1:501:12]]) + "\n")
    rc = main([
        "bench", "--source", str(small_faces_clip), "--frames", "6", "--naive-frames", "60", "--warmup", "1",
        "--classifier", "mobilenet_v2", "--device", "cpu", "--eval-images", str(tmp_path / "eval"),
        "--variants", "default,fp32", "--cache-dir", str(cache), "--no-progress", "--footage",
        "--out", str(out), "--md", str(md_path), "--plot", str(png),
    ])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    report = json.loads(out.read_text())
    assert report["schema_version"] == 1
    for key in ("machine", "source", "weights", "settings", "variants", "reference", "notes", "eval"):
        assert key in report, key
    m = report["machine"]
    for key in ("cpu_model", "logical_cpus", "physical_cores", "isa", "torch", "torchvision", "opencv",
                "facenet_pytorch", "torch_num_threads", "torch_num_interop_threads"):
        assert key in m, key
    assert "avx2" in m["isa"]
    assert report["weights"]["kind"] == "imagenet" and report["weights"]["arch"] == "mobilenet_v2"
    assert [v["name"] for v in report["variants"]] == ["naive", "default", "fp32"]
    by = {v["name"]: v for v in report["variants"]}
    assert by["naive"]["throughput"]["runs"][0]["frames_measured"] == 59  # 60 frames, 1 warmup
    # 6 frames in batches of 4, warmup 1: the measurement starts after the warm-up's whole batch
    assert by["default"]["throughput"]["runs"][0]["frames_measured"] == 2
    assert by["default"]["throughput"]["runs"][0]["warmup_results"] == 4
    for v in report["variants"]:
        tp = v["throughput"]
        assert tp["summary"]["fps"]["median"] > 0
        assert set(tp["runs"][0]["stage_ms"]) == {"decode", "queue_wait", "preprocess", "classifier", "faces", "annotate", "sink"}
        assert tp["runs"][0]["stage_ms"]["faces"] > 0
        assert tp["runs"][0]["rss_end_mb"] > 0 and tp["runs"][0]["process_peak_rss_mb"] > 0
        assert tp["ratio_to_naive"]["fps"] > 0
        if v["name"] != "naive":  # the whole run's schedule: 6 frames, the first detected
            assert 100 / 6 <= tp["runs"][0]["face_detections_per_100"] <= 100
        assert v["live"] is None
        o = v["quality"]["throughput"]["faces"]["overall"]
        assert o["ref_boxes"] > 0 and o["recall"] == pytest.approx(o["ref_found"] / o["ref_boxes"])
        assert "tall" in v["quality"]["throughput"]["faces"]
    assert by["naive"]["throughput"]["ratio_to_naive"]["fps"] == pytest.approx(1.0)
    # the naive loop runs the reference detector (MTCNN full resolution): same boxes
    assert by["naive"]["quality"]["throughput"]["faces"]["overall"]["recall"] == pytest.approx(1.0)
    assert by["naive"]["quality"]["throughput"]["faces"]["overall"]["precision"] == pytest.approx(1.0)
    # classifier accuracy against the labels: a trained network, int8 close to fp32
    ev = report["eval"]
    assert ev["images"] == 42 and ev["informative"] and ev["fp32"]["top1"] >= 0.6
    fp32, default = by["fp32"]["accuracy"], by["default"]["accuracy"]
    assert fp32["classifier"] == "mobilenet_v2 fp32 openvino cpu" and default["classifier"] == "mobilenet_v2 int8 openvino cpu"
    assert fp32["agreement"]["top1"] >= 0.97 and abs(fp32["top1"] - ev["fp32"]["top1"]) <= 0.03
    assert default["top1"] >= ev["fp32"]["top1"] - 0.1 and default["agreement"]["top1"] >= 0.85
    # start-up: fresh processes, the second one from the model cache
    for name in ("default", "fp32"):
        st = by[name]["startup"]["second"]
        assert 0 < st["first_result_s"] < 120 and st["import_baseline_mb"] > 100
        assert 0 < st["peak_above_baseline_mb"] < st["peak_rss_mb"]
    assert by["default"]["config"]["faces"] == "fast"  # what plain `rtvision` runs
    assert by["default"]["batch"] == "auto (4 file, 1 live)"  # as plain rtvision: the pipeline decides

    md = md_path.read_text()
    assert md == printed.rstrip("\n") + "\n" or md.strip() in printed
    assert md.startswith("# rtvision bench")
    tp_rows = _table_rows(md, "Throughput")
    assert tp_rows[0][:2] == ["variant", "classifier"] and "vs naive" in tp_rows[0]
    assert [r[0] for r in tp_rows[1:]] == ["naive", "default", "fp32"]
    assert tp_rows[1][tp_rows[0].index("vs naive")] == "1.00x"
    assert tp_rows[0][-1] == "face detections / 100 frames" and tp_rows[1][-1] == "100"
    stage_rows = _table_rows(md, "Time per frame by stage")
    assert stage_rows[0] == ["variant", "mode", "decode", "queue_wait", "preprocess", "classifier", "faces", "annotate", "sink"]
    assert len(stage_rows) == 4
    assert len(_table_rows(md, "Memory")) == 4
    q_rows = _table_rows(md, "Quality")
    assert "face recall" in q_rows[0] and "recall ≥40px" in q_rows[0] and "top-1 agreement" in q_rows[0]
    assert "Machine" in md and "avx" in md

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --footage: every face variant on the clips made from the source, each against its own reference
    fo = report["footage"]
    assert list(fo["clips"]) == ["cuts", "cuts-360p", "skip2", "skip3"]
    assert str(cache) in fo["folder"]
    cuts = fo["clips"]["cuts"]
    assert cuts["resolution_wh"] == [640, 360] and cuts["cuts"] and cuts["frames"] > max(cuts["cuts"])
    for clip in fo["clips"].values():
        assert set(clip["variants"]) == {"default", "fp32"}
        for r in clip["variants"].values():
            assert r["faces"]["overall"]["ref_boxes"] > 0 and 0 <= r["faces"]["overall"]["recall"] <= 1
            assert 0 < r["face_detections_per_100"] <= 100
            # every missed face >= 40 px has one cause, and the misses are what recall left out
            m, tall = r["misses_tall"], r["faces"]["tall"]
            assert m["faces"] == tall["ref_boxes"] and m["missed"] == tall["ref_boxes"] - tall["ref_found"]
            assert sum(m[c] for c in ("after_cut", "new", "drift", "lost")) == m["missed"]
    f_rows = _table_rows(md, "Faces on generated footage")
    assert f_rows[0][:3] == ["clip", "variant", "frames"] and len(f_rows) == 1 + 4 * 2

    # the face reference is cached on disk and reused
    cache_file = qmod.reference_cache_path(str(small_faces_clip), str(cache))
    assert cache_file.is_file()
    assert report["reference"]["faces_computed_frames"] == 8  # the naive loop's 60 frames loop the 8-frame clip: all of them
    faces, _, info = qmod.compute_references(str(small_faces_clip), {1, 2, 3}, set(), str(cache), None, torch.device("cpu"), progress=False)
    assert info["faces_computed_frames"] == 0 and {1, 2, 3} <= set(faces)


class SlowClassifier:
    """Satisfies the classifier stage; sleeps so a paced source must drop frames."""

    variant = "slow-fake"

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def prepare(self, images_bgr):
        return torch.zeros(len(images_bgr), 3)

    def logits(self, batch):
        time.sleep(self.sleep_s)
        return torch.zeros(batch.shape[0], 10)

    def set_num_threads(self, n):
        self.threads_set = n

    def top_k(self, logits, k):
        n = logits.shape[0]
        return [Labels(np.array([0]), np.array([1.0], np.float32), ["class_0"]) for _ in range(n)]


def test_live_mode_reports_drops_when_the_worker_is_slow(index_clip, resnet18_ckpt, tmp_path, monkeypatch):
    def slow_factory(ctx):
        def build(_ctx):
            return Models(torch.device("cpu"), SlowClassifier(0.25), None)

        return VariantPlan("slow", ModelConfig(classifier="resnet18", weights=ctx.weights, faces="off"), 1,
                           "test: classifier sleeps 250 ms per batch", build=build)

    monkeypatch.setitem(VARIANTS, "slow", VariantSpec("slow", slow_factory, "test"))
    out = tmp_path / "live.json"
    rc = main([
        "bench", "--source", str(index_clip), "--frames", "40", "--warmup", "1",
        "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--device", "cpu", "--no-startup",
        "--variants", "slow", "--live-only", "--no-quality", "--no-progress", "--out", str(out),
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    slow = next(v for v in report["variants"] if v["name"] == "slow")
    assert slow["throughput"] is None
    run = slow["live"]["runs"][0]
    # 40 frames at 25 fps (1.6 s) into a worker that takes 250 ms a frame: most must drop
    diag = json.dumps(run["runner_summary"])
    assert run["frames_read"] == 40, diag
    assert run["frames_dropped"] > 0, diag
    assert run["drop_share"] > 0.1, diag
    assert run["dropped_measured"] > 0, diag
    assert run["frames_measured"] + run["warmup_results"] + run["frames_dropped"] == 40, diag
    assert run["latency_ms"]["p50"] >= 250
    assert {"basis", "first_p99_ms", "last_p99_ms", "ratio", "within_20pct"} <= set(run["drift"])
    assert slow["quality"] is None
    # the naive loop's live run is paced too: it reads --frames (40), not --naive-frames (60)
    naive = next(v for v in report["variants"] if v["name"] == "naive")["live"]["runs"][0]
    assert naive["frames_asked"] == 40 and naive["frames_read"] == 40


def test_sigterm_stops_the_whole_bench(faces_video, resnet18_ckpt, tmp_path):
    """SIGTERM during a bench, wherever it lands (model building, the naive loop, a pipeline
    run): exit 143 with one line, no report of the cut run, promptly."""
    out = tmp_path / "b.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvision", "bench", "--source", str(faces_video), "--frames", "20000",
         "--variants", "faces-off", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--device", "cpu",
         "--warmup", "2", "--no-quality", "--no-startup", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(12)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 15
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and not out.exists()


def test_unknown_and_unavailable_variants_are_clear_usage_errors(index_clip, resnet18_ckpt, capsys):
    base = ["bench", "--source", str(index_clip), "--frames", "2", "--classifier", "resnet18",
            "--weights", str(resnet18_ckpt), "--warmup", "0", "--no-progress"]
    assert main(base + ["--variants", "nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert main(base + ["--variants", "pruned-int8"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(base + ["--warmup", "5"]) == 2
    assert "leaves nothing to measure" in capsys.readouterr().err


def test_run_recording_does_not_grow_the_heap_it_measures():
    """A soak's recorder keeps tens of thousands of results while it measures RSS: with its
    capacity given it allocates nothing per result, and the records read back unchanged."""
    import tracemalloc

    from rtvision.benchmark.record import STAGES, ResultRecord, RunRecording

    n = 20_000
    rec = RunRecording(capacity=n, keep_faces=False, rss_every_s=1e9)
    box = np.zeros((3, 4), np.float32)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(n):
            stages = {k: float(i % 7 + j) for j, k in enumerate(STAGES)}
            rec.add(ResultRecord(i, 100.0 + i / 25, 30.0 + i % 11, stages, box, i % 1000))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (after - before) / (n / 1000) < 20_000, f"recorder grew {(after - before) / 1e6:.2f} MB for {n} results"
    out = rec.records
    assert len(out) == len(rec) == n
    r = out[12_345]
    assert (r.index, r.top1, r.faces_xyxy) == (12_345, 345, None)
    assert r.latency_ms == 30.0 + 12_345 % 11 and r.written_at == 100.0 + 12_345 / 25
    assert r.stage_ms == {k: float(12_345 % 7 + j) for j, k in enumerate(STAGES)}
    # more results than the capacity: it grows, and keeps faces when asked
    small = RunRecording(capacity=16, keep_faces=True)
    for i in range(40):
        small.add(ResultRecord(i, float(i), 1.0, {}, box + i, None))
    assert [r.index for r in small.records] == list(range(40))
    assert small.records[39].top1 is None and float(small.records[39].faces_xyxy[0, 0]) == 39.0


def test_latency_drift_reports_every_window():
    """Soak drift: p99 of the first and last minute, and of every whole minute in between (the
    spread one window shows on a shared machine), from the records' own timestamps."""
    from rtvision.benchmark.record import ResultRecord, latency_drift

    # 5 minutes at 10 results/s; latency 100 ms, 200 ms in the fourth minute, 120 in the last
    recs = [ResultRecord(i, i / 10, 100.0 + 100.0 * (180 <= i / 10 < 240) + 20.0 * (i / 10 >= 240), {}, None, None)
            for i in range(3000)]
    d = latency_drift(recs)
    assert d["basis"] == "first vs last 60 s"
    assert d["ratio"] == pytest.approx(1.2, abs=0.01) and d["within_20pct"] is not None
    assert [round(v) for v in d["window_p99_ms"]] == [100, 100, 100, 200, 120]
    assert (round(d["window_p99_min_ms"]), round(d["window_p99_max_ms"])) == (100, 200)
    short = latency_drift(recs[:900])  # under two minutes: quarters, no windows
    assert short["basis"] == "first vs last quarter of results" and "window_p99_ms" not in short


def test_fps_counts_whole_batches_after_the_warmup():
    """Results of a batch are written together: 4 frames every 0.2 s is 20 fps, and a warm-up
    that ends inside a batch must not count that batch's other frames in no time."""
    from rtvision.benchmark.record import ResultRecord, RunRecording, summarize

    rec = RunRecording(capacity=64, keep_faces=False)
    for i in range(40):
        b = i // 4
        rec.add(ResultRecord(i, 10.0 + 0.2 * (b + 1) + 1e-6 * (i % 4), 50.0, {}, None, None, batch=b))
    s = summarize(rec, warmup=5, live=False)
    assert s["warmup_results"] == 8 and s["frames_measured"] == 32
    assert s["fps"] == pytest.approx(20.0, rel=1e-3)
    # without batch numbers (batch 1 loops), the warm-up is taken as given
    one = RunRecording(capacity=64, keep_faces=False)
    for i in range(40):
        one.add(ResultRecord(i, 10.0 + 0.05 * (i + 1), 50.0, {}, None, None))
    s1 = summarize(one, warmup=5, live=False)
    assert s1["warmup_results"] == 5 and s1["fps"] == pytest.approx(20.0, rel=1e-3)


def test_live_drops_are_counted_over_the_window_fps_is_measured_over():
    """A loop that keeps every 10th frame of a 25 fps camera (0.4 s a frame), 5 warm-up results:
    fps is measured from the last warm-up result to the last result (2.8 s, 70 frames due), so
    the drops are 70 - 7 = 63 (the 9 frames right after the warm-up too), 90%; and the run's
    peak RSS is never below its start."""
    from rtvision.benchmark.record import ResultRecord, RunRecording, summarize

    rec = RunRecording(capacity=32, keep_faces=False)
    rec.started_at = 0.0
    for k in range(12):
        rec.add(ResultRecord(index=10 * k, written_at=0.4 * (k + 1), latency_ms=400, stage_ms={}, faces_xyxy=None,
                             top1=None, batch=10 * k))
    s = summarize(rec, warmup=5, live=True, frames_read=111, frames_dropped_total=99)
    assert s["frames_measured"] == 7 and s["elapsed_s"] == pytest.approx(2.8) and s["fps"] == pytest.approx(2.5)
    assert s["dropped_measured"] == 63 and s["drop_share_measured"] == pytest.approx(0.9)
    assert s["rss_peak_run_mb"] >= s["rss_start_mb"]


def test_the_live_table_pairs_a_runs_own_drops_and_says_how_many_runs_had_a_drift():
    """Drops: the count and the share of one run, the run with the median count (medians taken
    apart paired 51 with another run's 87.7%); drift: from how many of the runs, when fewer."""
    from rtvision.benchmark.report import _drift, _drops, aggregate

    runs = [{"dropped_measured": 52, "drop_share_measured": 0.881},
            {"dropped_measured": 50, "drop_share_measured": 0.877},
            {"dropped_measured": 51, "drop_share_measured": 0.864,
             "drift": {"ratio": 1.53, "first_p99_ms": 390.0, "last_p99_ms": 598.0}}]
    assert _drops(runs) == "51 (86.4%)"
    assert _drift(aggregate(runs), len(runs)).endswith("(1.53x) (from 1 of 3 runs)")


def test_live_mode_measures_once_only_what_is_one_configuration_live():
    """Overlap and lookahead are file-only, so those variants are the default live; the
    smallest-face cadence applies to live sources detecting in the background (the default),
    so small-faces-always is measured live, and it is file-only with the detections in line."""
    from rtvision.bench import live_duplicates
    from rtvision.benchmark.variants import BenchContext, _derived, plan_variant

    ctx = BenchContext(source="clip.mp4", classifier="mobilenet_v2")
    plans = [plan_variant(n, ctx) for n in ("default", "no-overlap", "lookahead1", "small-faces-always", "face-inline")]
    inline_always = _derived("inline-always", "", face_background=False, small_face_every=1)(ctx)
    same = live_duplicates(plans + [inline_always])
    assert same == {"no-overlap": "default", "lookahead1": "default", "inline-always": "face-inline"}, same
