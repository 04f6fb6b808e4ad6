"""Outputs: the annotated video and the JSON Lines results. Both are context managers, so every
exit path (end of stream, Ctrl-C, SIGTERM, SIGHUP, a crash) finalizes them. Both create their file
at the first record only: a run that delivers nothing does not truncate an existing file (the
run's ``OutputClaims`` removes a new one it left empty). The JSON Lines file ends with a whole
line, also when the disk is full.

The video is H.264 in a *fragmented* MP4 written with PyAV (FFmpeg + libx264): each keyframe
starts a fragment and packets are flushed as they are written, so the file stays playable up to
the last written fragment even if the process dies without closing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import stat
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from .errors import OutputError
from .outputs import STDOUT, VIDEO_FORMATS
from .types import Result

log = logging.getLogger(__name__)


PIPE_GRACE_S = 2.0  # a line already half in the pipe: time left to its reader after a stop


class StoppedWhileWriting(Exception):
    """A stop came while the results' reader (a pipe) took nothing: the run ends as stopped."""


def _output_error(path: str | Path, exc: BaseException) -> OutputError:
    if isinstance(exc, BrokenPipeError):
        return OutputError(f"cannot write {path}: the reader closed the pipe (broken pipe)")
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    return OutputError(f"cannot write {path}: {reason}")


def silence_stdout() -> None:
    """After a broken pipe on standard output: point fd 1 at /dev/null, so that the interpreter's
    final flush does not print a second error (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - best effort
        pass


class JsonlSink:
    """One JSON object per processed frame, in frame order, flushed per frame. ``-`` is standard
    output. The file is created (or truncated) at the first record. A file ends with a whole
    line whatever happens: a record that cannot be written in full (a full disk) is cut off
    again, so that every line of the file parses (the error still ends the run, exit 6)."""

    def __init__(self, path: str | Path, verbose: bool = False, stdout=None, stopped: Callable[[], bool] | None = None) -> None:
        self.to_stdout = str(path) == STDOUT
        self.path = Path(path)
        self.verbose = verbose
        self.count = 0
        self._fh = None  # standard output
        self._fd: int | None = None  # a file: unbuffered writes, so that nothing is left to flush after an error
        self._size = 0  # bytes of the whole lines written to the file
        self._stdout = stdout  # ``-`` writes here (default: sys.stdout at the first record)
        # Standard output that is a pipe: written only when the reader has room (select), so that
        # a reader that stopped reading cannot hold a stop (``stopped()`` true) for ever: the
        # write is given up (StoppedWhileWriting) instead.
        self._stopped = stopped
        self._pipe_fd: int | None = None

    def __enter__(self) -> JsonlSink:
        return self

    def _open(self) -> None:
        if self.to_stdout:
            self._fh = self._stdout or sys.stdout
            if self._stopped is not None:
                try:
                    fd = self._fh.fileno()
                    if stat.S_ISFIFO(os.fstat(fd).st_mode):
                        self._fh.flush()
                        self._pipe_fd = fd
                except (OSError, ValueError, AttributeError):  # no descriptor (a test's StringIO)
                    self._pipe_fd = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        self._size = 0

    def write(self, result: Result) -> None:
        self.write_record(result.to_json(self.verbose))

    def write_record(self, record: dict) -> None:
        """One record already in its JSON form (``Result.to_json``), e.g. from a fleet actor."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            if self._fh is None and self._fd is None:
                self._open()
            if self._pipe_fd is not None:
                self._write_pipe(line.encode("utf-8"))
            elif self._fh is not None:
                self._fh.write(line)
                self._fh.flush()
            else:
                self._write_file(line.encode("utf-8"))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self.to_stdout:
                silence_stdout()
            raise _output_error("standard output" if self.to_stdout else self.path, exc) from None
        self.count += 1

    def _write_pipe(self, data: bytes) -> None:
        """One line to the standard output pipe, PIPE_BUF bytes a write, each once the pipe has
        room for it (a write that size then never blocks). A line starts only once the pipe has
        room for all of it (unless it is longer than half the pipe), so that a stop while the
        reader reads nothing gives up whole lines only; a line that did start gets
        ``PIPE_GRACE_S`` more to finish after a stop, then is given up (said in the warning)."""
        view = memoryview(data)
        started, grace_until = False, None
        while view:
            fits = started or self._fits_pipe(len(view))
            if not (fits and select.select([], [self._pipe_fd], [], 0.1)[1]):
                if not fits:
                    select.select([], [], [], 0.02)  # the reader makes room at its pace
                if self._stopped():
                    grace_until = grace_until or time.monotonic() + (PIPE_GRACE_S if started else 0.0)
                    if time.monotonic() >= grace_until:
                        cut = "; the last one was cut" if started else ""
                        raise StoppedWhileWriting(f"a stop came while the reader of standard output was not reading: "
                                                  f"{self.count} records written{cut}, the rest dropped")
                continue
            view = view[os.write(self._pipe_fd, view[: select.PIPE_BUF]):]
            started = True

    def _fits_pipe(self, n: int) -> bool:
        """Whether the pipe has room for ``n`` more bytes, conservatively (its size less what
        waits in it and two pages, for the kernel's page-sized slots). For a line longer than
        half the pipe the pipe is made larger first (up to the system's ``pipe-max-size``,
        1 MB by default); one that still could never fit is let through."""
        try:
            size = fcntl.fcntl(self._pipe_fd, fcntl.F_GETPIPE_SZ)
            if n > size // 2:
                with contextlib.suppress(OSError):  # EPERM above pipe-max-size, EBUSY when it holds more
                    size = fcntl.fcntl(self._pipe_fd, fcntl.F_SETPIPE_SZ, 1 << (2 * n + 4 * select.PIPE_BUF).bit_length())
            queued = bytearray(4)
            fcntl.ioctl(self._pipe_fd, termios.FIONREAD, queued)
        except (OSError, AttributeError):  # not Linux: every line is let through
            return True
        return n > size // 2 or size - int.from_bytes(queued, sys.byteorder) - 2 * select.PIPE_BUF >= n

    def _write_file(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            try:  # a part of the line may be in the file: cut it off again
                os.ftruncate(self._fd, self._size)
            except OSError:  # pragma: no cover - best effort
                log.debug("cutting %s back to its last whole line failed", self.path, exc_info=True)
            raise
        self._size += len(data)

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
            except OSError:  # already reported by write
                log.debug("flushing standard output failed", exc_info=True)
            self._fh = None
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:  # pragma: no cover
                log.debug("closing %s failed", self.path, exc_info=True)
            self._fd = None

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSink:
    """Annotated video at the source's fps: H.264 in a fragmented MP4 (``.mp4``, ``.m4v``) or
    QuickTime (``.mov``) file, created at the first frame; other extensions are refused.

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
        self._format = VIDEO_FORMATS.get(self.path.suffix.lower())

    def __enter__(self) -> VideoSink:
        if self._format is None:
            raise OutputError(f"cannot write {self.path}: unknown video extension; use one of {', '.join(VIDEO_FORMATS)}")
        return self

    def _open(self, w: int, h: int) -> None:
        from fractions import Fraction

        import av

        # every frame its own fragment, written out at once: a crash (SIGKILL, power loss) loses
        # the frame still in the encoder, not the up to one second a fragment per keyframe held
        # back; the fragments' headers cost about 0.4% of the file at 1080p
        options = {"movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w", format=self._format, options=options)
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
