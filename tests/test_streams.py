"""Many streams in one process: fair batching across streams, per-stream order and state,
isolation of a failing stream, outputs with a ``stream`` key and one video per stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import count_frames, decode_index, rtvision_threads
from fakes import FakeClassifier, FakeFaces, fake_models
from faults import Faults, FaultySource

from rtvision.buffer import RingBuffer
from rtvision.config import ModelConfig, RunConfig, SourceConfig
from rtvision.errors import EXIT_STREAM_FAILED, UsageError
from rtvision.streams.engine import FairBatcher, MultiPipeline, Stream
from rtvision.streams.runner import MultiRunner
from rtvision.streams.spec import StreamSpec, stream_specs
from rtvision.types import Frame

pytestmark = pytest.mark.timeout(300)


# -- the stream list ------------------------------------------------------------------------------

def test_stream_names_from_flags_and_files(tmp_path):
    listing = tmp_path / "cams.txt"
    listing.write_text("# the site's cameras\nlobby=rtsp://user:pw@10.0.0.1/s?token=a=b\n\nrtsp://10.0.0.2/x  # no name\n"
                       "webcam:1\n", encoding="utf-8")
    specs = stream_specs(["clip.mp4", "door=clip.mp4", "clip.mp4"], str(listing))
    assert [s.name for s in specs] == ["clip", "door", "clip-2", "lobby", "stream4", "webcam1"]
    assert specs[3].spec == "rtsp://user:pw@10.0.0.1/s?token=a=b" and specs[4].spec == "rtsp://10.0.0.2/x"
    # a URL with '=' and no name prefix stays a URL
    assert stream_specs(["rtsp://h/x?a=b"], None) == [StreamSpec("stream0", "rtsp://h/x?a=b")]
    with pytest.raises(UsageError, match="no source in it"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        stream_specs(None, str(tmp_path / "empty.txt"))


def test_a_stream_entry_with_a_bad_name_is_refused_without_its_source(tmp_path, monkeypatch):
    """A name that is not one ('front door=', 'cam:1=') was taken as part of the source: the
    whole line was opened as a file name, and the multi-stream summary JSON showed it, password
    and all. It is a usage error that names the name only. Quotes around an entry, or around
    the source after a name, are a shell's habit in a list file: taken off."""
    for bad in ("front door=rtsp://admin:SECRETF1@127.0.0.1:9/x", "cam:1=rtsp://u:SECRETS2@127.0.0.1:9/s"):
        with pytest.raises(UsageError, match="stream name") as err:
            stream_specs([bad], None)
        assert "SECRET" not in str(err.value)
    with pytest.raises(UsageError, match="no source after"):
        stream_specs(["cam="], None)
    listing = tmp_path / "cams.txt"
    listing.write_text('"rtsp://u:pw@10.0.0.1/a"\nyard="rtsp://10.0.0.2/b"\n\'c=rtsp://10.0.0.3/c\'\n', encoding="utf-8")
    assert stream_specs(None, str(listing)) == [StreamSpec("stream0", "rtsp://u:pw@10.0.0.1/a"),
                                                StreamSpec("yard", "rtsp://10.0.0.2/b"), StreamSpec("c", "rtsp://10.0.0.3/c")]
    monkeypatch.chdir(tmp_path)
    for name in ("front door=1.mp4", '"quoted.mp4"', "'q.mp4'"):  # an existing file is that file, whatever its name
        (tmp_path / name).write_bytes(b"")
        assert stream_specs([name], None)[0].spec == name
    listing.write_text('"quoted.mp4"\n', encoding="utf-8")
    assert stream_specs(None, str(listing))[0].spec == '"quoted.mp4"'


def test_stream_names_stay_unique_and_inside_the_save_folder():
    """A repeated name gets a suffix no other stream has (results, videos and counters are keyed
    by it: two streams named 'a-2' mixed their frames in one video); a name starting with '.'
    ('..' in --save '{stream}/v.mp4' wrote outside its folder) is refused."""
    assert [s.name for s in stream_specs(["a=x.mp4", "a=x.mp4", "a-2=x.mp4"], None)] == ["a", "a-3", "a-2"]
    assert [s.name for s in stream_specs(["a=x", "a=x", "a=x"], None)] == ["a", "a-2", "a-3"]
    for bad in ("..=clip.mp4", ".hidden=clip.mp4"):
        with pytest.raises(UsageError, match="may not start with"):
            stream_specs([bad], None)
    assert [s.name for s in stream_specs(["/cams/.door.mp4", "..mp4"], None)] == ["door", "stream1"]  # made, not given


def test_a_bad_save_extension_with_several_streams_is_a_usage_error_up_front(tmp_path):
    """--save 'v-{stream}.avi' with two streams: refused before anything loads (exit 2), as with
    one stream, not after start-up with exit 6."""
    proc = _cli(["--source", "a=demo", "--source", "b=demo", "--save", str(tmp_path / "v-{stream}.avi")])
    assert proc.returncode == 2 and "unknown video extension" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


# -- fair batching ----------------------------------------------------------------------------------

def _stream(name: str, n: int) -> Stream:
    buf: RingBuffer[Frame] = RingBuffer(max(1, n), drop_oldest=False)
    img = np.zeros((8, 8, 3), np.uint8)
    for i in range(n):
        buf.put(Frame(i, i / 25, 0.0, img))
    return Stream(name, SourceConfig(name), buffer=buf, state="running")


def test_fair_batcher_shares_batches_and_keeps_each_stream_in_order():
    streams = [_stream("a", 60), _stream("b", 60), _stream("c", 5)]
    batcher = FairBatcher(4)
    taken: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    rounds = 0
    while any(len(s.buffer) for s in streams):
        batch = batcher.take(streams)
        assert 1 <= sum(len(fs) for _, fs in batch) <= 4
        for s, fs in batch:
            taken[s.name] += [f.index for f in fs]
        rounds += 1
        if rounds <= 3:  # while every stream has frames, each is in every batch
            assert {s.name for s, _ in batch} == {"a", "b", "c"}
    assert all(v == sorted(v) for v in taken.values())  # each stream in order
    assert taken == {"a": list(range(60)), "b": list(range(60)), "c": list(range(5))}


def test_fair_batcher_serves_every_waiting_stream_within_streams_over_batch_batches():
    streams = [_stream(n, 100) for n in "abcde"]  # 5 streams, batch 2: 2 of them per batch
    batcher = FairBatcher(2)
    last_seen = {s.name: 0 for s in streams}
    counts = {s.name: 0 for s in streams}
    for k in range(1, 41):
        for s, fs in batcher.take(streams):
            last_seen[s.name] = k
            counts[s.name] += len(fs)
        assert all(k - v < 3 for v in last_seen.values()), (k, last_seen)  # ceil(5 / 2) = 3
    assert set(counts.values()) == {16}  # 80 frames over 40 batches: 16 each


# -- the engine with test sources ------------------------------------------------------------------

def _run(cfg, specs, sources, models=None):
    seen: list = []
    with MultiPipeline(cfg, specs, models=models or fake_models(FakeClassifier(), FakeFaces()), sources=sources) as p:
        runner = MultiRunner(cfg, p)
        runner.listeners.append(seen.append)
        runner.run()
    return runner.build_summary(), seen, p


def test_a_failing_stream_is_removed_and_the_others_finish(tmp_path):
    """One live stream exceeds --max-corrupt mid-run; the two others read to their end, in order,
    with complete outputs; exit code 7 and the summary names the stream and why."""
    cfg = RunConfig(SourceConfig("template", max_corrupt=2), ModelConfig(), progress=False,
                    results_path=str(tmp_path / "r.jsonl"))
    sources = {
        "ok1": FaultySource(40, live=False),
        "ok2": FaultySource(30, live=False),
        "bad": FaultySource(10**6, fps=50, faults=Faults(corrupt_at={10, 11, 12, 13})),
    }
    specs = [StreamSpec(n, n) for n in sources]
    s, seen, p = _run(cfg, specs, sources)
    by = {r["stream"]: r for r in s["streams"]}
    assert by["ok1"]["state"] == "ended" and by["ok1"]["frames_processed"] == 40
    assert by["ok2"]["state"] == "ended" and by["ok2"]["frames_processed"] == 30
    assert by["bad"]["state"] == "failed" and "corrupt" in by["bad"]["error"]
    assert s["failed_streams"] == ["bad"] and s["exit_code"] == EXIT_STREAM_FAILED
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    for name, n in (("ok1", 40), ("ok2", 30)):
        frames = [r["frame"] for r in rows if r["stream"] == name]
        assert frames == list(range(n))
    for r in seen:  # each result is the frame it claims to be
        assert decode_index(r.frame.image) == r.frame.index
    assert not rtvision_threads() and p.stuck_threads == []


def test_a_stop_closes_every_streams_source_and_marks_each_stopped():
    """Three endless cameras, stopped after 30 results (Ctrl-C, a closed window): every stream's
    source is closed and each stream reads "stopped", not only the last one; nothing is left
    running."""
    cfg = RunConfig(SourceConfig("template"), ModelConfig(), progress=False)
    sources = {n: FaultySource(10**6, fps=100) for n in ("a", "b", "c")}
    specs = [StreamSpec(n, n) for n in sources]
    seen = 0
    with MultiPipeline(cfg, specs, models=fake_models(FakeClassifier(), FakeFaces()), sources=sources) as p:
        for _ in p.results():
            seen += 1
            if seen == 30:
                p.request_stop()
        assert all(src.connected for src in sources.values())  # open until the owner stops
    assert [(s.name, s.state) for s in p.streams] == [("a", "stopped"), ("b", "stopped"), ("c", "stopped")]
    assert not any(src.connected for src in sources.values())
    assert not rtvision_threads() and p.stuck_threads == []


def test_a_stopped_multi_stream_runs_counters_add_up_per_stream():
    """Two cameras faster than a slow worker, stopped after 20 results: for each stream, what was
    read is what was processed, dropped, or left unfinished at the stop."""
    cfg = RunConfig(SourceConfig("template"), ModelConfig(), batch=2, progress=False)
    sources = {n: FaultySource(10**6, fps=100) for n in ("a", "b")}
    with MultiPipeline(cfg, [StreamSpec(n, n) for n in sources], models=fake_models(FakeClassifier(sleep_s=0.02)),
                       sources=sources) as p:
        runner = MultiRunner(cfg, p)
        seen = []

        def stop_at_20(r):
            seen.append(r)
            if len(seen) == 20:
                runner.request_stop()

        runner.listeners.append(stop_at_20)
        runner.run()
    rows = runner.build_summary()["streams"]
    for row in rows:
        assert row["frames_read"] == row["frames_processed"] + row["frames_dropped"] + row["frames_unfinished"], row
        assert row["frames_dropped"] > 0 and row["state"] == "stopped"
    assert sum(r["frames_processed"] for r in rows) >= 20


def test_a_stream_that_ends_while_the_others_run_is_ended_not_stopped():
    """A 20-frame file next to an endless one, stopped after 200 results of the long one: the
    short stream is "ended" (all its frames processed, in order) as soon as the worker sees it,
    not "stopped" by the later stop."""
    cfg = RunConfig(SourceConfig("template"), ModelConfig(), batch=4, progress=False)
    sources = {"short": FaultySource(20, live=False), "long": FaultySource(10**6, live=False)}
    seen: dict[str, list[int]] = {"short": [], "long": []}
    with MultiPipeline(cfg, [StreamSpec(n, n) for n in sources], models=fake_models(FakeClassifier(sleep_s=0.01)),
                       sources=sources) as p:
        for r in p.results():
            seen[r.stream].append(r.frame.index)
            if len(seen["long"]) == 200:
                assert p.streams[0].state == "ended"
                p.request_stop()
    assert seen["short"] == list(range(20))
    assert [(s.name, s.state) for s in p.streams] == [("short", "ended"), ("long", "stopped")]


def test_a_worker_failure_keeps_every_result_made_before_it_with_a_slow_consumer(tmp_path):
    """The worker fails on its 12th batch while the results queue is full (a slow consumer):
    every result made before is written, in order; none is dropped to make room for the end."""
    cfg = RunConfig(SourceConfig("template"), ModelConfig(), batch=1, progress=False, results_path=str(tmp_path / "r.jsonl"))
    sources = {"a": FaultySource(500, live=False)}
    with MultiPipeline(cfg, [StreamSpec("a", "a")], models=fake_models(FakeClassifier(fail_on_batch=20)),
                       sources=sources) as p:
        runner = MultiRunner(cfg, p)
        runner.listeners.append(lambda r: time.sleep(0.15))
        runner.run()
    assert "fake classifier failure" in str(runner.error)
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(19))
    assert not rtvision_threads() and p.stuck_threads == []


def test_a_start_interrupted_while_opening_closes_the_sources_already_open():
    """Ctrl-C (or any error that is not rtvision's) while the second camera opens: the first
    one's source is closed again, and the interrupt goes on up."""

    class Interrupted(FaultySource):
        def open(self):
            raise KeyboardInterrupt

    sources = {"a": FaultySource(100, live=False), "b": Interrupted(100)}
    p = MultiPipeline(RunConfig(SourceConfig("template"), ModelConfig(), progress=False),
                      [StreamSpec(n, n) for n in sources], models=fake_models(FakeClassifier()), sources=sources)
    with pytest.raises(KeyboardInterrupt):
        p.start()
    assert sources["a"].opens == 1 and not sources["a"].connected
    assert not rtvision_threads()


def test_a_slow_live_stream_is_not_starved_and_does_not_slow_the_others():
    """A live camera at 10 fps next to two files: the camera gets nearly every frame it sends
    (it is in every batch it has a frame for), and the files still go through at their pace."""
    cfg = RunConfig(SourceConfig("template", max_frames=30), ModelConfig(), batch=4, progress=False)
    sources = {"cam": FaultySource(30, fps=10), "f1": FaultySource(400, live=False), "f2": FaultySource(400, live=False)}
    s, seen, _ = _run(cfg, [StreamSpec(n, n) for n in sources], sources,
                      models=fake_models(FakeClassifier(sleep_s=0.005), FakeFaces()))
    by = {r["stream"]: r for r in s["streams"]}
    assert by["cam"]["frames_read"] == 30 and by["cam"]["frames_processed"] >= 27  # not starved: drops are rare
    assert by["f1"]["frames_processed"] == 30 and by["f2"]["frames_processed"] == 30
    # the files did not wait for the camera: they were done before its 11th frame (1.1 s of its 3 s)
    order = [r.stream for r in seen]
    cam_at = [i for i, n in enumerate(order) if n == "cam"]
    assert max(i for i, n in enumerate(order) if n in ("f1", "f2")) < cam_at[10]


def test_detect_workers_default_one_per_core_at_most_one_per_stream(monkeypatch):
    from rtvision.streams import engine

    monkeypatch.setattr(engine.os, "cpu_count", lambda: 2)
    assert engine.detect_workers(None, 4) == 2 and engine.detect_workers(None, 3) == 2
    assert engine.detect_workers(None, 1) == 0  # one stream: its own background thread, as a plain run
    assert engine.detect_workers(0, 4) == 0 and engine.detect_workers(1, 4) == 1 and engine.detect_workers(8, 3) == 3
    with pytest.raises(ValueError):
        RunConfig(detect_workers=-1)


@pytest.mark.parametrize("workers", [1, 0])
def test_live_streams_share_their_background_detections(faces_video, workers):
    """Three live streams of the real clip: with --detect-workers 1 one thread (rtvision-detect)
    runs every stream's background detections, and each stream still gets detections (its own
    counts) and its faces; with 0 each stream detects on a thread of its own. Every thread is
    stopped at the end. The clip loops until every stream has had 25 results and a background
    detection merged (or 1000 frames: a CPU busy with other work once left a stream 7 frames of
    the 75 it had, none of them late)."""
    import threading

    cfg = RunConfig(SourceConfig("template", realtime=True, loop=True, max_frames=1000),
                    ModelConfig(classifier="none", faces="fast", device="cpu"), progress=False, detect_workers=workers)
    specs = [StreamSpec(n, str(faces_video)) for n in ("a", "b", "c")]
    detect_threads: set[str] = set()
    faces_seen: dict[str, list[int]] = {}
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()

    def listen(r):
        detect_threads.update(t.name for t in threading.enumerate() if t.name.startswith("rtvision-detect"))
        faces_seen.setdefault(r.stream, []).append(len(r.faces))
        if (len(faces_seen) == 3 and min(map(len, faces_seen.values())) >= 25
                and all(s.faces.counts()["late"] >= 1 for s in p.streams)):
            runner.request_stop()

    with MultiPipeline(cfg, specs) as p:
        runner = MultiRunner(cfg, p)
        runner.listeners.append(listen)
        runner.run()
        counts = {s.name: s.faces.counts() for s in p.streams}
    # the worker split torch's and OpenCV's threads while it ran; put back once every thread stopped
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (threads, cv_threads)
    assert (p.detect_pool is not None) == (workers == 1)
    assert len(detect_threads) == (1 if workers == 1 else 0), detect_threads
    for name in ("a", "b", "c"):
        assert counts[name]["detect_calls"] >= 2, (name, counts[name])  # the first in line, then in the background
        assert counts[name]["late"] >= 1, (name, counts[name])  # ...which were merged when done
        assert np.mean(faces_seen[name]) >= 4, (name, faces_seen[name])  # the clip shows about 7 faces
    assert not rtvision_threads() and p.stuck_threads == []


# -- the CLI on real clips -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mirrored_clip(faces_video, tmp_path_factory) -> Path:
    """The first 12 frames of the 1080p clip, mirrored and at 960x540: another camera's view."""
    path = tmp_path_factory.mktemp("clips") / "mirrored.mp4"
    cap = cv2.VideoCapture(str(faces_video))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (960, 540))
    for _ in range(12):
        ok, img = cap.read()
        assert ok
        writer.write(cv2.resize(img[:, ::-1], (960, 540), interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return path


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtvision", "--headless", "--no-progress", "--classifier", "none", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_three_streams_give_each_stream_what_it_gives_alone(faces_video, mirrored_clip, index_clip, tmp_path):
    """Three streams in one process, --faces full: every stream's JSONL is complete and in order,
    its boxes are those of a run of that clip alone, and each stream has its own video."""
    clips = {"street": faces_video, "mirror": mirrored_clip, "index": index_clip}
    out = tmp_path / "all.jsonl"
    args = ["--faces", "full", "--max-frames", "12", "--results", str(out), "--save", str(tmp_path / "v-{stream}.mp4"),
            "--summary-json", str(tmp_path / "s.json")]
    proc = _cli([a for name, p in clips.items() for a in ("--source", f"{name}={p}")] + args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    # each stream's own face stage counted its own detections: full mode detects every frame
    assert [(r["stream"], r["face_counts"]["frames"], r["face_counts"]["detected"]) for r in summary["streams"]] == \
        [(name, 12, 12) for name in clips]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for name, clip in clips.items():
        mine = [r for r in rows if r["stream"] == name]
        assert [r["frame"] for r in mine] == list(range(12)), name
        alone_path = tmp_path / f"{name}.jsonl"
        alone = _cli(["--source", str(clip), "--faces", "full", "--max-frames", "12", "--results", str(alone_path)])
        assert alone.returncode == 0, alone.stderr
        ref = [json.loads(x) for x in alone_path.read_text().splitlines()]
        assert [r["faces"] for r in mine] == [r["faces"] for r in ref], name
        assert count_frames(tmp_path / f"v-{name}.mp4") == 12
    assert sum(len(r["faces"]) for r in rows if r["stream"] == "street") >= 12 * 5
    assert "street" in proc.stdout and "mirror" in proc.stdout and "total" in proc.stdout


def test_save_needs_the_stream_field_with_several_streams(faces_video, tmp_path):
    proc = _cli(["--source", str(faces_video), "--source", str(faces_video), "--save", str(tmp_path / "v.mp4")])
    assert proc.returncode == 2 and "{stream}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_streams_measures_one_process_against_n(index_clip, tmp_path):
    """2 streams of 70 frames from the 60-frame clip: the healthy arms loop it (--loop), the
    failing arm reads the clip's own 60."""
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-m", "rtvision", "bench", "--source", str(index_clip), "--streams", "2",
                           "--frames", "70", "--classifier", "mobilenet_v2", "--out", str(out), "--md", str(tmp_path / "s.md")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    one, many, shared = r["runs"]["one_process"][0], r["runs"]["processes"][0], r["runs"]["one_process_detect1"][0]
    assert one["processes"] == 1 and shared["processes"] == 1 and many["processes"] == 2
    assert len(one["streams"]) == 2 and len(shared["streams"]) == 2 and len(many["streams"]) == 2
    assert [s["stream"] for s in many["streams"]] == ["s0", "s1"]
    for arm in (one, shared, many):
        # the generated clip has no face: recall is null (never NaN), not a made-up number
        assert arm["recall"]["tall"] is None and arm["recall"]["per_stream"]["s0"] == {"tall": None, "overall": None}
        assert all(s["frames_read"] == 70 and 0 < s["frames_processed"] <= 70 for s in arm["streams"])
        assert arm["aggregate_fps"] == pytest.approx(sum(s["throughput_fps"] for s in arm["streams"]))
        assert arm["peak_rss_mb"] > 300
        # CPU cores busy from first to last result, summed over the arm's processes: some, and
        # never more than the machine has (per process)
        assert 0 < arm["cpu_cores"] <= arm["processes"] * (os.cpu_count() or 1) * 1.1
    assert r["ratios"]["aggregate_fps_one_over_many"] == pytest.approx(one["aggregate_fps"] / many["aggregate_fps"])
    # one failing stream: a camera on 127.0.0.1 that goes offline; the process exits 7, the other stream reads everything
    f = r["failing"][0]
    assert f["exit_codes"] == [7] and f["failing_stream"] == "s1" and f["failing_state"] == "failed"
    assert "reconnect attempts failed" in f["failing_error"]
    bad = next(s for s in f["streams"] if s["stream"] == "s1")
    assert r["clip_frames"] == 60 and r["failing_frames_per_stream"] == 60
    assert 0 < bad["frames_read"] < 60 and f["camera_frames_sent"] >= bad["frames_read"]
    assert next(s for s in f["streams"] if s["stream"] == "s0")["frames_read"] == 60
    assert f["others_completed"] and set(f["others_fps_ratio"]) == {"s0"} and f["others_fps_ratio_min"] > 0
    assert f["healthy_frames_read"] == {"s0": 60, "s1": 60}  # compared with a healthy run of the same length
    md = (tmp_path / "s.md").read_text()
    assert "one process, all streams" in md and "**One failing stream**" in md and "CPU cores busy (sum)" in md
    assert "60-frame clip starting over" in md


def test_bench_streams_recall_is_measured_against_the_reference(faces_video, tmp_path):
    """The streams bench's recall: a stream that reports the reference's own boxes scores 1, one
    that reports nothing 0, and the pooled figure counts every stream's reference faces; a frame
    after the clip started over (--loop) is scored against the clip's frame it shows."""
    import argparse

    import torch

    from rtvision.benchmark.quality import compute_references
    from rtvision.benchmark.streams import _add_recall

    ref, _, _ = compute_references(str(faces_video), {0, 1, 2}, set(), str(tmp_path), None, torch.device("cpu"), progress=False)
    assert all(len(ref[i]) >= 4 for i in (0, 1, 2))  # the clip's real faces
    clip = count_frames(faces_video)
    arm = {"streams": [{"stream": "good"}, {"stream": "blind"}, {"stream": "looped"}],
           "boxes": {"good": {i: ref[i][:, :4].tolist() for i in (0, 1, 2)}, "blind": {i: [] for i in (0, 1, 2)},
                     "looped": {clip + 1: ref[1][:, :4].tolist()}}}  # the clip's frame 1, second time round
    _add_recall([arm], argparse.Namespace(source=str(faces_video), cache_dir=str(tmp_path)), clip)
    assert "boxes" not in arm
    assert arm["recall"]["per_stream"]["good"] == {"tall": 1.0, "overall": 1.0}
    assert arm["recall"]["per_stream"]["blind"] == {"tall": 0.0, "overall": 0.0}
    assert arm["recall"]["per_stream"]["looped"] == {"tall": 1.0, "overall": 1.0}
    found = sum(len(ref[i]) for i in (0, 1, 2)) + len(ref[1])
    assert arm["recall"]["overall"] == pytest.approx(found / (found + sum(len(ref[i]) for i in (0, 1, 2))))
    assert [s["recall_tall"] for s in arm["streams"]] == [1.0, 0.0, 1.0]
