"""argparse value types shared by the run, ``optimize`` and ``bench`` parsers (stdlib only)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(text: str, kind: type, ok: Callable[[float], bool], what: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


INT_MAX = 10**9  # no count or size rtvision takes is near it; far larger ones overflow deep inside
FLOAT_MAX = 1e9  # seconds, minutes, CPUs: finite, so that a timeout can be given to OpenCV and Ray


def int_at_least(minimum: int, maximum: int = INT_MAX) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _number(text, int, lambda v: minimum <= v <= maximum,
                       f"an integer >= {minimum}" if maximum == INT_MAX else f"an integer in [{minimum}, {maximum}]")

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
BATCH_MAX = 1024
MIN_FACE_MAX = 100_000
batch_size = int_at_least(1, BATCH_MAX)
min_face_px = int_at_least(1, MIN_FACE_MAX)


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v <= FLOAT_MAX, f"a positive number up to {FLOAT_MAX:g}")


STALL_TIMEOUT_MAX = 2_000_000.0  # seconds: OpenCV takes the timeout in int32 milliseconds (2147483 s)
BUFFER_MAX = 10_000  # frames held (a 1080p frame is 6 MB)
buffer_frames = int_at_least(1, BUFFER_MAX)


def stall_seconds(text: str) -> float:
    """``--stall-timeout``: a positive number of seconds up to STALL_TIMEOUT_MAX (23 days)."""
    return _number(text, float, lambda v: 0 < v <= STALL_TIMEOUT_MAX, f"a positive number of seconds up to {STALL_TIMEOUT_MAX:g}")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v <= FLOAT_MAX, f"a number in [0, {FLOAT_MAX:g}]")


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


SCALE_MIN = 0.01  # a smaller factor rounds to nothing (the detector keeps 4 decimals) or to a few pixels


def scale_fraction(text: str) -> float:
    """A resize factor in [0.01, 1] (``--face-scale``)."""
    return _number(text, float, lambda v: SCALE_MIN <= v <= 1, f"a number in [{SCALE_MIN:g}, 1]")


def float_in(lo: float, hi: float, what: str) -> Callable[[str], float]:
    """A number in [lo, hi] (never NaN); ``what`` names it in the error."""
    def parse(text: str) -> float:
        return _number(text, float, lambda v: lo <= v <= hi, f"{what} in [{lo:g}, {hi:g}]")

    parse.__name__ = f"float_in_{lo:g}_{hi:g}"
    return parse


MAX_LIST_FILE_BYTES = 1 << 20  # a list of sources or of class names: far under this


def read_list_file(path: str, limit: int = MAX_LIST_FILE_BYTES) -> str:
    """The text of a small list file named on the command line (``--sources``, ``--labels``),
    read as UTF-8, at most ``limit`` bytes: a device such as ``/dev/zero`` (or a huge file) is
    refused instead of read until memory runs out; a pipe (``--sources <(...)``) still works.
    Raises OSError, UnicodeDecodeError, or ValueError (too large)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // (1 << 20)} MB")
    return data.decode("utf-8")
