"""What the single-stream window and the grid window share: they host a runner on a thread of
their own and only consume its results. :class:`RunnerHostMixin` starts that thread with the
window's timers, stops it (the runner finalizes the outputs) when the window closes or a signal
comes, and says which threads did not stop. The window class provides ``runner``, ``cfg``,
``_thread``, ``_poll_timer``, ``_stats_timer``, ``state_label``, ``is_shut_down``,
``stuck_threads``, ``interrupt_code``, a ``closed`` signal and ``_refresh_stats``; for the
banner and the overlay toggles, ``banner``, ``_banner_text``, ``is_ended``, ``banner_messages()``
(its (level, text) lines), ``show_faces``/``show_labels`` with their actions and ``_redraw``; for
pause and step (the runner's ``pause``/``resume``/``step``), ``pause_action`` and ``step_action``."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

BANNER_STYLE = {
    "warning": "background:#7a4b00; color:white; padding:6px; font-weight:bold;",
    "info": "background:#30404f; color:white; padding:6px; font-weight:bold;",
}


DRAWN_DEADLINE_S = 2.0  # auto-close: how long the last frame may take to be drawn


def can_paint(widget) -> bool:
    """Whether Qt will paint ``widget`` now: shown, not minimized, and its window exposed (a
    window minimized, on another virtual desktop or unmapped is never painted)."""
    handle = widget.windowHandle()
    return bool(widget.isVisible() and not widget.isMinimized() and handle is not None and handle.isExposed())


def fit_to_screen(widget, w: int, h: int, share: float = 0.9) -> None:
    """Resize ``widget`` to ``w`` x ``h``, or to ``share`` of the screen's available area when that
    is smaller (a laptop's 1366x768, a 640x480 VNC desktop): the panel, the status bar and the
    title bar's buttons stay on the screen."""
    from PyQt5.QtGui import QGuiApplication

    screen = QGuiApplication.primaryScreen()
    if screen is not None:
        avail = screen.availableGeometry()
        w, h = min(w, int(avail.width() * share)), min(h, int(avail.height() * share))
    widget.resize(max(w, 1), max(h, 1))


class RunnerHostMixin:
    """Mixed in before ``QMainWindow``: ``class W(RunnerHostMixin, QMainWindow)``."""

    _drawn_deadline: float | None = None

    def _drawn_deadline_passed(self) -> bool:
        """Auto-close waits for the last frame to be drawn, at most DRAWN_DEADLINE_S (a window
        that cannot be painted, or a paint that never comes, never kept the process alive)."""
        import time

        now = time.monotonic()
        if self._drawn_deadline is None:
            self._drawn_deadline = now + DRAWN_DEADLINE_S
        return now >= self._drawn_deadline

    def _build_layout(self, main, panel) -> None:
        """The window's layout: the banner (hidden until there is something to say) above
        ``main`` (the video, or the grid of tiles) with ``panel`` (the stats) at its right; a
        status bar with the run's state (``self.banner``, ``self.state_label``)."""
        from PyQt5.QtCore import Qt
        from PyQt5.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setObjectName("banner")
        self.banner.hide()
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self.banner)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(main, 1)
        # The panel scrolls when the window is shorter than its rows: a 480-line screen still
        # takes the whole window (its minimum height was the panel's, about 550 px).
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        bar = scroll.verticalScrollBar().sizeHint().width()
        scroll.setMinimumWidth(panel.minimumWidth() + bar)
        scroll.setMaximumWidth(panel.maximumWidth() + bar)
        row.addWidget(scroll, 0)
        outer.addLayout(row, 1)
        self.setCentralWidget(central)
        self.state_label = QLabel("starting")
        self.statusBar().addPermanentWidget(self.state_label)

    def start(self) -> None:
        """Start the runner thread and the timers (once)."""
        if self._thread is not None or self.is_shut_down:
            return
        self._thread = threading.Thread(target=self.runner.run, name="rtvision-runner", daemon=True)
        self._thread.start()
        self.state_label.setText("running")
        self._poll_timer.start()
        self._stats_timer.start()
        self._refresh_stats()

    @property
    def runner_thread(self) -> threading.Thread | None:
        return self._thread

    def shutdown(self) -> list[str]:
        """Stop consuming: ask the runner (and through it the pipeline) to stop and join the
        runner thread, which finalizes the outputs, with a timeout. The pipeline itself is
        stopped by its owner once the window is gone. Idempotent. Returns the names of threads
        that did not stop."""
        if self.is_shut_down:
            return self.stuck_threads
        self.is_shut_down = True
        self._poll_timer.stop()
        self._stats_timer.stop()
        self.runner.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.join_timeout_s + 5.0)
            if self._thread.is_alive():
                self.stuck_threads.append(self._thread.name)
                log.error("the runner thread did not stop within %.0fs", self.cfg.join_timeout_s + 5.0)
        return self.stuck_threads

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.shutdown()
        event.accept()
        super().closeEvent(event)
        self.closed.emit()

    def interrupt(self, code: int) -> None:
        """Close because of a signal (SIGHUP: 129, Ctrl-C: 130, SIGTERM: 143)."""
        self.interrupt_code = code
        self.runner.interrupt(code)  # sets the exit code and stops the run cleanly
        self.close()

    # -- the banner and the overlay toggles ------------------------------------------------------
    def _update_banner(self) -> None:
        msgs = self.banner_messages()
        key = tuple(msgs)
        if key == self._banner_text:
            return
        self._banner_text = key
        if not msgs:
            self.banner.hide()
            return
        level = "warning" if any(lv == "warning" for lv, _ in msgs) else "info"
        self.banner.setStyleSheet(BANNER_STYLE[level])
        self.banner.setText("\n".join(text for _, text in msgs))
        self.banner.show()

    def set_faces(self, on: bool) -> None:
        self.show_faces = bool(on)
        self.faces_action.setChecked(self.show_faces)
        self._redraw()

    def set_labels(self, on: bool) -> None:
        self.show_labels = bool(on)
        self.labels_action.setChecked(self.show_labels)
        self._redraw()

    def toggle_pause(self) -> None:
        """Pause or resume the run (Space): the runner holds its results, so a file waits and a
        live source drops at its ring buffer; the pause is left out of latencies and rates."""
        if self.is_ended:
            return
        if self.runner.paused:
            self.runner.resume()
            self.state_label.setText("running")
            hint = getattr(self, "status_hint", None)  # the window's standing hint, if it has one
            if hint:
                self.statusBar().showMessage(hint)
            else:
                self.statusBar().clearMessage()
        else:
            self.runner.pause()
            self.state_label.setText("paused")
            self.statusBar().showMessage(getattr(self, "pause_hint", "paused: Space resumes, . or Right steps one frame"))
        self.pause_action.setChecked(self.runner.paused)
        self.pause_action.setText("Resume" if self.runner.paused else "Pause")

    def step(self) -> None:
        """One more result while paused (. or Right); pauses first when running."""
        if self.is_ended:
            return
        if not self.runner.paused:
            self.toggle_pause()
            return
        self.runner.step(1)
