"""The pyramid and the summed-area tables: facenet's recipe, region tables for the local search."""

from __future__ import annotations

import pytest
import torch

from rtvision.faces.pyramid import CropTable, area_crops, integral_cpu, pyramid_scales


def test_pyramid_matches_facenet_recipe():
    # facenet: m = 12/min_face; scales m * factor^k while min(h, w) * scale >= 12
    scales = pyramid_scales(1080, 1920, 20, 0.709)
    assert scales[0] == pytest.approx(0.6)
    assert 1080 * scales[-1] >= 12 > 1080 * scales[-1] * 0.709
    half = pyramid_scales(1080, 1920, 20, 0.709, scale=0.5)
    assert half[0] == pytest.approx(0.3) and len(half) < len(scales)
    assert pyramid_scales(10, 10, 20, 0.709) == []  # a frame too small for the pyramid


def test_region_table_gives_the_whole_frames_crops(faces_frames):
    """The local search's summed-area table of a region gives the whole frame's R-/O-Net crops
    for rois inside it, and falls back to the whole frame's table for a roi that is not."""
    frame = faces_frames[0]
    whole = torch.from_numpy(integral_cpu([frame]))
    x0, y0, x1, y1 = 600, 400, 1100, 900
    calls = []

    def make_whole():
        calls.append(1)
        return whole

    rois = torch.tensor([[0, 650, 450, 730, 530], [0, 600, 400, 1100, 900], [0, 900, 700, 960, 790]])
    region = CropTable(torch.from_numpy(integral_cpu([frame[y0:y1, x0:x1]])), x0, y0, x1, y1, make_whole)
    assert torch.equal(region.crops(rois, 24), area_crops(whole, rois, 24))
    assert calls == []
    out = torch.cat([rois, torch.tensor([[0, 1090, 850, 1150, 910]])])  # reaches past x1 and y1
    assert torch.equal(region.crops(out, 48), area_crops(whole, out, 48))
    assert calls == [1]
