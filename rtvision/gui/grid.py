"""The window of a multi-stream run: a grid of tiles, one per stream, and the overall panel.

Each tile (``StreamTile``) is the stream's newest annotated frame (a ``FrameView``, drawn with
``annotate`` as in the single-stream window) under an optional failure line and above its stats
line: name, fps, latency, drops, state (running, reconnecting, ended, failed). A failed stream's
tile says so and why; the other tiles go on. Clicking a tile enlarges it to the whole video area;
a second click (or Esc) goes back to the grid. Keys: ``1``-``9`` enlarge that tile, Space pauses
and resumes every stream (``.`` or Right: one more result while paused; live streams drop
meanwhile, files wait), ``f`` / ``l`` faces / labels on/off, ``q`` quits (Esc quits from the grid).

Like ``MainWindow``, it only consumes: ``MultiRunner.run()`` runs on a thread named
``rtvision-runner``; a ~60 Hz QTimer reads ``runner.latest`` (stream -> newest Result) and the
counters, never waiting on them; closing asks the runner (and through it the pipeline) to stop and
joins the runner thread, which finalizes the outputs. The ``MultiPipeline``'s owner stops the
pipeline and joins its threads once the window is gone.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from PyQt5.QtCore import QRect, QSize, Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QGuiApplication
from PyQt5.QtWidgets import (
    QAction,
    QLabel,
    QLayout,
    QMainWindow,
    QSizePolicy,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..annotate import annotate
from ..config import RunConfig
from ..errors import EXIT_OK
from .frameview import FrameView
from .host import RunnerHostMixin, can_paint, fit_to_screen
from .metrics import GRID_PANEL_ROWS, TileText, grid_banner_messages, grid_panel_text, stream_state, tile_text
from .panel import StatsPanel
from .window import AUTOCLOSE_ENV, POLL_MS, STATS_MS, env_flag, show_until_closed

log = logging.getLogger(__name__)

TILE_SPACING = 4  # px between tiles

_STATE_STYLE = {
    "running": "background:#1d3324; color:white; padding:3px 6px;",
    "reconnecting": "background:#7a4b00; color:white; padding:3px 6px;",
    "ended": "background:#30404f; color:white; padding:3px 6px;",
    "failed": "background:#8b1a1a; color:white; padding:3px 6px; font-weight:bold;",
    "stopped": "background:#3a3a3a; color:white; padding:3px 6px;",
    "starting": "background:#3a3a3a; color:white; padding:3px 6px;",
}
_FAILURE_STYLE = "background:#b00020; color:white; padding:6px; font-weight:bold;"


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) for ``n`` tiles: as square as can be, wider than tall (video is wide):
    1 -> 1x1, 2 -> 1x2, 3-4 -> 2x2, 5-6 -> 2x3, 7-9 -> 3x3, 10-12 -> 3x4."""
    if n < 1:
        raise ValueError(f"grid_shape needs at least one tile, got {n}")
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


class StreamTile(QWidget):
    """One stream: its video (``view``), a failure line (``failure``, hidden unless it failed)
    and its stats line (``stats``). Emits ``clicked(name)`` on a left click."""

    clicked = pyqtSignal(str)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.setObjectName(f"tile_{name}")
        self.shown_result = None
        self.state = "starting"
        self.text: TileText | None = None
        self.view = FrameView()
        self.view.setMinimumSize(96, 54)
        self.view.placeholder = f"{name}: waiting for the first frame…"
        self.failure = QLabel()
        self.failure.setObjectName("tile_failure")
        self.failure.setWordWrap(True)
        self.failure.setStyleSheet(_FAILURE_STYLE)
        self.failure.hide()
        self.stats = QLabel(name)
        self.stats.setObjectName("tile_stats")
        self.stats.setStyleSheet(_STATE_STYLE["starting"])
        self.stats.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)  # a long line never widens the tile
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.failure)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.stats)
        self.setToolTip(f"{name}: click to enlarge (click again or Esc for the grid)")

    def show_result(self, r, show_faces: bool = True, show_labels: bool = True) -> None:
        """Draw ``r`` (this stream's Result) annotated."""
        self.shown_result = r
        self.view.set_image(annotate(r, show_faces=show_faces, show_labels=show_labels))

    def set_text(self, text: TileText) -> None:
        if text == self.text:
            return
        self.text = text
        self.stats.setText(text.line)
        if text.state != self.state:
            self.state = text.state
            self.stats.setStyleSheet(_STATE_STYLE.get(text.state, _STATE_STYLE["stopped"]))
        if text.state == "failed":
            why = text.failure or "failed"
            self.failure.setText(f"FAILED: {why}")
            self.failure.show()
            if self.view.image is None:  # failed before its first frame
                self.view.placeholder = f"{self.name} failed: {why}"
                self.view.update()
        else:
            self.failure.hide()

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt name
        if event.button() == Qt.LeftButton:
            event.accept()  # so that the release comes here too
        else:
            super().mousePressEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt name
        if event.button() == Qt.LeftButton and self.rect().contains(event.pos()):
            event.accept()
            self.clicked.emit(self.name)
        else:
            super().mouseReleaseEvent(event)


class TileGrid(QWidget):
    """The video area: the tiles in ``rows`` x ``cols`` equal cells (stream i at row i // cols,
    column i % cols; ``cell_rect``), or one of them enlarged to the whole area (``enlarged``: its
    name). The tiles are placed by hand on every resize, so that a cell's size never depends on
    what its tile shows (a failure line, a long stats line, no frame yet)."""

    def __init__(self, names: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.names = list(names)
        self.rows, self.cols = grid_shape(len(self.names))
        self.tiles: dict[str, StreamTile] = {}
        self.enlarged: str | None = None
        for name in self.names:
            tile = StreamTile(name, self)
            tile.clicked.connect(self.toggle)
            self.tiles[name] = tile
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(160 * self.cols, 110 * self.rows)
        self._place()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(1100, 700)

    def cell(self, name: str) -> tuple[int, int]:
        i = self.names.index(name)
        return i // self.cols, i % self.cols

    def cell_rect(self, row: int, col: int) -> QRect:
        """Cell (row, col) in this widget's coordinates: equal cells, TILE_SPACING px apart."""
        w, h, sp = self.width(), self.height(), TILE_SPACING
        x0 = round(col * (w + sp) / self.cols)
        x1 = round((col + 1) * (w + sp) / self.cols) - sp
        y0 = round(row * (h + sp) / self.rows)
        y1 = round((row + 1) * (h + sp) / self.rows) - sp
        return QRect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))

    def visible_tiles(self) -> list[StreamTile]:
        if self.enlarged is not None:
            return [self.tiles[self.enlarged]]
        return [self.tiles[n] for n in self.names]

    def _place(self) -> None:
        for name, tile in self.tiles.items():
            if self.enlarged is None:
                tile.setGeometry(self.cell_rect(*self.cell(name)))
                tile.show()
            elif name == self.enlarged:
                tile.setGeometry(self.rect())
                tile.show()
            else:
                tile.hide()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self._place()

    def enlarge(self, name: str) -> None:
        """Show only ``name``'s tile, over the whole video area."""
        if name in self.tiles and self.enlarged != name:
            self.enlarged = name
            self._place()

    def show_grid(self) -> None:
        """Back to the grid (the enlarged tile returns to its cell)."""
        if self.enlarged is not None:
            self.enlarged = None
            self._place()

    def toggle(self, name: str) -> None:
        """A click on a tile: enlarge it, or, when it is the enlarged one, back to the grid."""
        if self.enlarged == name:
            self.show_grid()
        else:
            self.enlarge(name)


class GridWindow(RunnerHostMixin, QMainWindow):
    """The window of a multi-stream run (see the module docstring); ``start()`` once after
    building it. For tests and scripts: ``grid`` (TileGrid; ``grid.tiles[name]``), ``panel``,
    ``banner``, ``is_ended``."""

    closed = pyqtSignal()
    ended = pyqtSignal()

    def __init__(self, cfg: RunConfig, runner, auto_close: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cfg = cfg
        self.runner = runner
        self.auto_close = auto_close
        self.show_faces = True
        self.show_labels = True
        self.is_ended = False
        self.is_shut_down = False
        self.interrupt_code = EXIT_OK
        self.stuck_threads: list[str] = []
        self._thread: threading.Thread | None = None
        self._banner_text = None
        streams = runner.pipeline.streams
        names = [s.name for s in streams]
        self.setWindowTitle(f"rtvision — {len(names)} streams: {', '.join(names)}")
        if QGuiApplication.platformName() in ("offscreen", "minimal"):
            self.layout().setSizeConstraint(QLayout.SetNoConstraint)  # see MainWindow

        self.grid = TileGrid(names)
        self.panel = StatsPanel(rows=GRID_PANEL_ROWS)
        self._build_layout(self.grid, self.panel)
        self.status_hint = "click a tile to enlarge it (again, or Esc, for the grid); Space pauses; q quits"
        self.pause_hint = "paused: Space resumes, . or Right lets one more result through"
        self.statusBar().showMessage(self.status_hint)
        self._build_actions()
        fit_to_screen(self, 1440, 860)

        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self._poll)
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(STATS_MS)
        self._stats_timer.timeout.connect(self._refresh_stats)
        self._refresh_tiles()

    def _build_actions(self) -> None:
        tb = QToolBar("controls")
        tb.setMovable(False)
        self.addToolBar(tb)

        def action(text: str, tip: str, slot, checkable: bool = False) -> QAction:
            a = QAction(text, self)
            a.setToolTip(tip)
            a.setCheckable(checkable)
            a.setChecked(checkable)
            a.triggered.connect(slot)
            tb.addAction(a)
            return a

        self.pause_action = action("Pause", "Pause / resume every stream (Space)", self.toggle_pause, True)
        self.pause_action.setChecked(False)
        self.step_action = action("Step", "One more result while paused (. or Right)", self.step)
        tb.addSeparator()
        self.grid_action = action("Grid", "Back to the grid (Esc)", self.grid.show_grid)
        tb.addSeparator()
        self.faces_action = action("Faces", "Face boxes on/off (F)", self.set_faces, True)
        self.labels_action = action("Labels", "Classifier labels on/off (L)", self.set_labels, True)
        tb.addSeparator()
        action("Quit", "Quit (Q)", self.close)
        for button in tb.findChildren(QToolButton):
            button.setFocusPolicy(Qt.NoFocus)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _poll(self) -> None:
        latest = self.runner.latest
        for tile in self.grid.visible_tiles():
            r = latest.get(tile.name)
            # a new result once the previous one is on screen: a slow display skips display
            # frames, never pipeline frames
            if r is not None and r is not tile.shown_result and not tile.view.pending:
                tile.show_result(r, self.show_faces, self.show_labels)
        if not self.is_ended and self._thread is not None and not self._thread.is_alive():
            self._on_ended()

    def _refresh_tiles(self) -> None:
        now = time.monotonic()
        for s in self.runner.pipeline.streams:
            self.grid.tiles[s.name].set_text(tile_text(self.runner, s, now))

    def _refresh_stats(self) -> None:
        self._refresh_tiles()
        display_fps = sum(t.view.display_rate.rate() for t in self.grid.tiles.values())
        self.panel.show_text(grid_panel_text(self.runner, display_fps))
        self.panel.plot.set_history(list(self.runner.total.history))
        self._update_banner()

    def banner_messages(self) -> list[tuple[str, str]]:
        return grid_banner_messages(self.runner, self.is_ended)

    def _on_ended(self) -> None:
        self.is_ended = True
        self.pause_action.setEnabled(False)
        self.step_action.setEnabled(False)
        err = self.runner.error
        self.state_label.setText("ended" if err is None else "stopped on error")
        self._refresh_stats()
        failed = [s.name for s in self.runner.pipeline.streams if stream_state(s)[0] == "failed"]
        if err is not None:
            self.statusBar().showMessage(f"stopped: {err}")
        elif failed:
            self.statusBar().showMessage(f"all streams are over, {len(failed)} failed ({', '.join(failed)}); q quits")
        else:
            self.statusBar().showMessage("all streams ended; q quits")
        self.ended.emit()
        if self.auto_close:
            QTimer.singleShot(0, self._close_when_drawn)

    def _close_when_drawn(self) -> None:
        self._poll()
        if any(t.view.pending for t in self.grid.visible_tiles()) and can_paint(self) and not self._drawn_deadline_passed():
            QTimer.singleShot(POLL_MS, self._close_when_drawn)
            return
        self.close()

    # -- controls --------------------------------------------------------------------------------------
    def _redraw(self) -> None:
        for tile in self.grid.tiles.values():
            if tile.shown_result is not None:
                tile.show_result(tile.shown_result, self.show_faces, self.show_labels)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt name
        key = event.key()
        if event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier):
            super().keyPressEvent(event)
            return
        if key == Qt.Key_Escape:
            if self.grid.enlarged is not None:
                self.grid.show_grid()
            else:
                self.close()
        elif key == Qt.Key_Q:
            self.close()
        elif key == Qt.Key_Space:
            self.toggle_pause()
        elif key in (Qt.Key_Period, Qt.Key_Right):
            self.step()
        elif Qt.Key_1 <= key <= Qt.Key_9 and key - Qt.Key_1 < len(self.grid.names):
            self.grid.toggle(self.grid.names[key - Qt.Key_1])
        elif key == Qt.Key_F:
            self.set_faces(not self.show_faces)
        elif key == Qt.Key_L:
            self.set_labels(not self.show_labels)
        else:
            super().keyPressEvent(event)
            return
        event.accept()


def run_grid_window(cfg: RunConfig, runner, auto_close: bool | None = None, on_window=None,
                    on_display_lost=None) -> list[str]:
    """Show the grid window over a started ``MultiPipeline``'s ``MultiRunner`` until it is closed
    (as ``run_window`` does for one stream): when this returns the runner has finished and the
    outputs are finalized; the pipeline's owner then stops it. ``auto_close`` None reads
    ``RTVISION_WINDOW_AUTOCLOSE``. Returns the names of the window's threads that did not stop."""
    if auto_close is None:
        auto_close = env_flag(AUTOCLOSE_ENV)
    return show_until_closed(lambda: GridWindow(cfg, runner, auto_close=auto_close), runner, on_window, on_display_lost)
