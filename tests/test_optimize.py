"""``rtvision optimize`` end to end on the real clip with a random-init ResNet-18 state_dict file."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torchvision

from rtvision import errors
from rtvision.models.artifact import load_artifact
from rtvision.optimize import add_optimize_parser, read_frames

FAST = ["--bench-repeats", "1", "--bench-iters", "1", "--batch", "2"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtvision")
    add_optimize_parser(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    """Through the real entry point, which turns errors into one line and an exit code."""
    from rtvision.cli import main

    return main(argv)




def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_end_to_end_prune_and_int8(resnet18_ckpt, faces_video, tmp_path, capsys):
    out = tmp_path / "r18.rtv"
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--calib", str(faces_video)]
    argv += ["--calib-frames", "4", "--holdout-frames", "3", "--prune", "0.3", "--quantize", "int8", "--out", str(out)]
    assert _run(argv + FAST) == 0
    printed = capsys.readouterr().out
    assert "| resnet18 pruned30 int8 |" in printed and "| resnet18 fp32 |" in printed
    report = json.loads((tmp_path / "r18.rtv.report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["resnet18 fp32", "resnet18 int8", "resnet18 pruned30 fp32", "resnet18 pruned30 int8"]
    assert report["calibration"] == {"source": "faces_1080p.mp4", "frames": 4}
    assert report["holdout_frames"] == 3
    final = report["variants"][-1]
    assert final["ratios"]["macs"] < 0.55 and final["ratios"]["file_bytes"] < 0.15
    m = load_artifact(out)
    assert m.variant == "resnet18 pruned30 int8" and m.precision == "int8"
    assert m.calibration == {"source": "faces_1080p.mp4", "frames": 4}
    assert m.report["variants"][-1]["name"] == "resnet18 pruned30 int8"
    assert m.preprocess["crop"] == 224 and len(m.class_names) == 1000


def test_missing_weights_file_exits_5_with_one_line(faces_video, tmp_path, capsys):
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(tmp_path / "nope.pt"), "--calib", str(faces_video)]
    assert _run(argv + ["--out", str(tmp_path / "x.rtv")]) == errors.EXIT_BAD_MODEL
    line = _one_error_line(capsys.readouterr().err)
    assert "weights file not found" in line
    assert not (tmp_path / "x.rtv").exists()


def test_bad_inputs_exit_codes(resnet18_ckpt, faces_video, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    not_video = tmp_path / "clip.mp4"
    not_video.write_text("hello")
    wrong_arch = tmp_path / "r34-shaped.pt"
    torch.save({"fc.weight": torch.zeros(1000, 512)}, wrong_arch)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    base = ["optimize", "--classifier", "resnet18", "--out", str(tmp_path / "x.rtv")]
    cases = [
        (["--weights", str(garbage), "--calib", str(faces_video)], "cannot load weights", errors.EXIT_BAD_MODEL),
        (["--weights", str(wrong_arch), "--calib", str(faces_video)], "does not fit resnet18", errors.EXIT_BAD_MODEL),
        (["--weights", str(resnet18_ckpt), "--calib", str(not_video)], "clip.mp4", errors.EXIT_BAD_INPUT),
        (["--weights", str(resnet18_ckpt), "--calib", str(tmp_path / "missing.mp4")], "not found", errors.EXIT_BAD_INPUT),
        (["--weights", str(resnet18_ckpt), "--calib", str(faces_video), "--labels", str(labels)], "2 names", errors.EXIT_BAD_MODEL),
    ]
    for extra, needle, code in cases:
        assert _run(base + extra) == code, extra
        assert needle in _one_error_line(capsys.readouterr().err), extra


def test_bad_flags_exit_2(faces_video, tmp_path):
    for bad in (["--prune", "1.5"], ["--calib-frames", "0"], ["--quantize", "int4"], ["--classifier", "vgg"]):
        with pytest.raises(SystemExit) as ei:
            _parser().parse_args(["optimize", "--calib", str(faces_video), "--out", str(tmp_path / "x.rtv"), *bad])
        assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        _parser().parse_args(["optimize", "--calib", str(faces_video)])  # --out is required
    assert ei.value.code == 2


def test_offline_imagenet_weights_exit_5(faces_video, tmp_path, capsys, monkeypatch):
    def offline(self, *a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    argv = ["optimize", "--classifier", "resnet18", "--weights", "imagenet", "--calib", str(faces_video)]
    assert _run(argv + ["--out", str(tmp_path / "x.rtv")]) == errors.EXIT_BAD_MODEL
    assert "--weights FILE" in _one_error_line(capsys.readouterr().err)


def test_calibration_and_holdout_frames_are_disjoint_and_spread(faces_video):
    calib, hold = read_frames(faces_video, 6, 3)
    assert len(calib) == 6 and len(hold) == 3
    for h in hold:
        assert not any(np.array_equal(h, c) for c in calib)
    # spread over the clip: the last frame (index 104) is among the picks, not just the first 9
    import cv2

    cap = cv2.VideoCapture(str(faces_video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    first = [cap.read()[1] for _ in range(9)]
    cap.release()
    picked = calib + hold
    assert sum(any(np.array_equal(p, f) for f in first) for p in picked) <= 2


def test_through_the_cli_main(faces_video, tmp_path, capsys):
    cli = pytest.importorskip("rtvision.cli")
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(tmp_path / "nope.pt"), "--calib", str(faces_video)]
    assert cli.main(argv + ["--out", str(tmp_path / "x.rtv")]) == errors.EXIT_BAD_MODEL
    _one_error_line(capsys.readouterr().err)
    assert cli.main(["optimize", "--prune", "2", "--calib", str(faces_video), "--out", "x.rtv"]) == 2
