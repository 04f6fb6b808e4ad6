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
