"""stream.py --config: a site of cameras in one process, served by the ffmpeg command line over loopback
TCP, with the stand-in I3D (helpers.GridProbe). Two cameras share I3D batches; one that is down at start
is retried and scores once it comes up, one that never comes up ends alone while the others go on; a
camera whose resolution (and aspect) changes mid-stream keeps scoring and writes its clips; events reach
a real local HTTP server and /metrics names every camera. A restart after kill -9 continues every file,
a torn last line trimmed and reported; rollover and retention; the site file's one-line errors."""
import csv
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import av
import pytest
import torch

import live.site
import stream
from conftest import ROOT, free_port
from helpers import GridProbe, serve_ts, write_sized_ts
from live.outputs import AppendedFile, Outputs, resume_point, rolled_files, trim_torn_line
from model import BNWVAD
from utils import InputError, run_cli, save_checkpoint

STANDIN = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; import stream, helpers; "
           "stream.load_i3d = lambda path, device: helpers.GridProbe().to(device); stream.run_cli(stream.main)")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A plain camera's MPEG-TS (9 snippets) and one whose frames go 640x360 -> 320x180 -> 256x320."""
    folder = tmp_path_factory.mktemp("site")
    plain = write_sized_ts(folder / "plain.ts", [(320, 256)], seconds=6.0)
    sized = write_sized_ts(folder / "sized.ts", [(640, 360), (320, 180), (256, 320)])
    torch.manual_seed(0)
    checkpoint = folder / "ckpt.pkl"
    save_checkpoint(checkpoint, BNWVAD(1024).eval(), 1, {"AP": 1.0})
    return dict(plain=plain, sized=sized, checkpoint=checkpoint, folder=folder)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def standin(monkeypatch):
    monkeypatch.setattr(stream, "load_i3d", lambda path, device: GridProbe().to(device))


def toml_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def site_file(path, checkpoint, out, cameras, top="", tables=""):
    lines = [f'model_path = "{checkpoint}"', f'output_dir = "{out}"', top, tables]
    for name, keys in cameras.items():
        lines.append(f"[cameras.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def lines_json(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_site_cameras_share_batches_survive_each_other_and_alert(sources, tmp_path, hook_server, monkeypatch, capsys):
    """Three cameras: 'yard' is down at start and comes up after its first attempt; 'lobby' changes resolution and
    aspect mid-stream with clips on; 'gate' never comes up. yard and lobby score every snippet, share
    I3D passes and send their events (start and end) to the webhook; gate ends alone; /metrics names
    all three."""
    ports = dict(yard=free_port(), lobby=free_port(), gate=free_port())
    metrics_port = free_port()
    out = tmp_path / "site"
    config = site_file(tmp_path / "site.toml", sources["checkpoint"], out, {
        "yard": dict(source=f"tcp://127.0.0.1:{ports['yard']}", threshold=-1e9, reconnect="4s"),
        "lobby": dict(source=f"tcp://127.0.0.1:{ports['lobby']}", threshold=-1e9, save_clips=True, pre_roll=0.5,
                      post_roll=0.5),
        "gate": dict(source=f"tcp://127.0.0.1:{ports['gate']}", reconnect="1"),
    }, top='window = 4\nreconnect = "0"\ni3d_batch = 6\nthreshold = 1e9\nstatus_every = 0.5',
        tables=f'[alerts]\nwebhook = "{hook_server.url}"\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"')
    # which cameras' snippets each I3D pass held
    passes, seen = [0], []
    features = live.site.snippet_features

    def counted(*a):
        if passes[0] == 0:      # the first pass waits for yard to be up, so both have snippets waiting after it
            deadline = time.monotonic() + 30
            while not (out / "yard" / "stream.log").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        passes[0] += 1
        return features(*a)
    monkeypatch.setattr(live.site, "snippet_features", counted)
    process = live.site.SiteCamera.process
    monkeypatch.setattr(live.site.SiteCamera, "process",
                        lambda self, *a: (seen.append((passes[0], self.name)), process(self, *a))[1])
    scrapes, stop = [], threading.Event()

    def scrape():
        while not stop.is_set():
            try:
                scrapes.append(urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read()
                               .decode())
            except OSError:
                pass
            stop.wait(0.2)
    servers = [serve_ts(sources["sized"], ports["lobby"])]
    say = live.site.SiteCamera.say

    def up_after_first_failure(self, message):          # yard's server starts once its first open has failed
        if self.name == "yard" and len(servers) == 1:
            servers.append(serve_ts(sources["plain"], ports["yard"]))
        say(self, message)
    monkeypatch.setattr(live.site.SiteCamera, "say", up_after_first_failure)
    threading.Thread(target=scrape, daemon=True).start()
    try:
        with pytest.raises(SystemExit) as exit_info:            # gate failed: status 1, the others ran on
            stream.main(["--config", str(config), "--i3d_weights", "x.pt", "--device", "cpu"])
    finally:
        stop.set()
        for server in servers:
            server.kill()
            server.wait()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "gate: error: cannot open" in err and "2 of 3 cameras ended without error; gate error" in err
    assert "yard: tcp://" in err and "opening attempt 1 failed" in err          # down at start: retried
    for name, snippets in (("yard", 9), ("lobby", 9)):
        scored = rows(out / name / "scores.csv")
        assert [int(r[1]) for r in scored] == list(range(snippets)), name
        assert all(r[0] == name for r in scored)
    assert not (out / "gate" / "scores.csv").exists()
    # the size change is said once and the clip holds the whole event at the first size
    log = (out / "lobby" / "stream.log").read_text()
    assert log.count("its picture changes size") == 1
    (event,) = lines_json(out / "lobby" / "events.jsonl")
    with av.open(str(out / "lobby" / event["clip"])) as clip:
        frames = list(clip.decode(video=0))
    assert (frames[0].width, frames[0].height) == (640, 360) and len(frames) == 144
    # shared batches: some I3D pass held snippets of both cameras
    by_pass = {}
    for n, name in seen:
        by_pass.setdefault(n, set()).add(name)
    assert any(names == {"yard", "lobby"} for names in by_pass.values())
    # the webhook got each camera's event at its start and its end; /metrics named every camera
    got = sorted((b["camera"], b["state"], b["event"]) for b in hook_server.bodies)
    assert got == [("lobby", "end", 1), ("lobby", "start", 1), ("yard", "end", 1), ("yard", "start", 1)]
    end = next(b for b in hook_server.bodies if b["camera"] == "lobby" and b["state"] == "end")
    assert end == {**event, "camera": "lobby", "state": "end"}
    assert any(all(f'camera="{name}"' in text for name in ports) for text in scrapes), scrapes[-1:]


def test_restart_after_kill9_continues_every_file(sources, tmp_path, capsys):
    """stream.py --config killed with SIGKILL mid-run, a torn line left in scores.csv and events.jsonl,
    then the same command again: both files continue (the earlier rows kept, numbers going on), each torn
    line is trimmed and reported with its bytes, and every line parses."""
    port = free_port()
    out = tmp_path / "site"
    config = site_file(tmp_path / "site.toml", sources["checkpoint"], out,
                       {"cam": dict(source=f"tcp://127.0.0.1:{port}", threshold=-1e9)},
                       top='window = 4\nreconnect = "0"')
    server = serve_ts(sources["plain"], port, realtime=True)
    process = subprocess.Popen([sys.executable, "-c", STANDIN, str(ROOT), str(ROOT / "tests"), "--config",
                                str(config), "--i3d_weights", "x.pt", "--device", "cpu"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scores = out / "cam" / "scores.csv"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not scores.exists() or len(rows(scores)) < 3):
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        server.kill()
        server.wait()
    before = scores.read_text()
    kept = rows(scores)
    assert len(kept) >= 3
    with open(scores, "a") as f:
        f.write("cam,99,0.5")                                       # a write cut short by the kill
    events = out / "cam" / "events.jsonl"
    events.write_text(json.dumps(dict(event=4, video="cam")) + "\n" + '{"video": "cam", "ev')
    server = serve_ts(sources["plain"], port)
    try:
        stream.main(["--config", str(config), "--i3d_weights", "x.pt", "--device", "cpu"])
    finally:
        server.kill()
        server.wait()
    err = capsys.readouterr().err
    assert f"{scores}: dropped a torn last line (10 bytes)" in err
    assert f"{events}: dropped a torn last line (20 bytes)" in err
    assert scores.read_text().startswith(before)                    # nothing before the torn line is lost
    after = rows(scores)
    assert [int(r[1]) for r in after] == list(range(len(kept) + 9))
    assert float(after[len(kept)][5]) >= float(kept[-1][6])        # stream time goes on, the outage counted
    assert [e["event"] for e in lines_json(events)] == [4, 5]       # event numbers go on after the last kept
    assert "continuing the earlier run's outputs at snippet" in (out / "cam" / "stream.log").read_text()


def test_rollover_by_size_and_day_with_retention(tmp_path):
    old = time.time() - 10 * 86400
    # by size: a file over the size is rolled before the next line, the header starting the new one
    f = AppendedFile(tmp_path / "scores.csv", "a,b\r\n", rollover=20)
    for i in range(8):
        f.write(f"row,{i}\r\n")
    f.close()
    rolled = rolled_files(tmp_path / "scores.csv")
    texts = [p.read_bytes().decode() for p in rolled + [tmp_path / "scores.csv"]]
    assert len(rolled) == 2 and all(t.startswith("a,b\r\n") for t in texts)
    assert "".join(t[5:] for t in texts) == "".join(f"row,{i}\r\n" for i in range(8))   # nothing lost
    # by day: a file last written yesterday is rolled to its day's name when the run starts (or goes on)
    log = tmp_path / "stream.log"
    log.write_text("yesterday\n")
    yesterday = time.time() - 86400
    os.utime(log, (yesterday, yesterday))
    ancient = tmp_path / "stream.2000-01-01.log"
    ancient.write_text("old\n")
    os.utime(ancient, (old, old))
    notes = []
    f = AppendedFile(log, rollover="day", keep_days=7, note=notes.append)
    f.write("today\n")
    f.close()
    day = datetime.date.fromtimestamp(yesterday).isoformat()
    assert (tmp_path / f"stream.{day}.log").read_text() == "yesterday\n" and log.read_text() == "today\n"
    assert not ancient.exists() and notes == ["removed 1 rolled file older than 7 days: stream.2000-01-01.log"]
    # a restart just after a roll finds where it stopped in the rolled file
    out = Outputs(tmp_path / "cam", "cam", quiet=True)
    out.close()
    (tmp_path / "cam" / "scores.2026-01-01.csv").write_text(
        "video,snippet,score,calibrated,start_s,end_s,wall_time\r\ncam,41,0.1,,64.0,64.64,2026-01-01T10:00:00+00:00\r\n")
    resume, last_event = resume_point(tmp_path / "cam")
    assert (resume.index, resume.end_s, last_event) == (42, 64.64, 0)
    # a torn line is cut at the last newline, and only there
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b'{"a": 1}\n{"b"')
    assert trim_torn_line(torn) == 4 and torn.read_bytes() == b'{"a": 1}\n' and trim_torn_line(torn) == 0


def test_size_change_keeps_a_single_camera_run_going_with_clips(sources, tmp_path, monkeypatch):
    """The same resolution change through stream.py's single-camera command line, clips on."""
    port = free_port()
    server = serve_ts(sources["sized"], port)
    out = tmp_path / "one"
    try:
        stream.main([f"tcp://127.0.0.1:{port}", "--model_path", str(sources["checkpoint"]), "--i3d_weights", "x",
                     "--device", "cpu", "--threshold=-1e9", "--save_clips", "--window", "4", "--reconnect", "0",
                     "--output_dir", str(out)])
    finally:
        server.kill()
        server.wait()
    assert len(rows(out / "scores.csv")) == 9
    assert json.loads((out / "metrics.json").read_text())["end_reason"].startswith("source lost")
    assert (out / lines_json(out / "events.jsonl")[0]["clip"]).exists()


@pytest.mark.parametrize("text, message", [
    ('[cameras.a]\nsource = "tcp://h:1"\nthreshhold = 3', "cameras.a.threshhold: unknown key"),
    ('[cameras.a]\nthreshold = 3', "cameras.a.source: missing"),
    ('[cameras.a]\nsource = "no/such.mp4"\nthreshold = 3', "cameras.a.source: no/such.mp4 does not exist"),
    ('[cameras.a]\nsource = "tcp://h:1"\nthreshold = "high"', "cameras.a.threshold: expected a number, got 'high'"),
    ('[cameras.a]\nsource = "tcp://h:1"\nthreshold = 1\nalarms_per_hour = 2', "give one of"),
    ('[cameras.a]\nsource = "tcp://h:1"\nalarms_per_hour = 2', "cameras.a.alarms_per_hour: needs a calibration"),
    ('[cameras."a b"]\nsource = "tcp://h:1"', "a camera's name is its folder's"),
    ('crops = 3\n[cameras.a]\nsource = "tcp://h:1"', "crops: expected one of 1, 5, 10, got 3"),
    ('reconnect = "soon"\n[cameras.a]\nsource = "tcp://h:1"', "reconnect: expected a number of attempts"),
    ('[metrics]\nport = 9108\n[cameras.a]\nsource = "tcp://h:1"', "metrics.port: unknown key"),
    ('[cameras.a]\nsource = "tcp://h:1"\nthreshold = 1\n[alerts]\nwebhook = "ftp://x"', "[alerts] webhook"),
    ("[cameras.a\n", "not a valid TOML file"),
    ('', "cameras: no camera"),
])
def test_site_file_errors_are_one_line_before_any_camera_starts(sources, tmp_path, monkeypatch, capsys, text,
                                                                message):
    config = tmp_path / "site.toml"
    config.write_text(f'model_path = "{sources["checkpoint"]}"\noutput_dir = "{tmp_path / "out"}"\n' + text)
    monkeypatch.setattr(sys, "argv", ["stream.py", "--config", str(config), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(stream.main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: {config}: ") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_site_values_come_from_flags_then_camera_then_site_then_checkpoint(tmp_path):
    config = site_file(tmp_path / "site.toml", "ckpt.pkl", tmp_path / "out", {
        "a": dict(source="tcp://h:1", min_snippets=4, threshold=2.0, input_options={"rtsp_transport": "tcp"}),
        "b": dict(source="tcp://h:2", alarms_per_hour=0.5, calibration="cal.csv")},
        top='min_snippets = 3\nthreshold = 1.0\nwindow = 16\nrollover = "day"\nreconnect = "forever"')
    recorded = lambda path: dict(crops=5, resize=(320, 256)) if path == "ckpt.pkl" else {}
    site = live.site.read_site(config, {"window": 6, "config": str(config)}, recorded)
    a, b = site.cameras
    assert (a.settings.min_snippets, b.settings.min_snippets) == (4, 3)                 # camera, then site
    assert a.settings.window == b.settings.window == 6                                  # a flag: every camera
    assert (a.threshold, b.threshold, b.alarms_per_hour) == (2.0, None, 0.5)            # b's own choice wins
    assert a.settings.crops == 5 and a.settings.resize == (320, 256)                    # from the checkpoint
    assert a.settings.reconnect == (None, None) and a.settings.rollover == "day"
    assert a.settings.input_options == {"rtsp_transport": "tcp"} and a.folder == tmp_path / "out" / "a"
    site = live.site.read_site(config, {"threshold": 9.0, "crops": 1}, recorded)
    assert [(c.threshold, c.alarms_per_hour) for c in site.cameras] == [(9.0, None), (9.0, None)]
    assert site.cameras[0].settings.crops == 1


def test_a_source_down_at_start_is_retried_under_the_reconnect_policy(tmp_path, capsys):
    """stream.py's single camera: each failed opening is said, and the policy's end is one error naming it."""
    from live.run import run_stream
    from live.settings import StreamSettings
    from utils import InputError
    url = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match=r"cannot open .*; gave up after 3 attempts"):
        run_stream(url, BNWVAD(1024), GridProbe(), tmp_path / "out", 0.0,
                   StreamSettings(reconnect=(3, None), backoff=(0.01, 0.02), timeout=2.0))
    err = capsys.readouterr().err
    assert err.count(f"{url}: opening attempt") == 2 and "opening attempt 2 failed" in err
    assert not (tmp_path / "out").exists()


def test_alarms_per_hour_takes_the_calibrations_threshold_for_this_camera(sources, tmp_path):
    """A camera's alarms_per_hour reads its calibration file (calibrate.py's) for the threshold; a file made
    with other alarm settings, or with another checkpoint, is one line naming the key."""
    from live.calibration import FORMAT
    from video.records import file_sha256
    record = dict(format=FORMAT, checkpoint=str(sources["checkpoint"]),
                  checkpoint_sha256=file_sha256(sources["checkpoint"]), settings=dict(window=4, delay=0,
                                                                                        min_snippets=2, crops=1),
                  hours=2.0, covers_alarms_per_hour=60, steps=[[1.0, 9], [2.0, 3], [3.0, 1], [4.0, 0]])
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps(record))
    config = site_file(tmp_path / "site.toml", sources["checkpoint"], tmp_path / "out",
                       {"a": dict(source="tcp://h:1", alarms_per_hour=0.5, calibration=str(calibration))},
                       top="window = 4\ncrops = 1")
    site = live.site.read_site(config)
    (a,) = site.cameras
    value, how = live.site.camera_threshold(a, None, site.path, site.model_path)
    assert value == 3.0 and "0.5 false alarms per hour" in how          # at most 1 alarm over the 2 hours
    a.settings.min_snippets = 3
    with pytest.raises(InputError, match=r"cameras\.a\.calibration: .* was made with min_snippets 2 \(this camera: 3\)"):
        live.site.camera_threshold(a, None, site.path, site.model_path)
    a.settings.min_snippets = 2
    with pytest.raises(InputError, match=r"cameras\.a\.calibration: .*another checkpoint"):
        live.site.camera_threshold(a, None, site.path, calibration)


def test_site_events_reach_a_real_mqtt_broker_and_the_webhook(sources, tmp_path, mosquitto, hook_server):
    """Two cameras of one site file: each event's start and end arrive at mosquitto (started here on
    loopback) under <prefix>/<camera>/events and at the webhook, the same records."""
    client, got = mosquitto.subscribe("site/+/events")
    config = site_file(tmp_path / "site.toml", sources["checkpoint"], tmp_path / "out",
                       {"east": dict(source=str(sources["plain"]), threshold=-1e9),
                        "west": dict(source=str(sources["plain"]), threshold=-1e9)}, top="window = 4",
                       tables=f'[alerts]\nwebhook = "{hook_server.url}"\nmqtt = "{mosquitto.url("site")}"')
    try:
        stream.main(["--config", str(config), "--i3d_weights", "x.pt", "--device", "cpu"])
        messages = [got.get(timeout=10) for _ in range(4)]
    finally:
        client.loop_stop()
        client.disconnect()
    assert sorted((topic, body["state"]) for topic, body in messages) == [
        ("site/east/events", "end"), ("site/east/events", "start"), ("site/west/events", "end"),
        ("site/west/events", "start")]
    for topic, body in messages:
        camera = topic.split("/")[1]
        assert body["camera"] == camera and body in hook_server.bodies
        if body["state"] == "end":
            (written,) = lines_json(tmp_path / "out" / camera / "events.jsonl")
            assert body == {**written, "camera": camera, "state": "end"}


def test_an_earlier_versions_scores_csv_is_moved_aside_not_mixed(tmp_path):
    """A scores.csv with other columns (an earlier version's) is rolled aside, named, and the new file starts
    with this version's header: rows of two layouts never share a file."""
    from live.outputs import SCORES_HEADER, Outputs
    old = tmp_path / "scores.csv"
    old.write_text("video,snippet,score,calibrated,start_s,end_s,wall_time\r\ncam,0,1.5,0.9,0.000,0.640,"
                   "2026-01-01T00:00:00\r\n")
    out = Outputs(tmp_path, "cam", quiet=True)
    out.close()
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("scores.") and p.name != "scores.csv"]
    assert len(moved) == 1 and "calibrated" in moved[0].read_text()
    assert rows(old) == [] and old.read_text().splitlines()[0] == ",".join(SCORES_HEADER)
    assert f"{old}: its columns are not this version's" in (tmp_path / "stream.log").read_text()
