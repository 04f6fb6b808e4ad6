"""Outputs: the annotated video and the JSON Lines results. Both are context managers, so every
exit path (end of stream, Ctrl-C, SIGTERM, a crash) finalizes them.

The video is H.264 in a *fragmented* MP4 written with PyAV (FFmpeg + libx264): each keyframe
starts a fragment and packets are flushed as they are written, so the file stays playable up to
the last written fragment even if the process dies without closing it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from .errors import OutputError
from .types import Result

log = logging.getLogger(__name__)


def _output_error(path: str | Path, exc: BaseException) -> OutputError:
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    return OutputError(f"cannot write {path}: {reason}")


class JsonlSink:
    """One JSON object per processed frame, in frame order, flushed per frame."""

    def __init__(self, path: str | Path, verbose: bool = False) -> None:
        self.path = Path(path)
        self.verbose = verbose
        self.count = 0
        self._fh = None

    def __enter__(self) -> JsonlSink:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise _output_error(self.path, exc) from None
        return self

    def write(self, result: Result) -> None:
        try:
            self._fh.write(json.dumps(result.to_json(self.verbose), separators=(",", ":")) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise _output_error(self.path, exc) from None
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # already reported by write
                log.debug("closing %s failed", self.path, exc_info=True)
            self._fh = None

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSink:
    """Annotated video at the source's fps: H.264 in fragmented MP4 (other extensions: FFmpeg's
    default muxer for the extension, still H.264).

    Frames of another size than the first (a camera that reconnected at a new resolution) are
    resized to the first size.
    """

    def __init__(self, path: str | Path, fps: float, preset: str = "superfast", crf: int = 23) -> None:
        self.path = Path(path)
        self.fps = fps
        self.preset = preset
        self.crf = crf
        self.count = 0
        self._container = None
        self._stream = None
        self._size_wh: tuple[int, int] | None = None

    def __enter__(self) -> VideoSink:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb"):
                pass  # fail early and plainly on a bad path
        except OSError as exc:
            raise _output_error(self.path, exc) from None
        return self

    def _open(self, w: int, h: int) -> None:
        from fractions import Fraction

        import av

        options = {}
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v", ""):
            options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
        fmt = "mp4" if self.path.suffix == "" else None
        try:
            self._container = av.open(str(self.path), mode="w", format=fmt, options=options)
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = self._container.add_stream("libx264", rate=rate)
        except Exception as exc:
            raise _output_error(self.path, exc) from None
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        gop = max(1, round(self.fps))
        stream.options = {"preset": self.preset, "tune": "zerolatency", "crf": str(self.crf), "g": str(gop)}
        self._stream = stream
        self._size_wh = (w, h)

    def write(self, image_bgr: np.ndarray) -> None:
        import av

        h, w = image_bgr.shape[:2]
        if self._stream is None:
            self._open(w - w % 2, h - h % 2)
        tw, th = self._size_wh
        if (w, h) != (tw, th):
            image_bgr = cv2.resize(image_bgr, (tw, th), interpolation=cv2.INTER_AREA) if (w < tw or h < th or w - tw > 1 or h - th > 1) else image_bgr[:th, :tw]
        yuv = cv2.cvtColor(np.ascontiguousarray(image_bgr), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.count
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except Exception as exc:
            raise _output_error(self.path, exc) from None
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        except Exception:
            log.warning("flushing the encoder of %s failed; the file keeps what was written", self.path)
        finally:
            try:
                self._container.close()
            except Exception:
                log.warning("closing %s failed; the file keeps what was written", self.path)
            self._container = None
            self._stream = None

    def __exit__(self, *exc) -> None:
        self.close()
