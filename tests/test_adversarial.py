"""Issue 16: bad or unusual inputs a demanding new user tries, one row per case.

Every row runs the real CLI (``python -m rtvision``) in a fresh folder and checks, besides its own
predicate: the exit code; no traceback; a failure is one ``rtvision: error:`` line (the last line
of stderr, the only one saying "error:"); the input video's checksum is unchanged; no secret of a
URL appears in stdout, stderr or any file; every JSON file parses strictly (no NaN); no 0-byte
file is left behind.

Privileges: no row needs any. The tests may run as root (CI containers do), where permission
bits do not stop writes, so an unwritable output is made with /dev/full (Linux) or a path under a
regular file instead of chmod.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import count_frames

from rtvision import errors

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("hunter2", "LEAKME", "se/cret", "SECRETTOK", "pa55word")
FAST = ["--headless", "--no-progress", "--classifier", "none", "--faces", "off"]


def make_clip(path: Path, n: int, size_wh: tuple[int, int], fps: float = 25.0) -> Path:
    """An mp4v clip of ``n`` noise frames (OpenCV's writer; no media copied into the repo)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 255, (size_wh[1], size_wh[0], 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """``v.mp4`` of the issue: a short 640x360 clip (30 frames, 25 fps)."""
    return make_clip(tmp_path_factory.mktemp("adv") / "v.mp4", 30, (640, 360))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Run:
    rc: int
    out: str
    err: str
    cwd: Path
    wall_s: float = 0.0

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()

    def files(self) -> list[Path]:
        return sorted(p for p in self.cwd.rglob("*") if p.is_file() or p.is_symlink())


def rtvision(args: list[str], cwd: Path, timeout_s: float = 120) -> Run:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "rtvision", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Run(r.returncode, r.stdout, r.stderr, cwd, time.monotonic() - t0)


def check_common(run: Run, code: int, inputs: list[Path]) -> None:
    """What every row must hold, whatever it tests."""
    assert run.rc == code, (run.rc, run.err[-2000:])
    assert "Traceback" not in run.err and "internal error" not in run.err, run.err[-2000:]
    error_lines = [line for line in run.err_lines if "error:" in line]
    if code in (0, errors.EXIT_SIGHUP, errors.EXIT_SIGINT, errors.EXIT_SIGTERM):
        assert not error_lines, run.err
    else:
        assert error_lines == [run.err_lines[-1]], run.err  # one line, the last
        assert run.err_lines[-1].startswith("rtvision: error:") or ": error: argument" in run.err_lines[-1]
    for path, digest in inputs:
        assert sha256(path) == digest, f"the input {path} was changed"
    blobs = [run.out.encode(), run.err.encode()] + [p.read_bytes() for p in run.files() if p.is_file()]
    for secret in SECRETS:
        assert not any(secret.encode() in b for b in blobs), f"secret {secret!r} leaked"
    for p in run.files():
        if p.is_symlink():
            continue
        assert p.stat().st_size > 0, f"0-byte file left: {p.name}"
        if p.suffix == ".json":
            strict_json(p.read_text())
        if p.suffix == ".jsonl":
            for line in p.read_text().splitlines():
                strict_json(line)
    assert not (run.cwd / "-").exists(), "a file named '-' was written"


def jsonl(path: Path) -> list[dict]:
    return [strict_json(line) for line in path.read_text().splitlines()]


@dataclass
class Case:
    """One row: the command (``{v}`` is the clip, copied into the run's folder), its exit code, a
    predicate on the run (stderr, stdout, files), and an optional setup of the folder."""

    id: str
    args: list[str]
    code: int
    check: Callable[[Run], object] = lambda run: True
    setup: Callable[[Path, Path], None] | None = None
    fast_flags: bool = True  # add FAST (no window, no models); else only --headless --no-progress


def _links(d: Path, v: Path) -> None:
    (d / "link.mp4").symlink_to(v)
    os.link(v, d / "hard.mp4")


def _tiny_clip(d: Path, v: Path) -> None:
    make_clip(d / "tiny.mp4", 6, (2, 2))


def _one_pixel(d: Path, v: Path) -> None:
    cv2.imwrite(str(d / "one.png"), np.full((1, 1, 3), 90, np.uint8))


def _bad_fps(d: Path, v: Path) -> None:
    make_clip(d / "slow.mp4", 4, (64, 48), fps=0.5)


def _old_results(d: Path, v: Path) -> None:
    (d / "text.mp4").write_text("not a video\n" * 20)
    (d / "old.jsonl").write_text('{"old": true}\n')


def _weights(kind: str) -> Callable[[Path, Path], None]:
    def setup(d: Path, v: Path) -> None:
        import torch
        import torchvision

        if kind == "text":
            (d / "w.pth").write_text("these are not weights\n" * 10)
        elif kind == "resnet34":
            torch.save(torchvision.models.resnet34(weights=None).state_dict(), d / "w.pth")
        elif kind == "pickle":
            torch.save(torchvision.models.resnet18(weights=None), d / "w.pth")

    return setup


def _err(*needles: str) -> Callable[[Run], bool]:
    def check(run: Run) -> None:
        last = run.err_lines[-1] if run.err_lines else ""
        for n in needles:
            assert n in last, (n, last)

    return check


def _no_outputs(*names: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        for n in names:
            assert not (run.cwd / n).exists(), f"{n} was created"

    return check


def _tiny_processed(run: Run) -> None:
    rows = jsonl(run.cwd / "r.jsonl")
    assert [r["frame"] for r in rows] == list(range(6)) and all(r["faces"] == [] for r in rows)
    assert count_frames(run.cwd / "o.mp4") == 6
    assert "empty or black" not in run.err


def _stdout_jsonl(run: Run) -> None:
    rows = [strict_json(line) for line in run.out.splitlines()]
    assert [r["frame"] for r in rows] == list(range(5))
    assert "rtvision summary" in run.err  # the summary moved to stderr


def _summary_null(run: Run) -> None:
    s = strict_json((run.cwd / "s.json").read_text())
    assert s["frames_processed"] == 1 and s["steady_fps"] is None and s["cpu_cores"] is None


def _bad_fps_said(run: Run) -> None:
    warnings = [line for line in run.err_lines if "fps header" in line]
    assert len(warnings) == 1, run.err
    assert [r["pts_s"] for r in jsonl(run.cwd / "r.jsonl")] == [0.0, 2.0, 4.0, 6.0]


def _bad_fps_looped(run: Run) -> None:
    """--loop keeps the frames' own timestamps going across passes (it fell back to index / 30)."""
    assert [r["pts_s"] for r in jsonl(run.cwd / "r.jsonl")] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]


def _old_kept(run: Run) -> None:
    assert (run.cwd / "old.jsonl").read_text() == '{"old": true}\n'
    _no_outputs("o.mp4", "s.json")(run)


def _created_folder(run: Run) -> None:
    strict_json((run.cwd / "new" / "dir" / "s.json").read_text())


def _no_artifact(run: Run) -> None:
    assert not list(run.cwd.glob("*.rtv*"))
    assert "expected 0 or a ratio in [0.01, 0.95]" in run.err_lines[-1]


def _bench_fast(run: Run) -> None:
    assert "unknown variant 'bogus'" in run.err_lines[-1]
    assert run.wall_s < 30, run.wall_s  # validated before the weights (a download when online) and models


def _pickle_refused(run: Run) -> None:
    _err("pickled Python object", "arbitrary code")(run)
    assert "\x1b" not in run.err, "ANSI escape codes in stderr"


def _input_files(tmp: Path, v: Path) -> None:
    """Inputs besides the video: a stream list, class names, an artifact, weights."""
    (tmp / "list.txt").write_text("a=v.mp4\nb=v.mp4\n", encoding="utf-8")
    (tmp / "labels.txt").write_text("".join(f"class {i}\n" for i in range(1000)), encoding="utf-8")
    (tmp / "m.rtv").write_bytes(b"not really an artifact")
    (tmp / "w.pth").write_bytes(b"not really weights")


CASES = [
    # 1. writing over the input (the inputs' checksums are checked by every row)
    Case("1-results-over-sources-list", ["--sources", "list.txt", "--results", "list.txt"], 2, _err("is --sources list.txt"),
         _input_files),
    Case("1-summary-over-labels", ["--source", "{v}", "--labels", "labels.txt", "--summary-json", "labels.txt"], 2,
         _err("is --labels labels.txt"), _input_files),
    Case("1-results-over-model", ["--source", "{v}", "--model", "m.rtv", "--results", "m.rtv"], 2, _err("is --model m.rtv"),
         _input_files),
    Case("1-summary-over-weights", ["--source", "{v}", "--weights", "w.pth", "--summary-json", "./w.pth"], 2,
         _err("is --weights w.pth"), _input_files),
    Case("1-results-over-weights-named-imagenet", ["--source", "{v}", "--weights", "imagenet_ft.pth", "--results",
                                                    "imagenet_ft.pth"], 2, _err("is --weights imagenet_ft.pth"),
         lambda tmp, v: (tmp / "imagenet_ft.pth").write_bytes(b"weights whose name starts with imagenet")),
    Case("1-bench-report-over-input", ["bench", "--source", "{v}", "--md", "{v}"], 2, _err("is the input video"),
         fast_flags=False),
    Case("1-bench-json-over-weights", ["bench", "--source", "{v}", "--weights", "w.pth", "--out", "w.pth"], 2,
         _err("is --weights w.pth"), _input_files, fast_flags=False),
    Case("1-save-over-input", ["--source", "{v}", "--max-frames", "20", "--save", "{v}"], 2, _err("is the input video")),
    Case("1-results-over-input", ["--source", "{v}", "--results", "{v}"], 2, _err("is the input video")),
    Case("1-summary-over-input", ["--source", "{v}", "--summary-json", "{v}"], 2, _err("is the input video")),
    Case("1-save-symlink-to-input", ["--source", "{v}", "--save", "link.mp4"], 2, _err("is the input video"), _links),
    Case("1-results-hard-link-to-input", ["--source", "{v}", "--results", "hard.mp4"], 2, _err("is the input video"), _links),
    Case("1-input-via-symlink", ["--source", "link.mp4", "--save", "{v}"], 2, _err("is the input video"), _links),
    # 2. one file for two outputs
    Case("2-save-and-results-same", ["--source", "{v}", "--save", "x.mp4", "--results", "x.mp4"], 2, _err("same file")),
    Case("2-results-and-summary-same", ["--source", "{v}", "--results", "x.json", "--summary-json", "./x.json"], 2,
         _err("same file")),
    Case("2-stdout-twice", ["--source", "{v}", "--results", "-", "--summary-json", "/dev/stdout"], 2, _err("same file")),
    # 4. frames smaller than the detector's minimum: processed (no faces), never silently dropped
    Case("4-2x2-frames-processed", ["--source", "tiny.mp4", "--results", "r.jsonl", "--save", "o.mp4",
                                    "--classifier", "none"], 0, _tiny_processed, _tiny_clip, fast_flags=False),
    Case("4-1x1-frames-refused", ["--source", "one.png", "--results", "r.jsonl", "--save", "o.mp4"], 3,
         lambda run: (_err("1x1", "below the 2x2 minimum")(run), _no_outputs("r.jsonl", "o.mp4")(run)), _one_pixel),
    # 5. secrets in URLs (unreachable: nothing listens on port 1 or 9)
    Case("5-at-in-password", ["--source", "http://user:hunter2@LEAKME@127.0.0.1:9/c.mp4", "--reconnect", "0",
                              "--stall-timeout", "1", "--summary-json", "s.json"], 4,
         _err("http://user:***@127.0.0.1:9/c.mp4")),
    Case("5-slash-in-password", ["--source", "rtsp://admin:se/cret@127.0.0.1:1/x", "--reconnect", "1",
                                 "--stall-timeout", "1"], 4, _err("rtsp://admin:***@127.0.0.1:1/x")),
    Case("5-query-secrets", ["--source", "http://127.0.0.1:9/c.m3u8?token=SECRETTOK&password=pa55word&q=1",
                             "--reconnect", "0", "--stall-timeout", "1"], 4, _err("token=***&password=***&q=1")),
    # 6. --summary-json that cannot be written
    Case("6-summary-dev-full", ["--source", "{v}", "--max-frames", "2", "--summary-json", "/dev/full"], 6,
         _err("--summary-json /dev/full", "No space left")),
    Case("6-summary-a-folder", ["--source", "{v}", "--summary-json", "."], 6, _err("is a folder")),
    Case("6-summary-under-a-file", ["--source", "{v}", "--summary-json", "{v}/s.json"], 6, _err("is not a folder")),
    Case("6-summary-in-missing-folders", ["--source", "{v}", "--max-frames", "2", "--summary-json", "new/dir/s.json"], 0,
         _created_folder),
    # 7. --results - is standard output
    Case("7-results-stdout", ["--source", "{v}", "--max-frames", "5", "--results", "-"], 0, _stdout_jsonl),
    # 8. standard JSON: steady_fps of a 1-frame run is null
    Case("8-summary-json-null", ["--source", "{v}", "--max-frames", "1", "--summary-json", "s.json"], 0, _summary_null),
    # 9. empty files
    Case("9-unknown-save-extension", ["--source", "{v}", "--save", "out.xyz"], 2,
         lambda run: (_err("unknown video extension")(run), _no_outputs("out.xyz")(run))),
    Case("9-no-extension", ["--source", "{v}", "--save", "out"], 2, _err("unknown video extension")),
    Case("9-no-frames-no-files", ["--source", "text.mp4", "--save", "o.mp4", "--results", "old.jsonl",
                                  "--summary-json", "s.json"], 3, _old_kept, _old_results),
    # 10. weights errors in one line saying what the file is
    Case("10-text-weights", ["--source", "{v}", "--classifier", "resnet18", "--faces", "off", "--weights", "w.pth"], 5,
         _err("w.pth", "text file", "state_dict"), _weights("text"), fast_flags=False),
    Case("10-resnet34-into-resnet18", ["--source", "{v}", "--classifier", "resnet18", "--faces", "off", "--weights",
                                       "w.pth"], 5, _err("does not fit resnet18", "resnet34"), _weights("resnet34"),
         fast_flags=False),
    Case("10-full-model-pickle", ["--source", "{v}", "--classifier", "resnet18", "--faces", "off", "--weights", "w.pth"],
         5, _pickle_refused, _weights("pickle"), fast_flags=False),
    # 11. smaller cases
    Case("11-face-scale-rounds-to-zero", ["--source", "{v}", "--face-scale", "1e-9"], 2, _err("--face-scale")),
    Case("11-prune-0.999", ["optimize", "--classifier", "resnet18", "--prune", "0.999", "--calib", "{v}",
                            "--out", "x.rtv"], 2, _no_artifact, fast_flags=False),
    Case("11-prune-round-to-nothing", ["optimize", "--classifier", "resnet18", "--prune", "0.9", "--round-to", "16",
                                       "--calib", "{v}", "--out", "x.rtv"], 2, _err("would keep no channel"), fast_flags=False),
    Case("11-fps-header-out-of-range", ["--source", "slow.mp4", "--results", "r.jsonl"], 0, _bad_fps_said, _bad_fps),
    Case("11b-fps-header-out-of-range-looped", ["--source", "slow.mp4", "--loop", "--max-frames", "10", "--results", "r.jsonl"],
         0, _bad_fps_looped, _bad_fps),
    Case("11-webcam-negative", ["--source", "webcam:-1"], 2, _err("webcam:N")),
    Case("11-webcam-not-a-number", ["--source", "webcam:abc"], 2, _err("webcam:N")),
    Case("11-bench-bogus-variant", ["bench", "--source", "{v}", "--variants", "bogus"], 2, _bench_fast, fast_flags=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adversarial_case(case: Case, clip: Path, tmp_path: Path, monkeypatch) -> None:
    v = tmp_path / "v.mp4"
    v.write_bytes(clip.read_bytes())
    if case.setup is not None:
        case.setup(tmp_path, v)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path.parent / "torch-home"))  # offline: nothing cached
    inputs = [(p, sha256(p)) for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()]
    args = [a.replace("{v}", "v.mp4") for a in case.args]
    if case.fast_flags:
        args += FAST
    elif args[0] not in ("optimize", "bench"):
        args += ["--headless", "--no-progress"]
    run = rtvision(args, tmp_path)
    check_common(run, case.code, inputs)
    case.check(run)


# -- rows that need more than one command line -----------------------------------------------------

def _popen(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rtvision", *args], cwd=cwd, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail(f"no {n} lines in {path.name} within {timeout_s:.0f} s")


@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_6_broken_pipe_on_results_stdout(target: str, faces_video, tmp_path: Path) -> None:
    """``--results - | head -1``: the run ends at the broken pipe with exit 6 and one error line;
    the --save video has as many frames as the summary counts (the records written, those the
    reader left in the pipe included): the frame whose record the pipe refused is not in it (it
    was: the video was written first)."""
    proc = _popen(["--source", str(faces_video), "--results", target, "--save", "v.mp4", "--summary-json", "s.json", *FAST],
                  tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read()
    proc.wait(timeout=60)
    strict_json(first)
    run = Run(proc.returncode, first, err, tmp_path)
    check_common(run, errors.EXIT_OUTPUT, [])
    assert "broken pipe" in run.err_lines[-1]
    processed = json.loads((tmp_path / "s.json").read_text())["frames_processed"]
    assert processed >= 1 and count_frames(tmp_path / "v.mp4") == processed, processed


def test_11_second_writer_of_the_same_results_is_refused(faces_video, tmp_path: Path) -> None:
    """Two processes, one ``--results``: the second gets exit 6 and one line; the first's lines stay whole."""
    first = _popen(["--source", str(faces_video), "--realtime", "--results", "r.jsonl", *FAST], tmp_path,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_lines(tmp_path / "r.jsonl", 5, first)
        second = rtvision(["--source", str(faces_video), "--results", "r.jsonl", *FAST], tmp_path)
        check_common(second, errors.EXIT_OUTPUT, [])
        assert "being written by another process" in second.err_lines[-1]
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == errors.EXIT_SIGTERM
    rows = jsonl(tmp_path / "r.jsonl")
    assert [r["frame"] for r in rows] == sorted({r["frame"] for r in rows})


def test_11_sighup_finalizes_outputs_like_sigterm(faces_video, tmp_path: Path) -> None:
    """The terminal closes (SIGHUP): exit 129, the video plays to the last JSONL line."""
    proc = _popen(["--source", str(faces_video), "--realtime", "--save", "o.mp4", "--results", "r.jsonl", *FAST],
                  tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_lines(tmp_path / "r.jsonl", 15, proc)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = Run(proc.returncode, out, err, tmp_path)
    check_common(run, errors.EXIT_SIGHUP, [])
    rows = jsonl(tmp_path / "r.jsonl")
    assert 15 <= len(rows) < 105
    assert count_frames(tmp_path / "o.mp4") == len(rows)


def test_5_a_stream_that_never_opens_is_masked_and_live_in_the_summary(clip: Path, tmp_path: Path) -> None:
    """Two streams, one a URL with a password and a path parameter session id that never opens:
    the other runs to its end (exit 7); no secret anywhere (its ``;jsessionid=`` was shown), and
    the summary JSON calls it live (it said ``file``, from a source that never opened)."""
    (tmp_path / "v.mp4").write_bytes(clip.read_bytes())
    run = rtvision(["--source", "v.mp4", "--source", "cam=http://u:hunter2@127.0.0.1:9/app;jsessionid=LEAKME/x.ts",
                    "--reconnect", "0", "--stall-timeout", "1", "--summary-json", "s.json", "--results", "r.jsonl", *FAST],
                   tmp_path)
    assert run.rc == errors.EXIT_STREAM_FAILED, run.err[-2000:]
    assert "Traceback" not in run.err
    blobs = [run.out.encode(), run.err.encode()] + [p.read_bytes() for p in run.files() if p.is_file()]
    for secret in SECRETS:
        assert not any(secret.encode() in b for b in blobs), f"secret {secret!r} leaked"
    streams = {r["stream"]: r for r in strict_json((tmp_path / "s.json").read_text())["streams"]}
    assert streams["cam"]["state"] == "failed" and streams["cam"]["live"] is True
    assert streams["cam"]["source"] == "http://u:***@127.0.0.1:9/app;jsessionid=***/x.ts"
    assert streams["v"]["frames_processed"] == 30 and len(jsonl(tmp_path / "r.jsonl")) == 30


@pytest.mark.parametrize("lines", ["short", "long"])
def test_7_a_stop_while_the_results_reader_reads_nothing_ends_the_run(lines: str, faces_video, tmp_path: Path) -> None:
    """``--results - | a reader that stopped reading``, then SIGTERM: the run used to sit in its
    write until the reader went away (then exit 6); now the write is given up at the stop, the
    run ends with 143, says what it dropped, and writes its summary. What the reader gets is
    whole lines only, also when a line is longer than one write to the pipe (``--topk 1000``:
    ~30 KB a record; a line was cut in the middle)."""
    import fcntl
    import termios

    flags = FAST if lines == "short" else ["--headless", "--no-progress", "--classifier", "mobilenet_v2", "--topk", "1000",
                                           "--faces", "off", "--batch", "1"]
    proc = _popen(["--source", str(faces_video), "--loop", "--max-frames", "100000", "--results", "-",
                   "--summary-json", "s.json", *flags], tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fd = proc.stdout.fileno()
        waiting, last, still = bytearray(4), -1, 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the pipe stops filling: the run waits for its reader
            fcntl.ioctl(fd, termios.FIONREAD, waiting)
            now = int.from_bytes(waiting, sys.byteorder)
            still = still + 1 if now == last and now > 0 else 0
            if still >= 8:  # 2 s without a byte more
                break
            last = now
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.25)
        else:
            pytest.fail("the results never filled the pipe")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not end a run whose results' reader reads nothing")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err, out = proc.stderr.read(), proc.stdout.read()
    assert proc.returncode == errors.EXIT_SIGTERM, err[-2000:]
    assert "Traceback" not in err and "standard output was not reading" in err
    assert out.endswith("\n"), out[-200:]
    rows = out.splitlines()
    assert rows and all(strict_json(r) for r in rows)  # whole records only
    if lines == "long":
        assert min(len(r) for r in rows) > 8192  # longer than one write to the pipe (PIPE_BUF)
    summary = strict_json((tmp_path / "s.json").read_text())
    assert summary["frames_processed"] >= len(rows)
