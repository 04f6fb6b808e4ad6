"""What the fleet's driver knows of each stream, and the fleet summary (no Ray here).

A ``StreamLedger`` takes the stream's records as the actors hand them out: it keeps them in
order (a record at or before a frame already delivered is a duplicate and is dropped), knows the
next frame to resume from, and, across an actor's restart, counts what the restart cost: the
frames lost (a file resumes at the first frame not delivered, so only a frame it could not skip
to is lost; a live source cannot go back, so its loss is counted as the seconds without a result,
``gap_s``) and the track ids, which a restarted face stage numbers from 1 again: they are shifted
past the ones already used, so a stream's track ids stay unique.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..specs import redact_url
from ..stats import LatencyHistogram

FINAL = ("ended", "failed", "stopped")
MIN_RATE_SPAN_S = 1.0
COUNTERS = ("frames_read", "frames_dropped", "frames_corrupt", "reconnects")


@dataclass
class StreamLedger:
    name: str
    spec: str
    actor: int
    state: str = "pending"  # pending | running | ended | failed | stopped
    error: str | None = None
    live: bool | None = None
    resolution_wh: list | None = None
    source_fps: float | None = None
    next_index: int = 0  # the next frame expected: every frame before it was delivered (or lost)
    delivered: int = 0
    duplicates: int = 0
    frames_lost: int = 0  # frames never delivered because of restarts (files; live: see gap_s)
    restarts: list[dict] = field(default_factory=list)  # per restart: at_frame, lost, gap_s, skip_s
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_at: float | None = None
    last_at: float | None = None
    counters_done: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))  # from dead actors' last word
    counters_now: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))  # the running actor's
    track_offset: int = 0
    max_track_id: int = 0
    _pending_restart: dict | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    def accept(self, rec: dict, now: float | None = None) -> dict | None:
        """The record to write (track ids shifted after a restart), or None for a duplicate."""
        now = time.monotonic() if now is None else now
        frame = int(rec["frame"])
        if frame < self.next_index:
            self.duplicates += 1
            return None
        pending = self._pending_restart
        if pending is not None:
            self._pending_restart = None
            pending["first_frame"] = frame
            pending["gap_s"] = round(now - pending.pop("since"), 3)
            if not self.live:
                pending["lost"] = frame - pending["at_frame"]
                self.frames_lost += pending["lost"]
        if self.track_offset:
            for face in rec.get("faces", ()):
                if "track_id" in face:
                    face["track_id"] += self.track_offset
        for face in rec.get("faces", ()):
            if "track_id" in face:
                self.max_track_id = max(self.max_track_id, int(face["track_id"]))
        self.next_index = frame + 1
        self.delivered += 1
        lat = rec.get("latency_ms")
        if isinstance(lat, (int, float)) and math.isfinite(lat):
            self.latency.add(float(lat))
        self.first_at = self.first_at if self.first_at is not None else now
        self.last_at = now
        return rec

    def update(self, row: dict, final: bool = False) -> None:
        """The running actor's view of the stream (``actor.stream_row``). Its state is taken only
        when ``final`` (the actor's run is over and every record handed out): until then a stream
        the actor calls ended may still have results on their way, and must be resumed if the
        actor dies."""
        for k in COUNTERS:
            self.counters_now[k] = int(row.get(k) or 0)
        for k in ("live", "resolution_wh", "source_fps"):
            if row.get(k) is not None:
                setattr(self, k, row[k])
        if self.finished:
            return
        if final:
            state = row.get("state")
            self.state = state if state in FINAL else "stopped"
            self.error = row.get("error")
        else:
            self.state = "running"

    def restart(self, now: float | None = None) -> None:
        """The actor running this stream died: fold its counters in, and resume from ``next_index``."""
        now = time.monotonic() if now is None else now
        for k in COUNTERS:
            self.counters_done[k] += self.counters_now[k]
            self.counters_now[k] = 0
        self.track_offset = self.max_track_id
        self._pending_restart = {"at_frame": self.next_index, "since": self.last_at if self.last_at is not None else now, "lost": None}
        self.restarts.append(self._pending_restart)
        self.state = "pending"

    def fail(self, why: str) -> None:
        self.state, self.error = "failed", why

    def counter(self, k: str) -> int:
        return self.counters_done[k] + self.counters_now[k]

    def row(self) -> dict:
        for r in self.restarts:  # a restart the stream never came back from (ended, or failed)
            if "since" in r:
                r.pop("since")
        read = self.counter("frames_read")
        dropped = self.counter("frames_dropped")
        span = (self.last_at - self.first_at) if self.first_at is not None and self.last_at is not None else 0.0
        return {
            "stream": self.name,
            "source": redact_url(self.spec),
            "actor": self.actor,
            "live": self.live,
            "state": self.state,
            "error": self.error,
            "resolution_wh": self.resolution_wh,
            "source_fps": self.source_fps,
            "frames_read": read,
            "frames_processed": self.delivered,
            "frames_dropped": dropped,
            # read but never delivered: in flight in an actor that died (a file's are read again by
            # the restarted actor) or when the fleet was stopped (read = processed + dropped + unfinished)
            "frames_unfinished": max(0, read - self.delivered - dropped),
            "drop_share": dropped / read if read else 0.0,
            "frames_corrupt": self.counter("frames_corrupt"),
            "reconnects": self.counter("reconnects"),
            "restarts": len(self.restarts),
            "restart_log": [dict(r) for r in self.restarts],
            "frames_lost": self.frames_lost if not self.live else None,
            "gap_s": round(sum(r.get("gap_s") or 0.0 for r in self.restarts), 3),
            "duplicates_dropped": self.duplicates,
            # first result to last as they reach the driver (startup apart); results come in chunks,
            # so a span under MIN_RATE_SPAN_S says nothing
            "throughput_fps": self.delivered / span if span >= MIN_RATE_SPAN_S else None,
            "latency_ms": self.latency.summary(),
        }


def format_fleet_summary(s: dict) -> str:
    def f(v, nd=1):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"

    ray = s["ray"]
    lines = [f"rtvision fleet: {len(s['streams'])} streams on {len(s['actors'])} actors | Ray {ray['version']} "
             f"{'local instance' if ray['local'] else 'cluster ' + str(ray['address'])} | nodes "
             f"{', '.join(ray['nodes']) or 'n/a'} | {ray['cpus']:g} CPUs, {ray['gpus']:g} GPUs"]
    for a in s["actors"]:
        pids = " -> ".join(str(p) for p in a["pids"]) or "n/a"
        lines.append(f"  actor {a['actor']}  {a['host'] or 'n/a'} pid {pids} | restarts {a['restarts']} | "
                     f"{a['num_cpus']:g} CPU {a['num_gpus']:g} GPU | {a['device'] or 'n/a'} | classifier {a['classifier'] or 'n/a'} "
                     f"| faces {a['faces'] or 'n/a'} | streams {', '.join(a['streams'])}"
                     + (f" | {a['state']}" if a["state"] != "done" else ""))
    width = max(len(r["stream"]) for r in s["streams"])
    for r in s["streams"]:
        lat = r["latency_ms"] or {}
        state = r["state"] + (f": {r['error']}" if r["error"] else "")
        gap = ""
        if r["restarts"]:
            lost = "unknown (live)" if r["frames_lost"] is None else r["frames_lost"]
            gap = (f" | restarts {r['restarts']}, resumed at frame "
                   f"{', '.join(str(x['at_frame']) for x in r['restart_log'])}, lost {lost}, gap {f(r['gap_s'])} s")
        lines.append(
            f"  {r['stream']:<{width}}  actor {r['actor']} | {'live' if r['live'] else 'file'} | read {r['frames_read']} | "
            f"processed {r['frames_processed']} | dropped {r['frames_dropped']} ({100 * r['drop_share']:.1f}%) | "
            + (f"unfinished {r['frames_unfinished']} | " if r.get("frames_unfinished") else "")
            + f"{f(r['throughput_fps'])} fps | p50 {f(lat.get('p50'))} p99 {f(lat.get('p99'))} ms{gap} | {state}")
    lat = s["latency_ms"] or {}
    lines.append(f"  {'total':<{width}}  processed {s['frames_processed']} | {f(s['throughput_fps'])} fps over "
                 f"{f(s['elapsed_s'])} s from the first result | p50 {f(lat.get('p50'))} p99 {f(lat.get('p99'))} ms | restarts {s['restarts']} | "
                 f"frames lost {s['frames_lost']} | Ray up in {f(s['ray_init_s'])} s, first result "
                 f"{f(s['first_result_s'])} s after the start")
    for w in s.get("warnings", []):
        lines.append(f"  WARNING     {w}")
    if s["failed_streams"]:
        lines.append(f"  FAILED      {', '.join(s['failed_streams'])}")
    return "\n".join(lines)
