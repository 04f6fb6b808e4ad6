"""The video area: shows one annotated BGR image, scaled into a letterboxed rect."""

from __future__ import annotations

import time

import numpy as np
from PyQt5.QtCore import QPointF, QRectF, QSize, Qt
from PyQt5.QtGui import QColor, QImage, QPainter
from PyQt5.QtWidgets import QSizePolicy, QWidget

from ..stats import RateMeter


def letterbox(image_wh: tuple[int, int], area_wh: tuple[float, float]) -> tuple[float, float, float]:
    """``(scale, x0, y0)``: the image scaled by ``scale`` fits ``area_wh`` centred at (x0, y0).

    An image point (x, y) in pixels lands at (x0 + x * scale, y0 + y * scale) in the area.
    """
    iw, ih = image_wh
    aw, ah = area_wh
    if iw <= 0 or ih <= 0 or aw <= 0 or ah <= 0:
        return 0.0, 0.0, 0.0
    scale = min(aw / iw, ah / ih)
    return scale, (aw - iw * scale) / 2.0, (ah - ih * scale) / 2.0


class FrameView(QWidget):
    """Paints the newest annotated frame, keeping its aspect ratio (black bars around it).

    ``set_image`` wraps the numpy buffer in a QImage without copying it; the buffer stays
    referenced by this widget for as long as the QImage uses it.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._array: np.ndarray | None = None  # keeps the buffer alive behind self._qimage
        self._qimage: QImage | None = None
        self._fresh = False
        self.placeholder = "waiting for the first frame…"  # shown until the first image
        self.painted_frames = 0
        self.paint_ms_total = 0.0  # GUI-thread time spent painting new frames
        self.display_rate = RateMeter(window_s=2.0)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(160, 90)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setAttribute(Qt.WA_OpaquePaintEvent)  # we paint every pixel ourselves

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(960, 540)

    @property
    def pending(self) -> bool:
        """A new image was set and is not on screen yet."""
        return self._fresh

    @property
    def image(self) -> np.ndarray | None:
        """The annotated BGR image on screen (HxWx3 uint8), or None."""
        return self._array

    def set_image(self, bgr: np.ndarray) -> None:
        """Show ``bgr`` (HxWx3 uint8, C-contiguous); no copy: the QImage wraps its buffer."""
        if not bgr.flags["C_CONTIGUOUS"]:
            raise ValueError("FrameView.set_image needs a C-contiguous array")
        h, w = bgr.shape[:2]
        self._array = bgr
        self._qimage = QImage(bgr.data, w, h, bgr.strides[0], QImage.Format_BGR888)
        self._fresh = True
        self.update()

    def image_rect(self) -> QRectF:
        """Where the image is painted, in widget (logical) coordinates."""
        if self._array is None:
            return QRectF()
        h, w = self._array.shape[:2]
        s, x0, y0 = letterbox((w, h), (self.width(), self.height()))
        return QRectF(x0, y0, w * s, h * s)

    def map_to_widget(self, x: float, y: float) -> QPointF:
        """An image pixel coordinate -> widget coordinate (through the letterbox)."""
        h, w = self._array.shape[:2]
        s, x0, y0 = letterbox((w, h), (self.width(), self.height()))
        return QPointF(x0 + x * s, y0 + y * s)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        t0 = time.perf_counter()
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), QColor(0, 0, 0))
            if self._qimage is None:
                p.setPen(QColor(200, 200, 200))
                p.drawText(self.rect(), Qt.AlignCenter | Qt.TextWordWrap, self.placeholder)
                return
            p.setRenderHint(QPainter.SmoothPixmapTransform, True)
            p.drawImage(self.image_rect(), self._qimage)
        finally:
            p.end()
        if self._fresh:
            self._fresh = False
            self.painted_frames += 1
            self.paint_ms_total += (time.perf_counter() - t0) * 1000.0
            self.display_rate.tick()
