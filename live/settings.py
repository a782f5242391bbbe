"""StreamSettings: how a live run reads, scores and alerts (stream.py's flags default to these values),
and the snippet settings a checkpoint's training features were extracted with (extraction_defaults).
"""
from dataclasses import dataclass, field

from options import RESIZE, checkpoint_defaults


@dataclass
class StreamSettings:
    """How run_stream reads, scores and alerts. The command line's flags default to these values."""
    crops: int = 1                      # 1, 5 or 10 crops per snippet (extract.py's crop order)
    resize: int | tuple = RESIZE        # extract.py's --resize: short side, or (width, height)
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
    rollover: str | int | None = None   # roll scores.csv, events.jsonl, stream.log over: 'day', a size in bytes, None
    keep_days: float | None = None      # remove rolled files and clips last written longer ago; None: keep all

    def check(self):
        """ValueError (one line) for settings that cannot work together."""
        if self.crops not in (1, 5, 10):
            raise ValueError(f"crops must be 1, 5 or 10, got {self.crops}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"the window must be at least 1 snippet, got {self.window}")
        if self.delay < 0 or (self.window is not None and self.delay >= self.window):
            raise ValueError(f"the delay must be at least 0 and less than the window ({self.window}), got {self.delay}")
        if self.keep_days is not None and not self.keep_days > 0:
            raise ValueError(f"keep_days must be more than 0, got {self.keep_days}")
        if self.min_snippets < 1 or self.batch_size < 1 or self.queue < 1:
            raise ValueError("min_snippets, batch_size and queue must be at least 1")


def extraction_defaults(argv):
    """The snippet settings the checkpoint's training features were extracted with ({'crops': 1,
    'resize': 256, 'resample_fps': 25, ...}: options.checkpoint_defaults, read from --model_path in argv), so
    the live features are cut as the model saw them; {} for a bare state dict."""
    recorded = checkpoint_defaults(argv)
    return {key: recorded[key] for key in ("crops", "resize", "resample_fps") if key in recorded}


def fill_from_checkpoint(args, argv, given, crops, resize):
    """Set each extraction flag of `args` that the command line did not give (`given`, the flags typed)
    from the checkpoint's record (extraction_defaults), else crops and resize to the defaults given;
    what came from the checkpoint is kept in args.from_checkpoint. stream.py and calibrate.py score as
    each other, so both fill their flags here."""
    args.from_checkpoint = {k: v for k, v in extraction_defaults(argv).items() if k not in given}
    for key, value in [*args.from_checkpoint.items(), ("crops", crops), ("resize", resize)]:
        if getattr(args, key) is None:
            setattr(args, key, value)


def delay_error(window, delay):
    """The one-line error for a --delay that the causal --window cannot hold, or None."""
    if 0 <= delay < window:
        return None
    return f"--delay must be at least 0 and less than --window ({window}), got {delay}"

