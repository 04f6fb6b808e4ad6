"""``rtvision optimize`` end to end on the real clip with a random-init ResNet-18 state_dict file,
for both backends (torch: fp32 + torch.ao int8; openvino, the default: fp32/bf16/NNCF int8), and
its error paths (one line, documented exit code)."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from rtvision import errors, evaluation, optimize
from rtvision.config import ModelConfig
from rtvision.errors import UsageError
from rtvision.models import artifact, compress, zoo
from rtvision.models.artifact import load_artifact
from rtvision.models.build import load_for_pipeline
from rtvision.optimize import add_optimize_parser, check_prune_args, read_frames

FAST = ["--bench-repeats", "1", "--bench-iters", "1", "--batch", "2"]
SMALL = ["--calib-frames", "3", "--holdout-frames", "2"]  # 3 calibration frames -> 12 calibration images


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


def _capture_candidates(monkeypatch) -> list:
    """The variants ``optimize`` builds (the last one is saved), to compare the file with them."""
    seen: list = []
    real = optimize.build_candidates

    def spy(*a, **k):
        out = real(*a, **k)
        seen.extend(out)
        return out

    monkeypatch.setattr(optimize, "build_candidates", spy)
    return seen


def _check_report(report: dict, names: list[str], rows_by_name: dict) -> None:
    assert [v["name"] for v in report["variants"]] == names
    assert report["calibration"] == {"source": "3 frames of faces_1080p.mp4", "images": 12}
    assert report["holdout_images"] == 2 and report["batch_size"] == 2 and report["prune"] == 0.3
    assert report["reference"] == "resnet18 fp32" and report["arch"] == "resnet18"
    # a random-init network answers one class for everything: the report must say agreement means nothing
    assert report["agreement_informative"] is False
    ref = report["variants"][0]
    assert all(v == 1.0 for v in ref["ratios"].values()), ref["ratios"]
    assert ref["params"] == 11_689_512 and ref["agreement"]["top1"] == 1.0 and ref["agreement"]["kl"] < 1e-9
    for r in report["variants"]:
        assert set(r["speed"]) == {"batch1", "batch2"}, r["name"]
        assert all(s["images_per_s"] > 0 for s in r["speed"].values()), r["name"]
        assert set(r["agreement"]) == {"top1", "top5", "kl"} and r["agreement"]["kl"] >= 0
        assert r["file_bytes"] > 0 and r["macs"] > 0
        pruned = "pruned30" in r["name"]
        assert (r["ratios"]["macs"] < 0.55) if pruned else (r["ratios"]["macs"] == 1.0), r["name"]
        assert (r["ratios"]["params"] < 0.55) if pruned else (r["ratios"]["params"] == 1.0), r["name"]
        assert r["precision"] in r["name"] and (r["backend"] == "openvino") == r["name"].endswith("openvino")
    for name, (lo, hi) in rows_by_name.items():
        ratio = next(r for r in report["variants"] if r["name"] == name)["ratios"]["file_bytes"]
        assert lo <= ratio < hi, (name, ratio)


def _check_printed(printed: str, names: list[str]) -> None:
    for name in names:
        assert f"| {name} |" in printed, name
    assert "x fp32 b2" in printed and "UNINFORMATIVE" in printed
    assert "calibration: 12 images from 3 frames of faces_1080p.mp4" in printed


def _check_artifact_runs_like_in_optimize(out, candidates, faces_frames, tmp_path, backend: str, variant: str):
    final = candidates[-1]
    art = load_artifact(out)
    assert (art.variant, art.precision, art.backend) == (variant, "int8", backend)
    assert art.calibration == {"source": "3 frames of faces_1080p.mp4", "images": 12}
    assert art.report["variants"][-1]["name"] == variant
    assert art.metadata["prune"] == 0.3 and art.metadata["weights"].startswith("sha256:")
    assert art.preprocess["crop"] == 224 and art.class_names == zoo.imagenet_categories()
    clf = load_for_pipeline(str(out), ModelConfig(device="cpu", faces="off", cache_dir=str(tmp_path / "cache")))
    assert clf.backend == backend and clf.precision == "int8"
    got = clf.logits(clf.prepare(faces_frames))
    want = evaluation.run_all(final.runtime, faces_frames)
    assert got.shape == (8, 1000)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))
    # ...and that is the compressed model's own answer, not the fp32 reference's
    ref = evaluation.run_all(candidates[0].runtime, faces_frames)
    assert (got - ref).abs().max() > 100 * 1e-4 * float(want.abs().max())
    return clf


def test_end_to_end_torch_backend(resnet18_ckpt, faces_video, faces_frames, tmp_path, capsys, monkeypatch):
    out, plot = tmp_path / "r18.rtv", tmp_path / "frontier.png"
    candidates = _capture_candidates(monkeypatch)
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--calib", str(faces_video), *SMALL]
    argv += ["--prune", "0.3", "--backend", "torch", "--out", str(out), "--plot", str(plot)]
    assert _run(argv + FAST) == 0
    names = ["resnet18 fp32", "resnet18 int8 torch", "resnet18 pruned30 fp32", "resnet18 pruned30 int8 torch"]
    _check_printed(capsys.readouterr().out, names)
    report = json.loads((tmp_path / "r18.rtv.report.json").read_text())
    _check_report(report, names, {"resnet18 int8 torch": (0.2, 0.35), "resnet18 pruned30 fp32": (0.44, 0.55),
                                  "resnet18 pruned30 int8 torch": (0.05, 0.2)})
    assert [c.name for c in candidates] == names
    img = cv2.imread(str(plot))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 1
    clf = _check_artifact_runs_like_in_optimize(out, candidates, faces_frames, tmp_path, "torch",
                                                "resnet18 pruned30 int8 torch")
    assert artifact.load_artifact(out).payload["spec"] == compress.channel_spec(candidates[-1].float_model)
    assert clf.variant == "resnet18 pruned30 int8 torch cpu"


def test_end_to_end_openvino_backend(resnet18_ckpt, faces_video, faces_frames, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r18.rtv"
    candidates = _capture_candidates(monkeypatch)
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--calib", str(faces_video), *SMALL]
    argv += ["--prune", "0.3", "--out", str(out)]  # --backend auto: OpenVINO
    assert _run(argv + FAST) == 0
    # torch.ao int8 of the ResNets is measured beside OpenVINO int8 (for comparison; never saved)
    names = ["resnet18 fp32", "resnet18 fp32 openvino", "resnet18 bf16 openvino", "resnet18 int8 openvino",
             "resnet18 int8 torch", "resnet18 pruned30 fp32", "resnet18 pruned30 int8 openvino"]
    _check_printed(capsys.readouterr().out, names)
    report = json.loads((tmp_path / "r18.rtv.report.json").read_text())
    _check_report(report, names, {"resnet18 fp32 openvino": (0.9, 1.1), "resnet18 int8 openvino": (0.2, 0.35),
                                  "resnet18 pruned30 int8 openvino": (0.05, 0.2)})
    # the OpenVINO conversion is the same network: fp32 OpenVINO gives fp32 torch's logits, image by image
    ref = evaluation.run_all(candidates[0].runtime, faces_frames)
    ov32 = evaluation.run_all(candidates[1].runtime, faces_frames)
    torch.testing.assert_close(ov32, ref, rtol=0, atol=1e-3 * float(ref.abs().max()))
    clf = _check_artifact_runs_like_in_optimize(out, candidates, faces_frames, tmp_path, "openvino",
                                                "resnet18 pruned30 int8 openvino")
    assert clf.variant == "resnet18 pruned30 int8 openvino cpu"


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
    one_photo = tmp_path / "photos"
    one_photo.mkdir()
    cv2.imwrite(str(one_photo / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    base = ["optimize", "--classifier", "resnet18", "--out", str(tmp_path / "x.rtv")]
    ok = ["--weights", str(resnet18_ckpt), "--calib", str(faces_video)]
    cases = [
        (["--weights", str(garbage), "--calib", str(faces_video)], "cannot load weights", errors.EXIT_BAD_MODEL),
        (["--weights", str(wrong_arch), "--calib", str(faces_video)], "does not fit resnet18", errors.EXIT_BAD_MODEL),
        (["--weights", str(resnet18_ckpt), "--calib", str(not_video)], "clip.mp4", errors.EXIT_BAD_INPUT),
        (["--weights", str(resnet18_ckpt), "--calib", str(tmp_path / "missing.mp4")], "not found", errors.EXIT_BAD_INPUT),
        (["--weights", str(resnet18_ckpt), "--calib", str(one_photo)], "at least 2 photos", errors.EXIT_BAD_INPUT),
        ([*ok, "--labels", str(labels)], "2 names", errors.EXIT_BAD_MODEL),
        ([*ok, *SMALL, "--eval-images", str(tmp_path / "nowhere")], "not a folder", errors.EXIT_BAD_INPUT),
        ([*ok, "--prune", "0.95", "--round-to", "16"], "narrowest 64-channel", errors.EXIT_USAGE),
        (["--classifier", "mobilenet_v2", "--backend", "torch", *ok], "torch.ao int8 cannot quantize", errors.EXIT_USAGE),
    ]
    for extra, needle, code in cases:
        assert _run(base + extra) == code, extra
        assert needle in _one_error_line(capsys.readouterr().err), extra
    assert not (tmp_path / "x.rtv").exists()


def test_unwritable_outputs_exit_6(resnet18_ckpt, faces_video, tmp_path, capsys):
    base = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--calib", str(faces_video)]
    for extra in (["--out", str(tmp_path / "no" / "x.rtv")], ["--out", str(tmp_path / "x.rtv"), "--plot", str(tmp_path / "no" / "p.png")]):
        assert _run(base + extra) == errors.EXIT_OUTPUT
        assert "output folder does not exist" in _one_error_line(capsys.readouterr().err)
    # an --out that cannot be replaced (a folder): refused before any work (it was found only
    # when writing, after the whole run)
    taken = tmp_path / "taken.rtv"
    taken.mkdir()
    (taken / "keep").write_text("mine")
    argv = base + [*SMALL, *FAST, "--backend", "torch", "--quantize", "none", "--out", str(taken)]
    assert _run(argv) == errors.EXIT_OUTPUT
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    assert (taken / "keep").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.rtv"]  # no temp file, no report left behind


def test_an_output_that_is_an_input_or_no_file_is_refused_before_any_work(resnet18_ckpt, faces_video, tmp_path, capsys):
    """--out naming the calibration video overwrote it with the artifact (exit 0, the video
    gone); an empty --out or a --plot matplotlib cannot write failed after the whole build (exit
    1, the artifact written). Now each is exit 2 up front, and every input is left as it was."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(faces_video.read_bytes())
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    weights = tmp_path / "w.pth"
    weights.write_bytes(resnet18_ckpt.read_bytes())
    before = {p: p.read_bytes() for p in (clip, weights)}
    base = ["optimize", "--classifier", "resnet18", "--weights", str(weights), "--calib", str(clip), *SMALL, *FAST,
            "--backend", "torch", "--quantize", "none"]
    cases = [
        (["--out", str(clip)], "is --calib"),
        (["--out", str(link)], "is --calib"),  # the same file by another name
        (["--out", str(weights)], "is --weights"),
        (["--out", str(tmp_path / "x.rtv"), "--plot", str(clip)], "unknown image extension"),
        (["--out", str(tmp_path / "x.rtv"), "--plot", str(tmp_path / "p.txt")], "unknown image extension"),
        (["--out", ""], "empty path"),
        (["--out", "-"], "standard output"),
        (["--out", str(tmp_path / "x.png"), "--plot", str(tmp_path / "x.png")], "same file"),
    ]
    for extra, needle in cases:
        assert _run(base + extra) == errors.EXIT_USAGE, extra
        assert needle in _one_error_line(capsys.readouterr().err), extra
    assert {p: p.read_bytes() for p in (clip, weights)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "link.mp4", "w.pth"]
    # a photo of a folder input, or any file in it: the photos stay as they are (a --plot there
    # overwrote a calibration photo with exit 0)
    photos = _photo_folder(tmp_path / "in", 4, copy=True)
    photo = next(photos.glob("*.jpg"))
    linked = tmp_path / "linked"  # symlinks to photos elsewhere (copies: a failure must not write the shared data)
    linked.mkdir()
    for q in photos.iterdir():
        (linked / q.name).symlink_to(q)
    base = ["optimize", "--classifier", "resnet18", "--weights", str(weights), *SMALL, *FAST, "--backend", "torch",
            "--quantize", "none"]
    for extra in (["--calib", str(photos), "--out", str(tmp_path / "x.rtv"), "--plot", str(photo.with_suffix(".png"))],
                  ["--calib", str(clip), "--eval-images", str(photos), "--out", str(photos / "new.rtv")],
                  ["--calib", str(photos), "--out", str(tmp_path / "x.rtv"), "--plot", str(photo)],
                  ["--calib", str(linked), "--out", str(tmp_path / "x.rtv"), "--plot", str(next(linked.glob("*.jpg")))]):
        assert _run(base + extra) == errors.EXIT_USAGE, extra
        assert "is inside --calib" in _one_error_line(capsys.readouterr().err) or "--eval-images" in extra, extra
    assert sorted(p.name for p in photos.iterdir()) == sorted([*(q.name for q in photos.glob("*.jpg")), "labels.csv"])
    assert _run(base + ["--calib", str(clip), "--out", str(tmp_path / "x.rtv"), "--plot", str(tmp_path / "p.svgz")]) == 0
    assert (tmp_path / "p.svgz").stat().st_size > 0  # any format matplotlib writes


def test_pruning_that_removes_nothing_exits_5(resnet18_ckpt, faces_video, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compress, "prune", lambda model, *a, **k: copy.deepcopy(model))
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--calib", str(faces_video), *SMALL]
    argv += ["--prune", "0.3", "--backend", "torch", "--quantize", "none", "--out", str(tmp_path / "x.rtv"), *FAST]
    assert _run(argv) == errors.EXIT_BAD_MODEL
    assert "removed nothing" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x.rtv").exists()


def test_prune_is_checked_against_the_narrowest_layer():
    resnet = zoo.empty_module("resnet18")
    mobilenet = zoo.empty_module("mobilenet_v2")
    assert optimize.narrowest_layer(resnet, "fc") == 64
    assert optimize.narrowest_layer(mobilenet, "classifier.1") == 16
    check_prune_args(0.95, None, resnet, "fc")  # 64 -> 3 channels kept
    check_prune_args(0.9, None, mobilenet, "classifier.1")  # 16 -> 1
    check_prune_args(0.0, 1000, mobilenet, "classifier.1")  # no pruning: nothing to check
    with pytest.raises(UsageError, match="narrowest 16-channel"):
        check_prune_args(0.95, None, mobilenet, "classifier.1")
    with pytest.raises(UsageError, match="--round-to 4"):
        check_prune_args(0.95, 4, resnet, "fc")


def test_bad_flags_exit_2(faces_video, tmp_path):
    bad_flags = (["--prune", "1.5"], ["--prune", "0.99"], ["--prune", "0.005"], ["--prune", "nan"], ["--calib-frames", "0"],
                 ["--quantize", "int4"], ["--classifier", "vgg"], ["--backend", "tensorrt"], ["--distill", "-1"],
                 ["--max-drop", "-1"], ["--max-drop", "nan"], ["--max-drop", "101"], ["--min-agreement", "1.5"],
                 ["--min-agreement", "x"])
    for bad in bad_flags:
        with pytest.raises(SystemExit) as ei:
            _parser().parse_args(["optimize", "--calib", str(faces_video), "--out", str(tmp_path / "x.rtv"), *bad])
        assert ei.value.code == 2, bad
    for good, value in ((["--prune", "0"], 0.0), (["--prune", "0.01"], 0.01), (["--prune", "0.95"], 0.95)):
        args = _parser().parse_args(["optimize", "--calib", str(faces_video), "--out", "x.rtv", *good])
        assert args.prune == value and args.backend == "auto"
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
    cap = cv2.VideoCapture(str(faces_video))
    first = [cap.read()[1] for _ in range(9)]
    cap.release()
    picked = calib + hold
    assert sum(any(np.array_equal(p, f) for f in first) for p in picked) <= 2


def test_through_the_cli_main(faces_video, tmp_path, capsys):
    from rtvision import cli

    argv = ["optimize", "--classifier", "resnet18", "--weights", str(tmp_path / "nope.pt"), "--calib", str(faces_video)]
    assert cli.main(argv + ["--out", str(tmp_path / "x.rtv")]) == errors.EXIT_BAD_MODEL
    _one_error_line(capsys.readouterr().err)
    assert cli.main(["optimize", "--prune", "2", "--calib", str(faces_video), "--out", "x.rtv"]) == 2
    _one_error_line(capsys.readouterr().err)


def _labelled_subset(tmp_path, step: int = 12):
    """Every ``step``-th of the 500 labelled photos, as an --eval-images folder (labels.csv pointing at them)."""
    from conftest import shared_file

    photos = shared_file("imagenet-sample/labels.csv").parent
    rows = (photos / "labels.csv").read_text().splitlines()
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "labels.csv").write_text(
        "\n".join([rows[0]] + [f"{photos / r.split(',')[0]},{r.split(',', 1)[1]}" for r in rows[1:501:step]]) + "\n")
    return folder


def _photo_folder(tmp_path, n: int, ids=None, copy: bool = False):
    """A folder of ``n`` of the labelled photos (symlinks, or copies: for a test that might write
    there, never through a link into the shared data) and their labels.csv; ``ids`` replaces the
    class ids."""
    import shutil

    from conftest import shared_file

    photos = shared_file("imagenet-sample/labels.csv").parent
    rows = (photos / "labels.csv").read_text().splitlines()
    folder = tmp_path / f"photos{n}"
    folder.mkdir(parents=True)
    out = [rows[0]]
    for k, r in enumerate(rows[1 : n + 1]):
        name, cid = r.split(",", 1)
        if copy:
            shutil.copyfile(photos / name, folder / Path(name).name)
        else:
            (folder / Path(name).name).symlink_to(photos / name)
        out.append(f"{Path(name).name},{cid if ids is None else ids[k]}")
    (folder / "labels.csv").write_text("\n".join(out) + "\n")
    return folder


def test_labels_outside_the_networks_classes_and_too_few_photos_are_refused_up_front(resnet18_ckpt, faces_video, tmp_path, capsys):
    """A class_id that is not one of the network's classes (5000, -1) gave top-1 0 and wrote the
    artifact (exit 0); --calib the --eval-images folder of 3 photos left nothing to evaluate."""
    base = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--backend", "torch",
            "--quantize", "none", "--out", str(tmp_path / "x.rtv"), *SMALL, *FAST]
    for bad in (5000, -1):
        folder = _photo_folder(tmp_path / str(bad), 4, ids=[1, 2, bad, 3])
        assert _run(base + ["--calib", str(faces_video), "--eval-images", str(folder)]) == errors.EXIT_BAD_INPUT
        line = _one_error_line(capsys.readouterr().err)
        assert f"labels.csv:4: class_id {bad} is outside" in line, line
    three = _photo_folder(tmp_path, 3)
    assert _run(base + ["--calib", str(three), "--eval-images", str(three)]) == errors.EXIT_BAD_INPUT
    assert "at least 4 photos" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x.rtv").exists()


def test_calib_from_the_eval_folder_leaves_half_of_it_to_evaluate(resnet18_ckpt, tmp_path, capsys):
    """--calib and --eval-images the same folder of 40 photos at the default 32 + 32: all 40 were
    taken for calibration, and the run ended after the whole build with exit 1 (no image left to
    evaluate). Now at most half is taken, spread over the folder, and the other half evaluated."""
    folder = _photo_folder(tmp_path, 40)
    argv = ["optimize", "--classifier", "resnet18", "--weights", str(resnet18_ckpt), "--backend", "torch",
            "--quantize", "none", "--calib", str(folder), "--eval-images", str(folder), "--max-drop", "100",
            "--out", str(tmp_path / "x.rtv"), *FAST]
    assert _run(argv) == 0, capsys.readouterr().err[-2000:]
    report = json.loads((tmp_path / "x.rtv.report.json").read_text())
    assert report["eval"]["images"] == 20 and report["holdout_images"] + report["calibration"]["images"] // 4 == 20


def test_a_variant_that_lost_the_networks_accuracy_is_not_written(faces_video, tmp_path, capsys):
    """A trained MobileNetV2 pruned by 30% without fine-tuning answers almost nothing right; optimize
    measures that against the labels, says so in one line, writes the report but not the artifact
    (exit 5), and writes it when told to with --max-drop 100."""
    out = tmp_path / "p30.rtv"
    argv = ["optimize", "--classifier", "mobilenet_v2", "--calib", str(faces_video), *SMALL, "--prune", "0.3",
            "--backend", "torch", "--quantize", "none", "--eval-images", str(_labelled_subset(tmp_path)),
            "--out", str(out), *FAST]
    assert _run(argv) == errors.EXIT_BAD_MODEL
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert line.startswith("error: mobilenet_v2 pruned30 fp32: top-1 ") or "mobilenet_v2 pruned30 fp32: top-1 " in line, line
    assert "not written" in line and "--max-drop 2" in line and "--max-drop 100 writes it anyway" in line
    assert "| mobilenet_v2 pruned30 fp32 |" in captured.out and "NOT written" in captured.out
    assert not out.exists()
    report = json.loads((tmp_path / "p30.rtv.report.json").read_text())
    fp32, pruned = report["variants"][0], report["variants"][-1]
    assert report["written"] is None and report["refused"] in line
    assert report["eval"]["images"] == 42 and report["max_drop"] == 2.0
    assert fp32["accuracy"]["top1"] >= 0.7, fp32["accuracy"]  # the reference is a real classifier...
    assert fp32["accuracy"]["top1"] - pruned["accuracy"]["top1"] > 0.02  # ...and the pruned one lost more than allowed
    assert optimize.accuracy_refusal(report, pruned["name"], 100.0, 0.5) is None

    assert _run(argv + ["--max-drop", "100"]) == 0
    assert load_artifact(out).variant == "mobilenet_v2 pruned30 fp32"
    assert json.loads((tmp_path / "p30.rtv.report.json").read_text())["written"]["variant"] == "mobilenet_v2 pruned30 fp32"


def test_without_labels_a_collapsed_pruned_network_is_not_written(faces_video, tmp_path, capsys):
    """No --eval-images, the default 32 held-out frames: a trained MobileNetV2 pruned by 30%
    without fine-tuning agrees with fp32 on almost nothing. The agreement is informative (the
    frames and their crops get 10+ classes from fp32) and below --min-agreement 0.5, so the
    artifact is not written, exit 5. (On the frames alone fp32 gave 6 classes: the check was
    skipped as uninformative and the collapsed network written, exit 0.)"""
    out = tmp_path / "p30.rtv"
    argv = ["optimize", "--classifier", "mobilenet_v2", "--calib", str(faces_video), "--calib-frames", "3",
            "--prune", "0.3", "--backend", "torch", "--quantize", "none", "--out", str(out), *FAST]
    assert _run(argv) == errors.EXIT_BAD_MODEL
    line = _one_error_line(capsys.readouterr().err)
    assert "mobilenet_v2 pruned30 fp32: agrees with fp32 on " in line and "--min-agreement 0.5" in line, line
    assert not out.exists()
    report = json.loads((tmp_path / "p30.rtv.report.json").read_text())
    assert report["agreement_informative"] and report["agreement_on"] == "32 held-out frames and 96 crops of them"
    assert report["variants"][-1]["agreement"]["top1"] < 0.5


def test_accuracy_refusal_without_labels_uses_agreement_only_when_it_means_something():
    def report(agree: float, informative: bool) -> dict:
        rows = [{"name": "m fp32", "precision": "fp32", "agreement": {"top1": 1.0}},
                {"name": "m int8 openvino", "precision": "int8", "agreement": {"top1": 0.9}},
                {"name": "m pruned30 int8 openvino", "precision": "int8", "agreement": {"top1": agree}}]
        return {"variants": rows, "agreement_informative": informative, "agreement_on": "32 held-out frames"}

    why = optimize.accuracy_refusal(report(0.1, True), "m pruned30 int8 openvino", 2.0, 0.5)
    assert why and "agrees with fp32 on 0.100 of 32 held-out frames (--min-agreement 0.5)" in why
    assert "within the bound: m int8 openvino" in why and "--min-agreement 0 writes it anyway" in why
    assert optimize.accuracy_refusal(report(0.6, True), "m pruned30 int8 openvino", 2.0, 0.5) is None
    assert optimize.accuracy_refusal(report(0.1, False), "m pruned30 int8 openvino", 2.0, 0.5) is None  # random-init
    assert optimize.accuracy_refusal(report(0.1, True), "m pruned30 int8 openvino", 2.0, 0.0) is None
