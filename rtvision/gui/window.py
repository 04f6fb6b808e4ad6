"""The main window: the newest annotated frame, a stats panel, a banner, toolbar and keys.

Keys: Space pause/resume, ``.`` or Right step one frame while paused, ``s`` snapshot (PNG),
``f`` faces on/off, ``l`` labels on/off, ``q`` / Esc quit. Closing the window (or Ctrl-C in the
terminal) stops the runner and the pipeline and finalizes ``--save`` / ``--results``.

At the end of the stream the window stays open on the last frame with a "stream ended" banner,
unless ``auto_close`` is set: ``run_window(..., auto_close=True)`` or the environment variable
``RTVISION_WINDOW_AUTOCLOSE=1`` (for scripts and tests).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import cv2
from PyQt5.QtCore import QAbstractNativeEventFilter, QEventLoop, Qt, QTimer, pyqtSignal, qInstallMessageHandler
from PyQt5.QtGui import QGuiApplication
from PyQt5.QtWidgets import (
    QAction,
    QApplication,
    QLayout,
    QMainWindow,
    QToolBar,
    QToolButton,
    QWidget,
)

from ..annotate import annotate
from ..config import RunConfig
from ..errors import EXIT_INTERNAL, EXIT_OK, EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM, RtvisionError
from .frameview import FrameView
from .host import RunnerHostMixin, can_paint, fit_to_screen
from .metrics import WindowMeters, banner_messages
from .panel import StatsPanel
from .probe import RETRY_S, DisplayGone, drop_foreign_plugin_path, hold_display, release_display, x_display_answers

log = logging.getLogger(__name__)

AUTOCLOSE_ENV = "RTVISION_WINDOW_AUTOCLOSE"
SNAPSHOT_DIR_ENV = "RTVISION_SNAPSHOT_DIR"

POLL_MS = 16  # ~60 Hz: pick up runner.latest
DISPLAY_MAX_LAG = 8  # results a file's playback may trail the newest before it jumps
STATS_MS = 250  # 4 Hz: the numbers and the plot
SIGNAL_MS = 200  # lets Python run its signal handlers while Qt's loop runs



def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


class MainWindow(RunnerHostMixin, QMainWindow):
    """Owns the runner thread; call ``start()`` once after building it.

    Read-only helpers for tests and scripts: ``shown_result`` (the Result on screen),
    ``shown_index``, ``view`` (FrameView), ``panel`` (StatsPanel), ``banner`` (QLabel).
    """

    closed = pyqtSignal()
    ended = pyqtSignal()

    def __init__(
        self,
        cfg: RunConfig,
        runner,
        auto_close: bool = False,
        snapshot_dir: str | Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.cfg = cfg
        self.runner = runner
        self.auto_close = auto_close
        self.snapshot_dir = Path(snapshot_dir or os.environ.get(SNAPSHOT_DIR_ENV) or ".")
        self.show_faces = True
        self.show_labels = True
        self.shown_result = None
        self._next_show_at = 0.0  # file playback: when the next result may be drawn
        self.is_ended = False
        self.is_shut_down = False
        self.interrupt_code = EXIT_OK
        self.stuck_threads: list[str] = []
        self.snapshots: list[Path] = []
        self.render_ms_total = 0.0
        self.rendered_frames = 0
        self._thread: threading.Thread | None = None
        self._meters = WindowMeters()
        self._banner_text = None

        info = runner.pipeline.info
        self.setWindowTitle(f"rtvision — {info.name}" if info else "rtvision")
        if QGuiApplication.platformName() in ("offscreen", "minimal"):
            # these plugins warn "does not support propagateSizeHints()" whenever a layout
            # sets the top-level minimum size
            self.layout().setSizeConstraint(QLayout.SetNoConstraint)

        self.view = FrameView()
        self.panel = StatsPanel()
        self._build_layout(self.view, self.panel)
        self._build_actions()
        self.view.setFocus()
        fit_to_screen(self, 1280, 720)

        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self._poll)
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(STATS_MS)
        self._stats_timer.timeout.connect(self._refresh_stats)

    # -- construction --------------------------------------------------------------------------
    def _build_actions(self) -> None:
        tb = QToolBar("controls")
        tb.setMovable(False)
        self.addToolBar(tb)

        def action(text: str, tip: str, slot, checkable: bool = False, checked: bool = False) -> QAction:
            a = QAction(text, self)
            a.setToolTip(tip)
            a.setCheckable(checkable)
            if checkable:
                a.setChecked(checked)
            a.triggered.connect(slot)
            tb.addAction(a)
            return a

        self.pause_action = action("Pause", "Pause / resume (Space)", self.toggle_pause, checkable=True)
        self.step_action = action("Step", "One frame while paused (. or Right)", self.step)
        self.snapshot_action = action("Snapshot", "Save the annotated frame as PNG (S)", self.snapshot)
        tb.addSeparator()
        self.faces_action = action("Faces", "Face boxes on/off (F)", self.set_faces, True, True)
        self.labels_action = action("Labels", "Classifier labels on/off (L)", self.set_labels, True, True)
        tb.addSeparator()
        action("Quit", "Quit (Q or Esc)", self.close)
        for button in tb.findChildren(QToolButton):
            button.setFocusPolicy(Qt.NoFocus)  # keep Space for pause, not for "click the button"

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def shown_index(self) -> int | None:
        return None if self.shown_result is None else self.shown_result.frame.index

    # -- the GUI-thread loop ---------------------------------------------------------------------
    def _next_to_show(self):
        """The result to draw now. Live sources: the newest (latency first). Files: results come
        a batch at a time, so the window plays them in order, spaced at the inference rate,
        for smooth video; falling more than DISPLAY_MAX_LAG results behind, it jumps to the
        newest. Never waits on the runner (reference reads and one atomic deque copy)."""
        latest = self.runner.latest
        shown = self.shown_result
        if latest is None or self.runner.pipeline.live or self.runner.paused:
            return latest
        if shown is None:  # a file plays from its first result (the first batches can come at once)
            recent = list(self.runner.recent)
            return recent[0] if recent else latest
        pending = [x for x in list(self.runner.recent) if x.frame.index > shown.frame.index]
        if not pending:
            return latest if latest.frame.index > shown.frame.index else shown
        if len(pending) > DISPLAY_MAX_LAG:
            return latest
        now = time.monotonic()
        if now < self._next_show_at:
            return shown
        rate = self.runner.stats.infer_rate.rate()
        self._next_show_at = now + (min(0.2, 0.95 / rate) if rate > 0 else 0.0)
        return pending[0]

    def _poll(self) -> None:
        r = self._next_to_show()
        # draw a new result only once the previous one is on screen: a slow display drops
        # display frames, never pipeline frames
        if r is not None and r is not self.shown_result and not self.view_pending:
            self._render(r)
        if not self.is_ended and self._thread is not None and not self._thread.is_alive():
            self._on_ended()

    @property
    def view_pending(self) -> bool:
        return self.view.pending

    def _render(self, r) -> None:
        t0 = time.perf_counter()
        self.shown_result = r
        self.view.set_image(annotate(r, show_faces=self.show_faces, show_labels=self.show_labels))
        self.render_ms_total += (time.perf_counter() - t0) * 1000.0
        self.rendered_frames += 1

    @property
    def gui_ms_per_frame(self) -> float:
        """GUI-thread cost of one displayed frame: annotate + wrap + paint, in ms (mean)."""
        n = self.view.painted_frames
        return (self.render_ms_total + self.view.paint_ms_total) / n if n else float("nan")

    def _refresh_stats(self) -> None:
        text = self._meters.panel_text(self.runner, self.view.display_rate.rate(), self.gui_ms_per_frame,
                                       ended=self.is_ended)
        self.panel.show_text(text)
        self.panel.plot.set_history(list(self.runner.stats.history))  # list(): atomic copy under the GIL
        self._update_banner()

    def banner_messages(self) -> list[tuple[str, str]]:
        return banner_messages(self.runner, self.is_ended)

    def _on_ended(self) -> None:
        self.is_ended = True
        self.pause_action.setEnabled(False)
        self.step_action.setEnabled(False)
        err = self.runner.error
        self.state_label.setText("ended" if err is None else "stopped on error")
        self._refresh_stats()
        self.statusBar().showMessage("stream ended" if err is None else f"stopped: {err}")
        self.ended.emit()
        if self.auto_close:
            # show the last frame first, then close
            QTimer.singleShot(0, self._close_when_drawn)

    def _close_when_drawn(self) -> None:
        r = self.runner.latest
        if r is not None and r is not self.shown_result and not self.view_pending:
            self._render(r)
        if self.view_pending and can_paint(self) and not self._drawn_deadline_passed():
            QTimer.singleShot(POLL_MS, self._close_when_drawn)
            return
        self.close()

    # -- controls ------------------------------------------------------------------------------
    def snapshot(self) -> Path | None:
        """Save the annotated frame on screen as PNG; returns its path (shown in the status bar)."""
        img = self.view.image
        if img is None:
            self.statusBar().showMessage("no frame to save yet", 3000)
            return None
        index = self.shown_index or 0
        path = self.snapshot_dir / f"rtvision-frame{index:06d}.png"
        partial = path
        try:  # a folder that cannot be made or written to is said in the status bar, nothing more
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            n = 1
            while path.exists():
                path = self.snapshot_dir / f"rtvision-frame{index:06d}-{n}.png"
                n += 1
            partial = path.with_name(f".{path.stem}.partial.png")  # complete or absent, never half-written
            if not cv2.imwrite(str(partial), img):
                raise OSError("the image could not be written")
            os.replace(partial, path)
        except (OSError, cv2.error) as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
            self.statusBar().showMessage(f"could not save a snapshot in {self.snapshot_dir}: {why}", 8000)
            log.warning("snapshot not saved in %s: %s", self.snapshot_dir, why)
            return None
        self.snapshots.append(path.resolve())
        self.statusBar().showMessage(f"snapshot saved: {path.resolve()}", 5000)
        return path

    def _redraw(self) -> None:
        if self.shown_result is not None:
            self._render(self.shown_result)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt name
        key = event.key()
        if event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier):
            super().keyPressEvent(event)
            return
        if key == Qt.Key_Space:
            self.toggle_pause()
        elif key in (Qt.Key_Period, Qt.Key_Right):
            self.step()
        elif key == Qt.Key_S:
            self.snapshot()
        elif key == Qt.Key_F:
            self.set_faces(not self.show_faces)
        elif key == Qt.Key_L:
            self.set_labels(not self.show_labels)
        elif key in (Qt.Key_Q, Qt.Key_Escape):
            self.close()
        else:
            super().keyPressEvent(event)
            return
        event.accept()


_APP: QApplication | None = None


def application() -> QApplication:
    """The QApplication (created with HiDPI scaling on when this process has none yet)."""
    global _APP
    app = QApplication.instance()
    if app is None:
        drop_foreign_plugin_path()  # opencv-python's bundled Qt plugins, if that wheel is installed
        platform = os.environ.get("QT_QPA_PLATFORM", "xcb" if sys.platform.startswith("linux") else "")
        try:
            # Qt would abort the process if its connection failed: the server must answer now, and
            # keep a client (the held connection) until Qt is connected, so that it cannot reset
            if platform.startswith("xcb") and (x_display_answers() is False or hold_display(patience_s=RETRY_S) is False):
                raise DisplayGone(f"the X display {os.environ.get('DISPLAY')} no longer answers")
            QApplication.setAttribute(Qt.AA_EnableHighDpiScaling, True)
            QApplication.setAttribute(Qt.AA_UseHighDpiPixmaps, True)
            app = QApplication([sys.argv[0] if sys.argv else "rtvision"])
            app.setApplicationName("rtvision")
        finally:
            release_display()  # the probe's connection: Qt holds its own now (see probe.RETRY_S)
    _APP = app
    return app


def _install_signal_handlers(window):
    """Ctrl-C / SIGTERM / SIGHUP close the window (main thread only). Returns a function that restores
    the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {}
    for signum, code in ((signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM), (signal.SIGHUP, EXIT_SIGHUP)):
        old[signum] = signal.getsignal(signum)
        signal.signal(signum, lambda *_a, _code=code: QTimer.singleShot(0, lambda: window.interrupt(_code)))
    wake = QTimer(window)
    wake.setInterval(SIGNAL_MS)
    wake.timeout.connect(lambda: None)  # Python runs pending signal handlers between bytecodes
    wake.start()

    def restore() -> None:
        wake.stop()
        for signum, handler in old.items():
            signal.signal(signum, handler)

    return restore


def run_window(
    cfg: RunConfig,
    runner,
    auto_close: bool | None = None,
    snapshot_dir: str | Path | None = None,
    on_window=None,
    on_display_lost=None,
) -> list[str]:
    """Show the window over a started pipeline's runner until it is closed. The runner runs on a
    ``rtvision-runner`` thread; when this returns, it has finished and the outputs are finalized;
    the pipeline's owner then stops the pipeline and builds the summary. ``auto_close`` None reads
    ``RTVISION_WINDOW_AUTOCLOSE``. ``on_window(window)`` is called once the window is shown
    (scripts, tests). ``on_display_lost``: see :func:`show_until_closed`. Returns the names of
    the window's threads that did not stop.
    """
    if auto_close is None:
        auto_close = env_flag(AUTOCLOSE_ENV)
    return show_until_closed(lambda: MainWindow(cfg, runner, auto_close=auto_close, snapshot_dir=snapshot_dir),
                             runner, on_window, on_display_lost)


X11_BROKE = "The X11 connection broke"  # Qt's xcb plugin says this, then calls exit(1)


XCB_DESTROY_NOTIFY = 17


class _DestroyWatch(QAbstractNativeEventFilter):
    """Closes ``window`` as its close button does when another X client destroys its X window
    (``xdotool windowclose``, a session tool): Qt does not notice, and the run went on with no
    window, the process never ending by itself."""

    def __init__(self, window) -> None:
        super().__init__()
        self.window = window
        self.wid = int(window.winId())
        self.fired = False

    def nativeEventFilter(self, event_type, message):  # noqa: N802 (Qt's name)
        try:
            if not self.fired and bytes(event_type) == b"xcb_generic_event_t":
                head = bytes(message.asstring(12))
                if head[0] & 0x7F == XCB_DESTROY_NOTIFY and int.from_bytes(head[8:12], "little") == self.wid:
                    self.fired = True
                    log.warning("the window was destroyed by another X client: stopping as on its close button")
                    QTimer.singleShot(0, self.window.close)
        except Exception:  # noqa: BLE001 - a filter never breaks Qt's event loop
            log.debug("native event filter", exc_info=True)
        return False, 0


def show_until_closed(make_window, runner, on_window=None, on_display_lost=None) -> list[str]:
    """Build a window with ``make_window()`` (``MainWindow``, or the grid window of a multi-stream
    run: both have ``start``/``shutdown``/``interrupt``, a ``closed`` signal, ``is_shut_down``,
    ``interrupt_code`` and ``stuck_threads``), show it, start it and run Qt's loop until it is
    closed (q, Esc, the close button, a signal). The runner has finished when this returns;
    a signal's exit code is handed to ``runner.exit_code``. Returns the threads that did not stop.

    When the X display goes away under the window (the session ended, an SSH X forward
    dropped), Qt's xcb plugin says so and then ends the process (``exit(1)``, sometimes a crash
    while the other threads still run). Its message is caught first: the runner stops as on a
    SIGHUP (outputs finalized), ``on_display_lost()`` (the owner: stop the pipeline, write the
    summary, return the exit code; default: the runner's code) runs, and the process exits with
    that code itself, before Qt can.
    """
    app = application()
    window = None
    restore = lambda: None  # noqa: E731
    failed: list[BaseException] = []

    def on_error(kind, exc, tb) -> None:
        """An exception in a slot or an event handler: PyQt5 would abort the process (qFatal).
        Instead the window closes as on q: the runner stops, the outputs are finalized, and the
        run ends with an internal error (exit 1), said in one line."""
        log.debug("the window failed", exc_info=(kind, exc, tb))
        if not failed:
            failed.append(exc)
            log.error("the window failed: %s: %s", kind.__name__, exc)
            if window is not None:
                QTimer.singleShot(0, window.close)

    old_hook, sys.excepthook = sys.excepthook, on_error

    def display_lost(message: str) -> None:
        log.error("the X display went away (%s): stopping; the outputs are finalized", message.strip())
        if runner.exit_code == EXIT_OK:
            runner.exit_code = EXIT_SIGHUP  # as when the terminal (the session) closes
        try:
            if window is not None:
                window.shutdown()  # joins the runner thread: outputs finalized
            else:
                runner.request_stop()
            code = on_display_lost() if on_display_lost is not None else runner.exit_code
        except BaseException:  # noqa: BLE001 - Qt ends the process next: exit with a code, always
            log.debug("finishing after the display went away failed", exc_info=True)
            code = runner.exit_code or EXIT_INTERNAL
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    def on_qt_message(mode, context, message) -> None:
        if message.startswith(X11_BROKE):
            display_lost(message)
        elif previous_handler is not None:
            previous_handler(mode, context, message)
        else:
            with contextlib.suppress(Exception):
                sys.stderr.write(f"{message}\n")

    previous_handler = qInstallMessageHandler(on_qt_message)
    try:
        window = make_window()
        loop = QEventLoop()
        window.closed.connect(loop.quit)
        restore = _install_signal_handlers(window)
        window.show()
        watch = _DestroyWatch(window)
        app.installNativeEventFilter(watch)
        restore_signals = restore

        def restore() -> None:
            app.removeNativeEventFilter(watch)
            restore_signals()

        window.start()
        if on_window is not None:
            on_window(window)
        if not window.is_shut_down:
            loop.exec_()
    finally:
        restore()
        try:
            if window is not None:
                window.shutdown()
                window.hide()
                window.deleteLater()
                app.processEvents()
            else:
                runner.request_stop()
        finally:
            sys.excepthook = old_hook
            qInstallMessageHandler(previous_handler)
    if window is not None and window.interrupt_code and runner.exit_code == EXIT_OK:
        runner.exit_code = window.interrupt_code
    if failed and runner.error is None:
        exc = failed[0]
        runner.error = RtvisionError(f"the window failed: {exc.__class__.__name__}: {exc}")  # exit 1, one line
        runner.exit_code = EXIT_INTERNAL
    return list(window.stuck_threads) if window is not None else []


def wait_for(predicate, timeout_s: float, app: QApplication | None = None) -> bool:
    """Process Qt events until ``predicate()`` is true or ``timeout_s`` passes (scripts)."""
    app = app or application()
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        app.processEvents(QEventLoop.AllEvents, 20)
        time.sleep(0.005)
    return True
