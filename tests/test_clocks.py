"""Clocks and checkpoints as real cameras and other code give them (issue R2): time never runs
backwards, whatever the stamps do (none at all, a reset to 0, one frame hours away, a rate the format
makes up); the review page links a video the browser plays; checkpoints other training code saved are
read; messages blame the right source. Videos and streams are made here with PyAV, served on loopback."""
import io
import json
import re
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import infer
from core.checkpoints import load_model
from helpers import GridProbe, write_output
from live.run import run_stream
from live.settings import StreamSettings
from model import BNWVAD
from review.media import playback_warnings
from review.page import write_report
from utils import InputError, read_checkpoint
from video import VideoError
from video.clock import Clock, JUMP_S
from video.decode import Decoding, decode_frames
from video.extraction import extract_video, list_videos
from video.snippets import video_features

SIZE = (64, 48)       # frames are tiny; extraction scales them up to the 256 short side


# ---- making videos and streams ----

def encode(fmt, codec, stamps, rate=25, gop=16, size=SIZE):
    """The bytes of a video in container `fmt`: frame i stamped stamps[i] seconds (None: leave it to
    the encoder), a shade that changes with i."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = size
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        s.codec_context.gop_size = gop
        if codec == "libx265":
            s.options = {"x265-params": "log-level=none"}
        for i, t in enumerate(stamps):
            f = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), i * 5 % 256, np.uint8), format="rgb24")
            if t is not None:
                f.pts, f.time_base = round(t * 90000), Fraction(1, 90000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def ts_segments(*segments):
    """MPEG-TS made of separately muxed pieces, one after another as a relay or a DVR writes them:
    each piece is a list of frame times, so a piece can start the clock again or jump."""
    return b"".join(encode("mpegts", "mpeg4", stamps) for stamps in segments)


def packets(data, fmt):
    """The demuxed packets' bytes of a raw stream (one per frame), for sending at a frame rate."""
    with av.open(io.BytesIO(data), format=fmt) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def serve(chunks, interval, header=b""):
    """Send `chunks` to the first client of a loopback TCP port, one every `interval` seconds (0: at
    once), as a camera would; with `header` (an HTTP reply) after reading the client's request. Returns
    the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run():
        with server:
            conn, _ = server.accept()
            with conn:
                if header:
                    conn.recv(65536)
                    conn.sendall(header)
                start = time.monotonic()
                for i, chunk in enumerate(chunks):
                    time.sleep(max(0.0, start + i * interval - time.monotonic()))
                    conn.sendall(chunk)
    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def stream_run(url, tmp_path, threshold=1e9, **changes):
    """run_stream of `url` with a random BN-WVAD and the grid probe for I3D: (scores.csv rows, stream.log)."""
    torch.manual_seed(0)
    base = dict(crops=1, window=4, min_snippets=2, reconnect=(0, None), timeout=10.0, status_every=60.0)
    out = tmp_path / "out"
    run_stream(url, BNWVAD(1024).eval(), GridProbe(), out, threshold, StreamSettings(**{**base, **changes}),
               name="cam", quiet=True)
    lines = (out / "scores.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    return rows, (out / "stream.log").read_text(), out


def starts_ends(rows):
    return np.array([[float(r["start_s"]), float(r["end_s"])] for r in rows])


def snippet_grid(n, seconds_per_snippet):
    return np.array([[i * seconds_per_snippet, (i + 1) * seconds_per_snippet] for i in range(n)])


# ---- the one clock, alone ----

def timed(clock, stamps, arrivals=None, durations=None):
    n = len(stamps)
    arrivals = arrivals if arrivals is not None else [0.0] * n
    durations = durations if durations is not None else [None] * n
    return np.array([float(t) for t, _ in clock.times(zip(stamps, durations, arrivals, range(n)))])


def test_the_clock_never_runs_backwards_over_resets_jumps_and_stamp_free_frames():
    frame = Fraction(1, 25)
    steady = np.arange(96) / 25
    notes = []
    # a reset to 0 halfway (a relay), one frame hours ahead (a DVR), a lasting jump, one back by an hour
    for stamps, said in [([i * frame for i in range(48)] * 2, "frame 48 (counting from 0) starts again at 0.00 s"),
                         ([i * frame + (37600 if i == 48 else 0) for i in range(96)], "frame 48 (counting from 0) "
                                                                                        "jumps 37600.04 s ahead"),
                         ([i * frame + (7200 if i >= 48 else 0) for i in range(96)], "jumps 7200.04 s ahead"),
                         ([i * frame + (3600 if i < 48 else 0) for i in range(96)], "starts again at 1.92 s (3599.96 s back)")]:
        notes.clear()
        np.testing.assert_allclose(timed(Clock("f", note=notes.append), stamps), steady, atol=1e-9)
        assert any(said in n for n in notes), notes
    # a pause shorter than JUMP_S is the video's own (a VFR recording that paused): kept
    stamps = [i * frame + (5 if i >= 48 else 0) for i in range(96)]
    np.testing.assert_allclose(timed(Clock("f"), stamps), [float(s) for s in stamps])
    # a live source's long jump is kept when its frames took that long to come (frames lost upstream)
    stamps = [i * frame + (2 * JUMP_S if i >= 48 else 0) for i in range(96)]
    arrivals = [float(s) for s in stamps]
    np.testing.assert_allclose(timed(Clock("c", live=True, opened_at=0.0), stamps, arrivals), arrivals)

    # no stamps at all: a file at its frames' declared duration, else the container's rate, else --resample_fps
    notes.clear()
    np.testing.assert_allclose(timed(Clock("f.h264", note=notes.append), [None] * 20,
                                     durations=[Fraction(1, 10)] * 20), np.arange(20) / 10)
    assert notes == ["its frames carry no timestamps; they are timed at its declared 10 frames/s"]
    np.testing.assert_allclose(timed(Clock("f", rate=12.5), [None] * 5), np.arange(5) / 12.5)
    notes.clear()
    np.testing.assert_allclose(timed(Clock("f", fps=5, note=notes.append), [None] * 5), np.arange(5) / 5)
    assert notes == ["its frames carry no timestamps; they are timed at --resample_fps 5 frames/s"]
    with pytest.raises(VideoError, match="f.h264: its frames carry no timestamps and it declares no frame rate"):
        timed(Clock("f.h264"), [None] * 5)
    # ... a live source by arrival: the first 30 frames came at once at 3 s (read ahead by the probe),
    # the rest every 0.1 s; the first ones are spread at the rate measured after them
    notes.clear()
    arrivals = [3.0] * 30 + [3.0 + 0.1 * (i - 29) for i in range(30, 80)]
    times = timed(Clock("c", live=True, note=notes.append, opened_at=0.0), [None] * 80, arrivals)
    np.testing.assert_allclose(times, np.arange(80) / 10, atol=1e-6)
    assert notes == ["its frames carry no timestamps; they are timed by their arrival (a live source)"]

    # a live source stamped at 25 frames/s whose frames come at 10 (MJPEG over HTTP): by arrival, said so
    notes.clear()
    stamps = [i * frame for i in range(80)]
    arrivals = [1.0 + 0.1 * i for i in range(80)]
    np.testing.assert_allclose(timed(Clock("c", live=True, note=notes.append, opened_at=0.9), stamps, arrivals),
                               np.arange(80) / 10, atol=1e-6)
    assert notes == ["its timestamps run at 25 frames/s but its frames arrive at 10 frames/s; they are timed by "
                     "their arrival"]
    # ... frames that come faster than their stamps are a backlog (a relay sending as fast as it can)
    np.testing.assert_allclose(timed(Clock("c", live=True, opened_at=0.0), stamps, [0.001 * i for i in range(80)]),
                               steady[:80])

    # whatever comes, in any mix: time never runs backwards
    rng = np.random.default_rng(0)
    for trial in range(20):
        stamps, t = [], 0
        for _ in range(200):
            kind = rng.integers(6)
            t = 0 if kind == 0 else t + rng.uniform(1e3, 1e5) if kind == 1 else t - rng.uniform(0, 50) \
                if kind == 2 else t + 0.04
            stamps.append(None if kind == 3 else Fraction(t).limit_denominator(90000))
        live = bool(trial % 2)
        arrivals = np.cumsum(rng.uniform(0, 0.08, 200)).tolist()
        times = timed(Clock("x", live=live, fps=25, opened_at=0.0), stamps, arrivals)
        assert len(times) == 200 and (np.diff(times) >= 0).all()
        assert times[-1] < 200 * 1.0          # no minutes invented


# ---- 1. frames without timestamps ----

@pytest.mark.parametrize("suffix, fmt, codec", [(".h264", "h264", "libx264"), (".hevc", "hevc", "libx265")])
def test_a_raw_stream_file_is_timed_at_its_declared_rate_and_found_in_folders(tmp_path, suffix, fmt, codec):
    """libcamera-vid's recorded .h264 (PyAV-Org/PyAV#144: frames without pts), and a raw HEVC file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    video = folder / f"pi{suffix}"
    video.write_bytes(encode(fmt, codec, [None] * 48, rate=10))
    assert list_videos([folder]) == [video]
    paths, warnings = extract_video(video, GridProbe(), tmp_path / "f", crops=1)
    record = json.loads((tmp_path / "f" / "pi.json").read_text())
    np.testing.assert_allclose(record["snippet_times"], snippet_grid(3, 1.6), atol=1e-9)
    assert warnings == [f"{video}: its frames carry no timestamps; they are timed at its declared 10 frames/s"]


def test_raw_h264_over_tcp_is_timed_by_its_arrival(tmp_path):
    """A Raspberry Pi camera (libcamera-vid --inline --listen -o tcp://0.0.0.0:8000) at 10 frames/s."""
    port = serve(packets(encode("h264", "libx264", [None] * 48, rate=10), "h264"), 0.1)
    rows, log, _ = stream_run(f"tcp://127.0.0.1:{port}", tmp_path, input_format="h264")
    np.testing.assert_allclose(starts_ends(rows), snippet_grid(3, 1.6), atol=0.3)
    assert log.count("frames carry no timestamps; they are timed by their arrival (a live source)") == 1


# ---- 2. timestamps that start again at 0 ----

def test_a_pts_reset_in_one_connection_goes_on(tmp_path):
    """An MPEG-TS feed of 48 + 48 frames, its clock reset to 0 halfway (go2rtc#1943, Savant#182): the
    snippets run on, and the event over them lasts 3.84 s with its clip."""
    half = [i / 25 for i in range(48)]
    port = serve([ts_segments(half, half)], 0)
    rows, log, out = stream_run(f"tcp://127.0.0.1:{port}", tmp_path, threshold=-1e9, save_clips=True,
                                pre_roll=0.0, post_roll=0.0)
    np.testing.assert_allclose(starts_ends(rows), snippet_grid(6, 0.64), atol=1e-3)
    assert "frame 48 (counting from 0) starts again at 0.00 s" in log
    [event] = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert (event["start_s"], event["end_s"]) == (pytest.approx(0.0, abs=1e-3), pytest.approx(3.84, abs=1e-3))
    with av.open(str(out / event["clip"])) as clip:
        times = [float(f.pts * f.time_base) for f in clip.decode(video=0)]
    assert len(times) == 96 and times[-1] == pytest.approx(3.8, abs=0.01)


def test_a_recording_whose_clock_goes_back_an_hour_goes_on(tmp_path):
    """A DVR file whose second half is stamped an hour before its first."""
    video = tmp_path / "dvr.ts"
    video.write_bytes(ts_segments([3600 + i / 25 for i in range(48)], [i / 25 for i in range(48)]))
    _, warnings = extract_video(video, GridProbe(), tmp_path / "f", crops=1)
    record = json.loads((tmp_path / "f" / "dvr.json").read_text())
    np.testing.assert_allclose(record["snippet_times"], snippet_grid(6, 0.64), atol=1e-6)
    # libavformat reads a TS clock an hour back as its 33-bit 90 kHz clock wrapping: a jump ahead
    wrapped = 2 ** 33 / 90000 - (3600 + 47 / 25)
    assert [w for w in warnings if f"frame 48 (counting from 0) jumps {wrapped:.2f} s ahead" in w]


# ---- 3. one timestamp hours away ----

def test_one_frame_stamped_hours_ahead_is_bridged_and_resampling_invents_nothing(tmp_path):
    """bluenviron/mediamtx#6255: frame 48 of 96 stamped 37,600 s ahead."""
    video = tmp_path / "dvr.ts"
    video.write_bytes(ts_segments([i / 25 for i in range(48)], [48 / 25 + 37600],
                                  [i / 25 for i in range(49, 96)]))
    _, warnings = extract_video(video, GridProbe(), tmp_path / "f", crops=1, fps=25)
    record = json.loads((tmp_path / "f" / "dvr.json").read_text())
    np.testing.assert_allclose(record["snippet_times"], snippet_grid(6, 0.64), atol=1e-6)
    assert [w for w in warnings if "frame 48 (counting from 0) jumps 37600.04 s ahead" in w]
    assert video_features(video, GridProbe(), crops=1, fps=25).shape == (1, 6, 1024)   # infer.py --resample_fps


def test_a_lasting_jump_of_two_hours_in_a_matroska_file_is_bridged(tmp_path):
    video = tmp_path / "cam.mkv"
    video.write_bytes(encode("matroska", "mpeg4", [i / 25 + (7200 if i >= 48 else 0) for i in range(96)]))
    _, warnings = extract_video(video, GridProbe(), tmp_path / "f", crops=1, fps=25)
    record = json.loads((tmp_path / "f" / "cam.json").read_text())
    np.testing.assert_allclose(record["snippet_times"], snippet_grid(6, 0.64), atol=1e-6)
    assert [w for w in warnings if "frame 48 (counting from 0) jumps 7200.04 s ahead" in w]


# ---- 4. a clock the format makes up ----

def jpegs(n):
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt, codec.time_base = *SIZE, "yuvj420p", Fraction(1, 10)
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((SIZE[1], SIZE[0], 3), i * 5 % 256, np.uint8), format="rgb24")
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def test_mjpeg_at_10_fps_stamped_at_25_is_timed_by_arrival(tmp_path):
    """An MJPEG camera at 10 frames/s (frigate#1725, mpv#5422): libavformat stamps its frames at 25."""
    port = serve(jpegs(48), 0.1)
    rows, log, _ = stream_run(f"tcp://127.0.0.1:{port}", tmp_path, input_format="mjpeg")
    np.testing.assert_allclose(starts_ends(rows), snippet_grid(3, 1.6), atol=0.3)
    assert re.search(r"its timestamps run at 25 frames/s but its frames arrive at (9\.[5-9]|10(\.[0-5])?) frames/s; "
                     r"they are timed by their arrival", log)


def test_mjpeg_over_http_multipart_is_timed_by_arrival():
    """The same camera as an HTTP multipart/x-mixed-replace stream (FFmpeg's mpjpeg demuxer)."""
    parts = [b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j) + j + b"\r\n"
             for j in jpegs(40)]
    port = serve(parts, 0.1, b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
    decoding, times = Decoding(), []
    with pytest.raises(VideoError):            # the camera hangs up at the end; every frame came before
        for start, end, _ in decode_frames(f"http://127.0.0.1:{port}/video", 64, None, decoding, {}, live=True):
            times.append((float(start), float(end)))
    assert len(times) == 40
    np.testing.assert_allclose(times[-1], (3.9, 4.0), atol=0.3)
    assert [n for n in decoding.notes if re.search(r"frames arrive at (9\.[5-9]|10(\.[0-5])?) frames/s; they are "
                                                   r"timed by their arrival", n)]


# ---- 5. the review page links a video the browser plays ----

def test_video_root_links_the_playable_file_and_warns_about_the_rest(tmp_path, capsys):
    """cam01.avi (MPEG-4 Part 2, as CUHK Avenue and ShanghaiTech ship) beside cam01.mp4 (H.264); cam02
    only as an AVI; cam03 as HEVC in MP4."""
    root = tmp_path / "videos"
    (root / "avi").mkdir(parents=True)
    stamps = [i / 25 for i in range(32)]
    (root / "avi" / "cam01.avi").write_bytes(encode("avi", "mpeg4", stamps))
    (root / "cam01.mp4").write_bytes(encode("mp4", "libx264", stamps))
    (root / "cam02.avi").write_bytes(encode("avi", "mpeg4", stamps))
    (root / "cam03.mp4").write_bytes(encode("mp4", "libx265", stamps))
    found = infer.video_files(str(root), {"cam01", "cam02", "cam03"})
    assert found == {"cam01": str(root / "cam01.mp4"), "cam02": str(root / "cam02.avi"),
                     "cam03": str(root / "cam03.mp4")}
    err = capsys.readouterr().err
    assert f"2 files share the name 'cam01': linking {root / 'cam01.mp4'}, not {root / 'avi' / 'cam01.avi'}" in err
    videos = [dict(name=n, source=str(Path(p).relative_to(tmp_path))) for n, p in sorted(found.items())]
    warnings = playback_warnings(videos, str(tmp_path))
    assert len(warnings) == 2
    assert warnings[0].startswith(f"cam02: {root / 'cam02.avi'} is unlikely to play in a browser (its container "
                                  f"(.avi) is not one browsers play); a playable copy: ffmpeg -i {root / 'cam02.avi'} "
                                  f"-c:v libx264 -pix_fmt yuv420p")
    assert "cam03" in warnings[1] and "HEVC" in warnings[1] and f"{root / 'cam03.browser.mp4'}" in warnings[1]
    # the page says so when it is built
    out = write_output(tmp_path / "out", [dict(name="cam02", label="A", scores=[0.1, 0.9, 0.2], source="cam02.avi")],
                       files=False)
    (out / "videos" / "cam02.avi").parent.mkdir()
    (out / "videos" / "cam02.avi").write_bytes((root / "cam02.avi").read_bytes())
    write_report(str(out))
    assert f"warning: cam02: {out / 'videos' / 'cam02.avi'} is unlikely to play in a browser" in capsys.readouterr().err


# ---- 6. checkpoints saved by other training code ----

def test_checkpoints_other_code_saved_are_unwrapped_with_a_note(tmp_path, capsys):
    torch.manual_seed(0)
    state = BNWVAD(1024).state_dict()
    module = {f"module.{k}": v for k, v in state.items()}
    cases = {"ddp.pt": (module, "the 'module.' prefixes of the keys"),                       # OpenTAD#44
             "wrapped.pt": ({"epoch": 7, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
                            "the state dict under 'state_dict' (the other keys, ['epoch', 'optimizer'], are ignored)"),
             "both.pt": ({"model_state_dict": module, "step": 3}, "the state dict under 'model_state_dict'")}
    for name, (obj, said) in cases.items():
        torch.save(obj, tmp_path / name)
        got, record = read_checkpoint(str(tmp_path / name))
        assert record is None and set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
        assert said in capsys.readouterr().err
        model, _ = load_model(str(tmp_path / name))
        assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    torch.save({"epoch": 1, "weights_ema": {"a": 1}, "config": "x"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other.pt is neither a BN-WVAD checkpoint nor a state dict: it holds a dict "
                                         r"with the top-level keys \['config', 'epoch', 'weights_ema'\]"):
        read_checkpoint(str(tmp_path / "other.pt"))


# ---- 7. messages that blame the right source ----

def test_a_width_from_the_checkpoint_is_named_as_such(tmp_path):
    torch.save(BNWVAD(512).state_dict(), tmp_path / "release.pkl")
    features = tmp_path / "features"
    features.mkdir()
    np.save(features / "v1__0.npy", np.zeros((20, 1024), np.float32))
    with pytest.raises(InputError) as e:
        infer.main(["--model_path", str(tmp_path / "release.pkl"), "--features", str(features), "--device", "cpu",
                    "--output_dir", str(tmp_path / "o")])
    assert f"expected 512 (the width the checkpoint {tmp_path / 'release.pkl'} was trained on)" in str(e.value)
    assert "--len_feature" not in str(e.value)


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_a_recording_started_mid_gop_is_not_called_cut_off(tmp_path, codec):
    data = encode("mpegts", codec, [i / 25 for i in range(96)], gop=32)
    video = tmp_path / "joined.ts"
    video.write_bytes(data[len(data) // 3 // 188 * 188:])
    _, warnings = extract_video(video, GridProbe(), tmp_path / "f", crops=1)
    assert not [w for w in warnings if "cut-off" in w]
    assert [w for w in warnings if "starts in the middle of a group of pictures" in w]


def test_a_stream_joined_mid_gop_is_not_called_cut_off(tmp_path):
    data = encode("mpegts", "libx264", [i / 25 for i in range(96)], gop=32)
    port = serve([data[len(data) // 3 // 188 * 188:]], 0)
    _, log, _ = stream_run(f"tcp://127.0.0.1:{port}", tmp_path)
    assert "cut-off" not in log and "starts in the middle of a group of pictures (joined mid-stream)" in log
