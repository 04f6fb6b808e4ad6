"""Fault injection: reconnects, stalls, corrupt frames, resolution changes, failing sinks,
backpressure, and threads that will not stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import decode_index
from fakes import run_to_end, FakeClassifier, FakeFaces, fake_models
from faults import Faults, FaultySource

from rtvision import errors
from rtvision.config import ModelConfig, RunConfig, SourceConfig
from rtvision.pipeline import Pipeline
from rtvision.stats import rss_mb

pytestmark = pytest.mark.timeout(90)


def run(source, models=None, **kw):
    src_kw = {k: kw.pop(k) for k in list(kw) if k in SourceConfig.__dataclass_fields__}
    cfg = RunConfig(SourceConfig("faulty", **src_kw), ModelConfig(), progress=False, **kw)
    seen = []
    summary, pipe, _ = run_to_end(cfg, models or fake_models(FakeClassifier(), FakeFaces()), source, listen=seen.append)
    return summary, seen, pipe


def test_reconnect_after_disconnect_processes_frames_after_it():
    src = FaultySource(60, faults=Faults(disconnect_at={20}, fail_opens=2))
    s, seen, pipe = run(src, reconnect=5, batch=2, max_frames=60)
    assert s["exit_code"] == 0, s["error"]
    assert s["reconnects"] == 1 and src.failed_opens == 2
    idx = [r.frame.index for r in seen]
    assert idx == sorted(idx)
    coded = [decode_index(r.frame.image) for r in seen]
    assert max(coded) == 59 and sum(c >= 20 for c in coded) >= 30  # the stream went on after it
    assert all(r.frame.image.any() for r in seen)  # no black frames reached the models


def test_reconnect_gives_up_after_the_limit():
    src = FaultySource(60, faults=Faults(disconnect_at={10}, fail_opens=99))
    s, seen, _ = run(src, reconnect=2, batch=2)
    assert s["exit_code"] == errors.EXIT_SOURCE_UNAVAILABLE
    assert "2 reconnect attempts failed" in s["error"]
    assert len(seen) == 10


def test_stall_longer_than_timeout_reconnects_and_latency_recovers():
    src = FaultySource(80, fps=40, faults=Faults(stall_at={20: 1.0}))
    s, seen, _ = run(src, stall_timeout_s=0.4, batch=2, buffer_size=4, max_frames=79)
    assert s["exit_code"] == 0, s["error"]
    assert s["reconnects"] == 1
    coded = [decode_index(r.frame.image) for r in seen]
    assert 20 not in coded  # the stale frame after the stall was not passed on
    after = [r.latency_ms for r in seen if decode_index(r.frame.image) >= 40]
    assert len(after) >= 20 and float(np.median(after)) < 150


def test_corrupt_frame_is_skipped_and_counted():
    src = FaultySource(30, live=False, faults=Faults(corrupt_at={7, 8, 15}))
    s, seen, _ = run(src, batch=4, max_corrupt=5)
    assert s["exit_code"] == 0 and s["frames_corrupt"] == 3
    coded = [decode_index(r.frame.image) for r in seen]
    assert coded == [i for i in range(30) if i not in {7, 8, 15}]
    assert [r.frame.index for r in seen] == coded  # indices keep the file's timeline


def test_too_many_corrupt_frames_stop_with_outputs_finalized(tmp_path):
    src = FaultySource(30, live=False, faults=Faults(corrupt_at={5, 6, 7, 8}))
    out = tmp_path / "r.jsonl"
    s, seen, _ = run(src, batch=1, max_corrupt=2, results_path=str(out))
    assert s["exit_code"] == errors.EXIT_BAD_INPUT and "corrupt" in s["error"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in rows] == [0, 1, 2, 3, 4]


def test_resolution_change_mid_stream(tmp_path):
    src = FaultySource(40, faults=Faults(resize_at={15: (640, 480)}))
    video = tmp_path / "v.mp4"
    s, seen, _ = run(src, batch=3, save_path=str(video), max_frames=40)
    assert s["exit_code"] == 0, s["error"]
    sizes = [r.frame.resolution_wh for r in seen]
    assert (320, 240) in sizes and (640, 480) in sizes
    assert sizes.index((640, 480)) > 0 and all(sz == (640, 480) for sz in sizes[sizes.index((640, 480)):])
    import cv2

    cap = cv2.VideoCapture(str(video))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape[:2] == (240, 320)  # later frames are fitted to the file's size
        n += 1
    assert n == len(seen)


def test_resolution_change_with_real_face_detector(faces_frames):
    """Frames of two sizes in one batch: the detector groups them and boxes stay in each frame's pixels."""
    import cv2

    from rtvision.faces.stage import build_face_stage
    from rtvision.types import Frame

    det = build_face_stage("full", __import__("torch").device("cpu"))
    big = faces_frames[0]
    small = cv2.resize(big, (960, 540), interpolation=cv2.INTER_AREA)
    out = det.detect([Frame(0, 0.0, 0.0, big), Frame(1, 0.04, 0.0, small)])
    assert len(out[0]) >= 5 and len(out[1]) >= 3
    assert out[0].xyxy[:, 2].max() > 960  # full-size boxes are in full-size pixels
    assert out[1].xyxy[:, 2].max() <= 960


def test_sink_failure_full_disk_stops_cleanly():
    src = FaultySource(100)
    s, seen, pipe = run(src, batch=2, results_path="/dev/full", max_frames=100)
    assert s["exit_code"] == errors.EXIT_OUTPUT
    assert "/dev/full" in s["error"] and "space" in s["error"].lower()
    assert not pipe.capture.is_alive() and not pipe.worker.is_alive()


def test_slow_worker_fast_live_source_drops_and_memory_stays_flat():
    """A 1080p camera at 100 fps against a worker 10x slower: drops counted, RSS flat."""
    src = FaultySource(10**9, fps=100, size_wh=(1920, 1080))
    cfg = RunConfig(SourceConfig("faulty", buffer_size=8, max_frames=400), ModelConfig(), batch=2, progress=False)
    rss = []
    s, pipe, _ = run_to_end(cfg, fake_models(FakeClassifier(sleep_s=0.2)), src, listen=lambda r: rss.append(rss_mb()))
    assert s["exit_code"] == 0
    assert s["frames_read"] == 400
    assert s["frames_dropped"] >= 300 and s["frames_processed"] + s["frames_dropped"] == 400
    assert pipe.buffer.high_water <= 8
    settled = rss[len(rss) // 3 :]
    assert max(settled) - min(settled) < 40, (min(settled), max(settled))  # MB; one frame is 6 MB


def test_a_thread_that_will_not_stop_is_reported_by_name():
    faults = Faults(block_forever_at=5)
    src = FaultySource(100, faults=faults)
    cfg = RunConfig(SourceConfig("faulty", stall_timeout_s=0.5), ModelConfig(), batch=2, progress=False, join_timeout_s=0.5)
    pipe = Pipeline(cfg, models=fake_models(FakeClassifier()), source=src).start()
    try:
        got = []
        for r in pipe.results():
            got.append(r)
            if len(got) == 5:
                break
        assert pipe.stop() == ["rtvision-capture"]
        assert not pipe.worker.is_alive()
    finally:
        faults.release.set()
        pipe.capture.join(timeout=5)


def _ctrl_c(p) -> tuple[str, str, float]:
    """SIGINT to a running rtvision: (stdout, stderr, seconds until it ended)."""
    import signal
    import time

    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return out, err, time.monotonic() - t0


def _ctrl_c_default() -> None:
    """A child's SIGINT as a terminal's foreground process has it. A process started with SIGINT
    ignored (a shell's background job, or a parent that ignores it) keeps it ignored, Python
    included, until rtvision installs its own handlers once the run has started: Ctrl-C during
    the start then does nothing, which is right for a background job, but not what the test is
    about. (A suite started as a shell's background job, `.ci/run &`, runs with SIGINT ignored.)"""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _reap(p) -> None:
    if p.poll() is None:
        p.kill()
        p.wait()


def test_a_stop_does_not_wait_for_a_camera_blocked_in_a_read():
    """A camera read that hangs 3 s (under the 5 s stall timeout, after which OpenCV's FFmpeg
    gives up) while a stop is asked: the stop returns while the read is still blocked (it used to
    wait for it), no thread is called stuck, and the source is closed only once that read has
    returned, never released under it."""
    import time

    class Camera(FaultySource):
        blocking_io = True  # as a webcam or a network stream

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.in_read = False
            self.closes: list[bool] = []  # per close: was a read in progress?

        def read(self):
            self.in_read = True
            try:
                return super().read()
            finally:
                self.in_read = False

        def close(self):
            self.closes.append(self.in_read)
            super().close()

    src = Camera(100, faults=Faults(stall_at={6: 3.0}))
    cfg = RunConfig(SourceConfig("faulty", stall_timeout_s=5.0), ModelConfig(), batch=2, progress=False, join_timeout_s=0.5)
    pipe = Pipeline(cfg, models=fake_models(FakeClassifier()), source=src).start()
    got = []
    for r in pipe.results():
        got.append(r)
        if len(got) == 5:
            break
    deadline = time.monotonic() + 10
    while not (src.in_read and src.counter == 6) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.in_read and src.counter == 6, "the capture never reached the stalled read"
    assert pipe.stop() == [] and not pipe.capture.is_alive() and not pipe.worker.is_alive()
    assert src.in_read, "the stop waited for the blocked read"
    while not src.closes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert src.closes == [False]  # closed once, after the read returned


def test_ctrl_c_with_a_hung_network_camera_stops_at_once(faces_video, tmp_path):
    """A real MPEG-TS camera over HTTP on 127.0.0.1 that goes silent after 40 frames, its
    connection left open (a hung camera), and --stall-timeout 30: Ctrl-C while the read waits
    ends the run with exit 130, its summary and its JSONL, long before the 30 s read timeout
    (it used to wait for it), without a word of a stall or a reconnect."""
    import subprocess
    import sys
    import time

    from rtvision.benchmark.camera import OfflineCamera, streamable_clip

    results, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    with OfflineCamera(streamable_clip(str(faces_video), tmp_path), 40, hang=True) as cam:
        p = subprocess.Popen([sys.executable, "-m", "rtvision", "--source", cam.url, "--headless", "--no-progress",
                              "--classifier", "none", "--faces", "off", "--stall-timeout", "30",
                              "--results", str(results), "--summary-json", str(summary)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline, last, still = time.monotonic() + 120, -1, 0.0
            while time.monotonic() < deadline and p.poll() is None:  # results came, then stopped coming
                n = len(results.read_text().splitlines()) if results.exists() else 0
                if n != last:
                    last, still = n, time.monotonic()
                elif n >= 20 and time.monotonic() - still > 2.0:
                    break
                time.sleep(0.1)
            assert p.poll() is None and cam.packets_sent >= 40, "the camera never hung under the run"
            out, err, stop_s = _ctrl_c(p)
        finally:
            _reap(p)
    assert p.returncode == 130, err[-2000:]
    assert stop_s < 15, f"the stop took {stop_s:.1f} s: it waited for the 30 s read timeout"
    assert "Traceback" not in err and "stalled" not in err and "reconnect" not in err, err[-2000:]
    s = json.loads(summary.read_text())
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert s["exit_code"] == 130 and s["frames_processed"] == len(rows) >= 20
    frames = [r["frame"] for r in rows]
    assert frames == sorted(set(frames))  # in order (a live source may drop frames)
    assert s["frames_read"] == s["frames_processed"] + s["frames_dropped"] + s["frames_unfinished"]


def test_ctrl_c_while_a_silent_stream_opens_stops_at_once(tmp_path):
    """A server that accepts the connection and never answers, --stall-timeout 20 (the open's
    timeout): Ctrl-C during the open ends the run at once with exit 130 and one line (the open
    ran on the main thread, which took the signal only when OpenCV gave up: 18 s)."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/cam.ts"
    p = subprocess.Popen([sys.executable, "-m", "rtvision", "--source", url, "--headless", "--no-progress",
                          "--classifier", "none", "--faces", "off", "--stall-timeout", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_default)
    try:
        deadline = time.monotonic() + 60
        while not held and time.monotonic() < deadline:  # the open has connected: it now waits
            time.sleep(0.05)
        assert held and p.poll() is None, "the open never reached the server"
        time.sleep(1.0)
        out, err, stop_s = _ctrl_c(p)
    finally:
        _reap(p)
        server.close()
    assert p.returncode == 130, err[-2000:]
    assert stop_s < 10, f"the stop took {stop_s:.1f} s: it waited for the 20 s open timeout"
    assert err.strip().splitlines() == ["rtvision: interrupted"], err[-2000:]


def test_source_io_hands_a_sources_own_timeout_error_to_the_caller():
    """A read that raises TimeoutError itself (a socket timeout) fails at once; it was taken for
    a poll's timeout and waited for until the stop."""
    import threading
    import time

    from rtvision.sources import SourceIO

    def read():
        raise TimeoutError("camera read timed out")

    io = SourceIO()
    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="camera read timed out"):
        io.call(read, stop)
    assert time.monotonic() - t0 < 2.0 and not stop.is_set()
    stop.set()
    assert io.close(lambda: None)


def test_url_password_never_logged(caplog):
    from rtvision.sources import StreamSource, redact_url

    assert redact_url("rtsp://admin:s3cret@10.0.0.1:554/live") == "rtsp://admin:***@10.0.0.1:554/live"
    src = StreamSource("rtsp://admin:s3cret@127.0.0.1:9/live", timeout_s=0.5)
    assert "s3cret" not in src.info.name
    with pytest.raises(errors.SourceUnavailable) as exc:
        src.open()
    assert "s3cret" not in str(exc.value) and "admin:***@" in str(exc.value)


def test_after_a_reconnect_pts_goes_on_and_the_summary_has_the_new_size():
    """A camera that sends 20 frames a second while its header says 50 drops its connection at
    frame 20 and comes back at 640x480: pts_s (its wall clock) never goes back (it jumped back
    to index / header fps), and the summary gives the size it has now."""
    import dataclasses

    class SaysFifty(FaultySource):
        def open(self):
            self.info = dataclasses.replace(super().open(), fps=50.0)
            return self.info

    src = SaysFifty(60, fps=20, faults=Faults(disconnect_at={20}, resize_at={20: (640, 480)}))
    s, seen, _ = run(src, reconnect=3, batch=1, max_frames=40)
    assert s["exit_code"] == 0, s["error"]
    assert s["reconnects"] == 1
    pts = [r.frame.pts_s for r in seen]
    assert all(b > a for a, b in zip(pts, pts[1:])), pts
    assert s["resolution_wh"] == [640, 480]
    assert s["frames_read"] == s["frames_processed"] + s["frames_dropped"] and s["frames_unfinished"] == 0


def test_a_frame_count_far_beyond_the_files_end_does_not_keep_reading(faces_video, monkeypatch):
    """A header (or an estimate) that claims 100 million frames for the 105-frame clip: the read
    past a damaged stretch looks at most MAX_DAMAGED_FRAMES ahead, then calls it the end."""
    import dataclasses

    from rtvision import sources

    monkeypatch.setattr(sources, "MAX_DAMAGED_FRAMES", 50)
    src = sources.FileSource(str(faces_video))
    src.info = dataclasses.replace(src.open(), frame_count=10**8)
    n = 0
    while src.read() is not None:
        n += 1
    assert n == 105 and src._reads <= 106 + 50
    src.close()


def test_stop_signals_first_one_stops_later_ones_change_nothing():
    """StopSignals (the CLI's, from the pipeline's start to the summary): a signal before the
    runner exists is kept and handed to it; later signals, or any after the window's own handlers
    stopped the run, change nothing."""
    import os
    import signal

    from rtvision.cli import StopSignals

    class Runner:
        def __init__(self):
            self.stop_requested, self.codes = False, []

        def interrupt(self, code):
            self.codes.append(code)
            self.stop_requested = True

    signals = StopSignals().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        runner = Runner()
        signals.attach(runner)
        os.kill(os.getpid(), signal.SIGINT)
        assert runner.codes == [143] and signals.code == 143
        other, late = Runner(), StopSignals().install()
        other.stop_requested = True  # the window's handlers stopped it first
        late.attach(other)
        os.kill(os.getpid(), signal.SIGTERM)
        assert other.codes == [] and late.code is None
        late.restore()
    finally:
        signals.restore()
