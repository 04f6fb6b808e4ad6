"""What a ``--source`` string names, without opening anything, and how it may be shown (stdlib only).

``redact_url`` is the one function that makes a source name safe to show: every log line, error,
``SourceInfo.name``, summary, summary JSON, window title and bench report goes through it. The URL
actually opened stays unmasked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
WEBCAM_RE = re.compile(r"^webcam(?::(\d+))?$")
WEBCAM_PREFIX = "webcam:"

MASK = "***"
# Query (and fragment) keys whose values are secrets, compared case-insensitively.
SECRET_KEYS = frozenset(
    k.lower()
    for k in (
        "token", "access_token", "refresh_token", "id_token", "password", "passwd", "pwd", "pass", "key", "apikey",
        "api_key", "api-key", "secret", "client_secret", "signature", "sig", "auth", "authorization",
        "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature", "X-Goog-Credential",
    )
)
# ...and keys that contain one of these (``camera_password``, ``authToken``, ``x-api-key``,
# ``JSESSIONID``): masking a harmless value costs a little readability, showing a secret costs more.
SECRET_KEY_PARTS = ("token", "pass", "secret", "auth", "credential", "signature", "session", "apikey", "api_key",
                    "api-key", "private")
# ``'`` may be in a URL (an RFC 3986 sub-delimiter, so in a password too): it is taken in, and
# one that ends the URL (``'rtsp://…'`` in a repr) is left out as trailing punctuation below
_ANY_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"<>]+")


def is_live_spec(spec: str) -> bool:
    """A camera, a stream or the demo: sources that run at their own pace and may drop frames."""
    spec = spec.strip()
    return spec == "demo" or bool(WEBCAM_RE.match(spec) or URL_RE.match(spec))


def is_file_spec(spec: str) -> bool:
    """A ``--source`` that names a file (not a camera, a URL or the demo)."""
    s = spec.strip()
    return bool(s) and not (is_live_spec(s) or s.startswith(WEBCAM_PREFIX) or "://" in s)


def bad_webcam_spec(spec: str) -> str | None:
    """Why ``webcam:…`` is not a camera index (None when it is fine or not a webcam spec)."""
    s = spec.strip()
    if not s.startswith(WEBCAM_PREFIX) or WEBCAM_RE.match(s):
        return None
    return f"--source {s}: expected webcam or webcam:N with N a camera index >= 0"


def _secret_key(key: str) -> bool:
    name = unquote(key).strip().lower()
    return name in SECRET_KEYS or name == "sid" or any(p in name for p in SECRET_KEY_PARTS)


def _mask_pairs(text: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***`` (keys compared case-insensitively, percent-decoded)."""
    out = []
    for part in re.split(r"([&;])", text):
        key, eq, value = part.partition("=")
        if eq and _secret_key(key):
            part = f"{key}={MASK}"
        elif eq and "://" in unquote(value):  # a URL in a value (``?next=http://u:pw@host``)
            masked = redact_text(unquote(value))
            if masked != unquote(value):
                part = f"{key}={masked}"
        out.append(part)
    return "".join(out)


def _mask_path_params(path: str) -> str:
    """Path parameters (``/app;jsessionid=x/y``, RFC 3986 ``;key=value`` in a segment) with a
    secret key: ``/app;jsessionid=***/y``."""
    return re.sub(r";([^;/=]+)=([^;/]*)", lambda m: f";{m.group(1)}={MASK}" if _secret_key(m.group(1)) else m.group(0), path)


def redact_url(spec: str) -> str:
    """``spec`` with the password of its userinfo and the values of secret query/fragment keys
    replaced by ``***``; text that holds a URL after something else (``my cam=rtsp://…``, a
    quoted URL) has every URL in it masked (:func:`redact_text`); text without ``://`` is
    returned unchanged.

    A userinfo without a password is masked whole (``https://***@host``): a token passed as the
    user name (``https://ghp_…@host``, ``https://APIKEY@host``) is the secret itself, and a plain
    user name costs little to hide.

    The userinfo ends at the *last* ``@`` before the query (FFmpeg too takes the last ``@``), so
    an ``@`` in a password does not leak its tail, and a raw ``/`` in a password is masked too
    (``urllib.parse.urlsplit`` ends the netloc at the first ``/`` and would leak it; at worst a
    path containing ``@`` is shown with less than it has). A raw ``?`` or ``#`` in a password
    must be percent-encoded (RFC 3986; FFmpeg also ends the authority there).
    """
    if not isinstance(spec, str) or "://" not in spec:
        return spec
    scheme, _, rest = spec.partition("://")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return redact_text(spec)  # a URL inside other text ("my cam=rtsp://...", a quoted URL)
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    userinfo, at, hostpath = head.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            head = f"{user}:{MASK}@{hostpath}"
        elif user:  # no password, or an empty one (``TOKEN:@host``, as in ``curl -u TOKEN:``)
            head = f"{MASK}@{hostpath}"
    host, slash, path = head.partition("/")
    head = host + slash + _mask_path_params(path)
    query, hash_, fragment = tail.partition("#")
    out = f"{scheme}://{head}"
    if query.startswith("?"):
        out += "?" + _mask_pairs(query[1:])
    if hash_:
        out += "#" + _mask_pairs(fragment)
    return out


def redact_text(text: str) -> str:
    """Every URL inside free text (a log line, an error message) passed through ``redact_url``."""
    if not isinstance(text, str) or "://" not in text:
        return text

    def one(m: re.Match) -> str:
        url = m.group(0)
        core = url.rstrip(".,;:)]}'")  # punctuation after a URL in prose is not part of it
        return redact_url(core) + url[len(core) :]

    return _ANY_URL_RE.sub(one, text)
