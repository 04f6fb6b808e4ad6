"""The list of streams of a multi-stream run: names and source specs.

``--source`` may be repeated; ``--sources FILE`` reads one source a line, optionally named
(``name=spec``; ``#`` starts a comment). Unnamed streams are named after their file (its stem),
``webcam0``, ``demo``, or ``streamN`` for URLs (whose text may hold secrets); duplicates get a
``-2``, ``-3`` suffix. A name is letters, digits, ``.``, ``_`` and ``-`` (it goes into file names
through ``--save``'s ``{stream}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..argtypes import read_list_file
from ..errors import UsageError
from ..specs import WEBCAM_RE

NAME_RE = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")


@dataclass(frozen=True)
class StreamSpec:
    name: str
    spec: str


def _default_name(spec: str, index: int) -> str:
    m = WEBCAM_RE.match(spec)
    if m:
        return f"webcam{m.group(1) or 0}"
    if spec == "demo":
        return "demo"
    if "://" in spec:
        return f"stream{index}"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(spec).stem).lstrip(".") or f"stream{index}"  # '.cam.mp4': 'cam'
    return stem[:64]


def _unquoted(text: str) -> str:
    """``"rtsp://…"`` or ``'…'`` (as a shell would take it) without its quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


def parse_entry(text: str, index: int) -> StreamSpec:
    """``name=spec`` or ``spec``, each may be quoted. A ``name=`` prefix is a name only when the
    whole entry is not an existing file and the name holds no ``:`` or ``/`` (so URLs with ``=``
    in them stay URLs). Anything else before the first ``=`` that holds no ``/`` (``front
    door=rtsp://…``, ``cam:1=…``) is refused as a name (exit 2), naming it only: the source
    after it, which may hold secrets, would otherwise be opened as one odd file name."""
    text = text.strip()
    if not Path(text).exists():  # a file whose name has quotes is that file
        text = _unquoted(text)
    if Path(text).exists():
        return StreamSpec(_default_name(text, index), text)
    m = NAME_RE.match(text)
    if m:
        name, spec = m.group(1), _unquoted(m.group(2))
        if not spec:
            raise UsageError(f"stream {name!r}: no source after '='")
        return StreamSpec(name, spec)
    loose = re.match(r"^([^=/]{1,64})=(.*)$", text)
    if loose and NAME_RE.match(loose.group(1) + "=x"):
        raise UsageError(f"stream {loose.group(1)!r}: no source after '='")
    if loose:
        raise UsageError(f"stream name {loose.group(1).strip()!r} (before '='): a name is letters, digits, '.', '_' "
                         "and '-', at most 64; and no file has that whole name")
    return StreamSpec(_default_name(text, index), text)


def read_sources_file(path: str) -> list[str]:
    try:
        lines = read_list_file(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--sources {path}: cannot read ({exc.__class__.__name__})") from None
    except ValueError as exc:
        raise UsageError(f"--sources {path}: {exc}, not a list of sources") from None
    entries = [ln.split("#", 1)[0].strip() if not ln.lstrip().startswith("#") else "" for ln in lines]
    entries = [e for e in entries if e]
    if not entries:
        raise UsageError(f"--sources {path}: no source in it (one source a line, optionally name=source)")
    return entries


def stream_specs(sources: list[str] | None, sources_file: str | None) -> list[StreamSpec]:
    """The streams asked for, in order, with unique names. UsageError for an empty list."""
    entries = list(sources or []) + (read_sources_file(sources_file) if sources_file else [])
    if not entries:
        raise UsageError("no source given")
    parsed = [parse_entry(entry, i) for i, entry in enumerate(entries)]
    for s in parsed:
        if not s.spec:
            raise UsageError("empty --source")
        if s.name.startswith("."):  # '..' in a --save pattern would write outside its folder
            raise UsageError(f"stream name {s.name!r}: a name may not start with '.'")
    # A repeated name gets -2, -3...: never one that another stream has (given or made), since
    # results, videos and counters are keyed by the name.
    given = {s.name for s in parsed}
    out: list[StreamSpec] = []
    taken: set[str] = set()
    for s in parsed:
        name, n = s.name, 1
        while name in taken or (n > 1 and name in given):
            n += 1
            name = f"{s.name}-{n}"
        taken.add(name)
        out.append(StreamSpec(name, s.spec))
    return out
