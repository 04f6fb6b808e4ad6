"""Source names are safe to show: URL passwords and secret query values are masked everywhere
(log, errors, SourceInfo.name, summary, summary JSON, bench report), while the URL opened is not."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rtvision.specs import redact_text, redact_url

REPO = Path(__file__).resolve().parents[1]

URLS = [
    # (given, shown)
    ("rtsp://admin:s3cret@10.0.0.1:554/live", "rtsp://admin:***@10.0.0.1:554/live"),
    ("http://user:hunter2@LEAKME@127.0.0.1:8765/c.mp4", "http://user:***@127.0.0.1:8765/c.mp4"),  # '@' in the password
    ("rtsp://admin:se/cret@127.0.0.1:1/x", "rtsp://admin:***@127.0.0.1:1/x"),  # '/' in the password
    ("rtsp://u:a:b:c@h/s", "rtsp://u:***@h/s"),  # ':' in the password
    ("rtsp://u:p%40ss%2Fw@h/s", "rtsp://u:***@h/s"),  # percent-encoded
    ("rtsp://u:pw@[::1]:8554/s", "rtsp://u:***@[::1]:8554/s"),  # IPv6 host
    ("rtsp://u:pw@[fe80::1%25eth0]/s", "rtsp://u:***@[fe80::1%25eth0]/s"),
    ("rtsp://user@h/s", "rtsp://***@h/s"),  # no password: the user name may be a token
    ("https://ghp_0123456789abcdef@h/v.m3u8", "https://***@h/v.m3u8"),  # a token as the user name
    ("rtsp://tok123:@h/s", "rtsp://***@h/s"),  # an empty password: the user name may be the token
    ("rtsp://h:554/s", "rtsp://h:554/s"),
    ("https://h/a.m3u8?token=abc&x=1", "https://h/a.m3u8?token=***&x=1"),
    ("https://h/a?A=1&Password=x&PWD=y;key=z&apikey=k", "https://h/a?A=1&Password=***&PWD=***;key=***&apikey=***"),
    ("https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://h/v?access_token=t#frag", "https://h/v?access_token=***#frag"),
    ("https://h/cb#access_token=t&state=1", "https://h/cb#access_token=***&state=1"),  # fragment secrets
    ("http://u:pw@h/v?sig=1&auth=2&secret=3&passwd=4&api_key=5&signature=6",
     "http://u:***@h/v?sig=***&auth=***&secret=***&passwd=***&api_key=***&signature=***"),
    ("https://h/v?tok%65n=abc", "https://h/v?tok%65n=***"),  # percent-encoded key
    ("https://h/v?token", "https://h/v?token"),  # a key without a value
    ("rtsp://h/s?camera_password=a&authToken=b&x-api-key=c&JSESSIONID=d&sid=e&channel=1",  # keys that contain one
     "rtsp://h/s?camera_password=***&authToken=***&x-api-key=***&JSESSIONID=***&sid=***&channel=1"),
    ("http://127.0.0.1:9/app;jsessionid=SECRETS4/x.ts", "http://127.0.0.1:9/app;jsessionid=***/x.ts"),  # path parameters
    ("rtsp://u:pw@h/a;JSESSIONID=s;v=1/b?token=t", "rtsp://u:***@h/a;JSESSIONID=***;v=1/b?token=***"),
    ("front door=rtsp://admin:pw@h/x", "front door=rtsp://admin:***@h/x"),  # a URL after other text
    ('"rtsp://admin:pw@h/y"', '"rtsp://admin:***@h/y"'),  # quoted
    ("cam:1=rtsp://u:pw@h/s", "cam:1=rtsp://u:***@h/s"),
    ("clip.mp4", "clip.mp4"),  # not a URL
    ("webcam:0", "webcam:0"),
    ("demo", "demo"),
    ("srt://u:pw@h:9000", "srt://u:***@h:9000"),  # any scheme
    ("rtsp://admin:S3'CRET@h:9/x", "rtsp://admin:***@h:9/x"),  # "'" in the password (RFC 3986 allows it)
    ("http://h:9/v.mp4?next=http://u:S3CRET@h/x", "http://h:9/v.mp4?next=http://u:***@h/x"),  # a URL in a value
    ("http://h/v?next=http%3A%2F%2Fu%3AS3CRET%40h%2Fx&a=1", "http://h/v?next=http://u:***@h/x&a=1"),  # encoded
]


@pytest.mark.parametrize("given, shown", URLS)
def test_redact_url_table(given, shown):
    assert redact_url(given) == shown
    assert redact_url(shown) == shown  # idempotent


def test_redact_text_masks_every_url_in_prose():
    text = "cannot open rtsp://a:hunter2@h/x; retry http://h/?token=SECRETTOK, then (rtsp://u:pw@h/y)."
    out = redact_text(text)
    assert "hunter2" not in out and "SECRETTOK" not in out and ":pw@" not in out
    assert out == "cannot open rtsp://a:***@h/x; retry http://h/?token=***, then (rtsp://u:***@h/y)."
    # a "'" in a password, and URLs quoted the way Python's repr quotes them
    assert redact_text("unrecognized arguments: rtsp://admin:S3'CRET@h:9/x") == "unrecognized arguments: rtsp://admin:***@h:9/x"
    assert redact_text("['rtsp://a:b@h/x', \"rtsp://c:d'e@h/y\"]") == "['rtsp://a:***@h/x', \"rtsp://c:***@h/y\"]"


def test_stream_source_shows_masked_and_opens_unmasked():
    from rtvision.sources import StreamSource

    url = "rtsp://admin:se/cret@127.0.0.1:1/x?token=SECRETTOK"
    src = StreamSource(url, timeout_s=0.5)
    assert src.info.name == "rtsp://admin:***@127.0.0.1:1/x?token=***"
    assert src._target == url  # the URL actually opened keeps its credentials


def test_file_source_named_like_a_url_is_masked():
    from rtvision.errors import InputError
    from rtvision.sources import FileSource

    with pytest.raises(InputError) as exc:
        FileSource("ftp://u:hunter2@h/v.mp4").open()
    assert "hunter2" not in str(exc.value) and "u:***@h" in str(exc.value)


def test_log_lines_are_masked(capsys):
    from rtvision.cli import setup_logging

    setup_logging(0)
    logging.getLogger("rtvision.test").warning("lost %s", "rtsp://u:hunter2@h/x?key=SECRETTOK")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "SECRETTOK" not in err and "rtsp://u:***@h/x?key=***" in err


def test_bench_report_arguments_are_masked():
    import argparse

    from rtvision.bench import report_arguments

    args = argparse.Namespace(source="rtsp://u:hunter2@h/x?sig=SECRETTOK", frames=3, variants="naive", out=None)
    recorded = report_arguments(args)
    assert recorded["source"] == "rtsp://u:***@h/x?sig=***" and recorded["frames"] == 3
    assert "hunter2" not in json.dumps(recorded) and "SECRETTOK" not in json.dumps(recorded)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a) -> None:  # keep the test output clean
        pass


@pytest.fixture
def http_clip(tmp_path):
    """A fragmented MP4 (readable without seeking) served on 127.0.0.1 by a stdlib HTTP server."""
    import cv2
    from conftest import make_index_clip

    from rtvision.sinks import VideoSink

    src = make_index_clip(tmp_path / "src.mp4", 20)
    served = tmp_path / "www"
    served.mkdir()
    cap = cv2.VideoCapture(str(src))
    with VideoSink(served / "c.mp4", 25.0) as sink:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            sink.write(img)
    cap.release()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_real_stream_run_leaks_no_secret(http_clip, tmp_path):
    """A real run over HTTP with a password holding '@' and a token in the query: it reads
    frames (so the URL opened kept its credentials), reconnects at the end of the clip (warnings
    name the source), and the secret appears in no output: stdout, stderr, JSONL, video, summary JSON."""
    url = f"http://user:hunter2@LEAKME@127.0.0.1:{http_clip}/c.mp4?token=SECRETTOK&x=1"
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "rtvision", "--source", url, "--headless", "--no-progress", "-v", "--classifier", "none",
         "--faces", "off", "--max-frames", "30", "--results", "r.jsonl", "--save", "v.mp4", "--summary-json", "s.json"],
        cwd=out, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    shown = f"http://user:***@127.0.0.1:{http_clip}/c.mp4?token=***&x=1"
    summary = json.loads((out / "s.json").read_text())
    assert summary["source"] == shown and summary["frames_processed"] > 0
    assert shown in r.stdout and shown in r.stderr  # the summary and the reconnect warnings name it, masked
    blobs = [r.stdout.encode(), r.stderr.encode()] + [p.read_bytes() for p in out.iterdir()]
    for secret in (b"hunter2", b"LEAKME", b"SECRETTOK"):
        assert not any(secret in b for b in blobs), secret


def test_unreachable_stream_leaks_no_secret(tmp_path):
    url = "rtsp://admin:se/cret@127.0.0.1:1/x?token=SECRETTOK"
    r = subprocess.run(
        [sys.executable, "-m", "rtvision", "--source", url, "--headless", "--no-progress", "-vv", "--reconnect", "1",
         "--stall-timeout", "1", "--classifier", "none", "--faces", "off", "--summary-json", "s.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 4
    for secret in ("se/cret", "SECRETTOK"):
        assert secret not in r.stdout and secret not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "rtvision: error: cannot open stream rtsp://admin:***@127.0.0.1:1/x?token=***"
    assert list(tmp_path.iterdir()) == []  # the summary JSON claimed up front was removed, empty


def test_a_stream_that_never_opens_leaks_no_secret_in_a_multi_stream_summary(faces_video, tmp_path):
    """--sources with two unreachable cameras with passwords and tokens next to a real file: the
    summary JSON and the text summary name them masked, and say why they failed, masked too."""
    listing = tmp_path / "cams.txt"
    listing.write_text(f"cam1=rtsp://user:hunter2@127.0.0.1:1/x\nhttp://u:LEAKME@127.0.0.1:1/v.mp4?token=SECRETTOK\n"
                       f"q=rtsp://admin:QU'OTE@127.0.0.1:1/y\nf={faces_video}\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "rtvision", "--sources", str(listing), "--headless", "--no-progress", "--reconnect", "1",
         "--stall-timeout", "1", "--classifier", "none", "--faces", "off", "--max-frames", "5", "--summary-json", "s.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 7, r.stderr[-2000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    rows = {row["stream"]: row for row in summary["streams"]}
    assert rows["cam1"]["source"] == "rtsp://user:***@127.0.0.1:1/x" and rows["cam1"]["state"] == "failed"
    assert rows["cam1"]["error"] and rows["f"]["frames_processed"] == 5
    blobs = [r.stdout, r.stderr, (tmp_path / "s.json").read_text()]
    assert rows["q"]["source"] == "rtsp://admin:***@127.0.0.1:1/y"
    for secret in ("hunter2", "LEAKME", "SECRETTOK", "QU'OTE", "OTE@"):
        assert not any(secret in b for b in blobs), secret


@pytest.mark.parametrize("argv", [["rtsp://user:hunter2@127.0.0.1:1/x?token=SECRETTOK"],
                                  ["--classifier", "rtsp://user:hunter2@h/x?token=SECRETTOK"],
                                  ["fleet", "rtsp://user:hunter2@h/x?token=SECRETTOK"],
                                  ["rtsp://user:hunter2'SECRETTOK@h/x"]])
def test_a_usage_error_quoting_a_url_masks_its_secrets(argv):
    """A URL given where a flag was expected (a forgotten --source): argparse quotes it in its
    one-line error, masked."""
    r = subprocess.run([sys.executable, "-m", "rtvision", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "***" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for secret in ("hunter2", "SECRETTOK"):
        assert secret not in r.stderr and secret not in r.stdout
