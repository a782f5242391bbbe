"""stream.py: a synthetic video with a planted bright stretch, served as MPEG-TS over TCP on loopback
by a PyAV subprocess, is scored live exactly as offline scoring scores the same file's features cut
the same way; the stretch raises an event; a source killed and restarted is reconnected with every
output complete; Ctrl-C closes the outputs; a source that cannot be opened is a one-line error."""
import argparse
import csv
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import av
import numpy as np
import pytest
import torch

import stream
from conftest import ROOT
from helpers import GridProbe
from live.health import Latencies
from live.reader import parse_reconnect, redact, source_name
from live.run import run_stream
from live.scoring import causal_scores
from live.settings import StreamSettings
from model import BNWVAD
from test import score_video
from core.thresholds import quantile_table
from core.thresholds import Calibration
from utils import run_cli, save_checkpoint
from video.snippets import video_features

RATE = 25
SNIPPETS = 14
BRIGHT = (5, 8)          # snippets 5, 6, 7 are bright: the planted anomaly
WINDOW = 4

# Remux an MPEG-TS file's packets to the one client of a listening tcp:// URL, paced at `speed` x
# real time by their timestamps (0: as fast as possible), as a camera or a relay would send them.
SERVER = textwrap.dedent("""
    import sys, time, av
    path, url, speed = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with av.open(path) as source, av.open(url, 'w', format='mpegts') as out:
        video = source.streams.video[0]
        target = out.add_stream_from_template(video)
        begin = None
        for packet in source.demux(video):
            if packet.dts is None:
                continue
            t = float(packet.dts * packet.time_base)
            begin = time.monotonic() - t / speed if begin is None and speed else begin
            if speed:
                time.sleep(max(0.0, begin + t / speed - time.monotonic()))
            packet.stream = target
            out.mux(packet)
""")


def write_ts(path, snippets=SNIPPETS, bright=BRIGHT):
    """A 320x256 MPEG-TS video of `snippets` x 16 frames at 25 fps: a bar moving over a dark scene,
    and white frames for the snippets in [bright[0], bright[1])."""
    with av.open(str(path), "w", format="mpegts") as container:
        video = container.add_stream("mpeg4", rate=RATE)
        video.width, video.height, video.pix_fmt = 320, 256, "yuv420p"
        video.options = {"qscale": "2"}
        video.codec_context.gop_size = 16
        for i in range(snippets * 16):
            image = np.zeros((256, 320, 3), np.uint8)
            image[..., 0], image[..., 1], image[..., 2] = 40, 60 + i % 32, 80
            image[100:140, (7 * i) % 300:(7 * i) % 300 + 20] = 150
            if bright[0] * 16 <= i < bright[1] * 16:
                image[:] = 230
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(path, port, speed=0.0):
    """Start the server subprocess; return once it listens on 127.0.0.1:port (it sends once a client
    connects, and takes one client only, so it cannot be probed by connecting)."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(path), f"tcp://127.0.0.1:{port}?listen=1",
                               str(speed)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not listening(port) and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.02)
    return server


def listening(port):
    """Whether a socket listens on the port (Linux: /proc/net/tcp; elsewhere: after a pause)."""
    try:
        with open("/proc/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        time.sleep(2.0)
        return True
    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in lines)


def detector(features, window):
    """A BN-WVAD whose BatchNorm statistics are those of `features`' (N, T, D) normal snippets as causal
    scoring sees them (each at the end of its window): BN-WVAD's own principle, so snippets unlike them
    (the bright ones) score high. Deterministic and instant, no training."""
    torch.manual_seed(0)
    model = BNWVAD(features.shape[-1]).eval()
    head = model.normal_head
    with torch.no_grad():
        last = [model.selfatt(model.embedding(torch.as_tensor(features[:, max(0, t - window + 1):t + 1])))[:, -1]
                for t in range(features.shape[1])]
        h = torch.cat(last).T[None]                                    # (1, 512, N*T)
        f1 = head.conv1(h)
        head.bn1.running_mean.copy_(f1.mean((0, 2)))
        head.bn1.running_var.copy_(f1.var((0, 2)))
        f2 = head.conv2(torch.relu(head.bn1(f1)))
        head.bn2.running_mean.copy_(f2.mean((0, 2)))
        head.bn2.running_var.copy_(f2.var((0, 2)))
    return model


def expected_scores(model, features, window, delay=0):
    """Offline: snippet t's score when the model scores the features of t-W+1+K..t+K alone (cut at the ends)."""
    T = features.shape[1]
    out = []
    for t in range(T):
        end = min(t + delay, T - 1)
        start = max(0, end - window + 1)
        out.append(score_video(model, features[:, start:end + 1], "cpu")[t - start])
    return np.array(out)


def read_scores(folder):
    with open(folder / "scores.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def read_events(folder):
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The served file, its offline features (1 crop), the detector and its calibration table."""
    folder = tmp_path_factory.mktemp("stream")
    path = write_ts(folder / "cam.ts")
    features = video_features(path, GridProbe(), crops=1)                     # (1, T, 1024)
    normal = np.concatenate([features[:, :BRIGHT[0]], features[:, BRIGHT[1]:]], axis=1)
    model = detector(normal, WINDOW)
    table = quantile_table(expected_scores(model, normal, WINDOW))
    return dict(path=path, features=features, model=model, table=table)


def settings(**changes):
    base = dict(crops=1, window=WINDOW, min_snippets=2, reconnect=(0, None), backoff=(0.05, 0.2), timeout=5.0,
                status_every=60.0)
    return StreamSettings(**{**base, **changes})


def test_live_tcp_scores_equal_offline_and_an_event_covers_the_anomaly(clip, tmp_path):
    port = free_port()
    server = serve(clip["path"], port)
    out = tmp_path / "out"
    expected = expected_scores(clip["model"], clip["features"], WINDOW)
    # snippets whose window holds no bright snippet score low, the bright ones high (the design works)
    clean = np.r_[expected[:BRIGHT[0]], expected[BRIGHT[1] + WINDOW - 1:]]
    assert np.min(expected[BRIGHT[0]:BRIGHT[1]]) > 2 * np.max(clean)
    threshold = float(np.max(clean) + np.min(expected[BRIGHT[0]:BRIGHT[1]])) / 2
    try:
        summary = run_stream(f"tcp://127.0.0.1:{port}", clip["model"], GridProbe(), out, threshold,
                             settings(save_clips=True, pre_roll=0.5, post_roll=0.5), table=Calibration(clip["table"]),
                             name="cam", quiet=True)
    finally:
        server.kill()
    header, rows = read_scores(out)
    assert header == ["video", "snippet", "score", "exceedance", "normal_per_hour", "start_s", "end_s", "wall_time"]
    assert [int(r[1]) for r in rows] == list(range(SNIPPETS)) and {r[0] for r in rows} == {"cam"}
    scores = np.array([float(r[2]) for r in rows])
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=1e-5)
    # the window matters: scoring the whole video at once gives other numbers
    assert np.abs(score_video(clip["model"], clip["features"], "cpu") - expected).max() > 1e-2
    np.testing.assert_allclose([float(r[5]) for r in rows], np.arange(SNIPPETS) * 16 / RATE, atol=1e-3)
    np.testing.assert_allclose([float(r[6]) for r in rows], (np.arange(SNIPPETS) + 1) * 16 / RATE, atol=1e-3)
    # the offline function of the same scores: the bright stretch, above every calibration score, stays ordered
    exceedance, hourly = (np.array([float(r[k]) for r in rows]) for k in (3, 4))
    np.testing.assert_allclose(exceedance, Calibration(clip["table"]).exceedance(scores), rtol=1e-3)
    np.testing.assert_allclose(hourly, exceedance * 3600 / (16 / RATE), rtol=2e-3)
    bright = slice(*BRIGHT)
    assert exceedance.max() <= 1 and 0 < exceedance[bright].max() < exceedance[:BRIGHT[0]].min()

    [event] = read_events(out)
    assert event["video"] == "cam" and event["closed_by"] == "scores"
    assert event["start_s"] <= BRIGHT[0] * 16 / RATE and event["end_s"] >= BRIGHT[1] * 16 / RATE
    assert event["end_s"] <= (BRIGHT[1] + WINDOW) * 16 / RATE      # not beyond what the window carries along
    assert event["peak_score"] == pytest.approx(expected.max(), abs=1e-4)
    assert event["peak_exceedance"] == pytest.approx(float(Calibration(clip["table"]).exceedance(event["peak_score"])))
    assert event["wall_start"] <= event["wall_end"] and event["wall_start"] <= event["wall_alert"]
    assert event["clip"] == "clips/event_0001.mp4"
    with av.open(str(out / event["clip"])) as saved:
        frames = list(saved.decode(video=0))
    # the event's frames and half a second either side, as far as the video goes
    assert len(frames) >= (event["end_s"] - event["start_s"] + 1.0) * RATE - 1
    assert not list((out / "clips").glob(".tmp-*"))

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"]["value"] == pytest.approx(threshold)
    assert metrics["settings"]["window"] == WINDOW and metrics["live"] is True
    assert metrics["end_reason"].startswith("source lost") and metrics["health"] == summary
    assert summary["snippets"] == SNIPPETS and summary["events"] == 1 and summary["frames"] == SNIPPETS * 16
    assert summary["latency_p50_s"] > 0 and summary["reconnects"] == 0

    # the review page renders the stream's own folder: the event, its clip and the threshold
    from review.data import scoring_data
    data = scoring_data(str(out))
    (video,) = data["videos"]
    assert video["name"] == "cam" and video["unit"] == "s" and data["threshold"] == pytest.approx(threshold)
    assert [(s["start"], s["end"], s["clip"]) for s in video["segments"]] == [
        (pytest.approx(event["start_s"]), pytest.approx(event["end_s"]), event["clip"])]


def test_delay_scores_each_snippet_with_later_context(clip, tmp_path):
    out = tmp_path / "out"
    run_stream(clip["path"], clip["model"], GridProbe(), out, 1e9, settings(window=5, delay=2, batch_size=3),
               quiet=True)
    _, rows = read_scores(out)
    expected = expected_scores(clip["model"], clip["features"], 5, delay=2)
    np.testing.assert_allclose([float(r[2]) for r in rows], expected, atol=1e-4, rtol=1e-5)
    assert not np.allclose(expected, expected_scores(clip["model"], clip["features"], 5), atol=1e-3)
    # the offline simulation the benchmark uses gives the same scores, unbounded windows too
    np.testing.assert_allclose(causal_scores(clip["model"], clip["features"], 5, delay=2), expected,
                               atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(causal_scores(clip["model"], clip["features"], None),
                               expected_scores(clip["model"], clip["features"], SNIPPETS), atol=1e-4, rtol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["end_reason"] == "end of file"


def test_killed_source_reconnects_and_outputs_are_complete(clip, tmp_path):
    """The server, sending at the video's pace, is killed after the fourth snippet is scored and comes
    back half a second later with the video from its start, as a restarted camera would; the stream
    goes on, then gives up."""
    port = free_port()
    servers = [serve(clip["path"], port, speed=1.0)]

    def restart():
        time.sleep(0.5)
        servers.append(serve(clip["path"], port, speed=0.0))

    def on_score(row):
        if row["snippet"] == 3 and len(servers) == 1:
            servers[0].kill()
            threading.Thread(target=restart, daemon=True).start()

    out = tmp_path / "out"
    try:
        summary = run_stream(f"tcp://127.0.0.1:{port}", clip["model"], GridProbe(), out, 1e9,
                             settings(reconnect=(40, None)), on_score=on_score, quiet=True)
    finally:
        for server in servers:
            server.kill()
    assert summary["reconnects"] == 1 and summary["outage_s"] > 0.3
    _, rows = read_scores(out)
    assert all(len(r) == 8 and r[7] for r in rows)
    assert [int(r[1]) for r in rows] == list(range(len(rows))) and len(rows) >= 4 + SNIPPETS
    starts = np.array([float(r[5]) for r in rows])
    assert (np.diff(starts) > 0).all()
    # the outage (half a second and the new server's start) shows in the stream's time, less at most a
    # few frames' jitter in when they arrived
    assert np.diff(starts).max() >= 16 / RATE + summary["outage_s"] - 0.2
    log = (out / "stream.log").read_text()
    assert "lost: source lost at" in log and "reconnected: reconnected after" in log and "gave up" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ended"] and metrics["health"]["reconnects"] == 1 and metrics["health"]["snippets"] == len(rows)


def test_interrupt_closes_the_open_event(clip, tmp_path):
    """Ctrl-C while an event is open: the event is closed and written, the outputs are complete."""
    def on_event(kind, event):
        if kind == "open":
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_stream(clip["path"], clip["model"], GridProbe(), out, 50.0, settings(),
                   on_event=on_event, quiet=True)
    [event] = read_events(out)
    assert event["closed_by"] == "interrupted" and event["start_s"] == pytest.approx(BRIGHT[0] * 16 / RATE, abs=1e-3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["end_reason"] == "interrupted" and metrics["health"]["events"] == 1
    _, rows = read_scores(out)
    assert len(rows) == metrics["health"]["snippets"] >= BRIGHT[0] + 2


def test_event_clips_keep_the_source_frames_not_the_analysis_resize(clip, tmp_path):
    """The network sees --resize's frames (here 400x320); the evidence clip is the camera's 320x256."""
    out = tmp_path / "out"
    run_stream(clip["path"], clip["model"], GridProbe(), out, 50.0,
               settings(save_clips=True, resize=(400, 320), pre_roll=0.0, post_roll=0.0), quiet=True)
    [event] = read_events(out)
    with av.open(str(out / event["clip"])) as saved:
        first = next(saved.decode(video=0)).to_ndarray(format="rgb24")
    assert first.shape == (256, 320, 3)
    with av.open(str(clip["path"])) as source:                  # the source's frame at the clip's start
        frames = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    k = round(event["start_s"] * RATE)
    assert np.abs(first.astype(int) - frames[k]).mean() < 6    # the same picture, up to two encodings


# ---- the command line ----

@pytest.fixture
def checkpoint(clip, tmp_path):
    """The detector as main.py saves it: config, state dict and the calibration of normal scores."""
    path = tmp_path / "ckpt.pkl"
    save_checkpoint(path, clip["model"], 7, {"AP": 50.0})
    record = torch.load(path, weights_only=True)
    record["calibration"] = torch.from_numpy(clip["table"])
    torch.save(record, path)
    return path


def test_cli_default_threshold_and_metrics(clip, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "load_i3d", lambda path, device: GridProbe().to(device))
    out = tmp_path / "out"
    stream.main([str(clip["path"]), "--model_path", str(checkpoint), "--i3d_weights", "unused.pt", "--window",
                 str(WINDOW), "--output_dir", str(out), "--device", "cpu"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(checkpoint) and metrics["model"] == "bnwvad" and metrics["step"] == 7
    assert metrics["threshold"]["value"] == pytest.approx(np.interp(0.99, np.linspace(0, 1, 1001), clip["table"]))
    assert "0.99" in metrics["threshold"]["source"] and metrics["settings"]["crops"] == 1
    # a threshold from the calibration of whole-video scores is said to be approximate for windowed ones
    assert "approximate" in metrics["calibration_note"] and "note: the calibration" in (out / "stream.log").read_text()
    assert [e["start_s"] for e in read_events(out)] == [pytest.approx(BRIGHT[0] * 16 / RATE, abs=0.7)]
    # the same command again continues the outputs (never refused, never truncated): numbers go on
    stream.main([str(clip["path"]), "--model_path", str(checkpoint), "--i3d_weights", "x.pt", "--window",
                 str(WINDOW), "--output_dir", str(out), "--device", "cpu"])
    _, rows = read_scores(out)
    assert [int(r[1]) for r in rows] == list(range(2 * SNIPPETS))
    assert [e["event"] for e in read_events(out)] == [1, 2]
    assert float(rows[SNIPPETS][5]) == pytest.approx(float(rows[SNIPPETS - 1][6]), abs=1e-3)  # a file: no outage


def test_cli_cuts_snippets_as_the_checkpoint_was_trained(clip, tmp_path, monkeypatch, capsys):
    """A checkpoint trained on 5-crop features extracted at 320x256 scores the stream with 5 crops and
    that resize, saying so; a flag given on the command line wins."""
    monkeypatch.setattr(stream, "load_i3d", lambda path, device: GridProbe().to(device))
    path = tmp_path / "five.pkl"
    save_checkpoint(path, clip["model"], 3, {"AP": 1.0}, dataset="xd", crops=5,
                    extraction=dict(resize=[320, 256], fps=None, pad_last=False))
    seen = {}

    def run(argv):
        out = tmp_path / f"out{len(seen)}"
        stream.main([str(clip["path"]), "--model_path", str(path), "--i3d_weights", "x.pt", "--threshold", "1e9",
                     "--window", str(WINDOW), "--output_dir", str(out), "--device", "cpu", *argv])
        seen[len(seen)] = json.loads((out / "metrics.json").read_text())["settings"]
        return seen[len(seen) - 1], capsys.readouterr().out

    recorded, printed = run([])
    assert recorded["crops"] == 5 and recorded["resize"] == "320x256"
    assert "from the checkpoint: --crops 5 --resize 320x256" in printed
    given, printed = run(["--crops", "1", "--resize", "256"])
    assert given["crops"] == 1 and given["resize"] == 256 and "from the checkpoint" not in printed


def test_cli_loads_a_urdmu_release_state_dict(clip, tmp_path, monkeypatch):
    """UR-DMU's release layout (a bare state dict) is recognised by its keys; its scores are UR-DMU's."""
    from model import URDMU
    monkeypatch.setattr(stream, "load_i3d", lambda path, device: GridProbe().to(device))
    torch.manual_seed(1)
    urdmu = URDMU(1024, a_nums=8, n_nums=8).eval()
    bare = tmp_path / "xd_trans_2022.pkl"
    torch.save(urdmu.state_dict(), bare)
    out = tmp_path / "out"
    stream.main([str(clip["path"]), "--model_path", str(bare), "--i3d_weights", "x.pt", "--threshold", "1e9",
                 "--window", str(WINDOW), "--output_dir", str(out), "--device", "cpu"])
    assert json.loads((out / "metrics.json").read_text())["model"] == "urdmu"
    _, rows = read_scores(out)
    np.testing.assert_allclose([float(r[2]) for r in rows], expected_scores(urdmu, clip["features"], WINDOW),
                               atol=1e-4, rtol=1e-5)


def test_cli_one_line_errors(clip, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stream, "load_i3d", lambda path, device: GridProbe().to(device))
    closed = f"tcp://127.0.0.1:{free_port()}"                        # nothing listens there
    bare = tmp_path / "bare.pkl"
    torch.save(clip["model"].state_dict(), bare)
    cases = [([closed, "--model_path", str(checkpoint), "--reconnect", "0"], f"cannot open {closed}: "),
             ([str(tmp_path / "missing.mp4"), "--model_path", str(checkpoint)],      # said before any loading
              f"error: source {tmp_path / 'missing.mp4'} does not exist"),
             ([str(clip["path"]), "--model_path", str(bare)], "give --threshold"),
             ([str(clip["path"]), "--model_path", str(bare), "--calibrated_threshold", "0.9"], "--threshold")]
    for argv, message in cases:
        monkeypatch.setattr(sys, "argv", ["stream.py", *argv, "--i3d_weights", "x.pt", "--device", "cpu",
                                          "--output_dir", str(tmp_path / "never")])
        with pytest.raises(SystemExit) as exit_info:
            run_cli(stream.main)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "never").exists()


def test_cli_sigint_closes_outputs(clip, checkpoint, tmp_path):
    """A real SIGINT to the command line: exit status 130, every output complete."""
    out = tmp_path / "out"
    code = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; import stream, helpers; "
            "stream.load_i3d = lambda path, device: helpers.GridProbe().to(device); "
            "stream.run_cli(stream.main)")
    process = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(ROOT / "tests"), str(clip["path"]),
                                "--model_path", str(checkpoint), "--i3d_weights", "x.pt", "--realtime",
                                "--output_dir", str(out), "--device", "cpu", "--threshold", "1e9"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "scores.csv").exists() and len((out / "scores.csv").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["end_reason"] == "interrupted" and metrics["ended"]
    _, rows = read_scores(out)
    assert 2 <= len(rows) < SNIPPETS and len(rows) == metrics["health"]["snippets"]


def test_settings_and_parsing():
    assert parse_reconnect("5") == (5, None) and parse_reconnect("300s") == (None, 300.0)
    assert parse_reconnect("forever") == (None, None) and parse_reconnect("0") == (0, None)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_reconnect("soon")
    assert source_name("rtsp://admin:secret@10.0.0.5:554/live/ch1") == "10.0.0.5_554_live_ch1"
    assert redact("rtsp://admin:secret@cam/live") == "rtsp://admin:***@cam/live"
    assert source_name("/dev/video0") == "video0" and source_name("clips/a b.mp4") == "a_b"
    with pytest.raises(ValueError, match="delay"):
        StreamSettings(window=4, delay=4).check()
    latencies = Latencies()
    for x in np.linspace(0.1, 1.0, 100):
        latencies.add(x)
    assert latencies.quantile(0.5) == pytest.approx(0.55, rel=0.03)
    assert latencies.quantile(0.95) == pytest.approx(0.955, rel=0.03)


def test_renamed_flags_keep_their_old_spelling(tmp_path, capsys):
    """stream.py's --i3d_amp and --i3d_batch, once --amp and --batch_size: both spellings give the same
    settings, the old one with a one-line note. --fps, once --resample_fps's spelling, is refused: elsewhere
    it is the source's frame rate, never a resampling rate."""
    base = ["clip.mp4", "--model_path", str(tmp_path / "none.pkl")]
    new = stream.settings_from_args(stream.parse_args(base + ["--resample_fps", "12.5", "--i3d_amp",
                                                              "--i3d_batch", "3"]))
    assert capsys.readouterr().err == ""
    old = stream.settings_from_args(stream.parse_args(base + ["--resample_fps", "12.5", "--amp", "--batch_size", "3"]))
    assert new == old and (new.fps, new.amp, new.batch_size) == (12.5, True, 3)
    err = capsys.readouterr().err
    assert "note: --amp is now --i3d_amp" in err
    assert "note: --batch_size is now --i3d_batch" in err and err.count("\n") == 2
    with pytest.raises(SystemExit) as exit_:
        stream.parse_args(base + ["--fps", "12.5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments: --fps 12.5" in err and err.count("\n") == 1
    assert stream.settings_from_args(stream.parse_args(base)).fps is None
