"""The one place that talks to ``torch.ao.quantization`` (int8 post-training quantization, CPU).

Why FX graph mode and not eager mode
------------------------------------
Eager mode needs a model written for it: ``QuantStub``/``DeQuantStub`` around the
network, ``FloatFunctional`` for every residual add and a hand-written ``fuse_model``
(torchvision's ``models.quantization.resnet*``). FX mode traces a *plain* torchvision
ResNet, finds conv+bn+relu and the residual adds itself, and does not care about channel
counts. That matters here because:

* torch-pruning shrinks plain torchvision ResNets to odd widths (64 -> 44 channels);
  FX quantizes those unchanged, with no model-specific code;
* the float model keeps torchvision's state_dict layout, so ``--weights FILE`` loads
  directly and the int8 model can be rebuilt from a float skeleton of the same shape
  (``quantize_skeleton``) before ``load_state_dict`` (see ``artifact.py``);
* FX keeps module names (``layer1.0.conv1`` stays ``layer1.0.conv1`` as a quantized
  ``ConvReLU2d``), so the pruned widths can be read back from a quantized model.

Steps, one function each: ``prepare`` (FX fuses conv+bn(+relu) *inside* ``prepare_fx``:
in torch 2.14 the output of a separate ``fuse_fx`` cannot be fed to ``prepare_fx``/
``convert_fx``, it fails with a KeyError on the fused names), ``calibrate``, ``convert``.

Deprecation
-----------
``torch.ao.quantization`` warns that it is deprecated (the supported path going forward
is torchao's pt2e quantizers; see the project notes). Its warnings are silenced *locally*
with ``quiet()``, never with a global filter, and the quantized engine is only changed
inside ``quantized_engine()``, which restores it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn

BACKEND = "x86"
"""Default backend (x86 = fbgemm + onednn heuristics). Recorded in every int8 artifact."""

_NOISE = (
    r".*torch\.ao\.quantization is deprecated.*",
    r".*Please use quant_min and quant_max.*",
    r".*must run observer before calling calculate_qparams.*",
    r".*TypedStorage is deprecated.*",
    r".*_aminmax is deprecated.*",
    r".*quantized tensor creation functions.*deprecated.*",
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation/observer chatter of ``torch.ao.quantization`` inside the block only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


@contextlib.contextmanager
def quantized_engine(backend: str = BACKEND) -> Iterator[None]:
    """Set ``torch.backends.quantized.engine`` for the block, then restore the previous one."""
    if backend not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"quantized backend {backend!r} is not supported by this torch build")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def supported(backend: str = BACKEND) -> bool:
    return backend in torch.backends.quantized.supported_engines


def _qconfig_mapping(backend: str):
    from torch.ao.quantization import get_default_qconfig_mapping

    return get_default_qconfig_mapping(backend)


def prepare(model: nn.Module, example_input: torch.Tensor, backend: str = BACKEND) -> nn.Module:
    """Trace an eval-mode float model, fuse conv+bn(+relu) and insert observers.

    The input model is not modified (FX builds a new GraphModule that shares parameters;
    BN folding happens on copies). example_input: (N,3,H,W) float32.
    """
    from torch.ao.quantization.quantize_fx import prepare_fx

    model = model.eval()
    with quiet(), quantized_engine(backend):
        return prepare_fx(model, _qconfig_mapping(backend), example_inputs=(example_input,))


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run calibration batches (N,3,H,W float32) through the observers; returns images seen."""
    seen = 0
    with quiet():
        for batch in batches:
            prepared(batch)
            seen += int(batch.shape[0])
    return seen


def convert(prepared: nn.Module, backend: str = BACKEND) -> nn.Module:
    """Turn a calibrated, prepared model into an int8 model (eval mode)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet(), quantized_engine(backend):
        return convert_fx(prepared).eval()


def quantize_skeleton(float_model: nn.Module, example_input: torch.Tensor, backend: str = BACKEND) -> nn.Module:
    """An int8 model with the right structure but placeholder scales, ready for ``load_state_dict``.

    Used to rebuild a saved int8 model: prepare + convert without calibration gives the same
    module graph and state_dict keys as the original, whose values then overwrite everything.
    """
    return convert(prepare(float_model, example_input, backend), backend)


def is_quantized(model: nn.Module) -> bool:
    """True if the module holds quantized (int8) layers."""
    return any(
        type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
        for m in model.modules()
    )


def safe_load(fileobj) -> object:
    """``torch.load(weights_only=True)`` on the CPU, quiet about quantized-tensor rebuild warnings.

    Raises whatever torch.load raises (``pickle.UnpicklingError`` for forbidden globals).
    """
    with quiet():
        return torch.load(fileobj, map_location="cpu", weights_only=True)


def short_reason(exc: BaseException) -> str:
    """One short line from an exception (torch's weights_only errors are paragraphs)."""
    text = str(exc).strip()
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if m:
        return f"forbidden global {m.group(1)}"
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)  # the reason may be on the next lines
    if m:
        text = m.group(1)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception from "):  # OpenVINO: where, the check, then why
        lines = lines[-1:]
    text = lines[0] if lines else type(exc).__name__
    return re.sub(r"\s+", " ", text)[:160]
