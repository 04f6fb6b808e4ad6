"""The run's output paths, checked before anything loads, and held while the run writes them.

``check_outputs`` refuses (exit 2) an output that is the input or another output (the same path,
a symlink or a hard link to it), and a ``--save`` extension the video sink cannot write; it
refuses (exit 6) an output that cannot be written (a folder, no permission).
``check_not_inputs`` refuses (exit 2) an output that is one of the run's other input files
(``--sources``, ``--labels``, ``--model``, ``--weights``...) or lies inside an input folder.
``OutputClaims`` then takes an exclusive, non-blocking ``fcntl.flock`` on every output file, so a
second rtvision writing the same file gets exit 6 instead of corrupting lines, and at the end
removes an output it created that is still empty: no run that ends leaves a 0-byte file behind
(SIGKILL, which nothing catches, before the first record can). ``-`` as ``--results`` or
``--summary-json`` is standard output.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OutputError, UsageError
from .specs import is_file_spec

log = logging.getLogger(__name__)

STDOUT = "-"
# --save: extension -> FFmpeg muxer; each writes H.264 in a fragmented (playable while written) file.
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}


def is_stdout(path: str | os.PathLike | None) -> bool:
    """``-``, or a path that is this process's standard output (``/dev/stdout``, ``/proc/self/fd/1``)."""
    if path is None:
        return False
    if str(path) == STDOUT:
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


def _is_devnull(path: str) -> bool:
    try:
        return os.path.samefile(path, os.devnull)
    except OSError:
        return False


def _same(a: str, b: str) -> bool:
    """Whether two paths name the same file: equal once symlinks are resolved, or the same inode
    (st_dev, st_ino) when both exist (hard links, bind mounts)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_video_extension(path: str) -> None:
    """UsageError unless ``--save`` ends in an extension the video sink writes."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        known = ", ".join(VIDEO_FORMATS)
        raise UsageError(f"--save {path}: unknown video extension {suffix or '(none)'!r}; use one of {known} "
                         "(H.264 in a fragmented MP4/QuickTime file)")


def check_writable(flag: str, path: str) -> None:
    """OutputError (exit 6) when ``path`` surely cannot be written: it is a folder, an existing file
    without write permission, or under a missing folder that cannot be created."""
    if path == STDOUT:
        return
    if path.endswith(os.sep) or os.path.isdir(path):
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    if os.path.lexists(path) and not os.path.exists(path):
        raise OutputError(f"{flag} {path}: is a dangling symlink")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise OutputError(f"{flag} {path}: no permission to write it")
        return
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists():  # missing folders are created when the output is
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: no permission to create files in {parent}")


def check_outputs(source: str | None, outputs: dict[str, str | None]) -> None:
    """Every check that can be made before the run: ``outputs`` maps a flag (``--save``) to its path.

    UsageError (exit 2): an output that is the input file or another output, an unknown ``--save``
    extension. OutputError (exit 6): an output that cannot be written.
    """
    named = {flag: str(p) for flag, p in outputs.items() if p is not None}
    for flag, path in named.items():
        if not path.strip():
            raise UsageError(f"{flag}: empty path")
    for flag, path in named.items():  # "--save", or "--save (NAME)": one stream's video of several
        if flag.split(" ")[0] == "--save":
            if path == STDOUT:
                raise UsageError(f"{flag} -: the video cannot go to standard output; give a file name")
            check_video_extension(path)
    for (fa, a), (fb, b) in itertools.combinations(named.items(), 2):
        both_stdout = is_stdout(a) and is_stdout(b)
        if both_stdout or (STDOUT not in (a, b) and not _is_devnull(a) and _same(a, b)):
            raise UsageError(f"{fa} {a} and {fb} {b} are the same file; each output needs its own")
    if source is not None and is_file_spec(source) and os.path.exists(source):
        for flag, path in named.items():
            if path != STDOUT and _same(source, path):
                raise UsageError(f"{flag} {path} is the input video {source}; writing it would destroy the input")
    for flag, path in named.items():
        check_writable(flag, path)


def weights_file(weights: str | None) -> str | None:
    """``--weights`` when it names a file: None for ``imagenet`` and ``imagenet:NAME`` (torchvision's
    weights API; ``rtvision.models.zoo.is_imagenet``), not for a file named ``imagenet_ft.pth``."""
    if weights is None or weights == "imagenet" or weights.startswith("imagenet:"):
        return None
    return weights


def plot_formats() -> list[str]:
    """The file extensions matplotlib's Agg canvas writes (``--plot``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return sorted(f".{ext}" for ext in FigureCanvasAgg.get_supported_filetypes())


def check_plot_extension(flag: str, path: str | None) -> None:
    """UsageError unless ``path`` (None: not asked) ends in an extension matplotlib writes."""
    if path is None:
        return
    formats = plot_formats()
    if Path(path).suffix.lower() not in formats:
        raise UsageError(f"{flag} {path}: unknown image extension {Path(path).suffix or '(none)'!r}; "
                         f"use one of {', '.join(formats)}")


def check_not_inputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """UsageError (exit 2) for an output that is one of the run's input files (``--sources``,
    ``--labels``, ``--model``, ``--weights``, ...; by any name: a symlink or a hard link), or that
    lies inside an input folder, by its own name or by what it links to (a photo there may be a
    symlink to a file elsewhere, which writing would replace). Inputs that do not exist, and
    outputs that are standard output or a device, are not checked."""
    for flag, path in outputs.items():
        if not path or is_stdout(path) or _is_devnull(path):
            continue
        for iflag, ipath in inputs.items():
            if not (ipath and os.path.exists(ipath)):
                continue
            if _same(ipath, path):
                raise UsageError(f"{flag} {path} is {iflag} {ipath}; writing it would destroy the input")
            if os.path.isdir(ipath) and any(Path(q).is_relative_to(folder) for q in (os.path.abspath(path), os.path.realpath(path))
                                            for folder in (os.path.abspath(ipath), os.path.realpath(ipath))):
                raise UsageError(f"{flag} {path} is inside {iflag} {ipath}; write it elsewhere, so that the "
                                 "files there stay as they are")


@dataclass
class _Claim:
    path: str
    fd: int
    created: bool
    made_dirs: list[Path] = field(default_factory=list)


class OutputClaims(contextlib.AbstractContextManager):
    """Exclusive ``flock`` on each output file for the whole run (``with OutputClaims(paths):``).

    A file that does not exist yet is created empty (never truncated: an existing file keeps its
    content until the sink writes its first record), and removed at the end if it is still empty.
    Standard output, devices and FIFOs are not locked.
    """

    def __init__(self, outputs: dict[str, str | None]) -> None:
        self.outputs = {flag: str(p) for flag, p in outputs.items() if p is not None}
        self.claims: list[_Claim] = []

    def __enter__(self) -> OutputClaims:
        try:
            for flag, path in self.outputs.items():
                self._claim(flag, path)
        except BaseException:
            self.release()
            raise
        return self

    def _claim(self, flag: str, path: str) -> None:
        if is_stdout(path):
            return
        if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            return  # /dev/null, a FIFO, a terminal: nothing to lock or remove
        made: list[Path] = []
        parent = Path(os.path.abspath(path)).parent
        while not parent.exists():
            made.append(parent)
            parent = parent.parent
        created = not os.path.exists(path)
        try:
            for d in reversed(made):
                d.mkdir()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        claim = _Claim(path, fd, created, made)
        self.claims.append(claim)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{flag} {path} is being written by another process; choose another file") from None
            log.debug("cannot lock %s (%s); writing it unlocked", path, exc)

    def release(self) -> None:
        """Unlock every output; remove those this run created and left empty (and their new folders)."""
        for claim in reversed(self.claims):
            try:
                if claim.created and os.fstat(claim.fd).st_size == 0 and os.path.exists(claim.path) \
                        and os.path.samestat(os.stat(claim.path), os.fstat(claim.fd)):
                    os.unlink(claim.path)
                    log.info("removed %s: nothing was written to it", claim.path)
                    for d in claim.made_dirs:
                        with contextlib.suppress(OSError):
                            d.rmdir()
            except OSError:
                log.debug("cleaning up %s failed", claim.path, exc_info=True)
            finally:
                os.close(claim.fd)  # closing the descriptor drops the lock
        self.claims.clear()

    def __exit__(self, *exc) -> None:
        self.release()
