"""Pure drawing functions: a Result onto an image. Shared by the video sink and the window."""

from __future__ import annotations

import cv2
import numpy as np

from .types import Faces, Labels, Result

FACE_COLOR = (0, 220, 0)  # BGR
TEXT_COLOR = (255, 255, 255)
PANEL_COLOR = (0, 0, 0)


def _thickness(img: np.ndarray) -> int:
    return max(2, round(min(img.shape[:2]) / 360))


def _font_scale(img: np.ndarray) -> float:
    return max(0.5, min(img.shape[:2]) / 900)


def draw_faces(img: np.ndarray, faces: Faces, color: tuple[int, int, int] = FACE_COLOR) -> np.ndarray:
    """Draw face boxes with scores (and track ids) in place; returns ``img``."""
    t = _thickness(img)
    fs = _font_scale(img) * 0.8
    for i in range(len(faces)):
        x1, y1, x2, y2 = (int(round(v)) for v in faces.xyxy[i])
        cv2.rectangle(img, (x1, y1), (x2, y2), color, t, cv2.LINE_AA)
        text = f"{faces.scores[i]:.2f}"
        if faces.track_ids is not None:
            text = f"#{faces.track_ids[i]} {text}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        ty = max(th + base, y1)
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw + 2, ty), color, -1)
        cv2.putText(img, text, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def draw_labels(img: np.ndarray, labels: Labels, max_items: int = 3) -> np.ndarray:
    """Top classifier labels with scores in the top-left corner, in place."""
    fs = _font_scale(img)
    y = 8
    for i in range(min(max_items, len(labels))):
        text = f"{labels.names[i]} {labels.scores[i]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 2)
        cv2.rectangle(img, (8, y), (16 + tw, y + th + base + 6), PANEL_COLOR, -1)
        cv2.putText(img, text, (12, y + th + 3), cv2.FONT_HERSHEY_SIMPLEX, fs, TEXT_COLOR, 2, cv2.LINE_AA)
        y += th + base + 10
    return img


def draw_status(img: np.ndarray, text: str) -> np.ndarray:
    """A small stats line along the bottom edge, in place."""
    fs = _font_scale(img) * 0.7
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    h = img.shape[0]
    cv2.rectangle(img, (0, h - th - base - 8), (tw + 12, h), PANEL_COLOR, -1)
    cv2.putText(img, text, (6, h - base - 4), cv2.FONT_HERSHEY_SIMPLEX, fs, TEXT_COLOR, 1, cv2.LINE_AA)
    return img


def status_line(result: Result, fps: float | None = None) -> str:
    parts = [f"frame {result.frame.index}"]
    if fps is not None:
        parts.append(f"{fps:.1f} fps")
    parts.append(f"latency {result.latency_ms:.0f} ms")
    parts.append(f"faces {len(result.faces)}")
    return " | ".join(parts)


def annotate(result: Result, show_faces: bool = True, show_labels: bool = True, status: str | None = None) -> np.ndarray:
    """A new image: the frame with the result drawn over it (the frame itself is not changed)."""
    img = result.frame.image.copy()
    if show_faces:
        draw_faces(img, result.faces)
    if show_labels:
        draw_labels(img, result.labels)
    if status:
        draw_status(img, status)
    return img
