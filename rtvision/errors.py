"""Errors that end a run with a one-line message and a documented exit code.

Exit codes (also in the README):

====  =====================================================================
0     clean end (end of stream, --max-frames, window closed, q/Esc)
1     internal failure (an unexpected exception in a pipeline thread)
2     usage error (bad or nonsensical flags)
3     bad input video: missing, empty, not a video, truncated, too many corrupt frames
4     camera or stream unavailable: does not open, or lost after all reconnect attempts
5     bad model file: weights, labels or artifact missing, broken or unsafe
6     output error: --save / --results / --summary-json cannot be written (full disk, bad path,
      locked by another process, a closed pipe)
7     a stream of a multi-stream run or a fleet failed (it is named in the summary); the others ran
8     fleet: the Ray cluster cannot be started or reached, or cannot place the actors asked for
129   hung up: SIGHUP (the terminal was closed); outputs finalized
130   interrupted by SIGINT (Ctrl-C)
143   terminated by SIGTERM
====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_SOURCE_UNAVAILABLE = 4
EXIT_BAD_MODEL = 5
EXIT_OUTPUT = 6
EXIT_STREAM_FAILED = 7
EXIT_CLUSTER = 8
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class RtvisionError(Exception):
    """An expected failure: reported as one line, exits with ``exit_code``."""

    exit_code = EXIT_INTERNAL


class UsageError(RtvisionError):
    exit_code = EXIT_USAGE


class InputError(RtvisionError):
    exit_code = EXIT_BAD_INPUT


class SourceUnavailable(RtvisionError):
    exit_code = EXIT_SOURCE_UNAVAILABLE


class ModelError(RtvisionError):
    exit_code = EXIT_BAD_MODEL


class OutputError(RtvisionError):
    exit_code = EXIT_OUTPUT


class ClusterError(RtvisionError):
    """``rtvision fleet``: no Ray cluster to run on (cannot start or reach it, no room for the actors)."""

    exit_code = EXIT_CLUSTER


class Interrupted(RtvisionError):
    """A stop requested by a signal; ``exit_code`` is 129 (SIGHUP), 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, exit_code: int = EXIT_SIGINT) -> None:
        super().__init__("interrupted")
        self.exit_code = exit_code
