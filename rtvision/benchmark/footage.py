"""Test footage made from a real clip: the conditions a face tracker meets on footage it was not
tuned on, generated from one recording so that every clip has real faces.

* ``cuts``: segments of the clip spliced out of order (hard cuts), some mirrored, some zoomed in
  (a crop of the frame scaled back up), at the clip's own size.
* ``cuts-360p``: the same, downscaled to 640x360 (a small stage-like frame; small faces).
* ``skip2`` / ``skip3``: every second / every third frame kept (faster motion at the same fps);
  ``skip3`` plays forward then backward (a sudden reversal of every motion), so that it is as
  long as the others.

Each clip is written once (H.264, PyAV) into a folder outside the repository, named by the
recipe and the source file's size and mtime; a clip already there is reused. Nothing here
knows about faces: the face reference of each clip is computed from the clip itself
(:mod:`rtvision.benchmark.quality`), so it includes the damage its encoding did.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

RECIPE_VERSION = 1

# (first frame, frames, transform) of each segment of the ``cuts`` clips, in playing order,
# for a 105-frame source (longer sources use the same frames; shorter ones are scaled down).
# Lengths vary so that the cuts fall at every phase of a detection stride.
SEGMENTS = (
    (45, 13, "zoom"),
    (0, 17, "none"),
    (75, 11, "mirror"),
    (15, 19, "zoom-mirror"),
    (90, 14, "none"),
    (30, 16, "mirror"),
    (60, 15, "zoom"),
)
ZOOM = 1.4  # the zoomed segments show the middle 1/ZOOM of the frame, scaled back up
SMALL_WH = (640, 360)


@dataclass(frozen=True)
class Clip:
    """A generated clip: its file, the source frame each of its frames came from, and the
    positions of the frames that follow a cut (for ``cuts`` clips)."""

    name: str
    path: Path
    source_frames: list[int]
    cuts: list[int]


def read_frames(path: str | Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a video (BGR) and its fps (25 when the header has none)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if not frames:
        raise ValueError(f"no frame decoded from {path}")
    return frames, float(fps if 1 <= fps <= 240 else 25.0)


def zoom(img: np.ndarray, factor: float = ZOOM) -> np.ndarray:
    """The middle 1/``factor`` of the frame scaled back up to the frame's size."""
    h, w = img.shape[:2]
    cw, ch = round(w / factor), round(h / factor)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def transform(img: np.ndarray, kind: str) -> np.ndarray:
    if "zoom" in kind:
        img = zoom(img)
    if "mirror" in kind:
        img = cv2.flip(img, 1)
    return img


def cut_plan(n_source: int) -> tuple[list[tuple[int, str]], list[int]]:
    """((source frame, transform) per output frame, positions right after a cut) of a ``cuts``
    clip from a source of ``n_source`` frames."""
    k = min(1.0, n_source / 105.0)
    out: list[tuple[int, str]] = []
    cuts = []
    for start, length, kind in SEGMENTS:
        s, n = int(start * k), max(2, int(round(length * k)))
        if out:
            cuts.append(len(out))
        out += [(min(s + i, n_source - 1), kind) for i in range(n)]
    return out, cuts


def _skip(step: int, back_and_forth: bool) -> Callable[[int], list[int]]:
    def order(n: int) -> list[int]:
        fwd = list(range(0, n, step))
        return fwd + fwd[-2::-1] if back_and_forth else fwd

    return order


RECIPES = ("cuts", "cuts-360p", "skip2", "skip3")


def _build(name: str, frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int], list[int]]:
    """(output frames, source frame of each, positions after a cut) of recipe ``name``."""
    n = len(frames)
    if name in ("cuts", "cuts-360p"):
        plan, cuts = cut_plan(n)
        out = [transform(frames[i], kind) for i, kind in plan]
        if name == "cuts-360p":
            out = [cv2.resize(img, SMALL_WH, interpolation=cv2.INTER_AREA) for img in out]
        return out, [i for i, _ in plan], cuts
    if name in ("skip2", "skip3"):
        order = _skip(2, False)(n) if name == "skip2" else _skip(3, True)(n)
        return [frames[i] for i in order], order, []
    raise ValueError(f"unknown clip {name!r}; known: {', '.join(RECIPES)}")


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float, crf: int = 18) -> None:
    """H.264 (libx264, yuv420p, ``crf``) in an MP4 file, written to a temporary name first."""
    import av

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    h, w = frames[0].shape[:2]
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "fast"}
        for img in frames:
            yuv = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def footage_dir(source: str | Path, out_dir: str | Path) -> Path:
    """The folder of the clips made from ``source``: named by the source's name, size and mtime
    and the recipes' version, so that a changed source or recipe makes new clips."""
    p = Path(source).resolve()
    st = p.stat()
    key = json.dumps([str(p), st.st_size, st.st_mtime_ns, RECIPE_VERSION, SEGMENTS, ZOOM, SMALL_WH])
    return Path(out_dir) / f"{p.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def make_footage(source: str | Path, out_dir: str | Path, names: Sequence[str] = RECIPES) -> dict[str, Clip]:
    """The clips ``names`` made from ``source``, written under ``out_dir`` (reused when there)."""
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown clip {unknown[0]!r}; known: {', '.join(RECIPES)}")
    folder = footage_dir(source, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    frames: list[np.ndarray] | None = None
    fps = 25.0
    out = {}
    for name in names:
        path = folder / f"{name}.mp4"
        meta = folder / f"{name}.json"
        if path.is_file() and meta.is_file():
            m = json.loads(meta.read_text(encoding="utf-8"))
            out[name] = Clip(name, path, m["source_frames"], m["cuts"])
            continue
        if frames is None:
            frames, fps = read_frames(source)
        imgs, src, cuts = _build(name, frames)
        write_video(path, imgs, fps)
        meta.write_text(json.dumps({"source": str(source), "source_frames": src, "cuts": cuts}), encoding="utf-8")
        out[name] = Clip(name, path, src, cuts)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rtvision.benchmark.footage SOURCE OUT_DIR [NAME ...]``: write the clips."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m rtvision.benchmark.footage", description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("out_dir")
    p.add_argument("names", nargs="*", default=list(RECIPES), help=f"clips (default: all of {', '.join(RECIPES)})")
    args = p.parse_args(argv)
    for clip in make_footage(args.source, args.out_dir, args.names).values():
        print(f"{clip.name}\t{clip.path}\t{len(clip.source_frames)} frames" + (f"\tcuts before {clip.cuts}" if clip.cuts else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
