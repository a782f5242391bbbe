"""Every command-line flag and its default, for main.py (training) and infer.py (evaluation).

The defaults are the authors' release settings for XD-Violence. A dataset can override some of
them (dataset.DATASETS[...].defaults, e.g. the small demo run); a flag given on the command line
always wins. Edit the defaults here.
"""
import argparse
import ast

import torch

from dataset import DATASETS
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
    g.add_argument("--dataset", default="xd", choices=sorted(DATASETS),
                   help="feature layout and naming conventions (demo: synthetic data generated on first use)")
    g.add_argument("--root_dir", help="folder the list files' paths are relative to "
                                      "(default per dataset: xd -> data/xd, demo -> data/demo)")
    g.add_argument("--train_list", help="training list file (default per dataset, e.g. list/XD_Train.list)")
    g.add_argument("--test_list", help="test list file (default per dataset, e.g. list/XD_Test.list)")
    g.add_argument("--gt", help="frame-level ground truth .npy of the test list (default per dataset)")
    g.add_argument("--len_feature", type=positive_int, default=1024, help="feature width D")
    g.add_argument("--num_workers", type=int, default=4, help="threads reading feature files")
    g.add_argument("--eval_snippets", type=positive_int, default=EVAL_SNIPPETS,
                   help="evaluation packs test videos' crops into passes of at most this many snippets "
                        "(rows x padded length); lower it to bound memory, raise it on a GPU")


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
    for key in ("train_list", "test_list", "gt"):
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
    return resolve(p, argv)


def parse_infer_args(argv=None):
    p = Parser(description="Load a checkpoint (ours, or the release's bare state dict), score the test set "
                           "and evaluate it.")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    p.add_argument("--model_path", required=True,
                   help="checkpoint file; for a bare state dict the model configuration comes from the flags")
    p.add_argument("--output_dir", default="outputs/", help="folder for metrics.json and scores.csv")
    return resolve(p, argv)
