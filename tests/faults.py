"""A frame source that can be told to misbehave, for the fault-injection suite."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from conftest import encode_index

from rtvision.sources import CorruptFrame, SourceInfo


@dataclass
class Faults:
    """What goes wrong, keyed by the source's own frame counter (frames delivered so far).

    disconnect_at: reads fail from this frame on until a reconnect; ``fail_opens`` reopen attempts fail first.
    stall_at: {frame: seconds} the read blocks that long before returning.
    corrupt_at: frames that raise CorruptFrame instead of arriving.
    resize_at: {frame: (w, h)} the resolution from that frame on (applied on reopen if after a disconnect).
    block_forever_at: the read blocks until ``release`` is set, ignoring any stop request.
    """

    disconnect_at: set[int] = field(default_factory=set)
    fail_opens: int = 0
    stall_at: dict[int, float] = field(default_factory=dict)
    corrupt_at: set[int] = field(default_factory=set)
    resize_at: dict[int, tuple[int, int]] = field(default_factory=dict)
    block_forever_at: int | None = None
    release: threading.Event = field(default_factory=threading.Event)


class FaultySource:
    """Live (or file-like) source of index-coded frames, paced at ``fps`` when live."""

    def __init__(self, n: int, fps: float = 50.0, size_wh=(320, 240), live: bool = True, faults: Faults | None = None):
        self.n = n
        self.fps = fps
        self.size_wh = size_wh
        self.live = live
        self.faults = faults or Faults()
        self.counter = 0
        self.opens = 0
        self.failed_opens = 0
        self.connected = False
        self.info = SourceInfo("faulty", "test", live, fps, size_wh, None if live else n)
        self._next_t = 0.0
        self.delivered_sizes: list[tuple[int, int]] = []

    def open(self) -> SourceInfo:
        from rtvision.errors import SourceUnavailable

        self.opens += 1
        if self.opens > 1 and self.failed_opens < self.faults.fail_opens:
            self.failed_opens += 1
            raise SourceUnavailable("faulty: camera not there yet")
        for at, wh in sorted(self.faults.resize_at.items()):
            if self.counter >= at:
                self.size_wh = wh
        self.info = SourceInfo("faulty", "test", self.live, self.fps, self.size_wh, None if self.live else self.n)
        self.connected = True
        self._next_t = time.monotonic()
        return self.info

    def read(self) -> np.ndarray | None:
        f = self.faults
        if self.counter >= self.n or not self.connected:
            return None
        i = self.counter
        if i in f.disconnect_at:
            f.disconnect_at.discard(i)
            self.connected = False
            return None
        if f.block_forever_at == i:
            f.release.wait()
            return None
        if self.live:  # a camera delivers at its own rate
            self._next_t += 1.0 / self.fps
            delay = self._next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if i in f.stall_at:
            time.sleep(f.stall_at.pop(i))
        self.counter += 1
        if i in f.corrupt_at:
            raise CorruptFrame(f"frame {i} does not decode")
        if i in f.resize_at:
            self.size_wh = f.resize_at[i]
        w, h = self.size_wh
        img = np.full((h, w, 3), 100, np.uint8)
        encode_index(img, i)
        self.delivered_sizes.append((w, h))
        return img

    def close(self) -> None:
        self.connected = False
