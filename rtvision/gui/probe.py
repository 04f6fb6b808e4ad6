"""Can a Qt window open here? Asked of a short-lived child process, never of this one.

Qt aborts the whole process (SIGABRT, no Python handler runs) when its platform plugin cannot
start: no X server behind ``DISPLAY``, the xcb plugin's system libraries missing, or a plugin
path pointing at another Qt's plugins (the ``opencv-python`` wheel does that on import). So the
question is put to a child process that creates a ``QApplication`` and exits; its exit status and
Qt's own messages (with ``QT_DEBUG_PLUGINS=1``, which names a missing library) say whether the
window can open and, if not, why and how to fix it.

``DisplayProbe.start()`` launches the child and returns at once, so the probe runs while the
models load; ``result()`` waits for it. This module imports no Qt itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 20.0

# What a Linux desktop needs for PyQt5's xcb platform plugin (Debian/Ubuntu package names).
XCB_PACKAGES = (
    "libxcb-icccm4", "libxcb-image0", "libxcb-keysyms1", "libxcb-randr0", "libxcb-render-util0",
    "libxcb-shape0", "libxcb-xinerama0", "libxcb-xkb1", "libxkbcommon-x11-0",
)

_CHILD = (
    "import sys\n"
    "from PyQt5.QtWidgets import QApplication\n"
    "app = QApplication(['rtvision-display-probe'])\n"
    "print('platform=' + app.platformName(), flush=True)\n"
    "screen = app.primaryScreen()\n"
    "print('depth=%d' % (screen.depth() if screen is not None else 0), flush=True)\n"
)
MIN_DEPTH = 16  # bits per pixel: on an 8-bit (PseudoColor) X screen Qt paints nothing (a black window)


def drop_foreign_plugin_path(env: dict | None = None) -> str | None:
    """Remove ``QT_QPA_PLATFORM_PLUGIN_PATH`` when it points at the Qt plugins bundled with the
    ``opencv-python`` wheel (``cv2/qt/plugins``), which PyQt5's Qt cannot load. Returns the removed
    value, if any. A path the user set to anything else is left alone."""
    env = os.environ if env is None else env
    value = env.get("QT_QPA_PLATFORM_PLUGIN_PATH")
    if value and re.search(r"[/\\]cv2[/\\]qt[/\\]plugins", value):
        del env["QT_QPA_PLATFORM_PLUGIN_PATH"]
        return value
    return None


def debian_package(soname: str) -> str:
    """The Debian package that ships a shared library, by Debian's naming rule:
    ``libxcb-icccm.so.4`` -> ``libxcb-icccm4``; ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``."""
    m = re.match(r"(lib[\w.+-]*?)\.so\.(\d+)", soname)
    if not m:
        return soname
    base, major = m.groups()
    return f"{base}-{major}" if base[-1].isdigit() else f"{base}{major}"


def missing_libraries(plugin: str) -> list[str]:
    """Shared libraries that ``plugin`` (a .so) needs and the loader cannot find (``ldd``)."""
    ldd = shutil.which("ldd")
    if not ldd or not Path(plugin).is_file():
        return []
    try:
        out = subprocess.run([ldd, plugin], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line})


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    platform: str | None = None
    reason: str | None = None  # one line: why not, and the fix

    def __bool__(self) -> bool:
        return self.ok


def explain(output: str, returncode: int | None, env: dict) -> str:
    """One line from a failed probe's output: what went wrong and how to fix it."""
    headless = "or pass --headless"
    m = re.search(r"could not connect to display\s*(\S*)", output)
    if m:
        display = m.group(1) or env.get("DISPLAY", "")
        return (f"cannot connect to the X display {display!r} (no X server answers there); "
                f"check DISPLAY (and xauth over ssh), {headless}")
    m = re.search(r"Cannot load library (\S+?\.so):\s*\(([^)]*)\)", output)
    if m:
        plugin, why = m.groups()
        libs = missing_libraries(plugin) or re.findall(r"(lib[\w+-]+(?:\.[\w+-]+)*?\.so(?:\.\d+)*)\s*:", why)
        if libs:
            pkgs = " ".join(sorted({debian_package(Path(lib).name) for lib in libs}))
            return (f"the Qt platform plugin {Path(plugin).name} cannot load its system libraries ({why.strip()}); "
                    f"on Debian/Ubuntu: sudo apt-get install {pkgs} ({headless})")
        return f"the Qt platform plugin {Path(plugin).name} cannot load: {why.strip()} ({headless})"
    m = re.search(r'Could not (?:find|load) the Qt platform plugin "([^"]+)"(?: in "([^"]*)")?', output)
    if m:
        name, where = m.group(1), m.group(2)
        if name == "xcb":
            hint = f"install the xcb libraries (Debian/Ubuntu: sudo apt-get install {' '.join(XCB_PACKAGES)})"
        else:
            hint = "check QT_QPA_PLATFORM"
        if where and env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
            hint = f"QT_QPA_PLATFORM_PLUGIN_PATH={env['QT_QPA_PLATFORM_PLUGIN_PATH']!r} holds no usable plugin: unset it"
        return f"the Qt platform plugin {name!r} could not start; {hint}, {headless}"
    if returncode is not None and returncode < 0:
        return f"Qt aborted while opening the display (signal {-returncode}); {headless}"
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "no output")
    return f"Qt could not open a window ({last[:200]}); {headless}"


class DisplayProbe:
    """A child process that tries to start Qt's platform plugin (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen | None, result: ProbeResult | None, log_path: Path | None,
                 env: dict | None = None) -> None:
        self._proc = proc
        self._env = env or {}
        self._result = result
        self._log_path = log_path

    @classmethod
    def start(cls, env: dict | None = None) -> DisplayProbe:
        env = dict(os.environ if env is None else env)
        drop_foreign_plugin_path(env)
        platform = env.get("QT_QPA_PLATFORM", "")
        if sys.platform.startswith("linux") and not platform and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
            return cls(None, ProbeResult(False, reason="no display: DISPLAY is not set (no X server or Wayland session); "
                                                       "run it on a desktop, or pass --headless"), None)
        env["QT_DEBUG_PLUGINS"] = "1"  # names the library a plugin fails on
        try:
            proc, log_path = cls._spawn(env)
        except OSError as exc:
            return cls(None, ProbeResult(False, reason=f"cannot start the display probe ({exc}); pass --headless"), None)
        return cls(proc, None, log_path, env)

    @staticmethod
    def _spawn(env: dict) -> tuple[subprocess.Popen, Path]:
        fd, name = tempfile.mkstemp(prefix="rtvision-display-probe-", suffix=".log")
        try:
            with os.fdopen(fd, "w") as out:  # a file, not a pipe: QT_DEBUG_PLUGINS output is large
                proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=env)
        except OSError:
            os.unlink(name)
            raise
        return proc, Path(name)

    def result(self, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult:
        """Wait for the child (killed after ``timeout_s``) and say whether a window can open. A
        child that could not connect to an X server that answers this process (one resetting
        itself, see :data:`RETRY_S`) is asked once more, with a connection held. On any answer
        but yes, the held connection is let go."""
        if self._result is None:
            self._result = self._verdict(timeout_s)
            if (not self._result and "cannot connect to the X display" in (self._result.reason or "")
                    and hold_display(self._env.get("DISPLAY"), patience_s=RETRY_S)):
                try:
                    self._proc, self._log_path = self._spawn(self._env)
                except OSError:
                    pass
                else:
                    self._result = self._verdict(timeout_s)
            if not self._result:
                release_display()
            elif _uses_x(self._env):  # the server answered the child: keep a client on it until Qt connects
                hold_display(self._env.get("DISPLAY"), patience_s=RETRY_S)
        return self._result

    def _verdict(self, timeout_s: float) -> ProbeResult:
        assert self._proc is not None and self._log_path is not None
        timed_out = False
        try:
            rc = self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait()
            timed_out = True
        try:
            output = self._log_path.read_text(errors="replace")
        finally:
            self._log_path.unlink(missing_ok=True)
        m = re.search(r"^platform=(\S+)", output, re.M)
        depth = re.search(r"^depth=(\d+)", output, re.M)
        if rc == 0 and m and depth and 0 < int(depth.group(1)) < MIN_DEPTH:
            return ProbeResult(False, reason=f"the X screen has {depth.group(1)}-bit colour; Qt needs at least "
                                             f"{MIN_DEPTH} to draw (e.g. Xvfb -screen 0 1920x1080x24), or pass --headless")
        if rc == 0 and m:
            return ProbeResult(True, platform=m.group(1))
        if timed_out:
            return ProbeResult(False, reason=f"the display did not answer within {timeout_s:.0f} s; pass --headless")
        return ProbeResult(False, reason=explain(output, rc, self._env))

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
        release_display()


def _uses_x(env: dict) -> bool:
    """Whether Qt will open its window on the X display in ``env`` (the xcb platform plugin)."""
    platform = env.get("QT_QPA_PLATFORM", "")
    return bool(env.get("DISPLAY")) and (platform.startswith("xcb") or (not platform and sys.platform.startswith("linux")))


class DisplayGone(RuntimeError):
    """The X server the probe found is no longer there when the window is about to open."""


class _Xcb:
    """libxcb through ctypes (no Qt): connect to an X display, ask whether it worked, disconnect."""

    _lib = None

    @classmethod
    def lib(cls):
        if cls._lib is None:
            import ctypes
            import ctypes.util

            try:
                lib = ctypes.CDLL(ctypes.util.find_library("xcb") or "libxcb.so.1")
            except OSError:
                cls._lib = False
                return None
            lib.xcb_connect.restype = ctypes.c_void_p
            lib.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
            lib.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
            lib.xcb_disconnect.argtypes = [ctypes.c_void_p]
            cls._lib = lib
        return cls._lib or None


# An X server with no client left resets itself (Xvfb and a bare Xorg do, unless started with
# -noreset), and for a moment refuses or drops new connections (EAGAIN, ECONNRESET). A desktop
# always has clients (its window manager), but on a bare X server the probe child, the check
# below and Qt connect one after another, each the only client: the next could land in the reset
# that the one before set off, and Qt aborts the process when its connection fails. So failed
# connections are retried for a moment, and one connection is held from the probe child's answer until
# the window's QApplication is connected (hold_display / release_display).
RETRY_S = 1.5
_held: list[tuple[object, int]] = []


CONNECT_TIMEOUT_S = 5.0  # one connection attempt; a frozen X server never answers libxcb's setup


def _connect_once(xcb, display: str) -> int | None:
    """One ``xcb_connect`` on a helper thread, given up after :data:`CONNECT_TIMEOUT_S` (libxcb
    waits for the server's reply without a timeout, and a signal cannot interrupt a C call on the
    main thread: a frozen server hung the run, Ctrl-C included). A connection that arrives after
    it was given up is closed by its thread."""
    box: dict = {}
    done = threading.Event()

    def attempt() -> None:
        conn = xcb.xcb_connect(display.encode(), None)
        ok = conn is not None and xcb.xcb_connection_has_error(conn) == 0
        with lock:
            if done.is_set() or not ok:  # given up, or failed: an error connection must be freed too
                if conn is not None:
                    xcb.xcb_disconnect(conn)
            else:
                box["conn"] = conn
            done.set()

    lock = threading.Lock()
    threading.Thread(target=attempt, name="rtvision-x-connect", daemon=True).start()
    done.wait(CONNECT_TIMEOUT_S)
    with lock:
        done.set()
        return box.get("conn")


def _may_be_resetting(display: str) -> bool:
    """Whether a failed connection to ``display`` is worth trying again: a local display whose
    socket is there (a server resetting keeps it; where no server runs there is none, and the
    retries only made the run wait 1.5 s longer to say so). Other displays (TCP): yes."""
    m = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    return m is None or Path(f"/tmp/.X11-unix/X{m.group(1)}").exists()


def _connect(display: str, patience_s: float) -> tuple[bool | None, int | None]:
    """(answered, connection): a connection to ``display``, retried for ``patience_s`` seconds
    where the server may be resetting; (None, None) when libxcb cannot be loaded."""
    xcb = _Xcb.lib()
    if xcb is None:
        return None, None
    deadline = time.monotonic() + patience_s
    while True:
        conn = _connect_once(xcb, display)
        if conn is not None:
            return True, conn
        if time.monotonic() >= deadline or not _may_be_resetting(display):
            return False, None
        time.sleep(0.05)


def x_display_answers(display: str | None = None, patience_s: float = RETRY_S) -> bool | None:
    """Whether an X server answers at ``display`` (``$DISPLAY``) now: libxcb's own connect, in
    this process, in about a millisecond when it does (no Qt); a refused connection is tried
    again for ``patience_s`` seconds (a server resetting itself). None when it cannot be asked
    (no libxcb, or no X display named, e.g. Wayland or offscreen).

    The probe child answers while the models load, seconds before the window opens; an X server
    that goes away in between would make Qt abort this process when it creates its application.
    Asking again right before that narrows the gap to nothing a user can hit by hand."""
    display = os.environ.get("DISPLAY") if display is None else display
    if not display:
        return None
    answered, conn = _connect(display, patience_s)
    if conn is not None:
        _Xcb.lib().xcb_disconnect(conn)
    return answered


def hold_display(display: str | None = None, patience_s: float = 0.0) -> bool | None:
    """Connect to the X display and keep that connection until :func:`release_display`, so that
    the server is never left without a client (and never resets) while the window is on its way.
    Returns whether it connected (None when it cannot be asked); holding twice is a no-op."""
    display = os.environ.get("DISPLAY") if display is None else display
    if _held:
        return True
    if not display:
        return None
    answered, conn = _connect(display, patience_s)
    if conn is not None:
        _held.append((_Xcb.lib(), conn))
    return answered


def release_display() -> None:
    """Close the connection :func:`hold_display` opened, if any."""
    while _held:
        xcb, conn = _held.pop()
        xcb.xcb_disconnect(conn)
