"""What a ``--source`` string names, without opening anything (stdlib only)."""

from __future__ import annotations

import re

URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
WEBCAM_RE = re.compile(r"^webcam(?::(\d+))?$")


def is_live_spec(spec: str) -> bool:
    """A camera, a stream or the demo: sources that run at their own pace and may drop frames."""
    spec = spec.strip()
    return spec == "demo" or bool(WEBCAM_RE.match(spec) or URL_RE.match(spec))


def redact_url(spec: str) -> str:
    """Hide the password of ``scheme://user:password@host`` (never log or show it)."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", spec)
