"""Helpers the test modules share (no test module imports another): synthetic videos, the stand-in
I3D network (GridProbe), an infer.py-like output folder for the review page, a UCF-Crime-layout
feature folder, running a command's main in this process as its command line would, and the review
page's other folders (a stream's, training logs) with the data a page embeds; live sources made and
served over loopback TCP by the ffmpeg command line."""
import csv
import json
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dataset
from options import parse_tool_args
from test import find_segments
from utils import run_cli

MARKER = 32  # a white MARKER x MARKER square in the top-left corner of every frame of write_video
SNIPPET = 16                     # frames per snippet
REPORT_FPS = 25                  # the frame rate of write_output's folders and write_webm's videos
REPORT_THRESHOLD = 0.5           # the threshold write_output's metrics.json holds
UCF_D = 32                       # write_ucf's feature width


def green(i):
    """Green level of synthetic frame i, so the frame order can be read back."""
    return 20 + 3 * i


def write_video(path, frames, width=320, height=256, rate=25):
    """Encode `frames` synthetic frames: red 0, green green(i), blue 100, white marker top-left."""
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
        stream.options = {'qp': '0'} if codec == 'libx264' else {'qscale': '1'}
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 1], image[..., 2] = green(i), 100
            image[:MARKER, :MARKER] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class GridProbe(nn.Module):
    """Stand-in for I3D: its 'features' are the clip's channel means on a 16 x 4 x 4 (time, h, w) grid."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # only tells the pipeline the device

    def features(self, x):  # (N, 3, 16, 224, 224) -> (N, 1024)
        grid = F.adaptive_avg_pool3d(x, (16, 4, 4)).flatten(1)  # (N, 768)
        return F.pad(grid, (0, 1024 - grid.shape[1]))


def as_grid(features):
    """(..., 1024) probe features -> (..., 3, 16, 4, 4) channel, frame, row, column."""
    return features[..., :768].reshape(*features.shape[:-1], 3, 16, 4, 4)


def write_webm(path, frames, fps=REPORT_FPS):
    """A small VP9 WebM (64x48) whose brightness ramps, `frames` frames at `fps`."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), (3 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def seconds(frame):
    return f"{frame / REPORT_FPS:.3f}"


def write_output(folder, videos, timed=True, metrics=None, files=True):
    """An infer.py output folder: metrics.json, scores.csv, segments.csv and videos.csv.

    videos: [dict(name, label, scores, gt=[(start, end) frames] or None, source=file name or None)];
    with `files`, each source is written as a real video under folder/videos/.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics or {"threshold": {"value": REPORT_THRESHOLD}}))
    times = ["start_s", "end_s"] if timed else []
    with open(folder / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "snippet", "score", "exceedance", "normal_per_hour", "start_frame", "end_frame"] + times)
        for v in videos:
            for i, x in enumerate(v["scores"]):
                a, b = i * SNIPPET, (i + 1) * SNIPPET
                w.writerow([v["name"], i, f"{x:.6g}", f"{np.exp(-x):.4g}", f"{5625 * np.exp(-x):.4g}", a, b]
                           + ([seconds(a), seconds(b)] if timed else []))
    with open(folder / "segments.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "rank", "start_frame", "end_frame"] + (times + ["peak_s"] if timed else [])
                   + ["peak_score", "peak_exceedance", "peak_normal_per_hour", "mean_score"])
        for v in videos:
            for rank, s in enumerate(find_segments(np.asarray(v["scores"]), REPORT_THRESHOLD, 5), 1):
                a, b, peak = s["start"] * SNIPPET, s["end"] * SNIPPET, s["peak_snippet"] * SNIPPET
                w.writerow([v["name"], rank, a, b] + ([seconds(a), seconds(b), seconds(peak)] if timed else [])
                           + [f"{s['peak']:.6g}", "", "", f"{s['mean']:.6g}"])
    with open(folder / "videos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "label", "snippets", "source", "gt"])
        for v in videos:
            source = f"videos/{v['source']}" if v.get("source") else ""
            gt = " ".join(f"{a}-{b}" for a, b in v["gt"]) if v.get("gt") else ""
            w.writerow([v["name"], v["label"], len(v["scores"]), source, gt])
            if files and source:
                write_webm(folder / source, len(v["scores"]) * SNIPPET)
    return folder


def write_ucf(root, layout="crops", n=(4, 4, 2, 2), crops=10, seed=0, D=UCF_D):
    """A small UCF-Crime-layout folder: <Class>/<video>__<k>.npy (layout 'crops'), or one file per video,
    <Class>/<video>_i3d.npy of shape (T, crops, D) ('TND') or <Class>/<video>.npy of shape (crops, T, D)
    ('NTD'). n: train abnormal, train normal, test abnormal, test normal. Writes both UCF annotation
    formats for the test videos.

    Returns dict(root, ann (UCF format), ann_urdmu (UR-DMU format), gt (expected), test (names), features).
    """
    rng = np.random.default_rng(seed)
    direction = (rng.random(D) < 0.25).astype(np.float32)
    features, gt, ann, ann_urdmu, test = {}, [], [], [], []
    for split, n_abn, n_nor in (("train", n[0], n[1]), ("test", n[2], n[3])):
        for i in range(n_abn + n_nor):
            abnormal = i < n_abn
            cls = ("Abuse", "Arson")[i % 2] if abnormal else "Normal"
            folder = cls if abnormal else f"{split.capitalize()}ing_Normal_Videos_Anomaly"
            name = f"{cls}{split}{i:03d}_x264" if abnormal else f"Normal_Videos_{split}{i:03d}_x264"
            T = int(rng.integers(12, 30))
            x = rng.normal(0.5, 0.2, (crops, T, D)).astype(np.float32)
            g = np.zeros(T * 16, np.uint8)
            spans = []
            if abnormal:
                a = int(rng.integers(0, T // 2))
                x[:, a:a + T // 3] += 2.0 * direction
                # the second interval runs past T*16, as in the real annotations: it is cut there
                spans = [(a * 16 + 3, (a + T // 3) * 16), (T * 16 - 20, T * 16 + 40)]
                for s, e in spans:
                    g[s:min(e, T * 16)] = 1
            features[name] = x
            (root / folder).mkdir(parents=True, exist_ok=True)
            if layout == "crops":
                for k in range(crops):
                    np.save(root / folder / f"{name}__{k}.npy", x[k])
            else:
                # RTFM names its (T, 10, D) files <video>_i3d.npy; the suffix is not part of the name
                suffix = "_i3d" if layout == "TND" else ""
                np.save(root / folder / f"{name}{suffix}.npy", x.transpose(1, 0, 2) if layout == "TND" else x)
            if split == "test":
                test.append(name)
                gt.append(g)
                flat = [v for s in spans for v in s] or [-1, -1, -1, -1]
                ann.append(f"{name}.mp4  {cls}  " + "  ".join(map(str, flat)) + "  ")
                ann_urdmu.append(f"{folder}/{name}.mp4 {T * 16 + 7} {cls} " + " ".join(map(str, flat)))
    (root / "Temporal_Anomaly_Annotation.txt").write_text("\n".join(ann) + "\n")
    (root / "UCF_Annotation_with_frames.txt").write_text("\n".join(ann_urdmu) + "\n")
    return dict(root=root, ann=root / "Temporal_Anomaly_Annotation.txt",
                ann_urdmu=root / "UCF_Annotation_with_frames.txt",
                gt=np.concatenate(gt), test=test, features=features)


def call(script_main, argv, capsys):
    """A script's main run in this process as its command line runs it (through run_cli), to spare a
    torch import per call: -> (returncode, stdout, stderr)."""
    code = 0
    try:
        run_cli(lambda: script_main(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def dataset_cli(argv):
    """What `python dataset.py ARGV` runs: the flags read by options.parse_tool_args, then dataset.cli."""
    dataset.cli(parse_tool_args(argv))


# ---- the review page's test folders (infer.py-like, stream.py's, main.py's logs) and the data a page embeds

# a video name, and a file name, that try to break out of the page
REPORT_NASTY = "evil <img src=x onerror=\"window.__pwned=1\"> & 'q' </script><script>window.__pwned=2</script>"
REPORT_NASTY_FILE = "clip #1 & \"q\" <b>%41?.webm"


def demo_videos():
    """Three videos with distinct peaks and lengths; the third has a hostile name and file name."""
    return [
        dict(name="vid10_fight", label="abnormal", gt=[(32, 80)], source="vid10_fight.webm",
             scores=[0.1, 0.2, 0.7, 0.9, 0.8, 0.3, 0.2, 0.6, 0.55, 0.1]),
        dict(name="vid2_walk", label="normal", gt=None, source="vid2_walk.webm",
             scores=[0.1, 0.2, 0.3, 0.2, 0.1, 0.52]),
        dict(name=REPORT_NASTY, label="", gt=[(0, 16)], source=REPORT_NASTY_FILE,
             scores=[0.6, 0.65, 0.2, 0.1, 0.3, 0.4, 0.1, 0.75]),
    ]


def page_data(path):
    """The JSON the page embeds, as the browser will read it."""
    text = Path(path).read_text()
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(block)


def write_stream(folder):
    """A stream.py output folder: scores.csv with wall times, events.jsonl (one event with a saved
    clip), threshold.json; the stream's time starts at 100 s."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scores = [0.1, 0.2, 0.8, 0.9, 0.3, 0.1, 0.7, 0.2]
    with open(folder / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "snippet", "score", "exceedance", "normal_per_hour", "start_s", "end_s", "wall_time"])
        for i, x in enumerate(scores):
            w.writerow(["cam1", i, x, "", "", f"{100 + 0.64 * i:.3f}", f"{100 + 0.64 * (i + 1):.3f}",
                        f"2026-11-29T10:00:{i:02d}"])
    events = [dict(start_s=101.28, end_s=102.56, peak_score=0.9, peak_normal_per_hour=None, wall_start="2026-11-29T10:00:02",
                   wall_end="2026-11-29T10:00:04", clip="clips/event1.webm"),
              dict(start_s=103.84, end_s=104.48, peak_score=0.7, peak_normal_per_hour=0.97,
                   wall_start="2026-11-29T10:00:06", wall_end="2026-11-29T10:00:07", clip=None)]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / "threshold.json").write_text(json.dumps({"value": REPORT_THRESHOLD, "source": "--threshold"}))
    write_webm(folder / "clips" / "event1.webm", 32)
    return folder, events


def write_log(path, steps, loss_name="mpp_loss", best_at=None):
    """A main.py training log: one JSON line per evaluation; AP peaks at step best_at."""
    lines = []
    for k, step in enumerate(steps):
        ap = 60.0 + k if best_at is None or step <= best_at else 60.0 + k - 2 * (step - best_at) / steps[0]
        lines.append(json.dumps(dict(step=step, lr=0.001, normal_loss=1.0 / (k + 1), **{loss_name: 0.5 / (k + 1)},
                                     total_loss=2.0 / (k + 1), grad_norm=3.0, AUC=80.0 + k, AP=ap,
                                     AUC_sub=70.0, AP_sub=50.0, version="train")))
    Path(path).write_text("\n".join(lines) + "\n")


def write_sized_ts(path, sizes, seconds=2.0, rate=25):
    """An H.264 MPEG-TS whose frame size changes between segments, by the ffmpeg command line: one
    segment of testsrc2 per (width, height) in `sizes`, `seconds` each, joined as a camera that changes
    its resolution mid-stream sends them (a new SPS, timestamps going on)."""
    parts = []
    for i, (width, height) in enumerate(sizes):
        part = Path(path).with_name(f".{Path(path).stem}-{i}.ts")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={width}x{height}:rate={rate}:duration={seconds}", "-c:v", "libx264",
                        "-preset", "ultrafast", "-g", "16", "-pix_fmt", "yuv420p", "-output_ts_offset",
                        str(i * seconds), "-f", "mpegts", str(part)], check=True)
        parts.append(part.read_bytes())
        part.unlink()
    Path(path).write_bytes(b"".join(parts))
    return path


def serve_ts(path, port, realtime=False):
    """ffmpeg sending an MPEG-TS file's packets unchanged to the one client of tcp://127.0.0.1:port
    (at its own pace with realtime, else as fast as it goes); returns the process once it listens."""
    server = subprocess.Popen(["ffmpeg", "-v", "error", *(["-re"] if realtime else []), "-i", str(path), "-c", "copy",
                               "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"],
                              stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None and not tcp_listening(port):
        time.sleep(0.02)
    return server


def tcp_listening(port):
    """Whether a socket listens on 127.0.0.1:port (Linux /proc/net/tcp: probing by connecting would take
    a one-client server's one client)."""
    try:
        with open("/proc/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        time.sleep(1.0)
        return True
    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in lines)
