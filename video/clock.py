"""The Clock: frames' timestamps -> seconds on one time line, for files and live sources alike.
"""
import time
from fractions import Fraction

from video import VideoError


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
        frame's own duration, else the container's rate), else `fps` (--resample_fps); else VideoError. Said once.
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
            else (self.fps, "--resample_fps") if self.fps else (None, None)
        if rate is None:
            raise VideoError(f"{self.name}: its frames carry no timestamps and it declares no frame rate; "
                             f"give --resample_fps")
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
