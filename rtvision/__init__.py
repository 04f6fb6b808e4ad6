"""rtvision: real-time video recognition (face detection + image classification).

The Python API (see ``rtvision.api``)::

    import rtvision

    with rtvision.open("clip.mp4", classifier="mobilenet_v2") as run:
        for result in run:
            ...

Importing ``rtvision`` is cheap; the models load when a run starts.
"""

from __future__ import annotations

from .api import Run, open, settings
from .config import ModelConfig, RunConfig, SourceConfig
from .types import Faces, Frame, Labels, Result

__version__ = "0.1.0"
__all__ = ["open", "Run", "settings", "RunConfig", "SourceConfig", "ModelConfig", "Result", "Faces", "Frame", "Labels",
           "__version__"]
