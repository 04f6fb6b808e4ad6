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
        fd, name = tempfile.mkstemp(prefix="rtvision-display-probe-", suffix=".log")
        try:
            with os.fdopen(fd, "w") as out:  # a file, not a pipe: QT_DEBUG_PLUGINS output is large
                proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=env)
        except OSError as exc:
            os.unlink(name)
            return cls(None, ProbeResult(False, reason=f"cannot start the display probe ({exc}); pass --headless"), None)
        return cls(proc, None, Path(name), env)

    def result(self, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult:
        """Wait for the child (killed after ``timeout_s``) and say whether a window can open."""
        if self._result is not None:
            return self._result
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
            self._result = ProbeResult(False, reason=f"the X screen has {depth.group(1)}-bit colour; Qt needs at least "
                                                     f"{MIN_DEPTH} to draw (e.g. Xvfb -screen 0 1920x1080x24), or pass --headless")
        elif rc == 0 and m:
            self._result = ProbeResult(True, platform=m.group(1))
        elif timed_out:
            self._result = ProbeResult(False, reason=f"the display did not answer within {timeout_s:.0f} s; pass --headless")
        else:
            self._result = ProbeResult(False, reason=explain(output, rc, self._env))
        return self._result

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)


class DisplayGone(RuntimeError):
    """The X server the probe found is no longer there when the window is about to open."""


def x_display_answers(display: str | None = None) -> bool | None:
    """Whether an X server answers at ``display`` (``$DISPLAY``) now: libxcb's own connect, in
    this process, in about a millisecond (no Qt). None when it cannot be asked (no libxcb, or no
    X display named, e.g. Wayland or offscreen).

    The probe child answers while the models load, seconds before the window opens; an X server
    that goes away in between would make Qt abort this process when it creates its application.
    Asking again right before that narrows the gap to nothing a user can hit by hand."""
    import ctypes
    import ctypes.util

    display = os.environ.get("DISPLAY") if display is None else display
    if not display:
        return None
    name = ctypes.util.find_library("xcb") or "libxcb.so.1"
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return conn is not None and xcb.xcb_connection_has_error(conn) == 0
    finally:
        if conn is not None:
            xcb.xcb_disconnect(conn)  # an error connection must be freed too
