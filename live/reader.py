"""The source: a reader thread that decodes a live source (or a file) into 16-frame Snippets in a bounded
queue, reconnecting a lost live source with exponential backoff and saying what happened as Notices.

Frames come from video.decode.decode_frames (the resize and upright turns of extract.py, times from
video.clock.Clock: the frames' own timestamps, made monotonic, or their arrival when they carry none
or a clock the format made up). Nothing is dropped here: frames a live source lost upstream show as
gaps in its timestamps, which are reported.
"""
import argparse
import math
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from utils import one_line
from video import VideoError
from video.decode import Decoding, decode_frames
from video.snippets import SNIPPET


GAP_S = 0.5             # a frame lasting longer than this and GAP_FACTOR x the usual is a gap in the source
GAP_FACTOR = 4.0
@dataclass
class Snippet:
    """16 frames of the stream as they arrived. Times are stream seconds (see Reader)."""
    index: int                  # 0, 1, ... over the whole run, reconnections included
    start_s: float              # start of its first frame
    end_s: float                # end of its last frame
    frames: np.ndarray          # (16, H, W, 3) uint8 RGB, resized and upright (video.decode: one size per
                                # connection, a frame of another size resized to it)
    frame_times: np.ndarray     # (16,) float64 start of each frame
    arrival: float              # time.monotonic() when its last frame came out of the decoder
    wall: float                 # time.time() at the same moment
    originals: list | None = None           # 16 (H0, W0, 3) the source's own frames, upright, each at the
                                            # size it came in (--save_clips)


@dataclass
class Resume:
    """Where an earlier run into the same outputs stopped: the next snippet's index, its last snippet's end
    (stream seconds) and when that snippet arrived (time.time())."""
    index: int
    end_s: float
    wall: float


@dataclass
class Notice:
    """Something the reader has to say. kind: opened, resumed, open_failed, lost, retry, reconnected, gap,
    warning, end, error."""
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
    (never before the previous end), so an outage shows as a gap of its length. A source that cannot
    be opened at the start is retried under the same --reconnect policy as one that drops (a regular
    file is not: it fails at once). `resume` (Resume) continues an earlier run's snippet numbers and
    stream time, the time between that run's last snippet and this first frame counted as an outage.
    """

    def __init__(self, source, settings, live, resume=None, name="stream-reader"):
        self.source, self.settings, self.live = str(source), settings, live
        self.options = open_options(source, settings)
        self.items = queue.Queue(maxsize=settings.queue)
        self.stop = threading.Event()
        self.resume = resume
        self.index = resume.index if resume else 0      # next snippet's index
        self.end_s = 0.0                # stream time of the end of the last frame read
        self.anchor = None              # monotonic time at stream time 0
        self.last_arrival = None        # monotonic time of the last frame read
        self.frames = self.damaged = self.reconnects = self.gaps = 0
        self.gap_s = self.outage_s = self.blocked_s = 0.0
        self.connected = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

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
            never_opened = self.anchor is None and not self.connected
            if never_opened and not self.live:          # a file that cannot be read: no retrying helps
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
                # down at the start counts from the first attempt, as a drop counts from the loss
                lost = now if lost is None else lost
                failures += 1
            if (attempts is not None and failures >= attempts) or (seconds is not None and now - lost >= seconds):
                tried = f"gave up after {failures} attempt{'s' if failures != 1 else ''} in {now - lost:.1f} s" \
                    if attempts != 0 else "not retried (--reconnect 0)" if never_opened else "reconnection is off"
                self._put(Notice("open_failed", f"{reason}; {tried}") if never_opened
                          else Notice("end", f"source lost; {tried}"))
                return
            if not self.connected:
                what = "opening" if never_opened else "reconnection"
                self._put(Notice("retry", f"{what} attempt {failures} failed ({reason})"))
            wait = min(longest_wait, first_wait * 2 ** failures)
            if seconds is not None:
                wait = max(0.0, min(wait, lost + seconds - now))
            self.stop.wait(wait)

    def _noted(self, note):
        """A note of decoding (the clock used, a timestamp discontinuity), logged as it is made."""
        self._put(Notice("warning", f"{redact(self.source)}: {note}"))

    def _connection(self, decoding):
        """Read one connection's frames into snippets until it ends (VideoError when it fails)."""
        starts = deque(maxlen=SNIPPET)       # the current snippet's frames' start times
        # clips keep the source's own frames: the analysis resize is for the network only
        originals = deque(maxlen=SNIPPET) if self.settings.save_clips else None
        frames = decode_frames(self.source, self.settings.resize, self.settings.fps, decoding, self.options, self.live,
                               originals)
        buffer = []
        for start, end, frame in self._timed(frames, starts, decoding):
            buffer.append(frame)
            if len(buffer) < SNIPPET:
                continue
            clip = np.stack(buffer)                # one size: video.decode resizes a changed frame
            self._put(Snippet(self.index, starts[0], end, clip, np.array(starts), time.monotonic(), time.time(),
                              list(originals) if originals is not None else None))
            self.index += 1
            buffer = []

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
            self._put(Notice("opened", f"opened {redact(self.source)}"))
            if self.resume is None:
                self.anchor = now
                return 0.0
            # an earlier run's stream time goes on: its last snippet's end, plus the time since, as an outage
            since = max(0.0, time.time() - (time.monotonic() - now) - self.resume.wall) if self.live else 0.0
            offset = self.resume.end_s + since
            self.anchor, self.last_arrival = now - offset, now - since
            self.outage_s += since
            self._put(Notice("resumed", f"continuing the earlier run's outputs at snippet {self.index}, "
                                        f"{offset:.2f} s of stream time ({since:.1f} s since its last snippet)"))
            return offset
        outage = now - self.last_arrival
        self.reconnects += 1
        self.outage_s += outage
        offset = max(self.end_s, now - self.anchor) if self.live else self.end_s
        self._put(Notice("reconnected", f"reconnected after {outage:.1f} s without frames; the stream goes on "
                                        f"at {offset:.2f} s", seconds=outage))
        return offset


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
