"""A network camera on 127.0.0.1 that goes offline: the bench's failing stream.

``OfflineCamera(clip, offline_after_frames)`` serves ``clip`` over HTTP as a live MPEG-TS
stream (the clip's own packets remuxed by PyAV, no re-encoding, each sent when its timestamp is
due, and no faster than the reader takes them), the way an IP camera or an encoder's HTTP output
does. Once it has sent ``offline_after_frames`` frames, the camera goes away: the connection is
closed mid-stream and the port refuses every later connection, so a reader sees its stream end
and its reconnects fail, as when a camera loses power. (A count of frames, not a time: the
reader may open the stream seconds before it starts reading, while its models load.) With
``hang=True`` it goes silent instead, every connection left open, as a hung camera does.

    with OfflineCamera("clip.mp4", offline_after_frames=100) as cam:
        run rtvision with --source cam.url
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


STREAMABLE_CODECS = ("h264", "hevc")  # what cameras send, and what MPEG-TS carries with its headers in-band


def streamable_clip(clip: str, folder: str | Path) -> str:
    """``clip`` itself when its video is H.264 or HEVC, else an H.264 copy of it written once
    into ``folder`` (e.g. MPEG-4 Part 2 from OpenCV's ``mp4v`` loses its headers in MPEG-TS)."""
    import av

    with av.open(str(clip)) as src:
        video = src.streams.video[0]
        if video.codec_context.name in STREAMABLE_CODECS:
            return str(clip)
        out_path = Path(folder) / (Path(clip).stem + "-h264.mp4")
        rate = video.average_rate or 25
        with av.open(str(out_path), mode="w") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height = video.codec_context.width, video.codec_context.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "18", "g": str(int(round(float(rate))))}
            for frame in src.decode(video):
                frame.pts = None
                for pkt in stream.encode(frame.reformat(format="yuv420p")):
                    out.mux(pkt)
            for pkt in stream.encode():
                out.mux(pkt)
    return str(out_path)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        import av

        cam = self.server.camera
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        src = av.open(cam.clip)
        out = None
        try:
            video = src.streams.video[0]
            out = av.open(self.wfile, mode="w", format="mpegts")
            ostream = out.add_stream_from_template(video)
            t0 = time.monotonic()
            for loop in range(cam.loops):
                base = loop * float(video.duration * video.time_base) if video.duration else 0.0
                if loop:
                    src.seek(0)
                for pkt in src.demux(video):
                    if pkt.dts is None or pkt.pts is None:
                        continue  # the demuxer's flush packet
                    if cam.packets_sent >= cam.offline_after_frames:
                        if cam.hang:  # a hung camera: the connection stays open, silent
                            cam.closed.wait()
                            return
                        cam.go_offline()
                    if cam.offline.is_set():
                        return
                    wait = t0 + base + float(pkt.pts * video.time_base) - time.monotonic()
                    if wait > 0 and cam.offline.wait(wait):
                        return
                    pkt.pts += int(base / video.time_base)
                    pkt.dts += int(base / video.time_base)
                    pkt.stream = ostream
                    out.mux(pkt)
                    self.wfile.flush()
                    cam.packets_sent += 1
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the reader went away
        finally:
            if out is not None:
                try:
                    out.close()
                except Exception:  # a closed socket: nothing left to finish
                    pass
            src.close()

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    camera: OfflineCamera


class OfflineCamera:
    """See the module docstring. ``loops``: how many times the clip plays before the stream ends
    by itself (it goes offline long before, in the bench)."""

    def __init__(self, clip: str, offline_after_frames: int, loops: int = 100, hang: bool = False) -> None:
        self.clip = str(clip)
        self.offline_after_frames = max(1, int(offline_after_frames))
        self.loops = max(1, int(loops))
        self.hang = hang  # instead of going away, go silent with every connection left open
        self.closed = threading.Event()
        self.offline = threading.Event()
        self.packets_sent = 0
        self._server: _Server | None = None
        self._serve: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/camera.ts"

    def start(self) -> OfflineCamera:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.camera = self
        self._serve = threading.Thread(target=self._server.serve_forever, name="rtvision-bench-camera", daemon=True)
        self._serve.start()
        return self

    def go_offline(self) -> None:
        """Close the stream and refuse every later connection (idempotent)."""
        with self._lock:
            if self.offline.is_set():
                return
            self.offline.set()
        if self._server is not None:
            threading.Thread(target=self._shutdown, name="rtvision-bench-camera-stop", daemon=True).start()

    def _shutdown(self) -> None:
        assert self._server is not None
        self._server.shutdown()  # waits for serve_forever to return
        self._server.server_close()  # the port now refuses connections

    def close(self) -> None:
        self.closed.set()
        self.go_offline()
        if self._serve is not None:
            self._serve.join(timeout=10)

    def __enter__(self) -> OfflineCamera:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
