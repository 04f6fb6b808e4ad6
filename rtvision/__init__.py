"""rtvision: real-time video recognition (face detection + image classification)."""

__version__ = "0.1.0"
