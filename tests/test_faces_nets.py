"""MTCNN's networks as rtvision runs them."""

from __future__ import annotations

import pytest
import torch

from rtvision.faces.nets import MaxPool2x2Ceil, padded_batch


@pytest.mark.parametrize("shape", [(1, 10, 458, 815), (1, 10, 459, 816), (3, 10, 7, 5), (2, 10, 1, 1), (1, 10, 13, 1)])
def test_pnet_pool_is_max_pool_ceil(shape):
    """P-Net's strided-view pool gives max_pool2d(2, 2, ceil_mode=True)'s values bit for bit,
    even and odd sizes, in channels_last."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    out = MaxPool2x2Ceil()(x)
    assert torch.equal(out, torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_crop_batches_are_padded_to_few_sizes():
    assert [padded_batch(n) for n in (1, 5, 16, 17, 40, 100)] == [1, 5, 16, 32, 48, 112]
