"""MTCNN's three networks with facenet-pytorch's weights (from its wheel), made for batched input.

- :func:`load_nets`: P-, R- and O-Net taking BGR (each first conv's input channels reversed),
  channels_last, no gradients; P-Net with its two heads fused (:class:`PNetFused`) and its pool
  as strided maxima (:class:`MaxPool2x2Ceil`).
- :func:`run_chunked`: a net over a batch of crops whose count changes every call, in chunks
  padded to a few sizes (:func:`padded_batch`).
- P-Net's geometry: its stride and cell (:data:`PNET_STRIDE`, :data:`PNET_CELL`) and output size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PNET_STRIDE = 2
PNET_CELL = 12
PAD_STEP = 16


class MaxPool2x2Ceil(nn.Module):
    """``nn.MaxPool2d(2, 2, ceil_mode=True)`` (P-Net's pool) as elementwise maxima of strided
    views: the same values, and about 2x faster on the CPU than ``max_pool2d``, whose CPU kernel
    also computes the argmax indices (on the finest pyramid level, the most costly P-Net op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        fh, fw = h // 2, w // 2
        out = torch.empty((n, c, h - fh, w - fw), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        top, bottom = x[:, :, 0 : 2 * fh : 2], x[:, :, 1 : 2 * fh : 2]
        out[:, :, :fh, :fw] = torch.maximum(
            torch.maximum(top[..., 0 : 2 * fw : 2], top[..., 1 : 2 * fw : 2]),
            torch.maximum(bottom[..., 0 : 2 * fw : 2], bottom[..., 1 : 2 * fw : 2]),
        )
        if w % 2:  # ceil_mode: the last column pools what is there
            out[:, :, :fh, fw] = torch.maximum(top[..., w - 1], bottom[..., w - 1])
        if h % 2:
            last = x[:, :, h - 1]
            out[:, :, fh, :fw] = torch.maximum(last[..., 0 : 2 * fw : 2], last[..., 1 : 2 * fw : 2])
            if w % 2:
                out[:, :, fh, fw] = last[..., w - 1]
        return out


class PNetFused(nn.Module):
    """P-Net with its two 1x1 heads merged into one conv: channel 0 is the face logit margin
    (``l1 - l0``, so ``sigmoid`` of it is the softmax face probability), channels 1..4 the box
    regression. Runs in channels_last (about 2x faster on CPU)."""

    def __init__(self, pnet: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(pnet.conv1, pnet.prelu1, MaxPool2x2Ceil(), pnet.conv2, pnet.prelu2, pnet.conv3, pnet.prelu3)
        head = nn.Conv2d(32, 5, kernel_size=1)
        with torch.no_grad():
            w1, b1 = pnet.conv4_1.weight, pnet.conv4_1.bias
            head.weight.copy_(torch.cat([w1[1:2] - w1[0:1], pnet.conv4_2.weight]))
            head.bias.copy_(torch.cat([b1[1:2] - b1[0:1], pnet.conv4_2.bias]))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def bgr_input(conv: nn.Conv2d) -> nn.Conv2d:
    """Make a first conv trained on RGB take BGR (its input channels reversed), in place."""
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))
    return conv


def load_nets(device: torch.device) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(P-Net fused, R-Net, O-Net) with facenet-pytorch's weights on ``device``: all three take
    BGR (first conv's input channels reversed) and run channels_last."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    pnet = PNet(pretrained=True).eval()
    bgr_input(pnet.conv1)
    rnet, onet = RNet(pretrained=True).eval(), ONet(pretrained=True).eval()
    bgr_input(rnet.conv1)
    bgr_input(onet.conv1)
    pnet = PNetFused(pnet).eval().to(device, memory_format=torch.channels_last)
    rnet = rnet.to(device, memory_format=torch.channels_last)
    onet = onet.to(device, memory_format=torch.channels_last)
    for net in (pnet, rnet, onet):
        net.requires_grad_(False)
    return pnet, rnet, onet


def padded_batch(n: int) -> int:
    """The batch size ``n`` crops run at: ``n`` itself up to PAD_STEP (a re-fit of 5 tracked
    faces runs 5 O-Net crops, not 8: the nets' time is linear in the batch), then the next
    multiple of PAD_STEP (a detection's ~40-60 O-Net crops run as 48 or 64; 100 R-Net crops
    as 112): about 30 shapes per net at most for oneDNN's per-shape cache (~0.4 MB each,
    measured), and little padding waste."""
    return n if n <= PAD_STEP else -(-n // PAD_STEP) * PAD_STEP


def pnet_out_hw(h: int, w: int) -> tuple[int, int]:
    # conv3 (-2), maxpool 2/2 ceil, conv3 (-2), conv3 (-2)
    return math.ceil((h - 2) / 2) - 4, math.ceil((w - 2) / 2) - 4


def run_chunked(net: nn.Module, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    """``net`` over a batch of crops whose count changes every call: chunks of
    ``chunk``, the last one padded (:func:`padded_batch`).

    The CPU backend (oneDNN) caches a compiled primitive per input shape, about 1 MB each:
    unpadded, a long run creates hundreds of shapes and RSS climbs by hundreds of MB before
    the cache fills; this way R-/O-Net see about 20 shapes at most. Small chunks on the CPU
    (256) also bound the padding waste."""
    outs = []
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk]
        n = part.shape[0]
        size = padded_batch(n)
        if size != n:
            pad = part.new_zeros((size - n, *part.shape[1:])).contiguous(memory_format=torch.channels_last)
            part = torch.cat([part, pad]).contiguous(memory_format=torch.channels_last)
        outs.append(tuple(o[:n] for o in net(part)))
    if len(outs) == 1:
        return outs[0]
    return tuple(torch.cat(parts) for parts in zip(*outs))

