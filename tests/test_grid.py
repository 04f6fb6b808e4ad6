"""The grid window of a multi-stream run, offscreen: the tiles' layout, each tile's video and
stats line, click to enlarge and back, a failed stream's tile, and a clean close.

Fake models and test sources (index-coded frames, one fake face box per frame) keep these fast;
the real models and clips on a real X server are in test_window_x11.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import decode_index, rtvision_threads
from fakes import FakeClassifier, FakeFaces, fake_models
from faults import Faults, FaultySource
from PyQt5.QtCore import QPoint, QRect, Qt
from test_window import is_box_colour, rgb_array

from rtvision.config import ModelConfig, RunConfig, SourceConfig
from rtvision.errors import EXIT_STREAM_FAILED
from rtvision.gui.grid import GridWindow, grid_shape, run_grid_window
from rtvision.gui.metrics import GRID_PANEL_ROWS, TileText, stream_state, tile_text
from rtvision.streams.engine import MultiPipeline
from rtvision.streams.runner import MultiRunner
from rtvision.streams.spec import StreamSpec

pytestmark = pytest.mark.timeout(120)

WINDOW_WH = (1400, 820)
FAKE_BOX = (10, 20, 50, 80)  # FakeFaces' one box per frame, xyxy


def cfg_for(tmp_path, max_corrupt: int = 100, **kw) -> RunConfig:
    return RunConfig(SourceConfig("template", max_corrupt=max_corrupt), ModelConfig(), progress=False,
                     results_path=str(tmp_path / "all.jsonl"), join_timeout_s=10.0, **kw)


@pytest.fixture
def grid_window(qtbot, tmp_path):
    """Factory: a started MultiPipeline over test sources (fake models), its MultiRunner and a
    shown, started GridWindow; at teardown the window is closed and the pipeline stopped."""
    made: list[tuple[GridWindow, MultiPipeline]] = []

    def make(sources: dict, cfg: RunConfig | None = None, specs: list[StreamSpec] | None = None) -> GridWindow:
        cfg = cfg or cfg_for(tmp_path)
        specs = specs or [StreamSpec(n, n) for n in sources]
        pipeline = MultiPipeline(cfg, specs, models=fake_models(FakeClassifier(), FakeFaces()), sources=sources).start()
        runner = MultiRunner(cfg, pipeline)
        window = GridWindow(cfg, runner)
        qtbot.addWidget(window)
        made.append((window, pipeline))
        window.resize(*WINDOW_WH)
        window.show()
        qtbot.waitExposed(window)
        window.start()
        return window

    yield make
    for w, p in made:
        w.close()
        p.stop()


def tile_rect(window: GridWindow, name: str):
    """A tile's rectangle in the grid's coordinates."""
    tile = window.grid.tiles[name]
    return QRect(tile.mapTo(window.grid, QPoint(0, 0)), tile.size())


def all_shown(window: GridWindow) -> bool:
    return all(t.shown_result is not None for t in window.grid.visible_tiles())


def test_grid_shape_is_as_square_as_can_be_and_wide():
    assert [grid_shape(n) for n in range(1, 13)] == [
        (1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (2, 3), (3, 3), (3, 3), (3, 3), (3, 4), (3, 4), (3, 4)]
    with pytest.raises(ValueError):
        grid_shape(0)


def test_tile_text_says_name_fps_latency_drops_and_state():
    from rtvision.runner import LiveStats

    st = LiveStats()
    cap = SimpleNamespace(stats=SimpleNamespace(read=200, state="running", message=""))
    stream = SimpleNamespace(name="lobby", capture=cap, buffer=SimpleNamespace(dropped=10), state="running", error=None)
    runner = SimpleNamespace(stats={"lobby": st}, started_at=st.started_at)
    text = tile_text(runner, stream)
    assert text == TileText("lobby · 0.0 fps · – ms · dropped 10 (5.0%) · running", "running", None)
    cap.stats.state, cap.stats.message = "reconnecting", "x"
    assert tile_text(runner, stream).state == "reconnecting"
    # the capture failed: the tile says so at once, with the reason (secrets masked)
    cap.stats.state, cap.stats.message = "failed", "rtsp://u:secret@cam/s: lost after 5 reconnect attempts"
    text = tile_text(runner, stream)
    assert text.state == "failed" and "secret" not in text.failure and "5 reconnect attempts" in text.failure
    stream.state, stream.error = "failed", RuntimeError("file does not open")
    assert stream_state(stream) == ("failed", "file does not open")
    # a stream that is over shows its mean rate over the run, not a live rate decaying to 0
    cap.stats.state, stream.state = "ended", "ended"
    st.processed, st.last_result_at, runner.started_at = 50, 105.0, 100.0
    assert tile_text(runner, stream).line.startswith("lobby · 10.0 fps mean · ")


def test_tiles_sit_in_the_grid_with_their_own_video_and_stats(qtbot, grid_window):
    """3 streams: a 2x2 grid, stream i in row i // 2, column i % 2, each tile the same size; each
    tile shows its own stream's frames with the box where the result says, and a stats line."""
    sources = {name: FaultySource(10**6, fps=25, size_wh=(320, 240)) for name in ("north", "south", "east")}
    window = grid_window(sources)
    grid = window.grid
    assert (grid.rows, grid.cols) == (2, 2)
    qtbot.waitUntil(lambda: all_shown(window), timeout=20_000)
    rects = {n: tile_rect(window, n) for n in grid.names}
    w, h = (grid.width() - 4) / 2, (grid.height() - 4) / 2
    for i, name in enumerate(grid.names):
        r = rects[name]
        assert abs(r.x() - (i % 2) * (w + 4)) <= 2 and abs(r.y() - (i // 2) * (h + 4)) <= 2, (name, r)
        assert abs(r.width() - w) <= 2 and abs(r.height() - h) <= 2, (name, r)
    assert rects["north"].right() < rects["south"].left() and rects["north"].bottom() < rects["east"].top()
    assert grid.width() > 0.6 * window.width()  # the video area has most of the window; the panel fits beside it

    # each tile shows its own stream's frames, annotated: the box is drawn where the result has it
    qtbot.waitUntil(lambda: all(t.shown_result.frame.index >= 10 for t in grid.tiles.values()), timeout=20_000)
    for name, tile in grid.tiles.items():
        r = tile.shown_result
        assert r.stream == name and decode_index(tile.view.image) == r.frame.index
        qtbot.waitUntil(lambda t=tile: not t.view.pending, timeout=5_000)
        rgb = rgb_array(tile.view.grab().toImage())
        x1, y1, x2, y2 = FAKE_BOX
        p1, p2 = tile.view.map_to_widget(x1, y1), tile.view.map_to_widget(x2, y2)
        left = rgb[int(p1.y()) + 8 : int(p2.y()) - 2, max(0, int(p1.x()) - 2) : int(p1.x()) + 3]
        bottom = rgb[int(p2.y()) - 2 : int(p2.y()) + 3, int(p1.x()) + 3 : int(p2.x()) - 2]
        assert is_box_colour(left).any(axis=1).mean() > 0.9 and is_box_colour(bottom).any(axis=0).mean() > 0.9, name
        assert is_box_colour(rgb).mean() < 0.05  # nothing box-coloured elsewhere to speak of

    # the stats lines: name, fps, latency, drops, state; the overall panel has the totals
    qtbot.waitUntil(lambda: all(float(t.stats.text().split(" · ")[1].split()[0]) > 5 for t in grid.tiles.values()),
                    timeout=10_000)
    for name, tile in grid.tiles.items():
        parts = tile.stats.text().split(" · ")
        assert parts[0] == name and parts[1].endswith(" fps") and parts[2].endswith(" ms")
        assert parts[3].startswith("dropped ") and parts[4] == "running" and tile.state == "running"
        assert not tile.failure.isVisible()
    assert set(window.panel.values) == {k for k, _ in GRID_PANEL_ROWS}
    window._refresh_stats()
    vals = {k: lbl.text() for k, lbl in window.panel.values.items()}
    assert float(vals["total_fps"]) > 15 and vals["streams"] == "3 running" and vals["rss"].endswith(" MB")
    assert int(vals["frames"]) >= 30 and vals["device"] == "cpu"


def test_click_enlarges_a_tile_and_click_or_esc_goes_back(qtbot, grid_window):
    sources = {name: FaultySource(10**6, fps=25) for name in ("a", "b")}
    window = grid_window(sources)
    grid = window.grid
    assert (grid.rows, grid.cols) == (1, 2)
    qtbot.waitUntil(lambda: all_shown(window), timeout=20_000)
    b = grid.tiles["b"]
    small = b.view.size()
    qtbot.mouseClick(b.view, Qt.LeftButton)  # the video takes no click itself: its tile does
    assert grid.enlarged == "b" and not grid.tiles["a"].isVisible() and b.isVisible()
    assert tile_rect(window, "b").size() == grid.size()  # the whole video area
    assert b.view.width() > 1.8 * small.width()
    # the enlarged tile goes on playing; the hidden one is not drawn
    shown, hidden = b.shown_result.frame.index, grid.tiles["a"].shown_result
    qtbot.waitUntil(lambda: b.shown_result.frame.index > shown + 5, timeout=10_000)
    assert grid.tiles["a"].shown_result is hidden
    qtbot.mouseClick(b.view, Qt.LeftButton)  # again: back to the grid
    assert grid.enlarged is None and grid.tiles["a"].isVisible()
    assert tile_rect(window, "b").x() > tile_rect(window, "a").right() and b.view.size() == small
    qtbot.waitUntil(lambda: grid.tiles["a"].shown_result is not hidden, timeout=10_000)
    # Esc from an enlarged tile: the grid (the window stays open); keys 1-9 pick a tile
    qtbot.keyClick(grid.tiles["a"].view, Qt.Key_1)
    assert grid.enlarged == "a"
    qtbot.keyClick(grid.tiles["a"].view, Qt.Key_Escape)
    assert grid.enlarged is None and window.isVisible() and not window.is_shut_down
    qtbot.mouseClick(grid.tiles["a"].view, Qt.RightButton)  # only the left button enlarges
    assert grid.enlarged is None


def test_a_failed_stream_tile_says_why_and_the_others_go_on(qtbot, grid_window, tmp_path):
    """One stream exceeds --max-corrupt mid-run, another never opens: their tiles say they failed
    and why, the others play to their end."""
    def paced_file() -> FaultySource:  # 60 frames, 40 ms each, then its end (a live source would reconnect)
        return FaultySource(60, live=False, faults=Faults(stall_at={i: 0.04 for i in range(60)}))

    sources = {"ok1": paced_file(), "bad": FaultySource(10**6, fps=25, faults=Faults(corrupt_at={8, 9, 10, 11})),
               "ok2": paced_file()}
    specs = [StreamSpec(n, n) for n in sources] + [StreamSpec("gone", str(tmp_path / "missing.mp4"))]
    window = grid_window(sources, cfg=cfg_for(tmp_path, max_corrupt=2), specs=specs)
    grid = window.grid
    assert (grid.rows, grid.cols) == (2, 2)
    gone = grid.tiles["gone"]
    qtbot.waitUntil(lambda: gone.failure.isVisible(), timeout=5_000)
    assert gone.failure.text().startswith("FAILED: ") and "missing.mp4" in gone.failure.text()
    assert gone.view.image is None and "failed" in gone.view.placeholder and gone.state == "failed"
    bad = grid.tiles["bad"]
    qtbot.waitUntil(lambda: bad.state == "failed", timeout=20_000)
    assert bad.failure.isVisible() and "corrupt" in bad.failure.text() and bad.stats.text().endswith(" · failed")
    qtbot.wait(50)
    sizes = {n: tile_rect(window, n).size() for n in grid.names}
    assert len(set((s.width(), s.height()) for s in sizes.values())) == 1, sizes  # a failure line never resizes a cell
    assert bad.view.image is not None  # its last frame stays on screen under the failure line
    at_failure = {n: grid.tiles[n].shown_result.frame.index for n in ("ok1", "ok2")}
    assert max(at_failure.values()) < 40
    qtbot.waitUntil(lambda: window.is_ended, timeout=30_000)
    for n in ("ok1", "ok2"):
        tile = grid.tiles[n]
        assert tile.state == "ended" and tile.stats.text().endswith(" · ended") and not tile.failure.isVisible()
        assert tile.shown_result.frame.index == 59
    window._refresh_stats()
    assert window.panel.values["streams"].text() == "2 ended, 2 failed"
    assert window.banner.isVisible() and "all streams are over; failed: bad, gone" in window.banner.text()
    assert window.statusBar().currentMessage() == "all streams are over, 2 failed (bad, gone); q quits"
    assert window.panel.values["total_fps"].text().endswith(" mean")
    window.close()
    window.runner.pipeline.stop()
    assert window.runner.build_summary()["exit_code"] == EXIT_STREAM_FAILED


def test_q_stops_the_run_and_finalizes_the_outputs(qtbot, grid_window, tmp_path):
    sources = {name: FaultySource(10**6, fps=25) for name in ("a", "b", "c")}
    window = grid_window(sources)
    qtbot.waitUntil(lambda: window.runner.total.processed >= 30, timeout=20_000)
    qtbot.keyClick(window.grid.tiles["c"].view, Qt.Key_Q)
    assert not window.isVisible() and window.is_shut_down
    assert not window.runner_thread.is_alive()  # the consumer has finished: the JSONL is complete
    p = window.runner.pipeline
    assert p.stop_event.is_set() and p.stop() == [] and not rtvision_threads()
    summary = window.runner.build_summary()
    assert summary["exit_code"] == 0 and summary["stuck_threads"] == []
    rows = [json.loads(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert len(rows) == summary["frames_processed"]
    for name in sources:
        frames = [r["frame"] for r in rows if r["stream"] == name]
        assert frames == list(range(len(frames))) and frames


def test_run_grid_window_autocloses_when_every_stream_ended(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("RTVISION_WINDOW_AUTOCLOSE", "1")
    cfg = cfg_for(tmp_path)
    sources = {"a": FaultySource(20, live=False), "b": FaultySource(12, live=False)}
    with MultiPipeline(cfg, [StreamSpec(n, n) for n in sources], models=fake_models(FakeClassifier(), FakeFaces()),
                       sources=sources) as p:
        runner = MultiRunner(cfg, p)
        seen: list = []
        assert run_grid_window(cfg, runner, on_window=seen.append) == []
        window = seen[0]
        assert window.is_ended and all(t.shown_result is not None for t in window.grid.tiles.values())
    summary = runner.build_summary()
    assert summary["exit_code"] == 0 and summary["frames_processed"] == 32
    assert [r["state"] for r in summary["streams"]] == ["ended", "ended"]
    assert not rtvision_threads()
    assert window.grid.tiles["b"].shown_result.frame.index == 11


def test_space_pauses_every_stream_and_step_lets_one_result_through(qtbot, grid_window, tmp_path):
    """Space pauses the whole grid: no result while paused (a file waits, losing nothing; a
    live stream drops at its ring buffer), `.` lets exactly one result through, Space resumes.
    The pause is left out of the summary's elapsed time and rates, and reported as paused_s."""
    sources = {"file": FaultySource(10**6, fps=25, live=False), "cam": FaultySource(10**6, fps=25)}
    window = grid_window(sources)
    runner = window.runner
    qtbot.waitUntil(lambda: runner.total.processed >= 20, timeout=20_000)
    qtbot.keyClick(window.grid.tiles["cam"].view, Qt.Key_Space)
    assert runner.paused and window.state_label.text() == "paused" and window.pause_action.isChecked()
    qtbot.wait(300)  # a result already past the gate may still land
    held = runner.total.processed
    qtbot.wait(1500)
    assert runner.total.processed == held, "results went on while paused"
    qtbot.keyClick(window.grid.tiles["cam"].view, Qt.Key_Period)
    qtbot.waitUntil(lambda: runner.total.processed == held + 1, timeout=10_000)
    qtbot.wait(700)
    assert runner.total.processed == held + 1, "step let more than one result through"
    cam_dropped = window.runner.pipeline.streams[1].buffer.dropped
    qtbot.keyClick(window.grid.tiles["cam"].view, Qt.Key_Space)
    assert not runner.paused and window.state_label.text() == "running"
    qtbot.waitUntil(lambda: runner.total.processed >= held + 20, timeout=20_000)
    qtbot.keyClick(window.grid.tiles["cam"].view, Qt.Key_Q)
    summary = runner.build_summary()
    assert summary["exit_code"] == 0 and summary["paused_s"] >= 2.0, summary["paused_s"]
    assert cam_dropped > 0  # the live stream dropped while paused
    rows = [json.loads(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()]
    file_frames = [r["frame"] for r in rows if r["stream"] == "file"]
    assert file_frames == list(range(len(file_frames)))  # the file lost nothing
    # latencies leave the pause out: no result waited the ~2 s pause in its latency
    assert summary["latency_ms"]["max"] < 1500, summary["latency_ms"]
    wall = runner.total.last_result_at - runner.started_at
    assert 0 < summary["elapsed_s"] <= wall - summary["paused_s"] + 0.01, (summary["elapsed_s"], wall)


def _pause_cycles(runner, cycles: int, pause_s: float, run_s: float) -> float:
    """Consume on a thread (as the windows do) while pausing and resuming as Space would;
    returns the wall time from the start of consuming to the stop."""
    import threading
    import time

    th = threading.Thread(target=runner.run, daemon=True)
    t0 = time.monotonic()
    th.start()
    time.sleep(0.5)
    for _ in range(cycles):
        runner.pause()
        time.sleep(pause_s)
        runner.resume()
        time.sleep(run_s)
    runner.request_stop()
    th.join(10)
    assert not th.is_alive()
    return time.monotonic() - t0


def test_a_pause_that_holds_nothing_changes_no_rate():
    """A pause holds the consumer only: the pipeline works on until its results queue is full.
    Pauses too short to fill it (live 25 fps streams, 0.15 s) hold nothing: no paused time, and
    the rates stay at the sources' (they used to leave every pause out of the elapsed time while
    counting the frames made meanwhile: 46-54 fps reported for a 25 fps camera). Single and
    multi-stream."""
    from rtvision.pipeline import Pipeline
    from rtvision.runner import Runner

    cfg = RunConfig(SourceConfig("template"), ModelConfig(), progress=False, join_timeout_s=10.0)
    sources = {"a": FaultySource(10**6, fps=25), "b": FaultySource(10**6, fps=25)}
    multi = MultiPipeline(cfg, [StreamSpec(n, n) for n in sources], models=fake_models(FakeClassifier(), FakeFaces()),
                          sources=sources).start()
    single = Pipeline(cfg, models=fake_models(FakeClassifier(), FakeFaces()), source=FaultySource(10**6, fps=25)).start()
    try:
        for runner in (MultiRunner(cfg, multi), Runner(cfg, single)):
            wall = _pause_cycles(runner, 8, 0.15, 0.3)
            s = runner.build_summary()
            assert s["paused_s"] < 0.1, s["paused_s"]
            rows = s["streams"] if "streams" in s else [s]
            for row in rows:
                assert row["throughput_fps"] <= 25 * 1.1, (row["throughput_fps"], wall)
            assert s["elapsed_s"] > wall - 1.0, (s["elapsed_s"], wall)  # nothing left out but the start
    finally:
        multi.stop()
        single.stop()
    assert not rtvision_threads()


def test_after_a_pause_the_tiles_means_are_the_summarys(qtbot, grid_window, tmp_path):
    """Two files paused 2 s mid-run, then run to their end: each tile's "fps mean" and the
    panel's total are the summary's rates, which leave out the time the pause held the pipeline
    (they left the pause in: half the summary's rates); after the pause the status bar shows its
    hint again."""
    sources = {"a": FaultySource(120, fps=25, live=False), "b": FaultySource(120, fps=25, live=False)}
    cfg = cfg_for(tmp_path)
    pipeline = MultiPipeline(cfg, [StreamSpec(n, n) for n in sources],
                             models=fake_models(FakeClassifier(sleep_s=0.05), FakeFaces()), sources=sources).start()
    runner = MultiRunner(cfg, pipeline)
    window = GridWindow(cfg, runner)
    qtbot.addWidget(window)
    window.resize(*WINDOW_WH)
    window.show()
    qtbot.waitExposed(window)
    window.start()
    try:
        qtbot.waitUntil(lambda: runner.total.processed >= 20, timeout=20_000)
        qtbot.keyClick(window.grid.tiles["a"].view, Qt.Key_Space)
        assert window.statusBar().currentMessage().startswith("paused")
        qtbot.wait(2000)
        qtbot.keyClick(window.grid.tiles["a"].view, Qt.Key_Space)
        assert window.statusBar().currentMessage() == window.status_hint
        qtbot.waitUntil(lambda: window.is_ended, timeout=60_000)
        window._refresh_stats()
        s = runner.build_summary()
        assert s["paused_s"] > 1.0, s["paused_s"]
        for row in s["streams"]:
            text = window.grid.tiles[row["stream"]].stats.text()
            assert f"{row['throughput_fps']:.1f} fps mean" in text, (text, row["throughput_fps"])
        assert window.panel.values["total_fps"].text() == f"{s['throughput_fps']:.1f} mean"
    finally:
        window.close()
        pipeline.stop()
