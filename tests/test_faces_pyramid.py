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


GUARDED_CHILD = r'''
import ctypes, mmap, sys
import numpy as np

# A 1080p BGR frame whose last byte is the last byte before a page that cannot be read (as a
# frame at the end of a thread's malloc arena can be): a read past the frame is a SIGSEGV.
libc = ctypes.CDLL("libc.so.6", use_errno=True)
shape = (1080, 1920, 3)
nbytes = int(np.prod(shape))
pages = (nbytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE + 1
m = mmap.mmap(-1, pages * mmap.PAGESIZE)
buf = (ctypes.c_char * (pages * mmap.PAGESIZE)).from_buffer(m)
guard = ctypes.addressof(buf) + (pages - 1) * mmap.PAGESIZE
assert libc.mprotect(ctypes.c_void_p(guard), mmap.PAGESIZE, 0) == 0
frame = np.frombuffer(m, np.uint8, count=nbytes, offset=(pages - 1) * mmap.PAGESIZE - nbytes).reshape(shape)
frame[...] = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)

from rtvision.faces.detector import FastMTCNN
from rtvision.faces.pyramid import integral_cpu

region = frame[1000:, 1800:]  # the bottom right corner: a view, not contiguous
table = integral_cpu([region])[0]
assert (table[1:, 1:] == region.astype(np.int64).cumsum(0).cumsum(1)).all()
# The local search's own region table, for a face lost in the bottom right corner.
FastMTCNN("cpu").detect_near(frame, np.array([[1840, 1010, 1900, 1075]], np.float32))
print("ok")
'''


def test_a_region_table_reads_nothing_past_the_frame():
    """The local search's summed-area table of a region (a view of the frame) at the frame's
    bottom right corner, with the frame right before an unreadable page: OpenCV's integral of
    such a view read past the frame's end (SIGSEGV, once in a live bench run); run in a child,
    so that a crash fails this test instead of ending the suite."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", GUARDED_CHILD], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.returncode, proc.stderr[-2000:])
