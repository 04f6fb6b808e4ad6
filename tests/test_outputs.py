"""Output paths: checked up front, locked while written, never left empty; the sinks create
their files at the first record; a file whose frames cannot be processed is a bad input."""

from __future__ import annotations

import json
import os

import av
import cv2
import numpy as np
import pytest
from fakes import run_to_end, FakeClassifier, FakeFaces, fake_models
from faults import Faults, FaultySource

from rtvision import errors
from rtvision.config import ModelConfig, RunConfig, SourceConfig
from rtvision.errors import OutputError, UsageError
from rtvision.outputs import VIDEO_FORMATS, OutputClaims, check_outputs
from rtvision.sinks import JsonlSink, VideoSink

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def video(tmp_path):
    p = tmp_path / "in.mp4"
    p.write_bytes(b"not really a video, but a file")
    return p


def test_outputs_that_are_the_input_or_each_other_are_refused(video, tmp_path):
    (tmp_path / "sym.mp4").symlink_to(video)
    os.link(video, tmp_path / "hard.mp4")
    for outputs in ({"--save": str(video)}, {"--results": str(tmp_path / "sym.mp4")},
                    {"--summary-json": str(tmp_path / "hard.mp4")},
                    {"--results": str(tmp_path / "sub" / ".." / "in.mp4")}):
        with pytest.raises(UsageError, match="is the input video"):
            check_outputs(str(video), outputs)
    with pytest.raises(UsageError, match="same file"):
        check_outputs("demo", {"--save": str(tmp_path / "o.mp4"), "--results": str(tmp_path / "o.mp4")})
    (tmp_path / "o.json").write_text("{}")
    os.link(tmp_path / "o.json", tmp_path / "o2.json")
    with pytest.raises(UsageError, match="same file"):
        check_outputs("demo", {"--results": str(tmp_path / "o.json"), "--summary-json": str(tmp_path / "o2.json")})
    # distinct files, and /dev/null twice, are fine
    check_outputs(str(video), {"--save": str(tmp_path / "a.mp4"), "--results": str(tmp_path / "a.jsonl"),
                               "--summary-json": str(tmp_path / "a.json")})
    check_outputs("demo", {"--results": os.devnull, "--summary-json": os.devnull})


@pytest.mark.parametrize("name", ["out.avi", "out.mkv", "out.xyz", "out", "out.jsonl"])
def test_unknown_video_extensions_are_refused(name, tmp_path):
    with pytest.raises(UsageError, match="unknown video extension"):
        check_outputs("demo", {"--save": str(tmp_path / name)})
    assert not (tmp_path / name).exists()


def test_unwritable_outputs_are_output_errors(video, tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        check_outputs("demo", {"--summary-json": str(tmp_path)})
    with pytest.raises(OutputError, match="not a folder"):
        check_outputs("demo", {"--results": str(video / "r.jsonl")})
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(OutputError, match="dangling"):
        check_outputs("demo", {"--summary-json": str(tmp_path / "dangling.json")})


@pytest.mark.parametrize("suffix", list(VIDEO_FORMATS))
def test_every_accepted_extension_round_trips(suffix, tmp_path):
    """What --save accepts, the sink writes and FFmpeg (PyAV) and OpenCV read back, frame for frame."""
    path = tmp_path / f"o{suffix}"
    rng = np.random.default_rng(1)
    with VideoSink(path, 25.0) as sink:
        for _ in range(12):
            sink.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    with av.open(str(path)) as c:
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (96, 64)
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12


def test_sinks_create_nothing_without_a_record(tmp_path):
    with JsonlSink(tmp_path / "sub" / "r.jsonl"), VideoSink(tmp_path / "v.mp4", 25.0):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_results_file_that_runs_out_of_space_ends_with_a_whole_line(tmp_path):
    """A record that the disk takes only in part (a full disk; here a file size limit, which
    fails the same way: a short write, then an error) is cut off again: the run ends with an
    output error, and every line of the file parses (it used to end in half a record)."""
    import subprocess
    import sys

    path = tmp_path / "r.jsonl"
    child = (
        "import resource, signal, sys\n"
        "from rtvision.errors import OutputError\n"
        "from rtvision.sinks import JsonlSink\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "with JsonlSink(sys.argv[1]) as sink:\n"
        "    try:\n"
        "        for i in range(100):\n"
        "            sink.write_record({'frame': i, 'pad': 'x' * 280})\n"
        "    except OutputError as exc:\n"
        "        print(sink.count, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    count, message = out.stdout.split(" ", 1)
    assert "cannot write" in message and int(count) == 3  # 3 records of ~300 bytes fit under 1000
    text = path.read_text()
    assert text.endswith("\n") and len(text) < 1000
    assert [json.loads(line)["frame"] for line in text.splitlines()] == [0, 1, 2]


def test_claims_lock_keep_and_clean_up(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text("kept\n")
    new = tmp_path / "new" / "dir" / "r.jsonl"
    written = tmp_path / "w.json"
    outputs = {"--results": str(old), "--summary-json": str(new), "--save": str(written)}
    with OutputClaims(outputs):
        assert new.exists() and old.read_text() == "kept\n"  # created, never truncated
        with pytest.raises(OutputError, match="being written by another process"):
            with OutputClaims({"--results": str(old)}):
                pass
        written.write_text("{}")
    assert old.read_text() == "kept\n"  # existed before: untouched
    assert not new.exists() and not (tmp_path / "new").exists()  # created and left empty: removed, with its folders
    assert written.read_text() == "{}"
    with OutputClaims({"--results": str(old)}):  # released: free again
        pass


def _run(source, **kw):
    src_kw = {k: kw.pop(k) for k in list(kw) if k in SourceConfig.__dataclass_fields__}
    cfg = RunConfig(SourceConfig("faulty", **src_kw), ModelConfig(), progress=False, **kw)
    return run_to_end(cfg, fake_models(FakeClassifier(), FakeFaces()), source)[0]


def test_frames_too_small_in_a_file_are_corrupt_frames(tmp_path):
    """A file whose frames shrink below 2x2: each counts as corrupt, and --max-corrupt stops the run."""
    out = tmp_path / "r.jsonl"
    s = _run(FaultySource(30, live=False, faults=Faults(resize_at={5: (1, 1)})), batch=1, max_corrupt=3,
             results_path=str(out))
    assert s["exit_code"] == errors.EXIT_BAD_INPUT and "corrupt" in s["error"] and "1x1" in s["error"]
    assert s["frames_corrupt"] == 4
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [0, 1, 2, 3, 4]


def test_2x2_frames_are_processed_not_dropped():
    s = _run(FaultySource(10, live=False, size_wh=(2, 2)), batch=2)
    assert s["exit_code"] == 0 and s["frames_processed"] == 10 and s["frames_corrupt"] == 0


def test_a_run_that_processes_nothing_is_a_bad_input(monkeypatch, tmp_path, capsys):
    """No frame at all (a source that ends at once): exit 3 with one line, and no empty output."""
    import rtvision.pipeline as pipeline_mod
    from rtvision.cli import main

    monkeypatch.setattr(pipeline_mod, "open_source", lambda cfg: FaultySource(0, live=False))
    out, save = tmp_path / "r.jsonl", tmp_path / "v.mp4"
    rc = main(["--source", "demo", "--headless", "--no-progress", "--classifier", "none", "--faces", "off",
               "--results", str(out), "--save", str(save), "--summary-json", str(tmp_path / "s.json")])
    assert rc == errors.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rtvision: error:") and "no frame processed" in err[-1]
    assert not out.exists() and not save.exists()
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["exit_code"] == errors.EXIT_BAD_INPUT and s["frames_processed"] == 0 and s["steady_fps"] is None
