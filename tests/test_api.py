"""The Python API (``rtvision.open``): the CLI's pipeline, its results, its lifecycle."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import rtvision_threads

import rtvision


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "latency_ms"}


def test_api_results_equal_the_cli_results(faces_video, tmp_path):
    """The same clip and settings through the API and through the CLI: the same records."""
    out = tmp_path / "cli.jsonl"
    proc = subprocess.run([sys.executable, "-m", "rtvision", "--source", str(faces_video), "--headless", "--no-progress",
                           "--max-frames", "12", "--classifier", "mobilenet_v2", "--results", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    cli = [_strip(json.loads(line)) for line in out.read_text().splitlines()]
    with rtvision.open(str(faces_video), max_frames=12, classifier="mobilenet_v2") as run:
        api = [_strip(json.loads(json.dumps(r.to_json()))) for r in run]
        assert run.models.classifier.variant == "mobilenet_v2 int8 openvino cpu"
    assert len(api) == len(cli) == 12
    assert [r["frame"] for r in api] == list(range(12))
    assert api == cli
    assert all(len(r["labels"]) == 5 for r in api) and sum(len(r["faces"]) for r in api) >= 12 * 3


def test_leaving_the_block_early_stops_every_thread(faces_video):
    seen = []
    with rtvision.open(str(faces_video), classifier="none", faces="fast") as run:
        for r in run:
            seen.append(r.frame.index)
            if len(seen) == 3:
                break
        assert rtvision_threads(), "the pipeline's threads run inside the block"
    assert seen == [0, 1, 2]
    assert not [t.name for t in rtvision_threads()]


def test_an_exception_in_the_block_still_stops_everything(faces_video):
    with pytest.raises(KeyError):
        with rtvision.open(str(faces_video), classifier="none") as run:
            for _ in run:
                raise KeyError("user code failed")
    assert not rtvision_threads()


def test_unknown_setting_is_refused_with_the_known_ones():
    with pytest.raises(TypeError, match="unknown setting 'strde'.*face_stride"):
        rtvision.open("demo", strde=2)


def test_bad_source_raises_the_cli_error(tmp_path):
    from rtvision.errors import InputError

    with pytest.raises(InputError):
        with rtvision.open(str(tmp_path / "missing.mp4"), classifier="none"):
            pass
    assert not rtvision_threads()


def test_results_convert_to_supervision_detections(faces_video):
    sv = pytest.importorskip("supervision", reason="the supervision extra: pip install -e '.[supervision]'")
    with rtvision.open(str(faces_video), max_frames=6, classifier="none", faces="fast") as run:
        results = list(run)
    assert len(results) == 6
    for r in results:
        d = r.to_supervision()
        assert isinstance(d, sv.Detections) and len(d) == len(r.faces) >= 3
        np.testing.assert_array_equal(d.xyxy, r.faces.xyxy)
        np.testing.assert_array_equal(d.confidence, r.faces.scores)
        np.testing.assert_array_equal(d.tracker_id, r.faces.track_ids)
        assert list(d.data["class_name"]) == ["face"] * len(d)
    # supervision's own tools take them: its box annotator draws on the frame
    img = sv.BoxAnnotator().annotate(results[0].frame.image.copy(), results[0].to_supervision())
    assert img.shape == results[0].frame.image.shape and not np.array_equal(img, results[0].frame.image)


@pytest.mark.parametrize("kwargs, needle", [
    ({"demo_fps": float("nan")}, "demo_fps"),  # it spun a thread forever
    ({"demo_fps": 0}, "demo_fps"),
    ({"demo_size_wh": (0, 0)}, "demo_size_wh"),
    ({"lookahead": float("nan")}, "lookahead"),  # it hung in a busy loop
    ({"lookahead": 10**6}, "lookahead"),  # it held the whole source ahead
    ({"max_frames": "3"}, "max_frames"),
    ({"max_frames": float("nan")}, "max_frames"),  # it read the whole file
    ({"batch": 2.5}, "batch"),
    ({"batch": 10**9}, "batch"),
    ({"buffer_size": float("nan")}, "buffer_size"),
    ({"stall_timeout_s": float("nan")}, "stall_timeout_s"),
    ({"join_timeout_s": -1}, "join_timeout_s"),
    ({"face_scale": float("nan")}, "face_scale"),
    ({"topk": 0}, "topk"),
    ({"classifier": 5}, "classifier"),
    ({"weights": np.zeros(3)}, "weights"),
    ({"results_path": "r.jsonl"}, "results_path is the command line's"),  # it was silently ignored
    ({"save_path": "v.mp4"}, "save_path is the command line's"),
])
def test_bad_settings_are_usage_errors(kwargs, needle):
    """Every bad value is a UsageError (exit 2) naming the setting, before anything starts."""
    with pytest.raises(rtvision.errors.UsageError, match=needle) as ei:
        rtvision.open("demo", **{"classifier": "none", "faces": "off", **kwargs})
    assert ei.value.exit_code == 2 and "\n" not in str(ei.value)


def test_a_run_is_used_once_and_only_inside_its_block(faces_video):
    """Entering a Run twice re-opened its source under the running capture (an FFmpeg assertion
    aborted the process, or it deadlocked; a second pass yielded nothing and left the file open);
    iterating one that was never entered gave an AssertionError. Both are UsageErrors now, and
    nothing is left running. A pathlib.Path is a source."""
    from pathlib import Path

    run = rtvision.open(Path(faces_video), classifier="none", faces="off", max_frames=5)
    with pytest.raises(rtvision.errors.UsageError, match="with block"):
        iter(run)
    with run:
        with pytest.raises(rtvision.errors.UsageError, match="used once"):
            run.__enter__()
        assert [r.frame.index for r in run] == [0, 1, 2, 3, 4]
    with pytest.raises(rtvision.errors.UsageError, match="used once"):
        run.__enter__()
    assert not rtvision_threads()


def test_a_run_dropped_without_close_stops_its_threads():
    """A Run entered and then dropped (no close, no with): its threads used to run forever."""
    import gc
    import time

    def peek():
        run = rtvision.open("demo", classifier="none", faces="off")
        run.__enter__()
        return next(iter(run)).frame.index

    assert peek() == 0
    gc.collect()
    deadline = time.monotonic() + 10
    while rtvision_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rtvision_threads()


def test_settings_never_show_a_secret():
    url = "rtsp://alice:s3cretPW@cam.local/stream?token=TOK123"
    cfg = rtvision.settings(url)
    run = rtvision.open(url, classifier="none")
    for text in (repr(cfg), str(cfg), repr(cfg.source), repr(run), str(run.cfg)):
        assert "s3cretPW" not in text and "TOK123" not in text and "alice:***@" in text, text
    assert cfg.source.spec == url  # what is opened keeps them


def test_two_runs_at_once_leave_the_thread_counts_as_they_found_them(faces_video):
    """Two API runs overlapping in two threads (the face stage's helpers split torch's and
    OpenCV's threads while a file runs): afterwards the process has its own counts again (the
    second run took the first one's split counts for the process's and left OpenCV at 1)."""
    import threading
    import time

    import cv2
    import torch

    before = (torch.get_num_threads(), cv2.getNumThreads())
    frames: dict[str, list[int]] = {}

    def one(name: str, n: int, delay: float) -> None:
        time.sleep(delay)
        with rtvision.open(faces_video, classifier="none", faces="fast", max_frames=n) as run:
            frames[name] = [r.frame.index for r in run]

    threads = [threading.Thread(target=one, args=("a", 30, 0.0)), threading.Thread(target=one, args=("b", 45, 1.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert frames == {"a": list(range(30)), "b": list(range(45))}
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    assert not rtvision_threads()
