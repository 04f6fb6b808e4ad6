"""Does allocating a new image per frame cost measurable time next to decoding it?

Decodes the same 1080p clip with OpenCV two ways, interleaved over repeats:
  new   - cap.read() returns a freshly allocated array per frame (what the capture thread does)
  reuse - cap.read(buf) decodes into one preallocated array
and times np.empty + first touch of a 1080p frame on its own.

    python scripts/buffer_alloc_check.py ../shared/data/faces_1080p.mp4 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np


def decode(path: str, reuse: bool) -> float:
    cap = cv2.VideoCapture(path)
    buf = None
    n = 0
    t = time.perf_counter()
    while True:
        if reuse and buf is not None:
            ok, img = cap.read(buf)
        else:
            ok, img = cap.read()
            buf = img
        if not ok:
            break
        n += 1
    dt = time.perf_counter() - t
    cap.release()
    return dt * 1000 / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    res = {"new": [], "reuse": []}
    for _ in range(a.repeats):
        for k in res:
            res[k].append(decode(a.video, k == "reuse"))
    t = time.perf_counter()
    for _ in range(200):
        x = np.empty((1080, 1920, 3), np.uint8)
        x[::64, :, :] = 1  # touch every page row-block
        x.fill(0)
    alloc_ms = (time.perf_counter() - t) * 1000 / 200
    for k, v in res.items():
        print(f"{k:6s} decode ms/frame: median {statistics.median(v):.2f}  min {min(v):.2f}  max {max(v):.2f}")
    print(f"np.empty + fill of one 1080p frame: {alloc_ms:.2f} ms")
    print(f"ratio new/reuse (median): {statistics.median(res['new']) / statistics.median(res['reuse']):.3f}")


if __name__ == "__main__":
    main()
