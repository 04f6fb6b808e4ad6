"""The torch runtime: fp32 on the CPU, fp16/bf16 (channels_last) on CUDA, torch.ao int8 on the CPU."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.classifier import Preprocess


class TorchRuntime:
    """``module`` (eval mode, already on ``device`` in its precision) behind the runtime interface."""

    backend = "torch"

    def __init__(self, module: nn.Module, preprocess: Preprocess, device: torch.device, precision: str) -> None:
        self.module = module.eval()
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.precision = precision
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)

    def prepare(self, images_bgr: list[np.ndarray]) -> torch.Tensor:
        return self.preprocess.batch(images_bgr, self.device, self._dtype)

    @torch.inference_mode()
    def run(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch).float()

    def set_num_threads(self, n: int) -> None:
        """torch's intra-op threads are process-wide: the worker sets them (and restores them)."""


def place(module: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """Move a float module to ``device`` in ``precision`` (fp16/bf16: channels_last, CUDA)."""
    module = module.to(device)
    if precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        module = module.to(dtype=dtype, memory_format=torch.channels_last)
    return module.eval()
