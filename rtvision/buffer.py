"""Bounded ring buffer between the capture thread and the inference worker.

Two policies, chosen by the kind of source:

* ``drop_oldest=True`` (live sources): ``put`` never blocks; when full, the oldest frame is
  overwritten and counted as dropped, so the worker always sees the freshest frames.
* ``drop_oldest=False`` (files): ``put`` waits for room, so nothing is lost.

The slots are a fixed list allocated once; ``put``/``get_batch`` move indices, not memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BufferClosed(Exception):
    """Raised by ``put`` after ``close()``."""


class RingBuffer(Generic[T]):
    def __init__(self, capacity: int, drop_oldest: bool, on_put: Callable[[], None] | None = None) -> None:
        """on_put: called (outside the lock) after every put and at close: lets one consumer of
        several buffers (the multi-stream worker) sleep until any of them has news."""
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self._slots: list[T | None] = [None] * capacity
        self._head = 0  # index of the oldest item
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()
        self.on_put = on_put
        self.put_count = 0
        self.dropped = 0
        self.high_water = 0

    # -- producer side -------------------------------------------------------------------------
    def put(self, item: T, timeout_s: float | None = None) -> bool:
        """Add an item. Returns True when an old item was dropped to make room.

        For a lossless buffer, waits for room (up to ``timeout_s``; None waits until closed).
        Raises BufferClosed when the buffer is closed, TimeoutError when the wait times out.
        """
        with self._cond:
            if self._closed:
                raise BufferClosed
            dropped = False
            if self._count == self.capacity:
                if self.drop_oldest:
                    self._slots[self._head] = None
                    self._head = (self._head + 1) % self.capacity
                    self._count -= 1
                    self.dropped += 1
                    dropped = True
                else:
                    deadline = None if timeout_s is None else time.monotonic() + timeout_s
                    while self._count == self.capacity and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise TimeoutError("ring buffer full")
                        self._cond.wait(remaining)
                    if self._closed:
                        raise BufferClosed
            tail = (self._head + self._count) % self.capacity
            self._slots[tail] = item
            self._count += 1
            self.put_count += 1
            self.high_water = max(self.high_water, self._count)
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()
        return dropped

    def close(self) -> None:
        """No more puts; consumers drain what is left, then get empty batches."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()

    # -- consumer side -------------------------------------------------------------------------
    def get_batch(self, max_items: int, timeout_s: float, fill: bool = False, fill_timeout_s: float = 0.0) -> list[T]:
        """Take up to ``max_items`` oldest items.

        Waits up to ``timeout_s`` for the first item. With ``fill``, then waits up to
        ``fill_timeout_s`` more for the batch to fill (files); otherwise returns what is there
        (live sources never wait long for more). Returns [] on timeout or when closed and empty.
        """
        with self._cond:
            deadline = time.monotonic() + timeout_s
            while self._count == 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            want = min(max_items, self.capacity)
            if fill and self._count < want and not self._closed:
                deadline = time.monotonic() + fill_timeout_s
                while self._count < want and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            n = min(max_items, self._count)
            out: list[T] = []
            for _ in range(n):
                out.append(self._slots[self._head])  # type: ignore[arg-type]
                self._slots[self._head] = None
                self._head = (self._head + 1) % self.capacity
            self._count -= n
            if n:
                self._cond.notify_all()
            return out

    # -- state ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._cond:
            return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def drained(self) -> bool:
        """Closed and empty: the consumer has everything."""
        with self._cond:
            return self._closed and self._count == 0
