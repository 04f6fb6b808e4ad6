import threading
import time

import pytest

from rtvision.buffer import BufferClosed, RingBuffer


def test_live_policy_keeps_newest_and_counts_drops():
    buf = RingBuffer(3, drop_oldest=True)
    dropped = [buf.put(i) for i in range(7)]
    assert dropped == [False, False, False, True, True, True, True]
    assert buf.dropped == 4
    assert buf.get_batch(10, timeout_s=0.1) == [4, 5, 6]


def test_lossless_policy_waits_for_room():
    buf = RingBuffer(2, drop_oldest=False)
    buf.put(0)
    buf.put(1)
    with pytest.raises(TimeoutError):
        buf.put(2, timeout_s=0.05)
    got = []

    def consume():
        time.sleep(0.1)
        got.extend(buf.get_batch(1, timeout_s=1))

    t = threading.Thread(target=consume)
    t.start()
    assert buf.put(2, timeout_s=2) is False  # waited for the consumer, dropped nothing
    t.join()
    assert got == [0]
    assert buf.get_batch(5, timeout_s=0.1) == [1, 2]
    assert buf.dropped == 0


def test_get_batch_fill_and_partial():
    buf = RingBuffer(8, drop_oldest=False)
    buf.put("a")
    t0 = time.monotonic()
    assert buf.get_batch(4, timeout_s=0.5) == ["a"]  # live: takes what is there at once
    assert time.monotonic() - t0 < 0.3

    def late():
        time.sleep(0.05)
        for x in "bcd":
            buf.put(x)

    buf.put("a")
    th = threading.Thread(target=late)
    th.start()
    assert buf.get_batch(4, timeout_s=0.5, fill=True, fill_timeout_s=2.0) == list("abcd")  # files fill
    th.join()
    assert buf.get_batch(4, timeout_s=0.05) == []


def test_close_unblocks_both_sides():
    buf = RingBuffer(1, drop_oldest=False)
    buf.put(1)
    errors = []

    def producer():
        try:
            buf.put(2)
        except BufferClosed:
            errors.append("closed")

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.05)
    buf.close()
    t.join(timeout=2)
    assert not t.is_alive() and errors == ["closed"]
    assert buf.get_batch(4, timeout_s=0.1) == [1]  # drains what is left
    assert buf.drained
    with pytest.raises(BufferClosed):
        buf.put(3)


def test_slots_are_reused_not_reallocated():
    buf = RingBuffer(4, drop_oldest=True)
    slots = buf._slots
    for i in range(100):
        buf.put(i)
        if i % 3 == 0:
            buf.get_batch(2, timeout_s=0)
    assert buf._slots is slots and len(slots) == 4
