"""The stats panel: one value label per row (``metrics.PANEL_ROWS``, or the grid window's
``metrics.GRID_PANEL_ROWS``), plus the rolling plot."""

from __future__ import annotations

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

from .metrics import PANEL_ROWS, PanelText
from .plot import HistoryPlot


PANEL_MAX_WIDTH = 380  # px


class StatsPanel(QWidget):
    """``values[key]`` is the QLabel of a row (object name ``stat_<key>``, for tests)."""

    def __init__(self, parent: QWidget | None = None, rows: tuple[tuple[str, str], ...] = PANEL_ROWS) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignLeft)
        self.values: dict[str, QLabel] = {}
        for key, title in rows:
            value = QLabel("–")
            value.setObjectName(f"stat_{key}")
            value.setTextInteractionFlags(Qt.TextSelectableByMouse)
            value.setWordWrap(True)  # a long value (face mode, variant) wraps; the video keeps its room
            self.values[key] = value
            form.addRow(QLabel(title), value)
        outer.addLayout(form)
        self.plot = HistoryPlot()
        outer.addWidget(self.plot)
        outer.addStretch(1)
        self.setMinimumWidth(280)
        self.setMaximumWidth(PANEL_MAX_WIDTH)

    def show_text(self, text: PanelText) -> None:
        for key, value in text.values.items():
            label = self.values.get(key)
            if label is not None and label.text() != value:
                label.setText(value)
