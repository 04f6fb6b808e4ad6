"""A small rolling plot of FPS and latency over the last ``span_s`` seconds, drawn with QPainter."""

from __future__ import annotations

import math
import time

from PyQt5.QtCore import QPointF, QRectF, QSize, Qt
from PyQt5.QtGui import QColor, QPainter, QPainterPath, QPen
from PyQt5.QtWidgets import QSizePolicy, QWidget

FPS_COLOR = QColor(80, 200, 255)
LATENCY_COLOR = QColor(255, 170, 60)


def nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= v (axis maxima that read well)."""
    if not v > 0 or math.isnan(v):
        return 1.0
    k = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * k >= v:
            return m * k
    return 10 * k


class HistoryPlot(QWidget):
    """``set_history([(t_monotonic, fps, latency_ms), ...])``; FPS on the left axis, latency right."""

    def __init__(self, span_s: float = 30.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.span_s = span_s
        self._points: list[tuple[float, float, float]] = []
        self._now = time.monotonic()
        self.setMinimumSize(220, 110)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(280, 130)

    def set_history(self, points, now: float | None = None) -> None:
        self._now = time.monotonic() if now is None else now
        lo = self._now - self.span_s
        self._points = [pt for pt in points if pt[0] >= lo]
        self.update()

    def _path(self, plot: QRectF, idx: int, vmax: float) -> QPainterPath:
        path = QPainterPath()
        for i, pt in enumerate(self._points):
            v = pt[idx]
            if v is None or math.isnan(v):
                continue
            x = plot.left() + (1.0 - (self._now - pt[0]) / self.span_s) * plot.width()
            y = plot.bottom() - min(v / vmax, 1.0) * plot.height()
            if i == 0 or path.elementCount() == 0:
                path.moveTo(QPointF(x, y))
            else:
                path.lineTo(QPointF(x, y))
        return path

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.Antialiasing, True)
            font = p.font()
            if font.pointSizeF() > 0:
                font.setPointSizeF(font.pointSizeF() * 0.85)
                p.setFont(font)
            p.fillRect(self.rect(), QColor(24, 24, 24))
            fm = p.fontMetrics()
            th = fm.height()
            plot = QRectF(4, th + 4, self.width() - 8, self.height() - th * 2 - 8)
            if plot.width() <= 0 or plot.height() <= 0:
                return
            grid = QPen(QColor(70, 70, 70))
            grid.setStyle(Qt.DotLine)
            p.setPen(grid)
            for k in range(5):
                y = plot.top() + k * plot.height() / 4
                p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            for k in range(0, int(self.span_s) + 1, 10):
                x = plot.right() - k / self.span_s * plot.width()
                p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
            fps_vals = [pt[1] for pt in self._points if not math.isnan(pt[1])]
            lat_vals = [pt[2] for pt in self._points if not math.isnan(pt[2])]
            fps_max = nice_ceiling(max(fps_vals, default=0.0) * 1.1)
            lat_max = nice_ceiling(max(lat_vals, default=0.0) * 1.1)
            for idx, vmax, color in ((1, fps_max, FPS_COLOR), (2, lat_max, LATENCY_COLOR)):
                pen = QPen(color)
                pen.setWidthF(1.6)
                p.setPen(pen)
                p.drawPath(self._path(plot, idx, vmax))
            p.setPen(FPS_COLOR)
            last_fps = f"{fps_vals[-1]:.1f}" if fps_vals else "–"
            p.drawText(QRectF(4, 2, self.width() - 8, th), Qt.AlignLeft | Qt.AlignVCenter, f"FPS {last_fps} (axis {fps_max:g})")
            p.setPen(LATENCY_COLOR)
            last_lat = f"{lat_vals[-1]:.0f}" if lat_vals else "–"
            p.drawText(QRectF(4, 2, self.width() - 8, th), Qt.AlignRight | Qt.AlignVCenter, f"{last_lat} ms (axis {lat_max:g})")
            p.setPen(QColor(150, 150, 150))
            p.drawText(QRectF(4, self.height() - th - 2, self.width() - 8, th), Qt.AlignLeft | Qt.AlignVCenter, f"-{self.span_s:.0f} s")
            p.drawText(QRectF(4, self.height() - th - 2, self.width() - 8, th), Qt.AlignRight | Qt.AlignVCenter, "latency (orange), FPS (blue) · now")
        finally:
            p.end()
