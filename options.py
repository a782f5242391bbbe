"""Every command-line flag and its default, for main.py (training), infer.py (evaluation) and
dataset.py's make-list / make-gt commands.

The defaults are the authors' release settings for XD-Violence. A dataset can override some of
them (dataset.DATASETS[...].defaults, e.g. the small demo run); a flag given on the command line
always wins. Edit the defaults here.
"""
import argparse
import ast
import sys

import torch

from dataset import DATASETS
from extract import parse_resize
from test import EVAL_SNIPPETS
from utils import InputError


MAX_ITERS = 10_000_000   # bound on a learning-rate list's length


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_lr(text):
    """A learning-rate schedule: a Python-style list expression of numbers, evaluated safely.

    '[0.0001]*1000', '[0.001]*500 + [0.0001]*500', '[1e-4, 5e-5]' or a single number.
    One entry per training iteration. Never uses eval().
    """
    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.List):
            return [float(value(e)) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = value(node.left), value(node.right)
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = value(node.left), value(node.right)
            if type(left) is int:
                left, right = right, left
            if isinstance(left, list) and type(right) is int and 0 < right <= MAX_ITERS:
                return left * right
        raise ValueError

    try:
        lr = value(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers, e.g. '[0.0001]*1000'") from None
    lr = [float(lr)] if not isinstance(lr, list) else lr
    if not lr or any(not (x > 0) for x in lr):
        raise argparse.ArgumentTypeError(f"{text!r} must give at least one learning rate, all positive")
    return lr


def positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return n


def positive_float(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return x


def ratio(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in (0, 1]")
    return x


def add_data_args(p):
    g = p.add_argument_group("data")
    add_dataset_args(g)
    g.add_argument("--train_list", help="training list file (default per dataset: list/<dataset>_train.list; when "
                                        "it and the test list are missing they are made from --root_dir)")
    g.add_argument("--test_list", help="test list file (default per dataset: list/<dataset>_test.list)")
    g.add_argument("--gt", help="frame-level ground truth .npy of the test list (default per dataset: "
                                "list/<dataset>_gt.npy; not used with --annotations)")
    add_annotation_args(g)
    g.add_argument("--len_feature", type=positive_int, default=1024, help="feature width D")
    g.add_argument("--num_workers", type=int, default=4, help="threads reading feature files")
    add_split_args(g)
    g.add_argument("--eval_snippets", type=positive_int, default=EVAL_SNIPPETS,
                   help="evaluation packs test videos' crops into passes of at most this many snippets "
                        "(rows x padded length); lower it to bound memory, raise it on a GPU")


ANNOTATIONS_HELP = ("temporal annotations of the test videos, one line per video (or per interval): `video s1 e1 "
                    "[s2 e2 ...]` (XD-Violence), `video.mp4 class s1 e1 s2 e2` (UCF-Crime; -1 -1: none), "
                    "`Class/video.mp4 frames class s1 e1 s2 e2` (UR-DMU's UCF copy) or `video,start,end`; start and "
                    "end in frames, end exclusive (see --annotation_unit); a first line without numbers is a header")


def add_annotation_args(g, required=False):
    g.add_argument("--annotations", required=required, help=ANNOTATIONS_HELP + (
        "" if required else "; the ground truth is built from them instead of --gt"))
    g.add_argument("--annotation_unit", default="frames", choices=["frames", "seconds"],
                   help="unit of the annotations' start and end: frames (the datasets' own files), or seconds "
                        "(decimals allowed), converted with --fps to the first frame at or after each time, "
                        "ceil(t * fps)")
    g.add_argument("--fps", type=positive_float,
                   help="frame rate of the videos: converts annotations in seconds to frames; infer.py also "
                        "gives times in seconds from it where the features carry no frame times of their own "
                        "(extract.py records each snippet's times from the frames' timestamps)")


def add_dataset_args(g):
    g.add_argument("--dataset", default="xd", choices=sorted(DATASETS),
                   help="feature layout, naming conventions and settings: xd (XD-Violence, 5 crops), ucf "
                        "(UCF-Crime, 10 crops), custom (any folder), demo (synthetic data generated on first use)")
    g.add_argument("--root_dir", help="feature folder the list files' paths are relative to "
                                      "(default per dataset: data/<dataset>)")
    g.add_argument("--normal_marker", help="name rule: a video is normal iff its name contains this (default per "
                                           "dataset: xd _label_A, ucf Normal, custom none); a list's label column "
                                           "(1 abnormal, 0 normal) takes precedence")
    g.add_argument("--crops", type=positive_int, help="crops per video (default per dataset: xd 5, ucf 10, custom "
                                                      "inferred from the crop files); also the N of a one-file "
                                                      "(T, N, D) or (N, T, D) video")


def add_split_args(g):
    g.add_argument("--test_videos", help="when making lists: a file naming the test videos, one per line (a name, "
                                         "a path, or an annotation line); default: split by train/ and test/ folders")
    g.add_argument("--labels", help="when making lists: a file of `video label` lines (1 abnormal, 0 normal) used "
                                    "instead of the name rule; the lists then get a label column")


def add_model_args(p):
    g = p.add_argument_group("model")
    g.add_argument("--ratios", type=positive_int, nargs=2, default=[16, 32],
                   help="channel reduction of the normal head's two BN layers")
    g.add_argument("--kernel_sizes", type=positive_int, nargs=3, default=[1, 1, 1],
                   help="kernel sizes of the normal head's three convolutions")
    g.add_argument("--ratio_sample", type=ratio, default=0.2, help="sample-level selection ratio")
    g.add_argument("--ratio_batch", type=ratio, default=0.4, help="batch-level selection ratio")


def add_run_args(p):
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: cuda, then mps, then cpu")
    g.add_argument("--seed", type=int, default=2022, help="random seed (-1: no manual seed)")
    g.add_argument("--amp", action="store_true",
                   help="CUDA only: bfloat16 autocast in training and evaluation (scores change by "
                        "bfloat16 round-off; off by default)")
    g.add_argument("--compile", action="store_true", help="CUDA only: run the model through torch.compile")


def check_accelerator_flags(args, device):
    """--amp and --compile are for CUDA; elsewhere they are an error, not silently ignored."""
    for flag in ("amp", "compile"):
        if getattr(args, flag) and device.type != "cuda":
            raise InputError(f"--{flag} needs a CUDA device (this run uses {device.type})")
    if args.amp and not torch.cuda.is_bf16_supported():
        raise InputError("--amp needs a GPU with bfloat16 support")


def resolve(parser, argv):
    """Parse twice: first --dataset, then everything with that dataset's defaults applied."""
    first, _ = parser.parse_known_args(argv)
    defaults = dict(DATASETS[first.dataset].defaults)
    parser.set_defaults(**{k: v for k, v in defaults.items() if k not in ("train_list", "test_list", "gt")})
    args = parser.parse_args(argv)
    if getattr(args, "gt", None) and getattr(args, "annotations", None):
        parser.error("give --gt or --annotations, not both")
    for key in ("train_list", "test_list", "gt"):
        if key == "gt" and getattr(args, "annotations", None):
            continue
        if hasattr(args, key) and getattr(args, key) is None and key in defaults:
            setattr(args, key, defaults[key].format(root_dir=args.root_dir))
    return args


def parse_main_args(argv=None):
    p = Parser(description="Train BN-WVAD and evaluate it every --plot_freq steps; keeps the best-AP checkpoint.")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=parse_lr, default="[0.0001]*1000",
                   help="learning rate per iteration as a list expression; its length is the number of iterations")
    g.add_argument("--batch_size", type=positive_int, default=64, help="normal and abnormal items per step, each")
    g.add_argument("--num_segments", type=positive_int, default=200, help="segments a training item is resampled to")
    g.add_argument("--train_crops", default="each", choices=["each", "all"],
                   help="each: every crop is its own training item (the release); all: one item per video with "
                        "all its crops, (N, T, D), averaged over crops inside the model")
    g.add_argument("--cache_dir", help="folder for the resampled training items, reused by later runs and rebuilt "
                                       "when a feature file's size or modification time changes "
                                       "(default <root_dir>/.cache; 'none': no cache)")
    g.add_argument("--cache_fp16", action="store_true",
                   help="store cached training items as float16 (half the disk and memory; computed in float32)")
    g.add_argument("--weight_decay", type=float, default=0.00005, help="Adam weight decay")
    g.add_argument("--plot_freq", type=positive_int, default=5, help="evaluate every this many steps")
    g = p.add_argument_group("outputs")
    g.add_argument("--model_path", default="ckpts/", help="folder for <dataset>_best_<seed>.pkl")
    g.add_argument("--log_path", default="logs/", help="folder for <dataset>_<seed>.jsonl")
    g.add_argument("--version", default="train", help="a name for this run, recorded in the log and checkpoint")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard under <log_path>/tensorboard/ (needs the tensorboard package)")
    g = p.add_argument_group("resuming")
    g.add_argument("--resume", metavar="CKPT",
                   help="continue the run saved in this `last` checkpoint (<model_path>/<dataset>_last_<seed>.pkl); "
                        "give the same flags as the interrupted run")
    g.add_argument("--stop_after", type=positive_int, metavar="STEP",
                   help="end this process after this step, writing the `last` checkpoint, as if interrupted; "
                        "--resume continues the same schedule")
    return resolve(p, argv)


def parse_infer_args(argv=None):
    p = Parser(description="Load a checkpoint (ours, or the release's bare state dict), score the test set "
                           "and evaluate it.")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    p.add_argument("--model_path", required=True,
                   help="checkpoint file; for a bare state dict the model configuration comes from the flags")
    p.add_argument("--output_dir", default="outputs/",
                   help="folder for metrics.json, scores.csv, segments.csv, frame_scores/ and plots/")
    p.add_argument("--features", nargs="+", metavar="PATH",
                   help="score these feature files or folders of .npy files (searched recursively; crops "
                        "named <video>__<k>.npy) instead of the test list; no ground truth is used")
    p.add_argument("--video", nargs="+", metavar="PATH",
                   help="score these video files (or folders of videos, or .txt lists of paths): I3D features "
                        "are extracted first (needs --i3d_weights), then scored like --features")
    p.add_argument("--i3d_weights", help="with --video: the I3D RGB state dict (rgb_imagenet.pt of the public "
                                         "PyTorch port); never downloaded")
    p.add_argument("--feature_cache", help="with --video: folder for the extracted features, reused by later runs "
                                           "(default <output_dir>/features)")
    p.add_argument("--resize", type=parse_resize, default=256,
                   help="with --video: 'S' scales the short side to S, 'WxH' resizes to W x H, before 224x224 crops")
    p.add_argument("--threshold", type=float,
                   help="raw score above which snippets are anomalous, for segments.csv and the plots "
                        "(default: the --normal_quantile quantile of normal scores)")
    p.add_argument("--normal_quantile", type=ratio, default=0.99,
                   help="without --threshold: the threshold is this quantile of the test set's normal videos' "
                        "scores when a ground truth is given, else of the training normals' scores stored "
                        "in the checkpoint")
    p.add_argument("--top_k", type=positive_int, default=5,
                   help="anomalous segments kept per video, highest peak first")
    p.add_argument("--plot", action="store_true",
                   help="write plots/<video>.png per video and, with a ground truth, roc_pr.png")
    return resolve(p, argv)


def parse_tool_args(argv=None):
    """`python dataset.py make-list ...` / `make-gt ...`: lists and ground truth from a feature folder."""
    commands = ("make-list", "make-gt")
    argv = list(argv) if argv is not None else sys.argv[1:]
    if not argv or argv[0] not in commands:
        p = Parser(prog="dataset.py", usage="python dataset.py {make-list,make-gt} [flags] (each has --help)",
                   description="make-list: list files from a feature folder; make-gt: the frame-level ground truth "
                               "of a test list from temporal annotations.")
        if argv and argv[0] in ("-h", "--help"):
            p.print_help()
            p.exit()
        p.error(f"expected a command, {' or '.join(commands)}")
    command, argv = argv[0], argv[1:]
    if command == "make-list":
        p = Parser(prog="dataset.py make-list", description="Scan a feature folder, group and check the crops of "
                   "each video, split train/test and write <list_dir>/<dataset>_train.list and _test.list "
                   "(abnormal videos first).")
        add_dataset_args(p)
        add_split_args(p)
        p.add_argument("--list_dir", default="list", help="folder for the two list files")
    else:
        p = Parser(prog="dataset.py make-gt", description="Build the test list's frame-level ground truth from "
                   "temporal annotations and each video's T (read from the feature files' headers).")
        add_dataset_args(p)
        p.add_argument("--test_list", help="test list file (default per dataset: list/<dataset>_test.list)")
        add_annotation_args(p, required=True)
        p.add_argument("--out", help="output .npy (default per dataset: list/<dataset>_gt.npy)")
    p.add_argument("--len_feature", type=positive_int, help="feature width D the files must have (default: any, "
                                                            "the same for all)")
    args = resolve(p, argv)
    args.command = command
    if command == "make-gt" and args.out is None:
        args.out = DATASETS[args.dataset].defaults["gt"].format(root_dir=args.root_dir)
    return args
