"""Classifier runtimes: one small interface, with torch and OpenVINO behind it.

A runtime takes BGR frames to logits in two steps, so that the first can run on another thread
(``InferenceWorker``'s helper) while the model runs:

* ``prepare(images_bgr)``: the model's input batch (a torch tensor, or a uint8 array that an
  OpenVINO model normalizes itself);
* ``run(batch)``: float32 logits (N, classes), a torch tensor.

``resolve_target`` is the one place that decides where and how the classifier runs (device,
backend, precision), for a plain run, an ``--model`` artifact and the bench alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..config import BACKENDS, PRECISIONS
from ..errors import UsageError


class ClassifierRuntime(Protocol):
    backend: str  # "torch" | "openvino"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    device: torch.device

    def prepare(self, images_bgr: list[np.ndarray]) -> Any: ...
    def run(self, batch: Any) -> torch.Tensor: ...
    def set_num_threads(self, n: int) -> None: ...


@dataclass(frozen=True)
class Target:
    """Where the classifier runs: ``device`` (cpu|cuda), ``backend`` (torch|openvino), ``precision``."""

    device: torch.device
    backend: str
    precision: str

    def describe(self) -> str:
        return f"{self.precision} {self.backend} {self.device.type}"


def cuda_available() -> bool:
    return torch.cuda.is_available()


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. FP32, INT8, BF16)."""
    from .openvino_runtime import core

    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def resolve_target(
    device: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    *,
    fixed_backend: str | None = None,
    fixed_precision: str | None = None,
    what: str = "the artifact",
) -> Target:
    """The classifier's device, backend and precision from the flags (``auto`` resolved).

    ``fixed_backend`` / ``fixed_precision``: what an artifact was built as. An int8 artifact runs
    only as int8; an fp32 one runs as fp32 (``auto``), or fp16/bf16 where they run.
    Rules: int8 and OpenVINO run on the CPU, so with ``--device auto`` they take the CPU even on a
    CUDA machine (the face detector may still use CUDA); ``--device cuda`` with them is a usage
    error that says why. ``auto`` device: CUDA when there is one. ``auto`` backend: OpenVINO on
    the CPU, torch on CUDA. ``auto`` precision: int8 on the CPU, fp16 on CUDA.
    Raises UsageError (one line) for combinations that cannot run.
    """
    for name, value, allowed in (("device", device, ("auto", "cpu", "cuda")), ("backend", backend, BACKENDS),
                                 ("precision", precision, PRECISIONS)):
        if value not in allowed:
            raise UsageError(f"--{name} {value!r}: choose from {', '.join(allowed)}")
    if fixed_backend is not None:
        if backend not in ("auto", fixed_backend):
            raise UsageError(f"{what} was built for {fixed_backend}; it cannot run with --backend {backend}")
        backend = fixed_backend
    if fixed_precision == "int8" and precision not in ("auto", "int8"):
        raise UsageError(f"{what} is int8; it cannot run as --precision {precision}")
    if fixed_precision == "int8":
        precision = "int8"
    cpu_only = backend == "openvino" or precision == "int8"
    if device == "cuda":
        if not cuda_available():
            raise UsageError("--device cuda: no CUDA device is available")
        if cpu_only:
            why = "OpenVINO runs on the CPU" if backend == "openvino" else "int8 runs on the CPU"
            raise UsageError(f"--device cuda with {precision} {backend}: {why}; use --device cpu (or auto), "
                             "or fp16 on CUDA")
        dev = torch.device("cuda")
    elif device == "cpu" or cpu_only:
        dev = torch.device("cpu")
    else:
        dev = torch.device("cuda" if cuda_available() else "cpu")
    if backend == "auto":
        backend = "openvino" if dev.type == "cpu" else "torch"
    if precision == "auto":
        if fixed_precision == "fp32":
            precision = "fp16" if dev.type == "cuda" else "fp32"
        else:
            precision = "int8" if dev.type == "cpu" else "fp16"
    if fixed_precision == "fp32" and precision == "int8":
        raise UsageError(f"{what} is fp32; quantize it with rtvision optimize --quantize int8")
    if dev.type == "cpu" and precision == "fp16":
        raise UsageError("--precision fp16 needs CUDA; on the CPU use int8, bf16 (OpenVINO) or fp32")
    if dev.type == "cpu" and backend == "torch" and precision == "bf16":
        raise UsageError("--precision bf16 on the CPU runs on OpenVINO: use --backend openvino (or auto)")
    if dev.type == "cpu" and backend == "openvino" and precision == "bf16":
        caps = cpu_capabilities()
        if "BF16" not in caps:
            # OpenVINO would take the hint and run fp32: a run or a bench labelled bf16 would not be
            raise UsageError(f"--precision bf16: this CPU has no bf16 arithmetic (OpenVINO's CPU capabilities: "
                             f"{', '.join(caps)}), so it would run as fp32; use fp32 or int8")
    if dev.type == "cuda" and precision not in ("fp32", "fp16", "bf16"):
        raise UsageError(f"--precision {precision} does not run on CUDA")
    return Target(dev, backend, precision)
