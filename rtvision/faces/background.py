"""Face detections in the background (live sources): one at a time, on a helper thread.

:class:`BackgroundDetections` owns that thread (``rtvision-faces``): ``start()`` creates it,
``close()`` drops the detection in flight and joins it. While a detection of frame ``index``
runs, the flow image of every frame processed since is kept (:meth:`carry`), so that when it is
done its faces can be carried into the current frame (``FaceTracker.merge_late``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..types import Faces

MAX_CARRY_FRAMES = 32  # flow images kept per background detection (~0.5 MB each at 1080p)
THREAD_NAME = "rtvision-faces"


@dataclass
class Pending:
    """A background detection of frame ``index``: the tracks and the flow image at that frame."""

    index: int
    grays: list[np.ndarray]  # flow images of that frame and of every frame processed since
    snapshot: list[tuple[int, np.ndarray]]
    future: Future  # -> Faces of that frame


class BackgroundDetections:
    """At most one detection in flight, on a helper thread of its own, or on a pool shared with
    other streams' stages (``shared``: owned, and shut down, by whoever made it)."""

    def __init__(self, shared: ThreadPoolExecutor | None = None) -> None:
        self._shared = shared
        self._pool: ThreadPoolExecutor | None = None
        self.pending: Pending | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        """Create the helper thread's pool, or take the shared one (idempotent)."""
        if self._pool is None:
            self._pool = self._shared or ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)

    def close(self) -> None:
        """Drop the detection in flight and join the helper thread (idempotent; a shared pool
        is left to its owner)."""
        self.drop()
        pool, self._pool = self._pool, None
        if pool is not None and pool is not self._shared:
            pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, index: int, gray: np.ndarray, snapshot: list[tuple[int, np.ndarray]], run: Callable[[], Faces]) -> None:
        """Start ``run`` (the detection of frame ``index``, whose flow image is ``gray`` and
        whose tracks are ``snapshot``) on the helper thread."""
        if self._pool is None:
            raise RuntimeError("background face detections: start() the face stage first")
        self.pending = Pending(index, [gray], snapshot, self._pool.submit(run))

    def carry(self, gray: np.ndarray) -> None:
        """The flow image of one more frame processed while the detection runs."""
        p = self.pending
        if p is not None:
            p.grays.append(gray)
            if len(p.grays) > MAX_CARRY_FRAMES:  # a very slow detection: coarser steps, bounded memory
                del p.grays[1]

    def take_done(self) -> Pending | None:
        """The detection in flight once it is done (then no longer pending), else None."""
        p = self.pending
        if p is None or not p.future.done():
            return None
        self.pending = None
        return p

    def drop(self) -> None:
        """Forget the detection in flight (cancelled if it has not started)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.future.cancel()
