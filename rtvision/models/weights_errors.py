"""One-line, plain-words explanations of why a ``--weights FILE`` could not be used.

``describe_load_failure(path, exc)`` turns what ``torch.load(weights_only=True)`` or
``load_state_dict`` raised into one line that says what the file is and what was expected:
torch's own messages span many lines, carry ANSI escape codes, or say only ``101`` (a text file).
Stdlib only: the file is sniffed with ``zipfile`` and its first bytes.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

EXPECTED = "a torchvision classifier's state_dict (torch.save(model.state_dict(), FILE))"
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_KEYS_RE = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: ((?:\"[^\"]*\"(?:, )?)+)")
_SIZE_RE = re.compile(r"size mismatch for ([\w.]+): copying a param with shape torch.Size\(\[([\d, ]*)\]\) from "
                      r"checkpoint, the shape in current model is torch.Size\(\[([\d, ]*)\]\)")
# (blocks per stage, bottleneck) -> torchvision name
RESNETS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


def one_line(text: str, limit: int = 200) -> str:
    """``text`` without ANSI escape codes, its whitespace collapsed, cut to ``limit`` characters."""
    text = " ".join(_ANSI_RE.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def sniff(path: str | Path) -> str:
    """What a file looks like, in words ("an empty file", "a text file starting 'hello'", ...)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(256)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return f"a truncated or damaged zip archive ({size} bytes; torch.save writes zip archives)"
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "a torch.save checkpoint"
        return f"a zip archive that is not a torch.save checkpoint (no data.pkl among {len(names)} entries)"
    if head[:1] == b"\x80":
        return "a Python pickle (a legacy torch.save checkpoint, or another pickled object)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"a text file (starting {one_line(text, 40)!r})"
    return f"a binary file of an unknown kind (starting {head[:8].hex(' ')})"


def guess_resnet(state: Mapping[str, object]) -> str | None:
    """The torchvision ResNet a state_dict's keys describe (``resnet34``...), or None."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not ids:
            return None
        blocks.append(max(ids) + 1)
    bottleneck = any(re.match(r"layer1\.0\.conv3\.", k) for k in state)
    return RESNETS.get((tuple(blocks), bottleneck))


def _mismatch(message: str, arch: str | None, state: Mapping[str, object] | None) -> str:
    """The gist of load_state_dict's "Error(s) in loading state_dict" message."""
    parts = []
    for kind, keys in _KEYS_RE.findall(message):
        names = re.findall(r"\"([^\"]*)\"", keys)
        parts.append(f"{len(names)} {kind.lower()} key{'s' if len(names) != 1 else ''} (e.g. {names[0]})")
    sizes = _SIZE_RE.findall(message)
    if sizes:
        name, have, want = sizes[0]
        shape = lambda s: "x".join(x.strip() for x in s.split(",") if x.strip()) or "scalar"  # noqa: E731
        parts.append(f"{len(sizes)} shape mismatch{'es' if len(sizes) != 1 else ''} "
                     f"(e.g. {name}: {shape(have)} in the file, {shape(want)} expected)")
    found = guess_resnet(state) if state is not None else None
    if found and found != arch:
        parts.append(f"it looks like a {found} state_dict; pass --classifier {found}")
    return "; ".join(parts) or one_line(message)


def describe_load_failure(path: str | Path, exc: BaseException, arch: str | None = None,
                          state: Mapping[str, object] | None = None) -> str:
    """One line: why the weights in ``path`` could not be used, what the file is, what was expected.

    exc: what ``torch.load(path, weights_only=True)`` raised, or the RuntimeError of
    ``model.load_state_dict(state)`` (then pass ``arch``, the model's name, and ``state``, the
    loaded dict, to name the architecture the file fits).
    """
    message = str(exc)
    if "Error(s) in loading state_dict" in message:
        return f"{path} does not fit {arch or 'the model'}: {_mismatch(message, arch, state)}"
    g = _GLOBAL_RE.search(_ANSI_RE.sub("", message))
    if g is not None:
        return (f"cannot load weights {path}: it is a pickled Python object ({g.group(1)}), not a state_dict of "
                "tensors; it was refused unread, because unpickling it could run arbitrary code. Load it where you "
                f"trust it and save model.state_dict() instead (expected: {EXPECTED})")
    what = sniff(path)
    clean = _ANSI_RE.sub("", message)
    detail = clean.split("WeightsUnpickler error:", 1)[-1].strip().splitlines() if "WeightsUnpickler error:" in clean else []
    if "Weights only load failed" in clean and what.startswith(("a Python pickle", "a torch.save checkpoint")):
        return (f"cannot load weights {path}: it is {what} holding objects other than tensors "
                f"({one_line(detail[0] if detail else 'not a plain state_dict', 100)}); refused unread, because "
                f"unpickling them could run arbitrary code (expected: {EXPECTED})")
    cause = one_line(detail[0] if detail else message, 80)
    cause = f"{exc.__class__.__name__}: {cause}" if cause else exc.__class__.__name__
    return f"cannot load weights {path}: it is {what}, not {EXPECTED} ({cause})"


def wrong_kind(expected: Mapping, given: Mapping) -> str | None:
    """The first tensor of ``given`` holding integers or booleans where ``expected`` (a model's
    own ``state_dict()``) holds floats, described in words; None when every kind fits.
    ``load_state_dict`` would cast it without a word (an int64 copy of a conv's weights loads,
    truncated, and answers other labels)."""
    import torch  # here: the rest of this module is stdlib only

    for key, want in expected.items():
        got = given.get(key)
        if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and want.is_floating_point() \
                and not (got.is_floating_point() or got.is_quantized):
            return f"{key} holds {str(got.dtype).removeprefix('torch.')} values where the network has floats"
    return None
