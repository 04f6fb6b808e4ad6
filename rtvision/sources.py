"""Frame sources and the capture thread that feeds the ring buffer.

``open_source(spec)`` turns a ``--source`` string into a :class:`Source`:

* ``webcam`` / ``webcam:N``  OpenCV camera N (live)
* ``rtsp://…``, ``http(s)://…`` any stream OpenCV/FFmpeg opens (live)
* ``demo``                   a moving-camera clip rendered from real photos shipped with matplotlib (live)
* anything else              a video file (lossless; live when paced with ``realtime=True``)

A source opens, reads frames (``None`` = no frame: end of a file, or a failed read of a live
source), and closes. The :class:`CaptureThread` owns the policy: pacing, drops (through the
buffer), corrupt-frame counting and, for live sources, reconnecting with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import random
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .buffer import BufferClosed, RingBuffer
from .config import SourceConfig
from .errors import InputError, RtvisionError, SourceUnavailable, UsageError
from .types import Frame, is_bgr

log = logging.getLogger(__name__)

from .specs import URL_RE, WEBCAM_RE, bad_webcam_spec, redact_url  # noqa: F401 (re-exported)

MIN_FRAME_PX = 2  # smallest frame side processed: H.264 4:2:0 (the annotated video) needs 2x2 pixels
FPS_RANGE = (1.0, 240.0)  # a header fps outside this is not believed
_warned_fps: set[str] = set()  # sources already told about a bad fps header (say it once)


@dataclass(frozen=True)
class SourceInfo:
    """What a source says about itself once open."""

    name: str  # safe to show: passwords and secret query values masked (specs.redact_url)
    kind: str  # file | webcam | stream | demo | test
    live: bool
    fps: float
    resolution_wh: tuple[int, int]
    frame_count: int | None = None  # files only
    first_index: int = 0  # index of the first frame delivered (> 0: a stream resumed mid-way, rtvision.fleet)


class CorruptFrame(Exception):
    """A frame that could not be decoded; the capture thread skips and counts it."""


class Source(Protocol):
    info: SourceInfo

    def open(self) -> SourceInfo:
        """Open (or reopen) the source. Raises InputError / SourceUnavailable."""

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None (end of a file; failed read of a live source).

        May raise CorruptFrame for an undecodable frame.
        """

    def close(self) -> None: ...


def valid_image(img: object, reject_black: bool = False) -> bool:
    """A frame the models may see: HxWx3 uint8, at least MIN_FRAME_PX on each side; with
    ``reject_black``, not all black (what some cameras send right after (re)connecting)."""
    if not is_bgr(img):
        return False
    if img.shape[0] < MIN_FRAME_PX or img.shape[1] < MIN_FRAME_PX:
        return False
    if reject_black:
        return bool(img[:: max(1, img.shape[0] // 32), :: max(1, img.shape[1] // 32)].any())
    return True


class _CvSource:
    """Shared code of the OpenCV-backed sources."""

    kind = "file"
    live = False
    blocking_io = False  # opens and reads may block for seconds (see SourceIO)

    def __init__(self, target: str | int, name: str) -> None:
        self._target = target
        self._name = name
        self._cap: cv2.VideoCapture | None = None
        self.fps_trusted = True  # False: the fps header was outside FPS_RANGE (30 fps assumed)
        self.info = SourceInfo(name, self.kind, self.live, 0.0, (0, 0))

    def _open_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self._target)

    def open(self) -> SourceInfo:
        self.close()
        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise self._open_error()
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps_trusted = bool(fps and math.isfinite(fps) and FPS_RANGE[0] <= fps <= FPS_RANGE[1])
        if not self.fps_trusted:
            self._bad_fps(fps)
            fps = 30.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        self.info = SourceInfo(self._name, self.kind, self.live, float(fps), (w, h), count if count > 0 else None)
        return self.info

    def _open_error(self) -> RtvisionError:
        return SourceUnavailable(f"cannot open {self.kind} {self._name}")

    def _bad_fps(self, fps: float) -> None:
        """Say once per source that its fps header is not believed."""
        if self.live:  # cameras and streams often report 0: nothing to say
            log.debug("%s reports %s fps; pacing at 30", self._name, fps)
            return
        if self._name in _warned_fps:
            return
        _warned_fps.add(self._name)
        log.warning("%s: the fps header (%s) is outside %g-%g fps; pts_s comes from the frames' own timestamps, "
                    "and --realtime pacing and the annotated video use 30 fps", self._name, fps, *FPS_RANGE)

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, img = self._cap.read()
        return img if ok else None

    def grab(self) -> bool:
        """Skip one frame without decoding it into an image; False at the end."""
        return self._cap is not None and bool(self._cap.grab())

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


MAX_DAMAGED_FRAMES = 750  # a damaged stretch of a file is read past up to this (30 s at 25 fps)


class FileSource(_CvSource):
    kind = "file"
    live = False

    def __init__(self, path: str) -> None:
        super().__init__(path, redact_url(path))
        self._path = Path(path)
        self._reads = 0  # reads of the file so far, decoded or not
        self._held: np.ndarray | None = None  # the frame decoded after a damaged stretch
        self._damaged: list[int] = []  # that stretch's frame positions, one CorruptFrame each
        self.last_pts_s: float | None = None  # container timestamp of the last frame read (bad fps header only)

    def open(self) -> SourceInfo:
        p, name = self._path, self._name
        if not p.exists():
            raise InputError(f"no such file: {name}")
        if not p.is_file():
            raise InputError(f"not a file: {name}")
        if not os.access(p, os.R_OK):
            raise InputError(f"cannot read file: {name}")
        if p.stat().st_size == 0:
            raise InputError(f"empty file: {name}")
        self._reads, self._held, self._damaged = 0, None, []
        info = super().open()
        # A container OpenCV accepts but cannot decode (truncated, not really a video) has no frame.
        first = self._read_timed()
        if first is None:
            self.close()
            raise InputError(f"not a readable video: {name}")
        h, w = first.shape[:2]
        if h < MIN_FRAME_PX or w < MIN_FRAME_PX:
            self.close()
            raise InputError(
                f"{name}: its frames are {w}x{h} pixels, below the {MIN_FRAME_PX}x{MIN_FRAME_PX} minimum that "
                "rtvision processes (the annotated H.264 video needs it)"
            )
        self._first = first
        if info.resolution_wh == (0, 0) and first is not None:
            self.info = SourceInfo(info.name, info.kind, False, info.fps, (first.shape[1], first.shape[0]), info.frame_count)
        return self.info

    def _open_error(self) -> RtvisionError:
        return InputError(f"not a video, or truncated/corrupt beyond reading: {self._name}")

    def grab(self) -> bool:
        """Skip one frame (decoded, not converted); it counts as a read of the file."""
        self._reads += 1
        return super().grab()

    def _read_timed(self) -> np.ndarray | None:
        """One frame; with an unbelievable fps header, ``last_pts_s`` takes its container timestamp."""
        self._reads += 1
        ok, img = self._cap.read()
        if not (ok and img is not None):
            return None
        if not self.fps_trusted:
            ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            self.last_pts_s = ms / 1000.0 if ms is not None and math.isfinite(ms) and ms >= 0 else None
        return img

    def read(self) -> np.ndarray | None:
        first = getattr(self, "_first", None)
        if first is not None:
            self._first = None
            return first
        if self._damaged:
            raise CorruptFrame(f"undecodable frame at position {self._damaged.pop(0)}")
        if self._held is not None:
            img, self._held = self._held, None
            return img
        if self._cap is None:
            return None
        img = self._read_timed()
        if img is not None:
            return img
        # A failed read before the advertised end is either a damaged stretch, after which the
        # decoder finds its feet again at a keyframe, or the end of what can be read (a truncated
        # file, or a frame count that was only an estimate). Read on to tell: every frame of a
        # stretch is one corrupt frame (--max-corrupt), in its place in the timeline; a tail that
        # never decodes ends the file, with a warning.
        count = self.info.frame_count
        failed = [self._reads - 1]
        # at most MAX_DAMAGED_FRAMES ahead: a frame count (an estimate for some containers, or a
        # damaged header) may be far beyond the file's real end
        limit = None if count is None else min(count, self._reads + MAX_DAMAGED_FRAMES)
        while limit is not None and self._reads < limit:
            img = self._read_timed()
            if img is not None:
                self._held, self._damaged = img, failed[1:]
                raise CorruptFrame(f"undecodable frame at position {failed[0]}")
            failed.append(self._reads - 1)
        if count is not None and count - failed[0] > max(2, count // 100):  # an estimated count may be a bit off
            log.warning("%s: reading stopped at frame %d of the %d its header counts: the rest does not decode "
                        "(truncated or damaged at its end, or an estimated count)", self._name, failed[0], count)
        return None


class LoopingFileSource:
    """A video file that starts over (close + reopen) at its end, ``total`` frames in all (None:
    without end): ``--loop``, and the bench's runs and soaks, which read more frames than a clip
    has, every one really decoded.

    ``info.frame_count`` is ``total`` (what a consumer will get); ``file_frames`` is the file's.
    """

    kind = "file"
    live = False

    def __init__(self, path: str, total: int | None) -> None:
        self.path = path
        self.total = total
        self.inner = FileSource(path)
        self.info: SourceInfo | None = None
        self.file_frames: int | None = None
        self.loops = 0
        self._pts_offset = 0.0  # the earlier passes' duration (files whose fps header is not believed)

    @property
    def fps_trusted(self) -> bool:
        return self.inner.fps_trusted

    @property
    def last_pts_s(self) -> float | None:
        """The last frame's container timestamp, going on across passes (see ``FileSource``)."""
        inner = self.inner.last_pts_s
        return None if inner is None else self._pts_offset + inner

    def open(self) -> SourceInfo:
        info = self.inner.open()
        self.file_frames = info.frame_count
        self.info = SourceInfo(info.name, "file", False, info.fps, info.resolution_wh, self.total)
        return self.info

    def _restart(self) -> None:
        last = self.inner.last_pts_s
        if last is not None:  # the next pass starts one (mean) frame interval after this one's last frame
            n = self.file_frames or 0
            self._pts_offset += last + (last / (n - 1) if n > 1 and last > 0 else 1.0 / 30.0)
        self.inner.close()
        self.inner.open()
        self.loops += 1

    def read(self) -> np.ndarray | None:
        img = self.inner.read()
        if img is None:
            self._restart()
            img = self.inner.read()
        return img

    def grab(self) -> bool:
        if self.inner.grab():
            return True
        self._restart()
        return self.inner.grab()

    def close(self) -> None:
        self.inner.close()


class WebcamSource(_CvSource):
    kind = "webcam"
    live = True
    blocking_io = True  # a camera unplugged or hung blocks its read

    def __init__(self, index: int) -> None:
        super().__init__(index, f"webcam:{index}")


class StreamSource(_CvSource):
    kind = "stream"
    live = True
    blocking_io = True  # FFmpeg's open and read wait up to the stall timeout for a silent server

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        super().__init__(url, redact_url(url))
        self._timeout_ms = min(int(timeout_s * 1000), 2**31 - 1)  # OpenCV takes an int32

    def _open_capture(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._timeout_ms]
        return cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)


class DemoSource:
    """A moving camera over real photographs shipped inside matplotlib, rendered on the fly.

    Grace Hopper's portrait (a real face) and a real product photo sit on a textured canvas; the
    virtual camera pans and zooms along a smooth path. Live: paced at ``fps`` by the capture thread.
    """

    def __init__(self, fps: float = 30.0, size_wh: tuple[int, int] = (1280, 720)) -> None:
        self.fps = fps
        self.size_wh = size_wh
        self._canvas: np.ndarray | None = None
        self._t = 0
        self.info = SourceInfo("demo", "demo", True, fps, size_wh)

    @staticmethod
    def photos() -> list[np.ndarray]:
        import matplotlib

        root = Path(matplotlib.get_data_path()) / "sample_data"
        out = []
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
            img = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(f"demo photo missing from matplotlib: {root / name}")
            out.append(img)
        return out

    def open(self) -> SourceInfo:
        hopper, present = self.photos()
        w, h = self.size_wh
        cw, ch = int(w * 1.6), int(h * 1.6)
        yy, xx = np.mgrid[0:ch, 0:cw]
        canvas = np.stack(
            [
                (80 + 40 * np.sin(xx / 37.0) * np.cos(yy / 53.0)),
                (90 + 30 * np.cos(xx / 71.0 + yy / 29.0)),
                (100 + 35 * np.sin((xx + yy) / 45.0)),
            ],
            axis=-1,
        ).astype(np.uint8)
        # Portrait: about 70% of the output height, left of centre.
        ph = int(h * 0.9)
        pw = int(hopper.shape[1] * ph / hopper.shape[0])
        portrait = cv2.resize(hopper, (pw, ph), interpolation=cv2.INTER_AREA)
        y0, x0 = (ch - ph) // 2, int(cw * 0.22)
        canvas[y0 : y0 + ph, x0 : x0 + pw] = portrait
        qh = int(h * 0.55)
        qw = int(present.shape[1] * qh / present.shape[0])
        prod = cv2.resize(present, (qw, qh), interpolation=cv2.INTER_AREA)
        y1, x1 = (ch - qh) // 2, min(cw - qw - 10, x0 + pw + int(w * 0.08))
        canvas[y1 : y1 + qh, x1 : x1 + qw] = prod
        self._canvas = canvas
        self._t = 0
        return self.info

    def read(self) -> np.ndarray | None:
        if self._canvas is None:
            return None
        w, h = self.size_wh
        ch, cw = self._canvas.shape[:2]
        t = self._t / self.fps
        self._t += 1
        zoom = 1.15 + 0.2 * math.sin(t * 0.45)  # output pixels per canvas pixel
        cx = cw / 2 + (cw / 2 - w / (2 * zoom)) * 0.8 * math.sin(t * 0.3)
        cy = ch / 2 + (ch / 2 - h / (2 * zoom)) * 0.5 * math.sin(t * 0.5 + 1.0)
        m = np.array([[zoom, 0, w / 2 - zoom * cx], [0, zoom, h / 2 - zoom * cy]], np.float32)
        return cv2.warpAffine(self._canvas, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def close(self) -> None:
        self._canvas = None


def open_source(cfg: SourceConfig) -> Source:
    """Build (not open) the source named by ``cfg.spec``."""
    spec = cfg.spec.strip()
    if not spec:
        raise UsageError("empty --source")
    bad_webcam = bad_webcam_spec(spec)
    if bad_webcam and not Path(spec).exists():
        raise UsageError(bad_webcam)
    m = WEBCAM_RE.match(spec)
    if cfg.loop and (m or spec == "demo"):
        raise UsageError(f"--loop starts a video file over; {spec} is not a file")
    if m:
        return WebcamSource(int(m.group(1) or 0))
    if spec == "demo":
        return DemoSource(cfg.demo_fps, cfg.demo_size_wh)
    if URL_RE.match(spec):
        if cfg.loop:
            raise UsageError(f"--loop starts a video file over; {redact_url(spec)} is a stream")
        return StreamSource(spec, timeout_s=cfg.stall_timeout_s)
    if cfg.loop:
        return LoopingFileSource(spec, cfg.max_frames)
    return FileSource(spec)


@dataclass
class CaptureStats:
    """Counters of the capture thread (read from other threads; ints/floats only)."""

    read: int = 0
    dropped: int = 0
    corrupt: int = 0
    invalid: int = 0
    reconnects: int = 0
    stalls: int = 0
    decode_ms_total: float = 0.0
    state: str = "starting"  # starting | running | reconnecting | ended | failed
    message: str = ""


class SourceIO:
    """A source's blocking calls (open, read, close) on a daemon thread of their own, one after
    the other, so that whoever waits for one can give up at a stop.

    A camera or a network stream can block in OpenCV for up to the stall timeout (a silent
    server, a hung camera); a stop (Ctrl-C, a closed window) should not wait for that. ``call``
    waits for the call or for ``stop``, whichever comes first: at a stop the call goes on where
    it is, and a ``close`` queued after it runs when it returns, so the capture is never released
    under a read in progress. The thread is a daemon: a process that ends does not wait for it.
    """

    POLL_S = 0.05

    def __init__(self, name: str = "rtvision-source-io") -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        # Signals are the main thread's: delivered here, they would interrupt OpenCV's blocking
        # call (EINTR: "cannot open stream") instead of stopping the run.
        with contextlib.suppress(AttributeError, ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def submit(self, fn) -> Future:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut

    def call(self, fn, stop: threading.Event | None):
        """``fn()``'s result (or its exception); ``BufferClosed`` once ``stop`` is set first.
        Without ``stop`` it waits in short steps, so that a signal (Ctrl-C) is handled meanwhile."""
        fut = self.submit(fn)
        while not futures_wait([fut], timeout=self.POLL_S).done:
            if stop is not None and stop.is_set():
                raise BufferClosed
        return fut.result()  # (a TimeoutError here is fn's own, not a poll's)

    def end(self) -> None:
        """End the thread once the calls queued so far are done."""
        self._calls.put(None)

    def close(self, fn, wait_s: float = 0.2) -> bool:
        """Run ``fn`` (the source's close) after any call in progress, and end the thread; wait
        for it up to ``wait_s``. False: a call is still blocked, and ``fn`` runs when it returns."""
        fut = self.submit(fn)
        self.end()
        if not futures_wait([fut], timeout=wait_s).done:
            return False
        if fut.exception() is not None:  # pragma: no cover - closing is best effort
            log.debug("source close failed: %s", fut.exception())
        return True


def open_interruptibly(source: Source) -> SourceInfo:
    """``source.open()``; a camera's or a stream's (which may block up to the stall timeout on a
    silent server) runs on a thread of its own, so that Ctrl-C stops the start at once. Then the
    open goes on where it is, and the source is closed when it returns."""
    if not getattr(source, "blocking_io", False):
        return source.open()
    io = SourceIO("rtvision-source-open")
    try:
        info = io.call(source.open, None)
    except BaseException:
        io.close(source.close, wait_s=0.0)
        raise
    io.end()
    return info

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class CaptureThread(threading.Thread):
    """Reads frames from an open source into the ring buffer until the stream ends or ``stop`` is set.

    live: drops are allowed (buffer policy) and failures reconnect.
    paced: sleep to the source's fps (files with --realtime, and the demo source).
    """

    def __init__(
        self,
        source: Source,
        buffer: RingBuffer[Frame],
        stop: threading.Event,
        cfg: SourceConfig,
        live: bool,
        paced: bool,
    ) -> None:
        super().__init__(name="rtvision-capture", daemon=True)
        self.source = source
        self.buffer = buffer
        self.stop_event = stop
        self.cfg = cfg
        self.live = live
        self.paced = paced
        self.stats = CaptureStats()
        self.error: BaseException | None = None
        self._rng = random.Random()
        self._attempts = 0  # reconnect attempts since the last good frame
        # a camera's or a stream's blocking calls run where a stop need not wait for them
        self._io = SourceIO() if getattr(source, "blocking_io", False) else None
        self._closed = False

    def _call(self, fn):
        """``fn()`` (a call into the source), given up at a stop if it blocks (BufferClosed)."""
        if self._io is None:
            return fn()
        return self._io.call(fn, self.stop_event)

    def close_source(self) -> None:
        """Close the source (once the thread is done with it; idempotent). A camera or stream
        blocked in a read is closed when that read returns (within the stall timeout): the stop
        does not wait for it."""
        if self._closed:
            return
        self._closed = True
        if self._io is None:
            self.source.close()
        elif not self._io.close(self.source.close):
            log.info("%s: closing once its read in progress returns (within --stall-timeout %.0f s)",
                     getattr(self.source.info, "name", "the source"), self.cfg.stall_timeout_s)

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
            if self.stats.state != "failed":
                self.stats.state = "ended"
        except BufferClosed:
            self.stats.state = "ended"
        except BaseException as exc:  # reported to the pipeline, never lost
            self.error = exc
            self.stats.state = "failed"
            self.stats.message = str(exc)
        finally:
            self.buffer.close()  # the source stays open: the pipeline, its owner, closes it

    def _loop(self) -> None:
        info = self.source.info
        fps = info.fps or 30.0
        t0 = time.monotonic()
        first = index = info.first_index  # a resumed stream goes on numbering where it left off
        max_frames = self.cfg.max_frames
        self.stats.state = "running"
        while not self.stop_event.is_set():
            if max_frames is not None and index >= max_frames:
                return
            if self.paced:
                due = t0 + (index - first) / fps
                delay = due - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    return
            start = time.monotonic()
            try:
                img = self._call(self.source.read)
            except CorruptFrame as exc:
                self.stats.corrupt += 1
                log.warning("skipped corrupt frame (%d so far): %s", self.stats.corrupt, exc)
                if self.stats.corrupt > self.cfg.max_corrupt:
                    raise InputError(
                        f"{info.name}: more than {self.cfg.max_corrupt} corrupt frames; stopping"
                    ) from None
                if not info.live:
                    index += 1  # the corrupt frame had a slot in the file's timeline
                continue
            now = time.monotonic()
            read_s = now - start
            if img is None:
                if not info.live:
                    return  # the end of a file is the end, paced or not: files never reconnect
                if read_s >= 0.9 * self.cfg.stall_timeout_s:  # FFmpeg's read timeout is the stall timeout
                    self.stats.stalls += 1
                    self._reconnect(f"stalled for {read_s:.1f}s")
                else:
                    self._reconnect("read failed")
                if self.paced:  # pacing starts over; a camera's pts_s stays its wall clock (monotonic)
                    t0 = time.monotonic() - (index - first) / fps
                continue
            if info.live and read_s > self.cfg.stall_timeout_s:
                self.stats.stalls += 1
                self._reconnect(f"stalled for {read_s:.1f}s")
                if self.paced:
                    t0 = time.monotonic() - (index - first) / fps
                continue
            if not valid_image(img, reject_black=info.live):
                self.stats.invalid += 1
                if not info.live:  # a file's frame that cannot be processed is a corrupt frame
                    self.stats.corrupt += 1
                    shape = "x".join(map(str, getattr(img, "shape", ()))) or type(img).__name__
                    log.warning("skipped a frame that cannot be processed (%s; %d corrupt so far) from %s",
                                shape, self.stats.corrupt, info.name)
                    if self.stats.corrupt > self.cfg.max_corrupt:
                        raise InputError(
                            f"{info.name}: more than {self.cfg.max_corrupt} corrupt frames (last: a {shape} frame, "
                            f"expected HxWx3 uint8 of at least {MIN_FRAME_PX}x{MIN_FRAME_PX} pixels); stopping"
                        )
                    index += 1
                else:
                    log.warning("skipped an invalid (empty or black) frame from %s", info.name)
                continue
            self._attempts = 0
            if self.live and not self.paced:
                pts_s = now - t0
            else:
                stamp = getattr(self.source, "last_pts_s", None)  # files whose fps header is not believed
                pts_s = stamp if stamp is not None and not info.live else index / fps
            # A paced file stands in for a camera, which would have taken the frame when it fell due:
            # latency counts from then, also when capture falls behind. Other sources: from the
            # moment the read began (decoding is part of the latency).
            captured_at = due if self.paced else start
            frame = Frame(index=index, pts_s=pts_s, captured_at=captured_at, image=img, decode_ms=read_s * 1000.0)
            index += 1
            self.stats.decode_ms_total += read_s * 1000.0
            dropped_one = self.buffer.put(frame)  # BufferClosed (a stop): this frame is not counted
            self.stats.read += 1
            if dropped_one:
                self.stats.dropped += 1

    # -- reconnect -----------------------------------------------------------------------------
    def _reconnect(self, why: str) -> None:
        name = self.source.info.name
        limit = self.cfg.reconnect
        # Attempts count until a frame arrives: a source that reopens but never delivers gives up too.
        while self._attempts < limit:
            self._attempts += 1
            attempt = self._attempts
            self.stats.state = "reconnecting"
            self.stats.message = f"{name}: {why}; reconnecting (attempt {attempt}/{limit})"
            log.warning(self.stats.message)
            try:
                self._call(self.source.close)
            except BufferClosed:
                raise
            except Exception:  # pragma: no cover
                pass
            backoff = min(8.0, 0.25 * 2 ** (attempt - 1)) * (0.75 + 0.5 * self._rng.random())
            if self.stop_event.wait(backoff):
                raise BufferClosed
            try:
                before = self.source.info.resolution_wh
                info = self._call(self.source.open)
            except RtvisionError as exc:
                log.warning("%s: reconnect attempt %d failed: %s", name, attempt, exc)
                continue
            self.stats.reconnects += 1
            self.stats.state = "running"
            if info.resolution_wh != before:
                self.stats.message = f"{name}: reconnected; resolution {before} -> {info.resolution_wh}"
            else:
                self.stats.message = f"{name}: reconnected after {why}"
            log.warning(self.stats.message)
            return
        raise SourceUnavailable(f"{name}: lost ({why}) and {limit} reconnect attempts failed")
