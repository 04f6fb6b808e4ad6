"""Render the rtvision window offscreen for N frames and save a PNG; optionally measure whether
the window holds the pipeline back (``--compare-headless``).

    python scripts/window_screenshot.py --source ../shared/data/faces_1080p.mp4 --frames 30 --out /tmp/window.png
    python scripts/window_screenshot.py --source ../shared/data/faces_1080p.mp4 --frames 60 --compare-headless --repeats 2

The classifier defaults to a randomly initialized ResNet-18 (ImageNet weights cannot be
downloaded here), so the labels on screen are real drawing of meaningless predictions.
``--compare-headless`` runs the same settings in this one process, alternating headless and
window runs (H, W, H, W, ...), sharing one set of models, and reports steady FPS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="rtvision-xdg-"))


def random_resnet18_weights(tmpdir: str) -> str:
    import torch
    import torchvision

    path = os.path.join(tmpdir, "resnet18-random.pth")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def make_cfg(a: argparse.Namespace, weights: str, max_frames: int | None):
    from rtvision.config import ModelConfig, RunConfig, SourceConfig

    return RunConfig(
        source=SourceConfig(spec=a.source, max_frames=max_frames),
        model=ModelConfig(
            classifier=a.classifier,
            weights=weights,
            precision="fp32",
            device=a.device,
            faces=a.faces,
            face_scale=a.face_scale,
        ),
        batch=a.batch,
        progress=False,
    )


def screenshot(a: argparse.Namespace, cfg) -> None:
    from rtvision.gui.window import MainWindow, application, wait_for
    from rtvision.pipeline import Pipeline
    from rtvision.runner import Runner

    app = application()
    pipeline = Pipeline(cfg).start()
    runner = Runner(cfg, pipeline)
    window = MainWindow(cfg, runner, auto_close=False)
    w, h = (int(v) for v in a.size.split("x"))
    window.resize(w, h)
    window.show()
    window.start()
    last = a.frames - 1
    ok = wait_for(lambda: window.shown_index is not None and window.shown_index >= last and not window.view_pending, a.timeout, app)
    wait_for(lambda: False, 0.3, app)  # one more stats refresh and paint
    window._refresh_stats()
    wait_for(lambda: False, 0.1, app)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(a.out)
    shown = window.shown_index
    window.close()
    stats = {k: lbl.text() for k, lbl in window.panel.values.items()}
    print(f"screenshot: {a.out} (frame {shown}, {'reached' if ok else 'TIMED OUT before'} frame {last})")
    print("panel: " + json.dumps(stats))
    if window.stuck_threads:
        print(f"WARNING threads did not stop: {window.stuck_threads}")


def compare_headless(a: argparse.Namespace, cfg) -> None:
    from rtvision.gui.window import application, run_window
    from rtvision.models.build import build_models
    from rtvision.pipeline import Pipeline
    from rtvision.runner import Runner

    application()
    models = build_models(cfg.model)
    rows: list[tuple[str, dict]] = []
    for rep in range(a.repeats):
        for mode in ("headless", "window"):
            pipeline = Pipeline(cfg, models=models).start()
            runner = Runner(cfg, pipeline)
            windows = []
            t0 = time.monotonic()
            if mode == "headless":
                summary = runner.run()
            else:
                summary = run_window(cfg, runner, auto_close=True, on_window=windows.append)
            wall = time.monotonic() - t0
            rows.append((mode, summary))
            extra = ""
            if windows:
                w = windows[0]
                extra = f", displayed {w.view.painted_frames} frames at {w.gui_ms_per_frame:.1f} ms GUI time each"
            print(
                f"run {rep + 1} {mode:8s}: processed {summary['frames_processed']}, steady {summary['steady_fps']:.2f} fps, "
                f"throughput {summary['throughput_fps']:.2f} fps, latency p50 {summary['latency_ms']['p50']:.0f} ms, "
                f"wall {wall:.1f} s{extra}"
            )
    for metric in ("steady_fps", "throughput_fps"):
        h = [s[metric] for m, s in rows if m == "headless"]
        w = [s[metric] for m, s in rows if m == "window"]
        hm, wm = statistics.mean(h), statistics.mean(w)
        print(f"{metric}: headless mean {hm:.2f}, window mean {wm:.2f}, ratio window/headless {wm / hm:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "faces_1080p.mp4"))
    p.add_argument("--frames", type=int, default=30, help="frames to run (the screenshot shows the last)")
    p.add_argument("--out", default="/tmp/window.png")
    p.add_argument("--size", default="1280x720", help="window size WxH in logical pixels")
    p.add_argument("--classifier", default="resnet18", help="resnet18 (random init) or none")
    p.add_argument("--faces", default="fast", help="face mode (default: %(default)s, as rtvision)")
    p.add_argument("--face-scale", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--to-end", action="store_true", help="let the stream end first (shows the 'stream ended' banner)")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--compare-headless", action="store_true", help="measure FPS headless vs with the window instead")
    p.add_argument("--repeats", type=int, default=2, help="headless/window pairs for --compare-headless")
    a = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_resnet18_weights(tmp) if a.classifier == "resnet18" else "imagenet"
        # the screenshot is taken mid-run (the source still reading) unless --to-end
        cfg = make_cfg(a, weights, a.frames if (a.compare_headless or a.to_end) else None)
        if a.compare_headless:
            compare_headless(a, cfg)
        else:
            screenshot(a, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
