"""Window-side meters and the text of the stats panel (no Qt here, so it is testable alone)."""

from __future__ import annotations

import collections
import math
import re
import time
from dataclasses import dataclass

from ..stats import gpu_memory_mb, rss_mb


class CounterRate:
    """Rate of a monotonically growing counter (e.g. frames read) over the last ``window_s`` s."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def sample(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0



def held(runner, a: float, b: float) -> float:
    """Seconds a pause held the runner's pipeline between ``a`` and ``b`` (0 for a runner
    without pauses), left out of the means, as the summary does."""
    pauses = getattr(runner, "pauses", None)
    return pauses.between(a, b) if pauses is not None else 0.0

def _model_and_memory(v: dict, m) -> None:
    """The panel's model and memory rows (device, classifier, faces, RSS, GPU memory) of ``m``
    (the run's ``Models``; None while they load)."""
    v["device"] = str(m.device) if m else "–"
    v["classifier"] = m.classifier_variant if m else "–"
    v["faces"] = compact_face_mode(m.face_mode) if m else "–"
    v["rss"] = _num(rss_mb(), 0, " MB")
    gpu = gpu_memory_mb() if m is not None and m.device.type == "cuda" else {}
    v["gpu"] = f"{gpu['gpu_allocated_mb']:.0f} / {gpu['gpu_reserved_mb']:.0f} MB" if gpu else "n/a (CPU)"


def _num(v: float | None, nd: int = 1, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{nd}f}{unit}"


@dataclass
class PanelText:
    """One refresh of the stats panel: label key -> text."""

    values: dict[str, str]


# (key, row title) in display order
PANEL_ROWS: tuple[tuple[str, str], ...] = (
    ("capture_fps", "Capture FPS"),
    ("infer_fps", "Inference FPS"),
    ("display_fps", "Display FPS"),
    ("gui_ms", "Display cost"),
    ("latency", "Latency last"),
    ("latency_pct", "Latency p50 / p95"),
    ("frames", "Frames read / done"),
    ("dropped", "Dropped"),
    ("batch", "Batch"),
    ("device", "Device"),
    ("classifier", "Classifier"),
    ("faces", "Faces"),
    ("rss", "Memory (RSS)"),
    ("gpu", "GPU alloc / reserved"),
    ("source", "Source"),
)


class WindowMeters:
    """What the window measures itself: the capture rate, from the frames-read counter."""

    def __init__(self) -> None:
        self.capture = CounterRate()

    def panel_text(self, runner, display_fps: float, gui_ms: float = float("nan"), now: float | None = None,
                   ended: bool = False) -> PanelText:
        """Read the runner / pipeline counters (never blocks them) and format the panel. Once the
        stream has ``ended``, the rates are the run's means (live rates would decay to 0), as the
        grid window's are."""
        now = time.monotonic() if now is None else now
        p, s = runner.pipeline, runner.stats
        read = p.frames_read
        dropped = p.frames_dropped
        cap_fps = self.capture.sample(read, now)
        v: dict[str, str] = {}
        span = (s.last_result_at - s.started_at - held(runner, s.started_at, s.last_result_at)
                if ended and s.processed and s.last_result_at is not None else 0.0)
        if span > 0:
            v["capture_fps"] = f"{_num(read / span)} mean"
            v["infer_fps"] = f"{_num(s.processed / span)} mean"
            v["display_fps"] = "– (ended)"
        else:
            v["capture_fps"] = _num(cap_fps)
            v["infer_fps"] = _num(s.infer_rate.rate(now))
            v["display_fps"] = _num(display_fps)
        v["gui_ms"] = _num(gui_ms, 1, " ms / frame")
        v["latency"] = _num(s.latency.last, 0, " ms")
        v["latency_pct"] = f"{_num(s.latency.percentile(50), 0)} / {_num(s.latency.percentile(95), 0)} ms"
        v["frames"] = f"{read} / {s.processed}"
        share = 100.0 * dropped / read if read else 0.0
        v["dropped"] = f"{dropped} ({share:.1f}%)"
        v["batch"] = f"{s.last_batch} (max {p.batch})"
        _model_and_memory(v, p.models)
        info = p.info
        if info is not None:
            w, h = info.resolution_wh
            v["source"] = f"{'live' if p.live else 'file'} {w}x{h} @ {info.fps:.0f} fps"
        else:
            v["source"] = "–"
        return PanelText(v)


def banner_messages(runner, ended: bool) -> list[tuple[str, str]]:
    """(level, text) messages for the banner: model warnings, source trouble, end of stream.

    level is ``warning`` or ``info``.
    """
    out: list[tuple[str, str]] = []
    p = runner.pipeline
    if p.models is not None:
        out.extend(("warning", w) for w in p.models.warnings)
    cap = p.capture.stats if p.capture is not None else None
    if cap is not None and cap.state == "reconnecting":
        out.append(("warning", f"SOURCE STALLED: {cap.message or 'reconnecting'}"))
    elif cap is not None and cap.state == "failed":
        out.append(("warning", f"SOURCE FAILED: {cap.message}"))
    if ended:
        if runner.error is not None:
            out.append(("warning", f"stream stopped: {runner.error}"))
        else:
            out.append(("info", "stream ended"))
    return out


def compact_face_mode(description: str) -> str:
    """The face stage's description, shortened for the panel (the summary has it whole):
    "fast: fast-mtcnn scale 1 min face 28px, stride 4 + tracking" -> "fast: min face 28px, stride 4 + tracking"."""
    out = description.replace("fast-mtcnn ", "").replace("facenet-mtcnn ", "facenet ")
    out = re.sub(r"\bscale 1(\.0)?\b ?", "", out)
    out = re.sub(r"\s+", " ", out).replace(": ,", ":").strip()
    return out + " full resolution" if out.endswith(":") else out


# -- many streams (the grid window) ------------------------------------------------------------------

# (key, row title) of the grid window's overall panel, in display order
GRID_PANEL_ROWS: tuple[tuple[str, str], ...] = (
    ("total_fps", "Total FPS"),
    ("display_fps", "Display FPS"),
    ("streams", "Streams"),
    ("frames", "Frames done"),
    ("dropped", "Dropped"),
    ("latency_pct", "Latency p50 / p95"),
    ("batch", "Batch"),
    ("device", "Device"),
    ("classifier", "Classifier"),
    ("faces", "Faces"),
    ("rss", "Memory (RSS)"),
    ("gpu", "GPU alloc / reserved"),
)


@dataclass(frozen=True)
class TileText:
    """One refresh of a stream's tile: its stats line, its state and, when it failed, why."""

    line: str
    state: str  # starting | running | reconnecting | ended | failed | stopped
    failure: str | None = None


def stream_state(stream) -> tuple[str, str | None]:
    """(state, why it failed) of a ``rtvision.streams.engine.Stream``. A capture that has failed
    counts as failed at once (the worker retires the stream once its buffer is drained); a live
    source that is reconnecting says so."""
    cap = stream.capture.stats if stream.capture is not None else None
    state = stream.state
    if state == "failed":
        return "failed", str(stream.error) if stream.error is not None else (cap.message if cap else "failed")
    if state == "running" and cap is not None:
        if cap.state == "failed":
            return "failed", cap.message or "failed"
        if cap.state == "reconnecting":
            return "reconnecting", None
    return state, None


def tile_text(runner, stream, now: float | None = None) -> TileText:
    """``street · 12.3 fps · 85 ms · dropped 0 (0.0%) · running`` for one stream of a
    ``MultiRunner`` (reads counters only; never blocks the run)."""
    from ..specs import redact_text

    now = time.monotonic() if now is None else now
    st = runner.stats.get(stream.name)
    read = stream.capture.stats.read if stream.capture is not None else 0
    dropped = stream.buffer.dropped if stream.buffer is not None else 0
    state, why = stream_state(stream)
    fps_text = "– fps"
    if st is not None and state in ("running", "reconnecting", "starting"):
        fps_text = f"{_num(st.infer_rate.rate(now))} fps"
    elif st is not None and st.processed and st.last_result_at is not None:
        # a stream that is over: its mean over the run (the live rate would decay to 0)
        started = getattr(runner, "started_at", st.started_at)
        span = st.last_result_at - started - held(runner, started, st.last_result_at)
        fps_text = f"{_num(st.processed / span if span > 0 else float('nan'))} fps mean"
    latency = st.latency.last if st is not None and st.processed else float("nan")
    share = 100.0 * dropped / read if read else 0.0
    parts = [stream.name, fps_text, f"{_num(latency, 0)} ms", f"dropped {dropped} ({share:.1f}%)", state]
    return TileText(" · ".join(parts), state, redact_text(why) if why else None)


def grid_panel_text(runner, display_fps: float, now: float | None = None) -> PanelText:
    """The overall panel of a multi-stream run: totals over the streams, models, memory."""
    now = time.monotonic() if now is None else now
    p, t = runner.pipeline, runner.total
    v: dict[str, str] = {}
    states = [stream_state(s)[0] for s in p.streams]
    counts = collections.Counter("running" if s in ("running", "reconnecting", "starting") else s for s in states)
    if counts["running"] or not t.processed or t.last_result_at is None:
        v["total_fps"] = _num(t.infer_rate.rate(now))
    else:  # every stream is over: the mean over the run (the live rate of the last burst says little)
        started = getattr(runner, "started_at", t.started_at)
        span = t.last_result_at - started - held(runner, started, t.last_result_at)
        v["total_fps"] = f"{_num(t.processed / span if span > 0 else float('nan'))} mean"
    v["display_fps"] = _num(display_fps)
    v["streams"] = ", ".join(f"{counts[k]} {k}" for k in ("running", "ended", "failed", "stopped") if counts[k]) or "–"
    v["frames"] = str(t.processed)
    read = sum(s.capture.stats.read for s in p.streams if s.capture is not None)
    dropped = sum(s.buffer.dropped for s in p.streams if s.buffer is not None)
    v["dropped"] = f"{dropped} ({100.0 * dropped / read if read else 0.0:.1f}%)"
    v["latency_pct"] = f"{_num(t.latency.percentile(50), 0)} / {_num(t.latency.percentile(95), 0)} ms"
    v["batch"] = f"{t.last_batch} (max {p.batch}, across streams)"
    _model_and_memory(v, p.models)
    return PanelText(v)


def grid_banner_messages(runner, ended: bool) -> list[tuple[str, str]]:
    """(level, text) for the grid window's banner: model warnings and the end of the run. A
    stream's own trouble (failed, reconnecting) is on its tile."""
    out: list[tuple[str, str]] = []
    m = runner.pipeline.models
    if m is not None:
        out.extend(("warning", w) for w in m.warnings)
    if ended:
        failed = [s.name for s in runner.pipeline.streams if stream_state(s)[0] == "failed"]
        if runner.error is not None:
            out.append(("warning", f"run stopped: {runner.error}"))
        elif failed:
            out.append(("warning", f"all streams are over; failed: {', '.join(failed)} (the tile says why)"))
        else:
            out.append(("info", "all streams ended"))
    return out
