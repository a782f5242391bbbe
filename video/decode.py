"""Decoding a video with PyAV into the RGB frames a player shows, each with its time in seconds (by the Clock).

The frame contract, one for every reader (extract.py, infer.py --video, stream.py), checked against
the ffmpeg command line by tests/test_decode_matrix.py over a generated matrix of inputs:
  - the stream: the one ffmpeg decodes by default (select_stream); cover pictures and thumbnails
    are never taken for the video;
  - upright: a video turned by its display matrix (a phone clip stored sideways) is turned as
    players turn it (ffmpeg's autorotate);
  - the display size: the stored width scaled by the sample aspect ratio (ffmpeg's scale=iw*sar:ih),
    so non-square pixels (anamorphic DVD, HDV, 720x576 at 64:45) give the scene's shape;
  - colour: converted to RGB at the frame's own size with its own colour matrix and range
    (BT.601/709/2020, limited or full), as ffmpeg converts it, chroma replicated (CONVERT_FILTER);
  - then resized in RGB by one filter, RESIZE_FILTER (swscale's bilinear, every channel alike), from
    each frame's own size to the size the first frame set (crops.resized_size of its display size),
    so the same picture gives the same numbers whatever its codec, pixel format or tags, and a
    video whose picture changes size mid-file still gives frames of one size.
A damaged packet is skipped, as ffmpeg skips it; with fps, frames are resampled by timestamp (dropped
or repeated).
"""
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.filter
import av.sidedata.sidedata
import av.stream
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from options import RESIZE
from core.scan import VIDEO_SUFFIXES  # noqa: F401  (where it was: the suffixes a folder scan takes)
from utils import one_line
from video import VideoError
from video.clock import Clock
from video.crops import resized_size


# swscale's bilinear filter, applied to every RGB channel alike: without the full-chroma flags swscale
# filters RGB through a YUV form with half-width colour, which blurs colour across edges
RESIZE_FILTER = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
RESIZE_FILTER_FFMPEG = 'bilinear+full_chroma_int+full_chroma_inp'    # the same filter as ffmpeg's scale flags
# YUV -> RGB at the frame's own size with its chroma replicated (nearest), as swscale's 8-bit converters
# always do; its interpolating paths for 10-bit input differ between FFmpeg releases by tens of levels
CONVERT_FILTER, CONVERT_FILTER_FFMPEG = Interpolation.POINT, 'neighbor'
# AVColorSpace -> swscale's colour matrix (SWS_CS_*), as ffmpeg's scale filter maps a frame's matrix
SWS_MATRICES = {1: 'ITU709', 4: 'FCC', 5: 'ITU601', 6: 'SMPTE170M', 7: 'SMPTE240M', 9: 'BT2020', 10: 'BT2020'}
NOT_THE_VIDEO = [getattr(av.stream.Disposition, name, 0) for name in ('attached_pic', 'timed_thumbnails')]
DEFAULT_BONUS = 5_000_000      # ffmpeg's stream choice: a stream marked default counts this many pixels more

DISPLAYMATRIX = getattr(getattr(av.sidedata.sidedata, 'Type', None), 'DISPLAYMATRIX', None)


def resample_by_time(timed_items, fps):
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
    size: tuple | None = None      # (width, height) the first frame is shown at: upright, sample aspect ratio applied
    size_changes: int = 0          # frames whose picture size differs from the first frame's

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


def select_stream(container, path):
    """
    The video stream that ffmpeg's command line decodes from `container` by default (fftools'
    stream choice): of the video streams that are not a cover picture or thumbnails (disposition
    attached_pic or timed_thumbnails) or a one-frame preview beside a longer stream (its header
    counts one frame), the one with the most pixels (width x height), a stream marked default
    counting DEFAULT_BONUS pixels more; the first among equals. A drone clip whose stream 0 is a
    one-frame JPEG preview thus gives its video, as players show it (ffmpeg's command line takes such
    a preview when it is marked default and the video is not much larger).
    Raises VideoError naming `path` when there is no such stream (audio only, a cover picture only).
    """
    video = list(container.streams.video)
    moving = [s for s in video if not any(int(s.disposition) & int(flag) for flag in NOT_THE_VIDEO)]
    if any(s.frames != 1 for s in moving):      # a one-frame stream beside a longer one is a preview picture
        moving = [s for s in moving if s.frames != 1]
    if not moving:
        what = ('its only video is a cover picture or thumbnail' if video else
                'it holds only audio' if container.streams.audio else 'it holds no video')
        raise VideoError(f'{path}: no video stream ({what})')

    def score(stream):
        context = stream.codec_context
        default = bool(int(stream.disposition) & int(av.stream.Disposition.default))
        return (context.width or 0) * (context.height or 0) + DEFAULT_BONUS * default
    return max(moving, key=lambda s: (score(s), -s.index))


def colour_options(frame):
    """VideoReformatter.reformat's keyword arguments that convert `frame` to RGB as ffmpeg does: its
    own colour matrix and range where its tags give them, else swscale's defaults (BT.601; limited
    range for YUV, full for grey and the yuvj formats). RGB and palette frames need none."""
    if frame.format.is_rgb or frame.format.has_palette:
        return {}
    options = {}
    matrix = SWS_MATRICES.get(int(frame.colorspace))
    if matrix:
        options['src_colorspace'] = matrix
    if int(frame.color_range) in (1, 2):       # AVCOL_RANGE_MPEG (limited), AVCOL_RANGE_JPEG (full)
        options['src_color_range'] = int(frame.color_range)
    return options


def display_size(width, height, sar):
    """(width, height) at which players show a picture stored at width x height with sample aspect
    ratio `sar` (a Fraction; None or 0 when unknown, taken as square): the width scaled by it, the
    height kept, as ffmpeg's scale=iw*sar:ih (a 720x576 picture at 64:45 shows as 1024x576)."""
    if not sar or sar <= 0 or sar == 1:
        return width, height
    return max(1, round(width * sar)), height


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


def _arrays(frames, decoding, resize, sar=None, originals=False):
    """(stamp s, duration s, arrival, (duration s, (image, original))) of each (decoded frame, arrival):
    image the (H, W, 3) uint8 RGB frame as the module's contract gives it (upright, in RGB by its own
    colour tags, resized in RGB from its own size to the size the first frame set), original the
    upright RGB frame at the stored size of the first frame (its own size unless the picture changed
    size mid-file) when `originals`, else None. sar: the stream's sample aspect ratio."""
    upright = Upright()
    to_rgb, to_size, to_first = VideoReformatter(), VideoReformatter(), VideoReformatter()
    target = first = None
    for frame, arrival in frames:
        decoding.first_arrival = decoding.first_arrival or arrival
        stamp = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else None  # exact
        duration = frame.duration * frame.time_base if frame.duration and frame.time_base else None
        colour = colour_options(frame)       # read before turning: a filter graph may not carry the tags
        turns = display_turns(frame, decoding)
        decoding.rotation = 90 * turns
        frame = upright(frame, turns)
        size = (frame.width, frame.height)
        if target is None:
            shown = display_size(*size, (1 / sar if turns % 2 else sar) if sar else None)  # turned: SAR turns too
            target, first = tuple(resized_size(*shown, resize)), size
            decoding.size = shown
        elif size != first:
            _note_size_change(decoding, first, size, stamp, target)
        rgb = to_rgb.reformat(frame, format='rgb24', interpolation=CONVERT_FILTER, **colour)
        image = rgb if size == target else to_size.reformat(rgb, *target, interpolation=RESIZE_FILTER)
        original = None
        if originals:
            kept = rgb if size == first else to_first.reformat(rgb, *first, interpolation=RESIZE_FILTER)
            original = kept.to_ndarray()
        yield stamp, duration, arrival, (duration, (image.to_ndarray(), original))


def _note_size_change(decoding, first, size, stamp, target):
    """Say once that the picture changed size mid-file; that its shape changed too (the later frames are
    stretched to the first one's shape) when it did."""
    if decoding.size_changes == 0:
        when = f' at {float(stamp):.2f} s' if stamp is not None else ''
        stretched = abs(size[0] * first[1] / (size[1] * first[0]) - 1) > 0.01
        decoding.note(f'its picture changes size from {first[0]}x{first[1]} to {size[0]}x{size[1]}{when}; '
                      f'every frame is resized from its own size to {target[0]}x{target[1]}' +
                      (', so the later frames are stretched to the first frame\'s shape' if stretched else ''))
    decoding.size_changes += 1


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


def decode_frames(path, resize=RESIZE, fps=None, decoding=None, open_options=None, live=False, originals=None):
    """
    Yield a video's frames as (start s, end s, (H, W, 3) uint8 RGB), as the module's contract gives
    them: the stream ffmpeg decodes (select_stream), upright, converted to RGB by their own colour
    tags, resized in RGB per `resize` (crops.resized_size of the first frame's display size, sample
    aspect ratio applied; every frame to that size), resampled to `fps` if given.
    Times are the frames' own timestamps (variable frame rates included), in seconds from the
    first frame, as Fractions, made monotonic by Clock (frames without stamps, resets, jumps; a live
    source's made-up clock). `decoding` (a Decoding) is filled in on the way: frames decoded
    against the header's count, rotation, display size, damaged packets. `path` is anything FFmpeg opens (a file,
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
            stream = select_stream(container, path)
            stream.thread_type = 'AUTO'
            decoding.expected, decoding.exact = header_frames(container, stream)
            decoding.rate = float(stream.average_rate) if stream.average_rate else None
            clock = Clock(path, live, decoding.rate, fps, decoding.note, opened_at)
            frames = _timed(clock, _arrays(_decoded_frames(container, stream, decoding), decoding, resize,
                                           stream.sample_aspect_ratio, originals is not None))
            if fps:
                step = 1 / Fraction(str(fps))
                frames = ((t, t + step, image) for t, image in
                          resample_by_time(((start, image) for start, _, image in frames), fps))
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
    """The average frame rate of the video's stream (select_stream) from its container, or None when it does not say."""
    try:
        with av.open(str(path)) as container:
            rate = select_stream(container, path).average_rate
    except (av.error.FFmpegError, OSError, VideoError):
        return None
    return float(rate) if rate else None
