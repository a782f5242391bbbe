"""Event clips: each event written as an MP4 from pre_roll seconds before to post_roll seconds after,
in the source's own frames and resolution, from a bounded buffer of recent frames.
"""
import os
from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from utils import one_line


CLIP_FPS_BOUND = 60
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
            # about 1.6 MB of resident memory per clip that was never returned (`python -m bench --sections j`)
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
        """A snippet's frames (the source's own, each at the size it came in, with --save_clips)."""
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
        name, n = f"event_{number:04d}.mp4", 1
        while (self.folder / name).exists():       # never over an earlier run's clip
            n += 1
            name = f"event_{number:04d}-{n}.mp4"
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
