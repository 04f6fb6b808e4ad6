"""The Qt window on the real 1080p clip: overlays by pixels, live stats, pause/step, clean close.

Cheap models: no classifier, MTCNN at half scale, fp32, batch 2, a few frames.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import count_frames, rtvision_threads
from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtGui import QImage

from rtvision.annotate import FACE_COLOR
from rtvision.config import ModelConfig, RunConfig, SourceConfig
from rtvision.gui.frameview import letterbox
from rtvision.gui.metrics import CounterRate, banner_messages
from rtvision.gui.window import AUTOCLOSE_ENV, MainWindow, run_window
from rtvision.pipeline import Pipeline
from rtvision.runner import Runner

WINDOW_WH = (1600, 820)


def cheap_cfg(video, max_frames: int, save_path: str | None = None) -> RunConfig:
    return RunConfig(
        source=SourceConfig(spec=str(video), max_frames=max_frames),
        model=ModelConfig(classifier="none", precision="fp32", device="cpu", faces="full", face_scale=0.5),
        batch=2,
        save_path=save_path,
        progress=False,
        join_timeout_s=10.0,
    )


@pytest.fixture
def open_window(qtbot, tmp_path):
    """Factory: a started pipeline, its runner and a shown, started window; at teardown the
    window is closed and the pipeline, which the fixture owns, stopped."""
    windows: list[MainWindow] = []
    pipelines: list[Pipeline] = []

    def make(cfg: RunConfig, warnings: tuple[str, ...] = ()) -> MainWindow:
        pipeline = Pipeline(cfg).start()
        pipelines.append(pipeline)
        pipeline.models.warnings.extend(warnings)
        runner = Runner(cfg, pipeline)
        window = MainWindow(cfg, runner, auto_close=False, snapshot_dir=tmp_path / "snaps")
        qtbot.addWidget(window)
        windows.append(window)
        window.resize(*WINDOW_WH)
        window.show()
        qtbot.waitExposed(window)
        window.start()
        return window

    yield make
    for w in windows:
        w.close()
    for p in pipelines:
        p.stop()


def rgb_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.height() * img.bytesPerLine())
    arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def is_box_colour(px: np.ndarray) -> np.ndarray:
    """FACE_COLOR is BGR (0, 220, 0), i.e. RGB (0, 220, 0); smoothing blends its edges."""
    r, g, b = (px[..., i].astype(int) for i in range(3))
    assert FACE_COLOR == (0, 220, 0)
    return (g >= 130) & (g - r >= 60) & (g - b >= 60)


def edge_hits(rgb: np.ndarray, view, xyxy: np.ndarray, shift: float = 0.0, tol: int = 2) -> tuple[int, int]:
    """How many sample points on the bottom/left/right edges of each box (mapped through the
    letterbox) have a box-coloured pixel within ``tol`` px. The top edge is skipped: the score
    label sits on it."""
    hits = total = 0
    h, w = rgb.shape[:2]
    for x1, y1, x2, y2 in xyxy:
        p1, p2 = view.map_to_widget(x1 + shift, y1 + shift), view.map_to_widget(x2 + shift, y2 + shift)
        X1, Y1, X2, Y2 = p1.x(), p1.y(), p2.x(), p2.y()
        if X2 - X1 < 20 or Y2 - Y1 < 20:
            continue
        pts = [(x, Y2) for x in np.linspace(X1 + 0.2 * (X2 - X1), X2 - 0.2 * (X2 - X1), 5)]
        pts += [(xe, y) for xe in (X1, X2) for y in np.linspace(Y1 + 0.3 * (Y2 - Y1), Y2 - 0.2 * (Y2 - Y1), 4)]
        for x, y in pts:
            xi, yi = int(round(x)), int(round(y))
            patch = rgb[max(0, yi - tol) : min(h, yi + tol + 1), max(0, xi - tol) : min(w, xi + tol + 1)]
            total += 1
            hits += bool(is_box_colour(patch).any())
    return hits, total


def settle(qtbot, window: MainWindow, quiet_s: float = 1.5, timeout_s: float = 20.0) -> None:
    """Wait until the runner has delivered nothing new for ``quiet_s`` and the screen shows it."""
    last, since, deadline = window.runner.stats.processed, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        qtbot.wait(100)
        n = window.runner.stats.processed
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s and window.shown_result is window.runner.latest:
            return
    pytest.fail("the runner did not settle")


def test_letterbox_keeps_aspect():
    s, x0, y0 = letterbox((1920, 1080), (1000, 1000))
    assert s == pytest.approx(1000 / 1920) and x0 == pytest.approx(0, abs=1e-6) and y0 == pytest.approx((1000 - 1080 * s) / 2)
    s, x0, y0 = letterbox((1920, 1080), (800, 225))
    assert s == pytest.approx(225 / 1080) and y0 == pytest.approx(0, abs=1e-6) and x0 == pytest.approx((800 - 1920 * s) / 2)


def test_banner_messages_and_counter_rate():
    cap = SimpleNamespace(state="reconnecting", message="rtsp://cam: no frame for 5s; reconnecting (attempt 1/5)")
    pipeline = SimpleNamespace(models=SimpleNamespace(warnings=["CLASSIFIER DISABLED: x"]), capture=SimpleNamespace(stats=cap))
    runner = SimpleNamespace(pipeline=pipeline, error=None)
    msgs = banner_messages(runner, ended=False)
    assert ("warning", "CLASSIFIER DISABLED: x") in msgs
    assert any("SOURCE STALLED" in t and "attempt 1/5" in t for _, t in msgs)
    cap.state = "ended"
    assert banner_messages(runner, ended=True)[-1] == ("info", "stream ended")
    rate = CounterRate(window_s=2.0)
    assert rate.sample(0, now=0.0) == 0.0
    assert rate.sample(10, now=1.0) == pytest.approx(10.0)
    assert rate.sample(40, now=2.0) == pytest.approx(20.0)


@pytest.mark.slow
def test_window_draws_boxes_and_live_stats(qtbot, open_window, faces_video):
    window = open_window(cheap_cfg(faces_video, max_frames=40), warnings=("CLASSIFIER DISABLED: test warning",))
    qtbot.waitUntil(lambda: window.shown_index is not None, timeout=60_000)
    first = {k: lbl.text() for k, lbl in window.panel.values.items()}
    # the model warning is on a visible banner
    assert window.banner.isVisible() and "CLASSIFIER DISABLED" in window.banner.text()
    # the stats change while frames flow
    qtbot.waitUntil(lambda: window.panel.values["frames"].text() != first["frames"], timeout=20_000)
    qtbot.waitUntil(lambda: window.runner.stats.processed >= 6, timeout=30_000)
    window._refresh_stats()
    vals = {k: lbl.text() for k, lbl in window.panel.values.items()}
    assert float(vals["infer_fps"]) > 0
    assert vals["latency"].endswith(" ms") and float(vals["latency"].split()[0]) > 0
    assert "/" in vals["latency_pct"] and vals["dropped"].startswith("0 ")
    assert vals["batch"].endswith("(max 2)") and vals["device"] == "cpu" and vals["gpu"] == "n/a (CPU)"
    assert vals["rss"].endswith(" MB") and float(vals["rss"].split()[0]) > 100
    assert vals["gui_ms"].endswith(" ms / frame") and window.view.painted_frames >= 2
    # freeze a frame with faces on screen, then check the boxes by pixels
    window.toggle_pause()
    settle(qtbot, window)
    r = window.shown_result
    assert len(r.faces) >= 1, "the clip has faces on every frame"
    rect = window.view.image_rect()
    assert rect.width() / rect.height() == pytest.approx(1920 / 1080, rel=0.01)
    rgb = rgb_array(window.view.grab().toImage())
    hits, total = edge_hits(rgb, window.view, r.faces.xyxy)
    assert total >= 9 and hits / total >= 0.9, (hits, total)
    off_hits, off_total = edge_hits(rgb, window.view, r.faces.xyxy, shift=25.0)
    assert off_hits / off_total <= 0.5, "box-coloured pixels everywhere: the check would prove nothing"
    # faces off: the boxes go
    qtbot.keyClick(window.view, Qt.Key_F)
    assert window.shown_result is r and not window.show_faces
    rgb_off = rgb_array(window.view.grab().toImage())
    hits_off, _ = edge_hits(rgb_off, window.view, r.faces.xyxy)
    assert hits_off / total <= 0.3
    qtbot.keyClick(window.view, Qt.Key_F)
    # snapshot: the annotated frame as PNG, path in the status bar
    qtbot.keyClick(window.view, Qt.Key_S)
    assert len(window.snapshots) == 1 and window.snapshots[0].is_file()
    assert str(window.snapshots[0]) in window.statusBar().currentMessage()
    snap = cv2.imread(str(window.snapshots[0]))
    assert snap.shape == r.frame.image.shape


@pytest.mark.slow
def test_pause_holds_the_frame_and_step_advances_one(qtbot, open_window, faces_video):
    window = open_window(cheap_cfg(faces_video, max_frames=40))
    qtbot.waitUntil(lambda: window.shown_index is not None, timeout=60_000)
    qtbot.keyClick(window.view, Qt.Key_Space)
    assert window.runner.paused and window.state_label.text() == "paused"
    settle(qtbot, window)
    idx = window.shown_index
    qtbot.wait(1000)
    assert window.shown_index == idx and window.runner.latest.frame.index == idx
    for key, expected in ((Qt.Key_Period, idx + 1), (Qt.Key_Right, idx + 2)):
        qtbot.keyClick(window.view, key)
        qtbot.waitUntil(lambda e=expected: window.shown_index == e, timeout=20_000)
        qtbot.wait(700)
        assert window.shown_index == expected, "step let more than one frame through"
    qtbot.keyClick(window.view, Qt.Key_Space)
    assert not window.runner.paused
    qtbot.waitUntil(lambda: window.shown_index > idx + 2, timeout=20_000)


@pytest.mark.slow
def test_close_stops_the_pipeline_and_finalizes_save(qtbot, open_window, faces_video, tmp_path):
    save = tmp_path / "out.mp4"
    window = open_window(cheap_cfg(faces_video, max_frames=60, save_path=str(save)))
    qtbot.waitUntil(lambda: window.runner.stats.processed >= 4, timeout=60_000)
    t0 = time.monotonic()
    qtbot.keyClick(window.view, Qt.Key_Q)  # q closes the window
    assert not window.isVisible()
    assert time.monotonic() - t0 < 15.0
    p = window.runner.pipeline
    assert not window.runner_thread.is_alive()  # the consumer has finished, outputs finalized
    assert p.stop_event.is_set()  # and it asked the pipeline to stop; its owner now joins it
    assert p.stop() == [] and not p.capture.is_alive() and not p.worker.is_alive()
    assert not rtvision_threads() and window.stuck_threads == []
    summary = window.runner.build_summary()
    assert summary is not None and summary["exit_code"] == 0 and 4 <= summary["frames_processed"] < 60
    cap = cv2.VideoCapture(str(save))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (1080, 1920, 3)
        n += 1
    cap.release()
    assert n == summary["frames_processed"]


@pytest.mark.slow
def test_run_window_autocloses_at_end_of_stream(qtbot, faces_video, monkeypatch):
    monkeypatch.setenv(AUTOCLOSE_ENV, "1")
    cfg = cheap_cfg(faces_video, max_frames=6)
    with Pipeline(cfg) as pipeline:
        runner = Runner(cfg, pipeline)
        assert run_window(cfg, runner) == []
    summary = runner.build_summary()
    assert summary["frames_processed"] == 6 and summary["exit_code"] == 0 and summary["stuck_threads"] == []
    assert not rtvision_threads()


@pytest.mark.slow
def test_ctrl_c_closes_the_window_cleanly(qtbot, faces_video):
    """SIGINT while the window runs: the window closes, outputs finalize, exit code 130."""
    cfg = cheap_cfg(faces_video, max_frames=60)
    old = signal.getsignal(signal.SIGINT)

    def arm(window):
        timer = QTimer(window)

        def fire():
            if window.shown_index is not None and window.isVisible():
                timer.stop()
                os.kill(os.getpid(), signal.SIGINT)

        timer.timeout.connect(fire)
        timer.start(50)

    with Pipeline(cfg) as pipeline:
        runner = Runner(cfg, pipeline)
        assert run_window(cfg, runner, auto_close=False, on_window=arm) == []
    summary = runner.build_summary()
    assert signal.getsignal(signal.SIGINT) is old, "the SIGINT handler was not restored"
    assert summary["exit_code"] == 130 and runner.exit_code == 130
    assert 1 <= summary["frames_processed"] < 60 and summary["stuck_threads"] == []
    assert not rtvision_threads()


def test_file_batches_play_frame_by_frame(qtbot, open_window, faces_video):
    """A file's results arrive a batch at a time; the window draws them in order, one by one
    (not just the newest of each batch), so the video plays smoothly."""
    cfg = dataclasses.replace(cheap_cfg(faces_video, max_frames=24), batch=4)
    window = open_window(cfg)
    drawn: list[int] = []
    render = window._render

    def spy(r):
        drawn.append(r.frame.index)
        render(r)

    window._render = spy
    qtbot.waitUntil(lambda: window.is_ended, timeout=120_000)
    settle(qtbot, window)
    assert window.runner.stats.processed == 24
    assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn)
    assert len(drawn) >= 20, drawn  # newest-only would draw about one frame in four
    assert drawn[0] <= 2, drawn  # from the first results (the first batches can come at once)


def test_panel_face_mode_is_compact():
    from rtvision.gui.metrics import compact_face_mode

    assert compact_face_mode("fast: fast-mtcnn scale 1 min face 28px, stride 4 + tracking") == "fast: min face 28px, stride 4 + tracking"
    assert compact_face_mode("full: fast-mtcnn scale 1") == "full: full resolution"
    assert compact_face_mode("fast: fast-mtcnn scale 0.25, stride 4 + tracking") == "fast: scale 0.25, stride 4 + tracking"
    assert compact_face_mode("full: facenet-mtcnn scale 0.5") == "full: facenet scale 0.5"


def test_a_snapshot_folder_that_cannot_be_made_is_said_in_the_status_bar(qtbot, open_window, faces_video, tmp_path):
    """s with a snapshot folder under a file: the status bar says why, nothing is raised (a slot
    that raised used to abort the whole process), and the run goes on."""
    window = open_window(cheap_cfg(faces_video, max_frames=12))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    window.snapshot_dir = blocker / "snaps"
    qtbot.waitUntil(lambda: window.view.image is not None, timeout=60_000)
    assert window.snapshot() is None and window.snapshots == []
    assert "could not save a snapshot" in window.statusBar().currentMessage()
    qtbot.keyClick(window, Qt.Key_S)  # the same through the key, in Qt's own event path
    qtbot.waitUntil(lambda: window.runner.stats.processed == 12, timeout=60_000)


@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_slot_closes_the_window_instead_of_aborting(qtbot, faces_video, tmp_path):
    """A slot raises while the window runs (PyQt5 would call qFatal: abort, outputs cut short):
    the window closes as on q, the outputs are finalized, and the run ends with an internal
    error (exit 1) in one line; Python's excepthook is put back."""
    cfg = dataclasses.replace(cheap_cfg(faces_video, max_frames=60, save_path=str(tmp_path / "v.mp4")),
                              results_path=str(tmp_path / "r.jsonl"))
    hook = sys.excepthook

    def arm(window):
        def boom():
            raise ValueError("a bug in a slot")

        QTimer.singleShot(300, boom)

    with Pipeline(cfg) as pipeline:
        runner = Runner(cfg, pipeline)
        assert run_window(cfg, runner, auto_close=False, on_window=arm) == []
    summary = runner.build_summary()
    assert sys.excepthook is hook
    assert summary["exit_code"] == 1 and "the window failed: ValueError: a bug in a slot" in summary["error"]
    rows = (tmp_path / "r.jsonl").read_text().splitlines()
    assert 1 <= len(rows) == summary["frames_processed"] < 60
    assert count_frames(tmp_path / "v.mp4") == len(rows)
    assert not rtvision_threads()


def test_after_the_end_the_panel_shows_the_runs_mean_rates(qtbot, open_window, faces_video):
    """A file that ended: the panel's rates are the run's means (the live rates decay to 0.0,
    which said the run had been idle), and they agree with the summary's throughput."""
    window = open_window(cheap_cfg(faces_video, max_frames=10))
    qtbot.waitUntil(lambda: window.is_ended, timeout=90_000)
    qtbot.wait(1500)  # long enough for a live rate to have decayed
    window._refresh_stats()
    vals = {k: lbl.text() for k, lbl in window.panel.values.items()}
    assert vals["infer_fps"].endswith(" mean") and vals["capture_fps"].endswith(" mean"), vals
    s = window.runner.stats
    mean = s.processed / (s.last_result_at - s.started_at)
    assert float(vals["infer_fps"].split()[0]) == pytest.approx(mean, abs=0.06) and mean > 0
