"""BN-WVAD against UR-DMU, the published comparison, in one command: both models trained by main.py on
the same data with the same seeds, and the table of their best checkpoints.

  python compare.py --dataset demo                          # 14 min on a 2-core CPU (--seeds 2022: 4.5)
  python compare.py --dataset xd --root_dir data/xd --seeds 2022 2023 2024

Every flag that is not compare.py's own goes to main.py unchanged, for both models (each model keeps
its own release settings where the flags and the dataset leave them open: UR-DMU's learning-rate
schedule, evaluation steps and no gradient clipping). For each model and seed, main.py keeps the
best checkpoint by the dataset's metric (--select_by: AUC for ucf, as UCF-Crime papers report, AP
otherwise), on --val_list when given, else on the test set as the published protocol does; the
table reports that checkpoint's AUC, AP, AUC_sub and AP_sub, and its event metrics on the test set
at the threshold of its own calibration (the 0.99 quantile of the training normals' scores;
test.event_metrics): event recall, event IoU and, with --fps, false alarms per hour of normal video,
as the mean and standard deviation over the seeds. Outputs in --output_dir (default
outputs/compare_<dataset>):
  comparison.csv   one row per model and seed (its best step and its metrics), then per model the
                   mean and the standard deviation over the seeds
  comparison.md    the published-style table: model, AUC, AP, AUC_sub, AP_sub, then the event
                   metrics, as mean +- std
  comparison.png   AUC and AP over training of both models (mean over seeds, +- std shaded)
  ckpts/, logs/    each run's checkpoints and log (main.py's own files, named by model and seed)
"""
import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

from core.checkpoints import load_model
from dataset import Labelled, load_test_set
from model import MODELS
from options import NORMAL_QUANTILE, dataset_info, parse_main_args
from core.plots import plot_comparison
from core.runs import run_files
from core.features import FRAMES_PER_SNIPPET
from test import METRICS, event_metrics, score_batched
from core.thresholds import checkpoint_calibration, choose_threshold
from utils import (DefaultsFormatter, InputError, pick_device, read_checkpoint, run_cli, run_folders,
                   write_file, write_text)

MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")

NAMES = {"bnwvad": "BN-WVAD", "urdmu": "UR-DMU"}
EVENT_COLUMNS = {"event_recall": "event recall", "event_IoU": "event IoU", "false_alarms_per_hour": "FA/h"}
COLUMNS = (*METRICS, *EVENT_COLUMNS)      # the table's metrics, in its order
OWN_BY_MAIN = ("--model", "--seed", "--model_path", "--log_path", "--resume", "--stop_after")


def parse_args(argv=None):
    """compare.py's own flags, and the rest (for main.py)."""
    p = argparse.ArgumentParser(description="Train BN-WVAD and UR-DMU on the same data with the same seeds and "
                                            "print the published-style table of their best checkpoints. Any "
                                            "other flag is main.py's and goes to both runs.",
                                formatter_class=DefaultsFormatter, allow_abbrev=False)
    p.add_argument("--models", nargs="+", default=["bnwvad", "urdmu"], choices=sorted(MODELS),
                   help="the models compared, in table order")
    p.add_argument("--seeds", nargs="+", type=int, default=[2022, 2023, 2024],
                   help="each model is trained once per seed; the table gives mean and std over them")
    p.add_argument("--output_dir", help="folder for the table, the plot and every run's checkpoints and logs "
                                        "(default: outputs/compare_<dataset>)")
    args, rest = p.parse_known_args(argv)
    clash = [w.split("=")[0] for w in rest if w.split("=")[0] in OWN_BY_MAIN]
    if clash:
        p.error(f"{clash[0]} is set by compare.py for each run (use --models, --seeds, --output_dir)")
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--dataset", default="xd")
    dataset = pre.parse_known_args(rest)[0].dataset
    args.output_dir = args.output_dir or os.path.join("outputs", f"compare_{dataset}")
    return args, rest


def run_one(model, seed, rest, output_dir):
    """Train one model with one seed through main.py -> (its best checkpoint's step and metrics, its log)."""
    ckpts, logs = os.path.join(output_dir, "ckpts"), os.path.join(output_dir, "logs")
    argv = rest + ["--model", model, "--seed", str(seed), "--model_path", ckpts, "--log_path", logs]
    print(f"== {NAMES[model]}, seed {seed}", flush=True)
    if subprocess.run([sys.executable, MAIN, *argv]).returncode:      # main.py has said why, on stderr
        raise InputError(f"main.py stopped on {NAMES[model]}, seed {seed}: no comparison table")
    args = parse_main_args(argv)
    best, _, log, _ = run_files(args.dataset, args.model, args.seed, args.model_path, args.log_path)
    _, record = read_checkpoint(best)
    with open(log) as f:
        history = [json.loads(line) for line in f if line.strip()]
    return record["step"], {**record["metrics"], **checkpoint_events(best, args)}, history


def checkpoint_events(path, args):
    """Event metrics (test.event_metrics) of a checkpoint on the test set of main.py's `args`, at the 0.99
    quantile of its training normals' scores (its calibration); per hour only with --fps."""
    model, record = load_model(path)
    threshold, _, _ = choose_threshold(None, NORMAL_QUANTILE, checkpoint_calibration(record))
    labelled = Labelled(args.test_list, args.gt, args.annotations, args.annotation_unit, args.fps)
    test_set = load_test_set(labelled, args.root_dir, dataset_info(args), args.len_feature, args.num_workers)
    device = pick_device(args.device)
    scores = score_batched(model.to(device), test_set.features, device, args.eval_snippets)
    gts = np.split(test_set.gt, np.cumsum(test_set.lengths * FRAMES_PER_SNIPPET)[:-1])
    normal = [v.normal for v in test_set.videos]
    seconds = sum(len(s) for s, n in zip(scores, normal) if n) * FRAMES_PER_SNIPPET / args.fps if args.fps else None
    events = event_metrics(scores, gts, normal, threshold, seconds)
    return {k: events[k] for k in EVENT_COLUMNS if k in events}


def summary(runs, models):
    """Per model: (mean, std) of each metric over its seeds (std None for one seed: no spread exists)."""
    out = {}
    for m in models:
        values = np.array([[r["metrics"].get(k, np.nan) for k in COLUMNS]
                           for r in runs if r["model"] == m])                                       # (seeds, 7)
        out[m] = (values.mean(0), values.std(0, ddof=1) if len(values) > 1 else None)
    return out


def markdown_table(stats, n_seeds):
    """The published-style table: one row per model, each metric as mean +- std over the seeds (one seed:
    its value alone)."""
    heads = [*METRICS, *EVENT_COLUMNS.values()]
    lines = [f"| model ({n_seeds} seed{'s' if n_seeds > 1 else ''}) | " + " | ".join(heads) + " |",
             "| --- |" + " --- |" * len(heads)]
    for m, (mean, std) in stats.items():
        spread = std if std is not None else [None] * len(mean)
        cells = ["–" if np.isnan(a) else f"{a:.2f}" if s is None else f"{a:.2f} ± {s:.2f}"
                 for a, s in zip(mean, spread)]
        lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path, runs, stats):
    def write(f):
        w = csv.writer(f)
        w.writerow(["model", "seed", "best_step", *COLUMNS])
        cell = lambda x: "" if np.isnan(x) else f"{x:.4f}"
        for r in runs:
            w.writerow([r["model"], r["seed"], r["step"], *(cell(r["metrics"].get(k, np.nan)) for k in COLUMNS)])
        for m, (mean, std) in stats.items():
            w.writerow([m, "mean", "", *map(cell, mean)])
            if std is not None:
                w.writerow([m, "std", "", *map(cell, std)])
    write_file(path, write, text=True)


def compare(argv=None):
    args, rest = parse_args(argv)
    with run_folders((args.output_dir, "output")):       # a run that fails before its first file leaves no folder
        chosen = parse_main_args(rest)                  # main.py's flags checked once, before any training
        runs = []
        for model in args.models:
            for seed in args.seeds:
                step, metrics, history = run_one(model, seed, rest, args.output_dir)
                runs.append(dict(model=model, seed=seed, step=step, metrics=metrics, history=history))
    stats = summary(runs, args.models)
    table = markdown_table(stats, len(args.seeds))
    write_text(os.path.join(args.output_dir, "comparison.md"), table)
    write_csv(os.path.join(args.output_dir, "comparison.csv"), runs, stats)
    curves = {NAMES[m]: [r["history"] for r in runs if r["model"] == m] for m in args.models}
    plot_comparison(os.path.join(args.output_dir, "comparison.png"), curves)
    spread = f"mean ± std over seeds {' '.join(map(str, args.seeds))}" if len(args.seeds) > 1 else \
        f"seed {args.seeds[0]}"
    on = f"on the selection list {chosen.val_list}" if chosen.val_list else "on the test set"
    print(f"\nbest checkpoint (by {chosen.select_by}, {on}) of each run, {spread}:\n")
    print(table)
    print(f"wrote comparison.md, comparison.csv, comparison.png in {args.output_dir}")


if __name__ == "__main__":
    run_cli(compare)
