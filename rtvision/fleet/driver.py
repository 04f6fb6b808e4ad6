"""``FleetDriver``: the streams of a run spread over Ray actors, their results gathered here.

    driver (this process)                         Ray actors (one process each, CPUs/GPUs declared)
    ─────────────────────                         ─────────────────────────────────────────────────
    assign streams i -> actor i % K  ──start──>   FleetActor: MultiPipeline over its streams
    poll each actor (one call in flight) <──────  records in chunks + per-stream counters
    StreamLedger per stream: in order, deduped
    JSONL (--results), summary
    actor died (RayActorError):
      ask it for its pid: a new pid = Ray restarted it (max_restarts)
      start it again on its streams, each from   ──start(first_index)──> ResumedSource: files skip
      the next frame not delivered                                        to that frame

Only this module imports Ray, and only when a fleet runs. ``--ray auto`` starts a local instance
bound to 127.0.0.1 (every Ray process listens on loopback) and shuts it down at the end;
``--ray HOST:PORT`` joins a cluster started with ``ray start --head`` and leaves it running.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from ..errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STREAM_FAILED,
    ClusterError,
    RtvisionError,
    UsageError,
)
from ..sinks import JsonlSink, StoppedWhileWriting
from ..stats import LatencyHistogram
from ..streams.spec import StreamSpec
from .actor import Assignment, FleetActor
from .ledger import MIN_RATE_SPAN_S, StreamLedger

log = logging.getLogger(__name__)

INSTALL_HINT = 'rtvision fleet needs Ray, an optional extra: pip install -e ".[ray]" (in the rtvision checkout)'
# Ray >= 2.x maps a node address of 127.0.0.1 to the machine's network address unless its
# "no multi-node cluster" switch is off (its default on macOS/Windows): then every Ray process
# of a local instance binds to loopback. Read by Ray when imported, and by its child processes.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
REACH_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 30.0
PROBE_RETRY_S = 0.2


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _stop_half_started_ray(ray) -> None:
    """Stop a local Ray instance whose ``ray.init`` was cut short: ``ray.shutdown()`` stops the
    processes it knows of, but the agents its raylet had started would be left behind (their
    parent gone); every process this one started is ended too."""
    import psutil

    with contextlib.suppress(Exception):
        started = psutil.Process().children(recursive=True)
        with contextlib.suppress(Exception):
            ray.shutdown()
        for proc in started:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(started, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()


class _StoppedWhileConnecting(Exception):
    """A stop signal came while ``ray.init`` ran (with Ray's own handler installed)."""


def ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a module hidden or half-installed
        return False


@contextlib.contextmanager
def ray_environment(loopback: bool, joining: bool):
    """``ray``, imported with its node address on loopback or not, for the length of the block;
    UsageError (exit 2) when it is not installed. The variables set are restored at the end.

    ``joining`` a cluster: when this machine has a Ray token (``~/.ray/auth_token``,
    ``RAY_AUTH_TOKEN``) and ``RAY_AUTH_MODE`` is not set, the driver sends it, as Ray itself does
    for a cluster it finds on its own (a cluster without token authentication accepts it too;
    ``ray start --head`` turns it on when the head machine has a token). Ray reads these variables
    when it is first imported and initialized: one process runs one kind of fleet (the CLI does).
    """
    if not ray_installed():
        raise UsageError(INSTALL_HINT)
    saved = {k: os.environ.get(k) for k in (LOOPBACK_ENV, AUTH_MODE_ENV)}
    if loopback:
        os.environ[LOOPBACK_ENV] = "0"
    elif os.environ.get(LOOPBACK_ENV) == "0":
        os.environ.pop(LOOPBACK_ENV)
    if joining and saved[AUTH_MODE_ENV] is None and _token_available():
        os.environ[AUTH_MODE_ENV] = "token"
    try:
        try:
            import ray
        except ImportError:
            raise UsageError(INSTALL_HINT) from None
        from ray._private import ray_constants

        # Ray 2.60 reads the variable into this private constant at import: set it too, for a ray
        # imported before the variable was set (a Ray without the constant reads the variable only)
        patch = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
        was = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
        if patch:
            ray_constants.ENABLE_RAY_CLUSTER = not loopback
        try:
            yield ray
        finally:
            if patch:
                ray_constants.ENABLE_RAY_CLUSTER = was
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_reachable(address: str) -> None:
    """A ``HOST:PORT`` that nothing answers on is refused at once (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: expected auto or HOST:PORT (the head's GCS port, 6379 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                           f"`ray start --head --port={port}` on the head machine") from None


@contextlib.contextmanager
def _native_stderr_captured(lines: list[str]):
    """Ray's C++ core writes its retries and warnings straight to file descriptor 2 (dozens of
    lines while a connection fails); while ``ray.init`` joins a cluster they go to ``lines`` and
    the debug log instead, and a failure is said in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    lines.append(line)
                    log.debug("ray: %s", line)


class _RayPrints(io.TextIOBase):
    """Stands for standard output while Ray runs: Ray prints its own multi-line notices there
    (a worker that died, ...), which would land between ``--results -`` records. They go to the
    debug log (``-vv``); the driver says what happened in one line of its own."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                log.debug("ray: %s", line)
        return len(text)


@dataclass
class ActorSlot:
    index: int
    streams: list[str]
    handle: object = None
    state: str = "starting"  # starting | running | probing | done | lost
    pid: int | None = None
    pids: list[int] = field(default_factory=list)
    host: str | None = None
    device: str | None = None
    classifier: str | None = None
    faces: str | None = None
    batch: int | None = None
    restarts: int = 0
    summary: dict | None = None
    deadline: float = math.inf
    retry_at: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state not in ("done", "lost", "stopped")


def plan_actors(n_streams: int, cpus: float, gpus: float, actors: int | None, actor_cpus: float,
                actor_gpus: float) -> int:
    """How many actors: ``actors`` if given (at most one per stream), else as many as the
    cluster's CPUs and GPUs hold, at most one per stream. ClusterError when they cannot fit."""
    fit = math.floor(cpus / actor_cpus + 1e-9) if actor_cpus > 0 else n_streams
    if actor_gpus > 0:
        fit = min(fit, math.floor(gpus / actor_gpus + 1e-9))
    want = min(n_streams, actors) if actors is not None else min(n_streams, fit)
    if actors is not None and actors > n_streams:
        log.warning("--actors %d: only %d streams; running %d actors (one stream each)", actors, n_streams, n_streams)
    if want < 1 or want > fit:
        need = f"{max(want, 1)} actor(s) of {actor_cpus:g} CPU" + (f" and {actor_gpus:g} GPU" if actor_gpus else "")
        raise ClusterError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: no room for {need} "
                           "(--actors, --actor-cpus, --actor-gpus)")
    return want


class FleetDriver:
    """One fleet run: ``driver.run()`` then ``driver.summary()``. ``interrupt(code)`` (any thread,
    a signal handler) stops the actors, keeps what they had made and ends with ``code``.

    address: ``auto`` (a local instance on 127.0.0.1 with ``local_cpus`` CPUs, None: all) or
    ``HOST:PORT``. actor_gpus None: one GPU per actor when the cluster has GPUs and the models may
    use CUDA, else none. listeners: called with each record written (tests, progress).
    """

    def __init__(self, cfg: RunConfig, specs: list[StreamSpec], address: str = "auto", actors: int | None = None,
                 actor_cpus: float = 1.0, actor_gpus: float | None = None, max_restarts: int = 3,
                 start_timeout_s: float = 300.0, results_path: str | None = None, local_cpus: int | None = None,
                 poll_wait_s: float = 0.2) -> None:
        self.cfg = cfg
        self.specs = specs
        self.address = address
        self.local = address == "auto"
        self.actors_wanted = actors
        self.actor_cpus = actor_cpus
        self.actor_gpus = actor_gpus
        self.max_restarts = max_restarts
        self.start_timeout_s = start_timeout_s
        self.results_path = results_path
        self.local_cpus = local_cpus
        self.poll_wait_s = poll_wait_s
        self.ledgers = {s.name: StreamLedger(s.name, s.spec, -1) for s in specs}
        self.slots: list[ActorSlot] = []
        self.listeners: list = []
        self.latency = LatencyHistogram()
        self.exit_code = EXIT_OK
        self.error: BaseException | None = None
        self.ray = None
        self.ray_info: dict = {"version": None, "local": self.local, "address": None, "nodes": [], "cpus": 0.0, "gpus": 0.0}
        self.started_at = time.monotonic()
        self.ray_init_s: float | None = None
        self.first_result_s: float | None = None
        self.last_result_at: float | None = None
        self.delivered = 0
        self._stop_code: int | None = None
        self._stopping = False
        self._jsonl: JsonlSink | None = None
        self._pending: dict = {}

    # -- control -----------------------------------------------------------------------------------
    def interrupt(self, exit_code: int = EXIT_SIGINT) -> None:
        if self._stop_code is None:
            self._stop_code = exit_code

    def request_stop(self) -> None:
        self.interrupt(EXIT_SIGINT)

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> None:
        real_stdout = sys.stdout
        try:
            with contextlib.ExitStack() as stack:
                loopback = self.local or is_loopback(self.address)
                if not ray_installed():
                    raise UsageError(INSTALL_HINT)
                if not self.local:
                    check_reachable(self.address)
                self.ray = stack.enter_context(ray_environment(loopback, joining=not self.local))
                sys.stdout = _RayPrints()
                stack.callback(setattr, sys, "stdout", real_stdout)
                stack.callback(self._shutdown)
                self._connect(loopback)
                if self.results_path:
                    self._jsonl = stack.enter_context(JsonlSink(self.results_path, self.cfg.results_verbose, stdout=real_stdout,
                                                                    stopped=lambda: self._stop_code is not None))
                self._start_actors()
                self._loop()
        except KeyboardInterrupt:
            self.exit_code = EXIT_SIGINT
        except _StoppedWhileConnecting:
            pass  # _stop_code says how
        except StoppedWhileWriting as exc:  # a stop while the results' reader read nothing: _stop_code says how
            log.warning("%s", exc)
        except RtvisionError as exc:
            self.error, self.exit_code = exc, exc.exit_code
        except BaseException as exc:  # noqa: BLE001 - reported in one line, never a hang
            log.debug("fleet driver failed", exc_info=True)
            self.error, self.exit_code = exc, EXIT_INTERNAL
        if self._stop_code is not None and self.error is None:
            self.exit_code = self._stop_code
        for led in self.ledgers.values():  # a run ended by an error: what was left, stopped with it
            if not led.finished and (self.error is not None or self._stop_code is not None):
                led.state = "stopped"
        for slot in self.slots:
            if slot.active and self.error is not None:
                slot.state = "stopped"

    def _connect(self, loopback: bool) -> None:
        # ray.init installs its own SIGTERM handler (sys.exit(15), and its native one that prints
        # a stack and may abort): the handlers rtvision had (a clean stop, exit 143) are put back
        # right after; a SIGTERM during ray.init itself stops the run the same way.
        main = threading.current_thread() is threading.main_thread()
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)} if main else {}
        try:
            self._ray_init(loopback)
        except SystemExit:  # Ray's handler ran: a SIGTERM while it started
            self._stop_code = EXIT_SIGTERM
            _stop_half_started_ray(self.ray)
            raise _StoppedWhileConnecting() from None
        finally:
            for sig, handler in saved.items():
                if handler is not None:
                    signal.signal(sig, handler)

    def _ray_init(self, loopback: bool) -> None:
        ray = self.ray
        t0 = time.monotonic()
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        native: list[str] = []
        try:
            if self.local:  # (not captured: the Ray processes started here would inherit the capture)
                ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=self.local_cpus,
                         include_dashboard=False, **quiet)
            else:
                with _native_stderr_captured(native):
                    ray.init(address=self.address, **({"_node_ip_address": "127.0.0.1"} if loopback else {}), **quiet)
        except Exception as exc:  # noqa: BLE001 - Ray's own errors, in one line
            what = "start a local Ray instance" if self.local else f"join the Ray cluster at {self.address}"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            if any("Unauthenticated" in line or "InvalidAuthToken" in line for line in native):
                first += ("; the cluster wants Ray's token: copy the head's ~/.ray/auth_token to this machine "
                          "(or set RAY_AUTH_TOKEN) and set RAY_AUTH_MODE=token")
            raise ClusterError(f"cannot {what}: {first}") from None
        self.ray_init_s = time.monotonic() - t0
        res = ray.cluster_resources()
        nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
        self.ray_info = {"version": ray.__version__, "local": self.local,
                         "address": ray.get_runtime_context().gcs_address, "nodes": nodes,
                         "cpus": float(res.get("CPU", 0.0)), "gpus": float(res.get("GPU", 0.0))}
        if loopback and any(not is_loopback(n) for n in nodes):
            log.warning("the local Ray instance is not on loopback: its nodes are %s", ", ".join(nodes))

    def _ray_restarts(self, slot: ActorSlot) -> int | None:
        """How many times Ray has restarted the slot's actor, from its GCS actor table (no
        dashboard needed; ``ray.util.state`` needs one, which a local instance runs without).
        None when Ray cannot say (an API that moved): the restarts seen as new pids stand."""
        try:
            from ray._private import state as ray_state

            info = ray_state.actors(slot.handle._actor_id.hex())
            n = info.get("NumRestarts") if isinstance(info, dict) else None
            return int(n) if n is not None else None
        except Exception:  # noqa: BLE001 - a private API: a count is a nicety, never a failure
            log.debug("Ray's restart count of actor %d unavailable", slot.index, exc_info=True)
            return None

    def _sync_restarts(self, slot: ActorSlot) -> None:
        """Count Ray's restarts, not only the ones seen: an actor that Ray restarted and that died
        again before it answered has a single new pid for two restarts."""
        if slot.handle is None:
            return
        n = self._ray_restarts(slot)
        if n is not None and n > slot.restarts:
            slot.restarts = n

    def _shutdown(self) -> None:
        ray = self.ray
        if ray is None or not ray.is_initialized():
            return
        for slot in self.slots:
            self._sync_restarts(slot)
        for slot in self.slots:
            if slot.handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(slot.handle, no_restart=True)
        ray.shutdown()  # a local instance stops; a cluster stays up (this driver only disconnects)

    def _start_actors(self) -> None:
        info = self.ray_info
        gpus = self.actor_gpus
        if gpus is None:
            gpus = 1.0 if info["gpus"] >= 1 and self.cfg.model.device != "cpu" else 0.0
        self.actor_gpus = gpus
        k = plan_actors(len(self.specs), info["cpus"], info["gpus"], self.actors_wanted, self.actor_cpus, gpus)
        remote = self.ray.remote(FleetActor).options(
            num_cpus=self.actor_cpus, num_gpus=gpus, max_restarts=self.max_restarts, max_task_retries=0,
            scheduling_strategy="SPREAD")
        self.slots = [ActorSlot(i, [s.name for s in self.specs[i::k]]) for i in range(k)]
        for slot in self.slots:
            for name in slot.streams:
                self.ledgers[name].actor = slot.index
            slot.handle = remote.remote(slot.index)
            self._send_start(slot)

    # -- messages to the actors ------------------------------------------------------------------
    def _send(self, slot: ActorSlot, kind: str, ref) -> None:
        self._pending[ref] = (slot, kind)

    def _send_start(self, slot: ActorSlot) -> None:
        work = [Assignment(n, self.ledgers[n].spec, self.ledgers[n].next_index)
                for n in slot.streams if not self.ledgers[n].finished]
        slot.state = "starting"
        slot.deadline = time.monotonic() + self.start_timeout_s
        self._send(slot, "start", slot.handle.start.remote(self.cfg, work))

    def _send_poll(self, slot: ActorSlot) -> None:
        self._send(slot, "poll", slot.handle.poll.remote(self.poll_wait_s))

    def _send_probe(self, slot: ActorSlot) -> None:
        slot.retry_at = None
        self._send(slot, "pid", slot.handle.pid.remote())

    # -- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        ray = self.ray
        stop_deadline = math.inf
        while any(s.active for s in self.slots):
            if self._stop_code is not None and not self._stopping:
                self._begin_stop()
                stop_deadline = time.monotonic() + STOP_TIMEOUT_S
            now = time.monotonic()
            if now > stop_deadline:
                log.warning("actors did not stop within %.0f s; killing them", STOP_TIMEOUT_S)
                for slot in self.slots:
                    if slot.active:
                        self._unfinished_fail(slot, "stopped: the actor did not answer in time", state="stopped")
                return
            for slot in self.slots:
                if slot.state == "probing" and slot.retry_at is not None and now >= slot.retry_at:
                    self._send_probe(slot)
                if slot.state in ("starting", "probing") and now > slot.deadline:
                    raise ClusterError(f"actor {slot.index} did not start within {self.start_timeout_s:g} s (the "
                                       f"cluster's free resources: {ray.available_resources()}; --start-timeout)")
            if not self._pending:
                time.sleep(0.05)
                continue
            try:
                ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=0.5)
            except KeyboardInterrupt:
                self.interrupt(EXIT_SIGINT)
                continue
            for ref in ready:
                slot, kind = self._pending.pop(ref)
                try:
                    reply = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._on_actor_error(slot, kind, exc)
                    continue
                except ray.exceptions.RayTaskError as exc:  # an exception inside the actor's method
                    first = str(exc.cause if getattr(exc, "cause", None) else exc).strip().splitlines()
                    self._unfinished_fail(slot, f"actor {slot.index} failed: {first[0] if first else exc}")
                    continue
                self._on_reply(slot, kind, reply)

    def _begin_stop(self) -> None:
        self._stopping = True
        for slot in self.slots:
            if slot.state in ("starting", "running"):
                self._send(slot, "stop", slot.handle.stop.remote())
            elif slot.active:  # probing a dead actor: nothing to stop
                self._unfinished_fail(slot, "stopped while its actor restarted", state="stopped")

    def _on_reply(self, slot: ActorSlot, kind: str, reply) -> None:
        if kind == "pid":
            self._on_pid(slot, reply)
            return
        if slot.pid is not None and reply.get("pid") != slot.pid:
            # a restarted actor answered a call made before its restart: start it again
            self._on_pid(slot, reply.get("pid"))
            return
        if kind == "start":
            self._on_start(slot, reply)
            return
        self._take(slot, reply, final=kind == "stop" or reply["done"])
        if kind == "stop" or reply["done"]:
            slot.summary = reply.get("summary")
            slot.state = "done"
        elif not self._stopping:
            self._send_poll(slot)

    def _on_start(self, slot: ActorSlot, reply: dict) -> None:
        slot.pid = reply["pid"]
        if not slot.pids or slot.pids[-1] != slot.pid:
            slot.pids.append(slot.pid)
        slot.host = reply.get("host")
        if not reply["ok"]:
            rows = reply.get("streams") or {}
            if reply.get("streams_failed"):
                for name in slot.streams:
                    led = self.ledgers[name]
                    if not led.finished:
                        led.update(rows.get(name, {}))
                        led.fail((rows.get(name) or {}).get("error") or reply["error"])
                slot.state = "done"
                return
            err = RtvisionError(f"actor {slot.index}: {reply['error']}")
            err.exit_code = reply.get("exit_code", EXIT_INTERNAL)
            raise err
        for k in ("device", "classifier", "faces", "batch"):
            setattr(slot, k, reply.get(k))
        for w in reply.get("warnings") or []:
            if w not in slot.warnings:
                slot.warnings.append(w)
        for name, row in (reply.get("streams") or {}).items():
            self.ledgers[name].update(row)
        for name, skip in (reply.get("skipped") or {}).items():
            led = self.ledgers[name]
            if led.restarts:
                led.restarts[-1]["skip_s"] = skip["seconds"]
        slot.state = "running"
        if self._stopping:
            self._send(slot, "stop", slot.handle.stop.remote())
        else:
            self._send_poll(slot)

    def _take(self, slot: ActorSlot, reply: dict, final: bool) -> None:
        now = time.monotonic()
        for rec in reply["records"]:
            led = self.ledgers.get(rec.get("stream"))
            if led is None:
                continue
            out = led.accept(rec, now)
            if out is None:
                continue
            if self._jsonl is not None:
                try:
                    self._jsonl.write_record(out)
                except (RtvisionError, StoppedWhileWriting):
                    led.delivered -= 1  # not delivered after all: the run ends on this error, or stop
                    raise
            self.delivered += 1
            self.latency.add(float(out.get("latency_ms") or 0.0))
            if self.first_result_s is None:
                self.first_result_s = now - self.started_at
            self.last_result_at = now
            for listener in self.listeners:
                listener(out)
        for name, row in reply["streams"].items():
            if name in self.ledgers:
                self.ledgers[name].update(row, final=final)

    def _on_actor_error(self, slot: ActorSlot, kind: str, exc) -> None:
        ray = self.ray
        if isinstance(exc, ray.exceptions.ActorDiedError) and not isinstance(exc, ray.exceptions.ActorUnavailableError):
            if kind == "pid" or slot.restarts >= self.max_restarts:
                self._lost(slot, exc)
                return
        if self._stopping:
            self._unfinished_fail(slot, "stopped while its actor was lost", state="stopped")
            return
        if slot.state != "probing":
            log.warning("actor %d (pid %s) is gone; waiting for Ray to restart it (%d of --max-restarts %d used)",
                        slot.index, slot.pid, slot.restarts, self.max_restarts)
            slot.state = "probing"
            slot.deadline = time.monotonic() + self.start_timeout_s
        if kind == "pid":  # not back yet: ask again shortly
            slot.retry_at = time.monotonic() + PROBE_RETRY_S
        else:
            self._send_probe(slot)

    def _on_pid(self, slot: ActorSlot, pid: int) -> None:
        if pid == slot.pid:  # the same process: it was unreachable for a moment, not restarted
            slot.state = "running"
            if self._stopping:
                self._send(slot, "stop", slot.handle.stop.remote())
            else:
                self._send_poll(slot)
            return
        slot.restarts += 1
        self._sync_restarts(slot)
        slot.pid = pid
        slot.pids.append(pid)
        resumed = []
        for name in slot.streams:
            led = self.ledgers[name]
            if not led.finished:
                led.restart()
                resumed.append(f"{name} at frame {led.next_index}")
        log.warning("actor %d restarted by Ray (pid %d; restart %d of %d); resuming %s", slot.index, pid,
                    slot.restarts, self.max_restarts, ", ".join(resumed) or "nothing (its streams were done)")
        if self._stopping:
            self._unfinished_fail(slot, "stopped while its actor restarted", state="stopped")
            return
        self._send_start(slot)

    def _lost(self, slot: ActorSlot, exc) -> None:
        why = f"actor {slot.index} lost for good after {slot.restarts} restart(s) (--max-restarts {self.max_restarts})"
        log.warning("%s", why)
        log.debug("%s", exc)
        self._unfinished_fail(slot, why)
        slot.state = "lost"

    def _unfinished_fail(self, slot: ActorSlot, why: str, state: str = "failed") -> None:
        for name in slot.streams:
            led = self.ledgers[name]
            if not led.finished:
                led.state, led.error = state, why
        if slot.active:
            slot.state = "done" if state == "stopped" else "lost"

    # -- the summary -------------------------------------------------------------------------------
    def summary(self) -> dict:
        streams = [led.row() for led in self.ledgers.values()]
        failed = [r["stream"] for r in streams if r["state"] == "failed"]
        exit_code = self.exit_code
        if exit_code == EXIT_OK and failed and self.error is None:
            exit_code = EXIT_STREAM_FAILED
        elapsed = (self.last_result_at - self.started_at - self.first_result_s) if self.last_result_at is not None else 0.0
        actors = []
        warnings: list[str] = []
        for slot in self.slots:
            s = slot.summary or {}
            actors.append({
                "actor": slot.index, "host": slot.host, "pids": slot.pids, "restarts": slot.restarts,
                "state": slot.state, "streams": slot.streams, "num_cpus": self.actor_cpus,
                "num_gpus": self.actor_gpus or 0.0, "device": slot.device, "classifier": slot.classifier,
                "faces": slot.faces, "batch": slot.batch, "peak_rss_mb": s.get("peak_rss_mb"),
                "error": s.get("error"),
            })
            warnings += [w for w in slot.warnings if w not in warnings]
        return {
            "ray": dict(self.ray_info),
            "actors": actors,
            "streams": streams,
            "failed_streams": failed,
            "restarts": sum(a["restarts"] for a in actors),
            "frames_processed": self.delivered,
            "frames_lost": sum(r["frames_lost"] or 0 for r in streams),
            "elapsed_s": elapsed,  # from the first result to the last: startup (Ray, models) apart
            "throughput_fps": self.delivered / elapsed if elapsed >= MIN_RATE_SPAN_S else None,
            "wall_s": time.monotonic() - self.started_at,
            "latency_ms": self.latency.summary(),
            "ray_init_s": self.ray_init_s,
            "first_result_s": self.first_result_s,
            "warnings": warnings,
            "exit_code": exit_code,
            "error": str(self.error) if self.error is not None else None,
        }
