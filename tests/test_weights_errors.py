"""``describe_load_failure``: one line saying what a bad weights file is and what was expected."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from rtvision.models.weights_errors import describe_load_failure, guess_resnet, sniff


def _load_error(path) -> BaseException:
    with pytest.raises(Exception) as exc:
        torch.load(str(path), map_location="cpu", weights_only=True)
    return exc.value


def _fit_error(model, state) -> BaseException:
    with pytest.raises(RuntimeError) as exc:
        model.load_state_dict(state, strict=True)
    return exc.value


def one_line(msg: str) -> str:
    assert "\n" not in msg and "\x1b" not in msg, repr(msg)
    assert len(msg) < 500, len(msg)
    return msg


@pytest.fixture(scope="module")
def r18_state():
    return torchvision.models.resnet18(weights=None).state_dict()


def test_text_file(tmp_path):
    p = tmp_path / "text.pth"
    p.write_text("these are not weights\n" * 10)
    msg = one_line(describe_load_failure(p, _load_error(p)))
    assert "text file" in msg and "these are not weights" in msg and "state_dict" in msg
    assert not msg.endswith(": 101")


def test_full_model_pickle_is_named_and_refused(tmp_path):
    p = tmp_path / "full.pth"
    torch.save(torchvision.models.resnet18(weights=None), p)
    exc = _load_error(p)
    assert "\x1b" in str(exc)  # torch's own message carries ANSI codes; ours must not
    msg = one_line(describe_load_failure(p, exc))
    assert "torchvision.models.resnet.ResNet" in msg and "arbitrary code" in msg and "state_dict()" in msg


def test_other_pickled_objects(tmp_path):
    p = tmp_path / "obj.pth"
    with open(p, "wb") as fh:
        pickle.dump({"a": object}, fh, protocol=2)
    msg = one_line(describe_load_failure(p, _load_error(p)))
    assert "pickle" in msg and "arbitrary code" in msg


def test_empty_truncated_and_binary_files(tmp_path, r18_state):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert "an empty file" in one_line(describe_load_failure(empty, _load_error(empty)))
    full = tmp_path / "full.pth"
    torch.save(r18_state, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:5000])
    assert "truncated or damaged" in one_line(describe_load_failure(cut, _load_error(cut)))
    blob = tmp_path / "blob.pth"
    blob.write_bytes(bytes(range(7, 200)))
    assert "unknown kind" in one_line(describe_load_failure(blob, _load_error(blob)))
    assert sniff(full) == "a torch.save checkpoint"


def test_a_resnet34_state_dict_into_resnet18_names_both(r18_state):
    state = torchvision.models.resnet34(weights=None).state_dict()
    exc = _fit_error(torchvision.models.resnet18(weights=None), state)
    assert str(exc).splitlines()[0].endswith("ResNet:")  # what used to be shown
    msg = one_line(describe_load_failure("r34.pth", exc, "resnet18", state))
    assert msg.startswith("r34.pth does not fit resnet18:")
    assert "unexpected keys (e.g. layer1.2." in msg and "looks like a resnet34 state_dict" in msg


def test_a_head_of_another_size_is_shown_as_shapes(r18_state):
    exc = _fit_error(torchvision.models.resnet18(weights=None, num_classes=10), r18_state)
    msg = one_line(describe_load_failure("r18.pth", exc, "resnet18", r18_state))
    assert "fc.weight: 1000x512 in the file, 10x512 expected" in msg
    assert "looks like" not in msg  # the right architecture


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_guess_resnet(arch):
    assert guess_resnet(torchvision.models.get_model(arch, weights=None).state_dict()) == arch
    assert guess_resnet({"conv.weight": None}) is None


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_weights_of_the_wrong_kind_are_refused_not_cast(tmp_path, r18_state, dtype):
    """A state_dict whose first conv holds integers (or booleans): load_state_dict would cast it
    and the network would answer other labels; it is refused in one line naming the tensor."""
    from rtvision.errors import ModelError
    from rtvision.models import zoo

    state = dict(r18_state)
    state["conv1.weight"] = (state["conv1.weight"] * 100).to(dtype)
    path = tmp_path / "ints.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as ei:
        zoo.build_network("resnet18", str(path))
    msg = str(ei.value)
    assert "conv1.weight" in msg and str(dtype).removeprefix("torch.") in msg and "\n" not in msg
