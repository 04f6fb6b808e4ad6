"""``rtvision fleet``: the streams on Ray actors. Without Ray: resuming a stream at a frame, the
driver's ledger, the message when Ray is not installed, and that the single-machine path never
imports Ray. With Ray (skipped only when the ``ray`` extra is not installed): a local instance on
127.0.0.1, 2 actors with 2 streams each, one actor SIGKILLed mid-run and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import decode_index, make_index_clip

from rtvision import cli
from rtvision.config import ModelConfig, RunConfig, SourceConfig
from rtvision.errors import EXIT_CLUSTER, EXIT_OK, EXIT_USAGE
from rtvision.fleet.actor import Assignment, FleetActor, ResumedSource
from rtvision.fleet.ledger import StreamLedger, format_fleet_summary
from rtvision.sources import FileSource
from rtvision.streams.spec import StreamSpec

pytestmark = pytest.mark.timeout(300)


# -- resuming a stream (no Ray) ------------------------------------------------------------------

def test_a_resumed_file_starts_exactly_at_its_frame_and_numbers_on(index_clip, caplog):
    src = ResumedSource(FileSource(str(index_clip)), 17)
    info = src.open()
    try:
        assert info.first_index == 17 and src.skipped == 17
        for want in range(17, 60):
            assert decode_index(src.read()) == want
        assert src.read() is None  # the end, and no word of a truncated file (skipped frames count as read)
        assert "reading stopped" not in caplog.text
    finally:
        src.close()
    past_end = ResumedSource(FileSource(str(index_clip)), 500)
    past_end.open()
    assert past_end.skipped == 60 and past_end.read() is None
    past_end.close()


def test_an_actor_in_process_resumes_a_file_and_hands_out_every_record(index_clip):
    """The actor without Ray: one stream from its start, one resumed at frame 45; records in
    chunks, each stream in order, pts_s that of the frame in the file."""
    cfg = RunConfig(SourceConfig("template"), ModelConfig(classifier="none", faces="off"), progress=False)
    actor = FleetActor(0)
    reply = actor.start(cfg, [Assignment("a", str(index_clip)), Assignment("b", str(index_clip), 45)])
    assert reply["ok"] and reply["skipped"] == {"b": {"frames": 45, "seconds": reply["skipped"]["b"]["seconds"]}}
    got: dict[str, list] = {"a": [], "b": []}
    chunks = 0
    for _ in range(400):
        r = actor.poll(0.2, max_records=16)
        chunks += bool(r["records"])
        for rec in r["records"]:
            got[rec["stream"]].append((rec["frame"], rec["pts_s"]))
        if r["done"]:
            break
    assert r["done"] and r["summary"]["exit_code"] == EXIT_OK and chunks >= 4
    assert [f for f, _ in got["a"]] == list(range(60))
    assert [f for f, _ in got["b"]] == list(range(45, 60))
    assert got["b"][0][1] == pytest.approx(45 / 25.0)
    assert {n: row["state"] for n, row in r["streams"].items()} == {"a": "ended", "b": "ended"}
    assert actor.thread is not None and not actor.thread.is_alive()


def test_an_actor_whose_shutdown_fails_still_says_done(index_clip, monkeypatch):
    """The pipeline's stop raises at the end of the run: the actor still reports done (with the
    error in its summary), so that the driver does not poll it until its timeout."""
    from rtvision.streams.engine import MultiPipeline

    cfg = RunConfig(SourceConfig("template"), ModelConfig(classifier="none", faces="off"), progress=False)
    real_stop = MultiPipeline.stop

    def failing_stop(self):
        real_stop(self)
        raise RuntimeError("restoring the thread counts failed")

    monkeypatch.setattr(MultiPipeline, "stop", failing_stop)
    actor = FleetActor(0)
    reply = actor.start(cfg, [Assignment("a", str(index_clip))])
    assert reply["ok"]
    frames = []
    for _ in range(200):
        r = actor.poll(0.2)
        frames += [rec["frame"] for rec in r["records"]]
        if r["done"]:
            break
    assert r["done"] and r["summary"]["exit_code"] != EXIT_OK and "thread counts" in r["summary"]["error"]
    assert frames == list(range(60))
    actor.thread.join(5)
    assert not actor.thread.is_alive()


def test_an_actor_whose_streams_all_fail_says_so_without_raising(tmp_path):
    cfg = RunConfig(SourceConfig("template"), ModelConfig(classifier="none", faces="off"), progress=False)
    reply = FleetActor(1).start(cfg, [Assignment("x", str(tmp_path / "missing.mp4"))])
    assert not reply["ok"] and reply["streams_failed"] and "no such file" in reply["streams"]["x"]["error"]
    assert reply["streams"]["x"]["live"] is False
    # a camera that never answers is still a live stream (it was reported as a file)
    cfg = RunConfig(SourceConfig("template", reconnect=0, stall_timeout_s=1.0), ModelConfig(classifier="none", faces="off"),
                    progress=False)
    reply = FleetActor(1).start(cfg, [Assignment("door", "rtsp://admin:pw@127.0.0.1:9/x")])
    assert not reply["ok"] and reply["streams"]["door"]["state"] == "failed" and reply["streams"]["door"]["live"] is True


# -- the driver's ledger (no Ray) -----------------------------------------------------------------

def _rec(stream, frame, tracks=()):
    return {"stream": stream, "frame": frame, "pts_s": frame / 25, "latency_ms": 10.0,
            "faces": [{"xyxy": [0, 0, 1, 1], "score": 0.9, "track_id": t} for t in tracks], "labels": []}


def test_ledger_keeps_order_drops_duplicates_and_counts_what_a_restart_lost():
    led = StreamLedger("cam", "clip.mp4", 0, live=False)
    for i in range(5):
        assert led.accept(_rec("cam", i, tracks=(1, 2)), now=float(i)) is not None
    assert led.accept(_rec("cam", 3), now=5.0) is None and led.duplicates == 1  # already delivered
    led.update({"frames_read": 8, "frames_dropped": 0})  # the actor's last word: 3 frames in flight
    assert led.row()["frames_unfinished"] == 3
    led.restart(now=6.0)
    assert led.next_index == 5 and led.state == "pending"
    out = led.accept(_rec("cam", 7, tracks=(1,)), now=9.0)  # the resumed actor could not give 5 and 6
    assert out["faces"][0]["track_id"] == 3  # shifted past the ids used before the restart
    row = led.row()
    assert row["restarts"] == 1 and row["frames_lost"] == 2
    led.update({"frames_read": 1, "frames_dropped": 0}, final=True)  # the resumed actor read frame 7 only
    row = led.row()
    assert row["frames_read"] == 9 and row["frames_processed"] == 6 and row["frames_unfinished"] == 3
    assert row["restart_log"] == [{"at_frame": 5, "lost": 2, "first_frame": 7, "gap_s": 5.0}]
    live = StreamLedger("door", "rtsp://h/s", 1, live=True)
    live.accept(_rec("door", 0), now=0.0)
    live.restart(now=1.0)
    live.accept(_rec("door", 1), now=4.0)
    assert live.row()["frames_lost"] is None and live.row()["gap_s"] == 4.0  # a live source cannot go back


# -- Ray is optional -------------------------------------------------------------------------------

def test_fleet_without_ray_says_how_to_install_it(monkeypatch, capsys, index_clip):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when not installed
    code = cli.main(["fleet", "--source", str(index_clip), "--classifier", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert err == ['rtvision: error: rtvision fleet needs Ray, an optional extra: pip install -e ".[ray]" '
                   '(in the rtvision checkout)']


def test_fleet_bad_flags_are_one_line_usage_errors(capsys):
    assert cli.main(["fleet", "--classifier", "none"]) == EXIT_USAGE
    assert cli.main(["fleet", "--source", "x.mp4", "--actor-gpus", "-1"]) == EXIT_USAGE
    for line in capsys.readouterr().err.strip().splitlines():
        assert line.startswith("rtvision") and "Traceback" not in line


def test_the_single_machine_path_never_imports_ray(index_clip, tmp_path):
    code = (
        "import sys\n"
        "import rtvision.cli\n"
        "assert 'ray' not in sys.modules, 'import rtvision.cli imported ray'\n"
        f"rc = rtvision.cli.main(['--source', {str(index_clip)!r}, '--headless', '--classifier', 'none', '--faces', 'off',"
        f" '--max-frames', '5', '--results', {str(tmp_path / 'r.jsonl')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'ray' not in sys.modules, 'a plain run imported ray'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 5


# -- on Ray ----------------------------------------------------------------------------------------

def test_fleet_refuses_an_address_nothing_answers_on_in_one_line(capsys, index_clip):
    pytest.importorskip("ray")
    code = cli.main(["fleet", "--source", str(index_clip), "--classifier", "none", "--ray", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_CLUSTER and len(err) == 1 and "cannot reach a Ray cluster at 127.0.0.1:1" in err[0]


@pytest.mark.slow
def test_two_actors_on_a_local_instance_survive_a_sigkill(tmp_path, faces_video):
    """A local Ray instance on 127.0.0.1 with 2 CPUs; 2 actors with 2 streams each (the 1080p
    street clip and three index-coded clips). When the street stream has delivered 8 frames, its
    actor is SIGKILLed (its pid asked from the actor itself). Ray restarts it; its two streams
    resume on the restarted actor at the first frame not delivered: every stream's JSONL is
    complete and in order, nothing is lost, and the summary counts the restart and where each
    stream resumed. The local instance is shut down at the end."""
    ray = pytest.importorskip("ray")
    from rtvision.fleet.driver import FleetDriver

    clips = [make_index_clip(tmp_path / f"index{n}.mp4", n) for n in (60, 60, 60)]
    specs = [StreamSpec("street", str(faces_video)), StreamSpec("a", str(clips[0])),
             StreamSpec("b", str(clips[1])), StreamSpec("c", str(clips[2]))]
    cfg = RunConfig(SourceConfig("template", max_frames=60), ModelConfig(classifier="none", faces="fast"), progress=False)
    results = tmp_path / "fleet.jsonl"
    driver = FleetDriver(cfg, specs, address="auto", local_cpus=2, max_restarts=2, results_path=str(results))
    seen: dict = {"killed": None, "nodes": None, "at": {}}

    def kill_street_actor(rec: dict) -> None:
        if seen["killed"] is None and rec["stream"] == "street" and rec["frame"] >= 8:
            seen["nodes"] = [n["NodeManagerAddress"] for n in ray.nodes()]
            seen["at"] = {n: led.next_index for n, led in driver.ledgers.items()}
            seen["killed"] = pid = driver.slots[0].pid
            os.kill(pid, signal.SIGKILL)

    driver.listeners.append(kill_street_actor)
    t0 = time.monotonic()
    driver.run()
    wall = time.monotonic() - t0
    s = driver.summary()
    assert driver.error is None, driver.error
    print(format_fleet_summary(s))
    print(f"wall {wall:.1f} s")

    # placement: street, b on actor 0; a, c on actor 1; everything on loopback
    assert [a["streams"] for a in s["actors"]] == [["street", "b"], ["a", "c"]]
    assert seen["nodes"] == ["127.0.0.1"] and s["ray"]["nodes"] == ["127.0.0.1"] and s["ray"]["cpus"] == 2
    assert not ray.is_initialized()  # the local instance was shut down

    # the kill: actor 0 came back with a new pid, actor 1 never restarted
    a0, a1 = s["actors"]
    assert a0["pids"][0] == seen["killed"] and len(a0["pids"]) == 2 and a0["pids"][1] != seen["killed"]
    assert a0["restarts"] == 1 and a1["restarts"] == 0 and s["restarts"] == 1
    with pytest.raises(ProcessLookupError):
        os.kill(seen["killed"], 0)

    # every stream complete and in order; the killed actor's streams resumed where delivery stopped
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    by = {r["stream"]: r for r in s["streams"]}
    for name in ("street", "a", "b", "c"):
        assert [r["frame"] for r in rows if r["stream"] == name] == list(range(60)), name
        assert by[name]["state"] == "ended" and by[name]["frames_processed"] == 60
    for name in ("street", "b"):
        log = by[name]["restart_log"]
        assert by[name]["restarts"] == 1 and len(log) == 1
        # resumed at the first frame not delivered when the actor died (the rest of the chunk being
        # written at the kill included), and the restarted actor delivered exactly from there
        assert seen["at"][name] <= log[0]["at_frame"] < 60 and log[0]["first_frame"] == log[0]["at_frame"]
        assert log[0]["lost"] == 0 and by[name]["frames_lost"] == 0
        assert by[name]["duplicates_dropped"] == 0  # the restarted actor began at that frame, not before
    assert seen["at"]["street"] >= 9 and seen["at"]["b"] > 0  # killed mid-run, both streams unfinished
    assert by["a"]["restarts"] == 0 and by["c"]["restarts"] == 0
    for name, r in by.items():  # the counters add up; only a dead actor's frames in flight are unfinished
        assert r["frames_read"] == r["frames_processed"] + r["frames_dropped"] + r["frames_unfinished"], r
        assert r["frames_unfinished"] == 0 or r["restarts"], r
    assert s["frames_lost"] == 0 and s["frames_processed"] == 240 and s["exit_code"] == EXIT_OK

    # track ids stay unique within the stream: the restarted face stage's ids are shifted past the old ones
    resume_at = by["street"]["restart_log"][0]["at_frame"]
    before = {f["track_id"] for r in rows if r["stream"] == "street" and r["frame"] < resume_at for f in r["faces"]}
    after = {f["track_id"] for r in rows if r["stream"] == "street" and r["frame"] >= resume_at for f in r["faces"]}
    assert before and after and not before & after and min(after) > max(before)
    text = format_fleet_summary(s)
    assert "restarts 1, resumed at frame" in text and "lost 0" in text


@pytest.mark.slow
def test_a_restarted_actor_that_dies_before_it_answers_counts_as_two_restarts(tmp_path, index_clip):
    """One actor, one stream. It is SIGKILLed at frame 5; the process Ray starts in its place is
    SIGKILLed too as soon as it shows up, before it can answer; the third one runs the stream to
    its end. The driver sees a single new pid, and Ray restarted twice: the summary says 2, as
    Ray counts (it said 1), and the stream is complete and in order."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("ray")
    import threading

    from rtvision.fleet.driver import FleetDriver

    cfg = RunConfig(SourceConfig("template"), ModelConfig(classifier="none", faces="off"), progress=False)
    results = tmp_path / "fleet.jsonl"
    driver = FleetDriver(cfg, [StreamSpec("cam", str(index_clip))], address="auto", local_cpus=2, max_restarts=3,
                         results_path=str(results))
    seen: dict = {"killed": [], "done": threading.Event()}

    def actor_pids() -> set:  # this test's own: the local instance's processes are its descendants
        out = set()
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any("FleetActor" in part for part in p.cmdline()):
                    out.add(p.pid)
        return out

    def kill_the_next_one(first: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen["done"].is_set():
            for pid in actor_pids() - {first}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    seen["killed"].append(pid)
                return
            time.sleep(0.01)

    def kill_at_frame_5(rec: dict) -> None:
        if not seen["killed"] and rec["frame"] >= 5:
            first = driver.slots[0].pid
            seen["killed"].append(first)
            threading.Thread(target=kill_the_next_one, args=(first,), daemon=True).start()
            os.kill(first, signal.SIGKILL)

    driver.listeners.append(kill_at_frame_5)
    try:
        driver.run()
    finally:
        seen["done"].set()
    s = driver.summary()
    assert driver.error is None, driver.error
    print(format_fleet_summary(s))
    assert len(seen["killed"]) == 2, seen  # the first actor and the one Ray started in its place
    (a,) = s["actors"]
    assert not set(a["pids"][1:]) & set(seen["killed"]), (a["pids"], seen)  # the killed restart never answered
    assert a["restarts"] == 2 and s["restarts"] == 2
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(60)) and s["exit_code"] == EXIT_OK


@pytest.mark.slow
@pytest.mark.parametrize("sig, group, code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)])
def test_ctrl_c_stops_the_actors_and_the_local_instance_cleanly(tmp_path, faces_video, sig, group, code):
    """``rtvision fleet`` in its own process group gets SIGINT there (a terminal's Ctrl-C reaches
    the driver and every Ray process it started), or SIGTERM to the driver alone (a service
    manager's stop; ray.init had put in its own handler: exit 1 or an abort), once results flow:
    exit 130 / 143, no traceback, the summary written with the streams stopped, the JSONL a
    clean in-order prefix of each stream, and no process of the run left behind."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("ray")
    results, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    cmd = [sys.executable, "-m", "rtvision", "fleet", "--source", f"one={faces_video}", "--source", f"two={faces_video}",
           "--classifier", "none", "--results", str(results), "--summary-json", str(summary)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    family: set = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            with contextlib.suppress(psutil.Error):
                family |= {c.pid for c in psutil.Process(p.pid).children(recursive=True)}
            if results.exists() and len(results.read_text().splitlines()) >= 4:
                break
            time.sleep(0.2)
        assert p.poll() is None, "the run ended before it could be interrupted"
        t0 = time.monotonic()
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == code, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out
    s = json.loads(summary.read_text())
    assert s["exit_code"] == code and {r["state"] for r in s["streams"]} <= {"stopped", "ended"}
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    for name in ("one", "two"):
        frames = [r["frame"] for r in rows if r["stream"] == name]
        assert frames == list(range(len(frames)))
    assert len(rows) == s["frames_processed"] and len(rows) < 210
    assert "rtvision fleet: 2 streams on 2 actors" in out
    time.sleep(1.0)
    left = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert family and not left, f"processes of the run still alive: {left}"
    print(f"stopped in {stop_s:.1f} s after {sig.name}; {len(rows)} records")


def test_actors_are_as_many_as_the_cluster_holds_at_most_one_per_stream():
    from rtvision.errors import ClusterError
    from rtvision.fleet.driver import plan_actors

    assert plan_actors(4, cpus=2, gpus=0, actors=None, actor_cpus=1, actor_gpus=0) == 2
    assert plan_actors(3, cpus=16, gpus=0, actors=None, actor_cpus=1, actor_gpus=0) == 3
    assert plan_actors(8, cpus=16, gpus=2, actors=None, actor_cpus=1, actor_gpus=0.5) == 4
    assert plan_actors(2, cpus=2, gpus=0, actors=5, actor_cpus=1, actor_gpus=0) == 2  # one per stream at most
    with pytest.raises(ClusterError, match="no room for 3 actor"):
        plan_actors(4, cpus=2, gpus=0, actors=3, actor_cpus=1, actor_gpus=0)
    with pytest.raises(ClusterError, match="no room for 1 actor"):
        plan_actors(4, cpus=2, gpus=0, actors=None, actor_cpus=4, actor_gpus=0)
