"""Train BN-WVAD (or UR-DMU), evaluate every --eval_every steps, keep the best checkpoint by --select_by.

  python main.py --dataset demo            # synthetic data, a few minutes on a CPU
  python main.py --dataset xd --root_dir /data/xd
  python main.py --dataset xd --val_list list/xd_val.list --val_gt list/xd_val_gt.npy   # chosen on held-out videos

  python main.py --dataset demo --stop_after 50            # ... ends after step 50, as if interrupted
  python main.py --dataset demo --resume ckpts/demo_last_2022.pkl

Read top to bottom: main() is setup(), train_loop() and finish(). The best checkpoint is the evaluation
of highest --select_by (per dataset: AUC for ucf, AP otherwise) on --val_list when given, else on the
test set (the releases' protocol, which is optimistic: the test set chooses the number it reports);
step 0, the untrained model, is never kept. Evaluation is always in float32, whatever --amp does.

Outputs (all written atomically):
(<dataset> stands for <dataset>_<model> for a model other than BN-WVAD, e.g. demo_urdmu_best_2022.pkl)
  <model_path>/<dataset>_best_<seed>.pkl    the best checkpoint ("selected_by" says by what); at the end of
                                            training it also gets the calibration of scores
                                            (core.thresholds.Calibration) and the run's summary
  <model_path>/<dataset>_last_<seed>.pkl    the state at the latest evaluation: the model and a TrainState
                                            (optimizer, batch order, RNG states, best so far), for --resume
  <model_path>/<dataset>_config_<seed>.json the flags as used (a default the run adjusted, such as a batch
                                            size lowered to a small dataset, in "adjusted") and the git
                                            commit, written once every check has passed (both checkpoints
                                            hold the same record, as meta["run"])
  <log_path>/<dataset>_<seed>.jsonl         one JSON line per evaluation: step, lr, losses, AUC, AP, ... (and
                                            val_AUC, val_AP, ... with --val_list)
  <log_path>/<dataset>_<seed>.png           AUC and AP over the run, at the end
A resumed run continues the schedule, the batches and the log where the checkpoint left them, so it
reaches the metrics of the uninterrupted run (exactly, on a CPU). Ctrl-C (or SIGTERM) ends the run after
the step in progress, writing the `last` checkpoint there, and prints the --resume that continues it
(a second Ctrl-C stops at once). A new run whose files would replace those of an earlier run is
refused unless --overwrite (which then removes them all, so none of them is taken for this run's).
"""
import importlib.util
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from dataset import BatchStream, Labelled, ensure_lists, load_splits, make_demo
from core.features import load_video, read_record, video_shape, warn_degenerate
from core.lists import read_list
from model import MODELS
from options import check_accelerator_flags, dataset_info, model_config, parse_main_args
from core.plots import plot_run
from core.runs import run_files
from test import METRICS, evaluate, score_video
from core.thresholds import quantile_table
from train import train_step
from utils import (InputError, git_commit, pick_device, read_checkpoint, refuse_to_replace,
                   rng_states, run_cli, run_folders, save_checkpoint, save_torch, set_rng_states, set_seed, write_text)


# flags that may differ between an interrupted run and its resumption
RESUME_FREE = ("device", "num_workers", "model_path", "log_path", "resume", "stop_after", "tensorboard", "overwrite",
               "given")


RECENT = 5      # the summary gives the mean and std of the metrics over this many last evaluations


def build_model(args):
    return MODELS[args.model](**model_config(args))


def fmt(metrics):
    return "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def run_config(args):
    """The flags that define a run (those a resumption must repeat), as plain types."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_FREE}


def run_record(args, adjusted=None):
    """The flags as the run used them and the git commit of the code, as plain types: the config file
    beside the checkpoints, and meta["run"] inside both, so the record travels with the checkpoint it
    describes. adjusted: {flag: value used} for what the run set itself (a default batch size lowered
    to a small dataset, --eval_from's default); "args" holds the values used, "adjusted" each one's
    value before (only when there are any)."""
    values = {k: v for k, v in vars(args).items() if k != "given"}
    changed = {k: v for k, v in (adjusted or {}).items() if values.get(k) != v}
    record = dict(git_commit=git_commit(), given=sorted(args.given),
                  args=dict(sorted({**values, **changed}.items())))
    if changed:
        record["adjusted"] = {k: values.get(k) for k in sorted(changed)}
    return record


def run_config_text(record):
    """run_record as JSON (json.dumps, indent 2) with "given", "adjusted" and each flag's value on one
    line, so a learning-rate list of thousands of steps stays on its flag's line."""
    inline = []                 # the values written compact, each standing in the layout as "@i@"

    def mark(value):
        inline.append(json.dumps(value))
        return f"@{len(inline) - 1}@"
    layout = dict(git_commit=record["git_commit"], given=mark(record["given"]),
                  args={k: mark(v) for k, v in record["args"].items()})
    if "adjusted" in record:
        layout["adjusted"] = mark(record["adjusted"])
    return re.sub(r'"@(\d+)@"', lambda m: inline[int(m.group(1))], json.dumps(layout, indent=2)) + "\n"


def write_run_config(path, record):
    """run_record as JSON (run_config_text), atomically."""
    write_text(path, run_config_text(record))


def refuse_earlier_run(args, files):
    """A new run (not --resume) whose files would replace an earlier run's is an error without
    --overwrite; with it, the earlier run's files are removed (once every check has passed)."""
    refuse_to_replace(files, args.overwrite, f"{args.model_path} / {args.log_path}",
                      f"--resume {files[1]} to continue that run, or another --model_path, --log_path or --seed")


class StopRequest:
    """Ctrl-C and SIGTERM during training: the first asks the loop to stop after the step in progress
    (so the `last` checkpoint is a whole step), a second stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():    # signals reach the main thread only
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("stopping after this step, to save it for --resume (Ctrl-C again: stop now)", file=sys.stderr)


@dataclass
class TrainState:
    """Everything besides the model's weights that a resumed run needs, as tensors and plain types:
    the `last` checkpoint's "resume" entry. Made by capture(), put back by restore(), nowhere else."""
    config: dict            # run_config of the run: the flags a resumption must repeat
    step: int               # the last step done
    optimizer: dict         # the optimizer's state_dict
    streams: list           # the state_dict of each BatchStream (normal, abnormal)
    rng: dict               # utils.rng_states()
    best: dict              # the kept checkpoint's metrics on the selection set ({}: none kept yet)
    best_step: int | None   # its step


def capture(config, step, optimizer, streams, saver):
    return TrainState(config=config, step=step, optimizer=optimizer.state_dict(),
                      streams=[s.state_dict() for s in streams], rng=rng_states(), best=dict(saver.best),
                      best_step=saver.best_step)


def restore(state, model_state, model, optimizer, streams, saver):
    """Put a TrainState (and the model weights saved with it) back into the run. Returns the next step."""
    model.load_state_dict(model_state)
    optimizer.load_state_dict(state.optimizer)
    for stream, s in zip(streams, state.streams):
        stream.load_state_dict(s)
    set_rng_states(state.rng)
    saver.best, saver.best_step = dict(state.best), state.best_step
    return state.step + 1


def read_resume(path, args):
    """(TrainState, model state dict) of a `last` checkpoint, checked against the flags of this run."""
    model_state, record = read_checkpoint(path)
    if record is None or "resume" not in record:
        old = record is not None and "resume" in record.get("meta", {})
        raise InputError(f"{path} is not a `last` checkpoint of main.py (it holds no resume state)" if not old else
                         f"{path} is a `last` checkpoint of an earlier version of main.py, whose resume state this "
                         f"one does not read: start the run again (with --overwrite)")
    state = TrainState(**record["resume"])
    saved, now = state.config, run_config(args)
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        k = diff[0]
        shown = lambda v: (f"a list of {len(v)} values" if isinstance(v, list) and len(v) > 8 else repr(v))
        raise InputError(f"--resume {path}: the run used --{k} {shown(saved.get(k))}, this command gives "
                         f"{shown(now.get(k))} (differing flags: {', '.join(diff)})")
    if args.stop_after and args.stop_after <= state.step:
        raise InputError(f"--resume {path}: the run is already past --stop_after {args.stop_after} "
                         f"(it stopped after step {state.step})")
    return state, model_state


class CheckpointSaver:
    """The run's two checkpoints, after timm's CheckpointSaver: `best`, the evaluation of highest
    `metric` on the selection set (the test set without --val_list), never step 0 (the untrained
    model, which neither release keeps); `last`, the latest state with the TrainState that resumes it.
    meta: what both checkpoints record (dataset, crops, the run record, ...)."""

    def __init__(self, best_path, last_path, metric, selection, model_name, meta):
        self.best_path, self.last_path, self.metric = best_path, last_path, metric
        self.selected_by = dict(metric=metric, on=selection)
        self.model_name, self.meta = model_name, meta
        self.best, self.best_step = {}, None

    def update(self, model, step, selection_metrics, test_metrics):
        """Keep this evaluation as `best` if it beats the best so far (strictly, as the releases compare).
        The checkpoint's metrics are the test set's. Returns whether it was kept."""
        value = selection_metrics[self.metric]
        if step == 0 or (self.best and not value > self.best[self.metric]):
            return False
        self.best, self.best_step = dict(selection_metrics), step
        save_checkpoint(self.best_path, model, step, test_metrics, model_name=self.model_name,
                        selected_by={**self.selected_by, "value": float(value)}, **self.meta)
        return True

    def save_last(self, model, state):
        save_checkpoint(self.last_path, model, state.step, self.best, model_name=self.model_name,
                        resume=asdict(state), **self.meta)


def read_log_upto(log_file, upto):
    """The log's records up to step `upto` (a resumed run drops those written after its checkpoint)."""
    if not os.path.isfile(log_file):
        raise InputError(f"--resume: the run's log {log_file} does not exist (check --log_path)")
    with open(log_file) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r["step"] <= upto]


def open_tensorboard(log_path, name, purge_step):
    """A TensorBoard writer under <log_path>/tensorboard/<name>, or a one-line error."""
    if importlib.util.find_spec("tensorboard") is None:
        raise InputError("--tensorboard needs the tensorboard package (pip install tensorboard)")
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(os.path.join(log_path, "tensorboard", name), purge_step=purge_step)


def calibration_scores(model, args, device):
    """Snippet scores of the training list's normal videos, scored as test videos are (full length)."""
    videos = [v for v in read_list(args.train_list, args.root_dir, dataset_info(args)) if v.normal]
    model.eval()
    return np.concatenate([score_video(model, load_video(v, args.len_feature), device) for v in videos])


def finish_best(ckpt_path, model, args, device, summary):
    """Reload the best checkpoint, score the training normals with it, store their quantile table (the
    calibration), how many snippets it summarizes (thresholds.Calibration reads both) and the run's summary."""
    state, record = read_checkpoint(ckpt_path)
    model.load_state_dict(state)
    scores = calibration_scores(model, args, device)
    record["calibration"] = torch.from_numpy(quantile_table(scores))
    record["calibration_snippets"] = len(scores)
    record["summary"] = summary
    save_torch(ckpt_path, record)


def training_features(videos, len_feature):
    """(crops per video, extraction settings) of the training videos, for the checkpoint: what infer.py
    and stream.py then default to. Settings come from extract.py's records beside the features (None
    where there are none, or where the videos' records disagree: said in a warning)."""
    crops = {video_shape(v, len_feature)[0] for v in videos}
    records = [read_record(v) for v in videos]
    settings = {json.dumps((r or {}).get("settings"), sort_keys=True) for r in records}
    if len(settings) > 1:
        print(f"warning: the training features were extracted with {len(settings)} different settings (their "
              f"records differ); the checkpoint records none", file=sys.stderr)
    return (crops.pop() if len(crops) == 1 else None), (json.loads(settings.pop()) if len(settings) == 1 else None)


def interrupted_line(step, saved, last_path):
    """What an interrupted run says: where it stopped and how to continue (or that it cannot)."""
    if saved is None:
        return (f"interrupted in step {step}, before its first checkpoint: nothing to resume; run the same command "
                f"with --overwrite to start again")
    return (f"interrupted at step {step}; continue from step {saved} with the same command plus --resume "
            f"{last_path}")


def evaluation_steps(eval_every, eval_from, num_iters, before_training=False):
    """The steps after which the model is evaluated: every eval_every steps from eval_from (None:
    eval_every), and the last step; before_training: also step 0, the untrained model."""
    first = eval_from or eval_every
    steps = {s for s in range(first, num_iters + 1) if s % eval_every == 0} | {num_iters}
    return steps | ({0} if before_training else set())


def run_summary(records, best_step, metric, selection, recent=RECENT):
    """What a run reports at its end, from its log records: the kept step and its test metrics, the last
    evaluation's, and the mean and standard deviation (ddof 1; None for one evaluation) of each metric
    over the last `recent` evaluations after step 0, training being noisy from one evaluation to the next.
    selection: "test" or the selection list's path."""
    def metrics(r):
        return {k: r[k] for k in METRICS if k in r}
    trained = [r for r in records if r["step"] > 0]
    tail = trained[-recent:]
    values = {k: np.array([r[k] for r in tail]) for k in METRICS if all(k in r for r in tail)}
    best = next(r for r in records if r["step"] == best_step)
    return dict(selected_by=dict(metric=metric, on=selection), best_step=best_step, best=metrics(best),
                best_selection=({k: best[f"val_{k}"] for k in METRICS if f"val_{k}" in best}
                                if selection != "test" else None),
                last_step=trained[-1]["step"], last=metrics(trained[-1]), recent_steps=[r["step"] for r in tail],
                recent_mean={k: float(v.mean()) for k, v in values.items()},
                recent_std={k: float(v.std(ddof=1)) for k, v in values.items()} if len(tail) > 1 else None)


def summary_text(summary):
    """run_summary as the lines a run ends with."""
    metric, on = summary["selected_by"]["metric"], summary["selected_by"]["on"]
    lines = [f"best (step {summary['best_step']}): {fmt(summary['best'])}"]
    if on == "test":
        lines.append(f"  chosen by {metric} on the test set: the releases' protocol, optimistic (the test set picks "
                     f"the step it then reports); --val_list chooses on held-out videos")
    else:
        value = summary["best_selection"][metric]
        lines.append(f"  chosen by {metric} on the selection list {on} ({metric} {value:.2f} there); the metrics "
                     f"above are the test set's")
    lines.append(f"last (step {summary['last_step']}): {fmt(summary['last'])}")
    steps, mean, std = summary["recent_steps"], summary["recent_mean"], summary["recent_std"]
    shown = "  ".join(f"{k} {m:.2f}" + (f" ± {std[k]:.2f}" if std else "") for k, m in mean.items())
    lines.append(f"mean{' ± std' if std else ''} of the last {len(steps)} evaluations (steps "
                 f"{', '.join(map(str, steps))}): {shown}")
    return "\n".join(lines)


@dataclass
class Run:
    """What setup() prepares and train_loop() and finish() use."""
    args: object
    device: torch.device
    model: torch.nn.Module
    run_model: torch.nn.Module          # model, or torch.compile(model): shares its parameters
    optimizer: torch.optim.Optimizer
    splits: object                      # dataset.Splits
    streams: list                       # BatchStream of the normal and of the abnormal items
    saver: CheckpointSaver
    config: dict                        # run_config(args), checked on --resume
    records: list                       # the log's records so far
    log_file: str
    run_png: str
    evaluations: set
    start: int                          # the first step to train
    writer: object = None               # TensorBoard's SummaryWriter, or None


def setup(args):
    """Check every input, load the data, build the model, optimizer and batch streams (restored with
    --resume), and replace an earlier run's files: everything before the first training step."""
    device = pick_device(args.device)
    check_accelerator_flags(args, device)
    if len(args.lr) == 1 and args.num_iters is None:
        print(f"warning: --lr gives one learning rate, so training runs a single step; give --num_iters N to train "
              f"N steps at it", file=sys.stderr)
    # made before any work, so a wrong path fails at once; removed again if a check below fails (a missing
    # list, a crop-count error): a failed run leaves no new folder
    with run_folders((args.model_path, "checkpoint"), (args.log_path, "log")):
        files = run_files(args.dataset, args.model, args.seed, args.model_path, args.log_path)
        ckpt_path, last_path, log_file, config_file = files
        run_png = os.path.splitext(log_file)[0] + ".png"
        if not args.resume:
            refuse_earlier_run(args, [*files, run_png])
        resumed = read_resume(args.resume, args) if args.resume else None
        records = read_log_upto(log_file, resumed[0].step) if resumed else []

        if args.dataset == "demo":
            make_demo(args.root_dir)
        info = dataset_info(args)
        ensure_lists(args.dataset, args.root_dir, args.train_list, args.test_list, info, args.test_videos, args.labels,
                     args.len_feature, args.given)
        t0 = time.time()
        cache_dir = None if args.cache_dir == "none" else args.cache_dir or os.path.join(args.root_dir, ".cache")
        val = Labelled(args.val_list, args.val_gt, args.val_annotations, args.annotation_unit, args.fps) \
            if args.val_list else None
        splits = load_splits(args.train_list, args.root_dir, info, args.len_feature,
                             Labelled(args.test_list, args.gt, args.annotations, args.annotation_unit, args.fps),
                             val, args.batch_size, "batch_size" in args.given, args.train_crops, args.num_segments,
                             cache_dir, args.cache_fp16, args.num_workers)
        normal, abnormal = splits.normal, splits.abnormal
        print(f"data: {len(normal)} normal + {len(abnormal)} abnormal training items, {len(splits.test.videos)} test "
              f"videos" + (f", {len(splits.val.videos)} selection videos" if splits.val else "") +
              f" ({time.time() - t0:.1f}s); model {args.model}, device {device}")
        if normal.cache_path:
            reused = normal.from_cache and abnormal.from_cache
            print(f"training items {'read from' if reused else 'cached in'} {os.path.dirname(normal.cache_path)}")
        crops, extraction = training_features(normal.videos + abnormal.videos, args.len_feature)
        warn_degenerate(normal.videos + abnormal.videos, args.len_feature, f"the training features in {args.root_dir}")

        set_seed(args.seed)
        model = build_model(args).to(device)
        run_model = torch.compile(model, dynamic=True) if args.compile else model   # shares model's parameters
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr[0], betas=(0.9, 0.999),
                                     weight_decay=args.weight_decay)
        generator = torch.Generator()
        if args.seed >= 0:
            generator.manual_seed(args.seed)
        streams = [BatchStream(len(items), splits.batch_size, generator) for items in (normal, abnormal)]

        num_iters = len(args.lr)
        # the values this run set itself, recorded beside the flags (run_record)
        adjusted = dict(batch_size=splits.batch_size, eval_from=args.eval_from or args.eval_every, cache_dir=cache_dir,
                        num_iters=num_iters)
        run = run_record(args, adjusted)
        # recorded in both checkpoints; infer.py and stream.py default to the dataset, crops and extraction
        meta = dict(dataset=args.dataset, seed=args.seed, version=args.version, num_segments=args.num_segments,
                    train_crops=args.train_crops, crops=crops, len_feature=args.len_feature, extraction=extraction,
                    run=run)
        saver = CheckpointSaver(ckpt_path, last_path, args.select_by, args.val_list or "test", args.model, meta)
        start = restore(*resumed, model, optimizer, streams, saver) if resumed else 1
        writer = open_tensorboard(args.log_path, f"{args.dataset}_{args.seed}", start if resumed else None) \
            if args.tensorboard else None
    # every check has passed: from here on this run's files replace the earlier run's, all of them
    if not resumed:
        for path in (*files, run_png):
            if os.path.exists(path):
                os.remove(path)
    write_run_config(config_file, run)
    write_text(log_file, "".join(json.dumps(r) + "\n" for r in records))
    evaluations = evaluation_steps(args.eval_every, args.eval_from, num_iters, args.eval_before_training)
    return Run(args, device, model, run_model, optimizer, splits, streams, saver, run_config(args), records, log_file,
               run_png, evaluations, start, writer)


def evaluate_and_log(run, step, losses):
    """Evaluate on the test set (and the selection set), in float32 whatever --amp does to training, log
    the record, and keep the checkpoint if it is the best. Returns the record."""
    args = run.args
    metrics, _ = evaluate(run.run_model, run.splits.test, run.device, args.eval_snippets)
    chosen_on = metrics
    record = dict(step=step, lr=args.lr[max(step, 1) - 1], **losses, **metrics)
    if run.splits.val is not None:
        chosen_on, _ = evaluate(run.run_model, run.splits.val, run.device, args.eval_snippets)
        record.update({f"val_{k}": v for k, v in chosen_on.items()})
    record["selected_by"] = ("val_" if run.splits.val is not None else "") + run.saver.metric   # the page's "best"
    record["version"] = args.version
    run.records.append(record)
    write_text(run.log_file, "".join(json.dumps(r) + "\n" for r in run.records))     # whole, as every output
    if run.writer is not None:
        for k, v in record.items():
            if k not in ("step", "version"):
                run.writer.add_scalar(k, v, step)
    run.saver.update(run.model, step, chosen_on, metrics)
    return record


def train_loop(run):
    """Train from run.start to the last step, evaluating at run.evaluations and writing the `last`
    checkpoint there (and where the run stops). Returns (the last step done, the step of the latest
    `last` checkpoint or None, whether a stop was asked for). A second Ctrl-C exits here (130)."""
    args, saver = run.args, run.saver
    num_iters = len(args.lr)
    if run.start == 1 and 0 in run.evaluations:
        evaluate_and_log(run, 0, {})
    bar = tqdm(range(run.start, num_iters + 1), initial=run.start - 1, total=num_iters, dynamic_ncols=True)
    saved, step = (run.start - 1 if args.resume else None), run.start - 1     # the step of this run's `last`
    items = (run.splits.normal, run.splits.abnormal)
    try:
        with StopRequest() as stop:
            for step in bar:
                for group in run.optimizer.param_groups:
                    group["lr"] = args.lr[step - 1]
                batch = [x.batch(s.next()).to(run.device, non_blocking=True) for x, s in zip(items, run.streams)]
                losses = train_step(run.run_model, batch[0], batch[1], run.optimizer, clip_norm=args.clip_norm,
                                    amp=args.amp)
                if step in run.evaluations:
                    r = evaluate_and_log(run, step, losses)
                    bar.set_postfix_str(f"loss {losses['total_loss']:.3f} AUC {r['AUC']:.2f} AP {r['AP']:.2f} best "
                                        f"{saver.metric} {saver.best[saver.metric]:.2f} (step {saver.best_step})")
                if step in run.evaluations or step == args.stop_after or stop.requested:
                    saver.save_last(run.model, capture(run.config, step, run.optimizer, run.streams, saver))
                    saved = step
                if step == args.stop_after or stop.requested:
                    break
    except KeyboardInterrupt:
        bar.close()
        print(interrupted_line(step, saved, saver.last_path), file=sys.stderr)
        sys.exit(130)
    bar.close()
    return step, saved, stop.requested


def finish(run, step, saved, stopped):
    """An interrupted or --stop_after run says how to continue; a finished one calibrates the best
    checkpoint, plots the run and prints its summary."""
    args, saver = run.args, run.saver
    num_iters = len(args.lr)
    if run.writer is not None:
        run.writer.close()
    if stopped and step < num_iters:
        print(interrupted_line(step, saved, saver.last_path), file=sys.stderr)
        sys.exit(130)
    if args.stop_after and args.stop_after < num_iters:
        print(f"stopped after step {args.stop_after}; continue with --resume {saver.last_path}")
        return None
    summary = run_summary(run.records, saver.best_step, saver.metric, args.val_list or "test")
    finish_best(saver.best_path, run.model, args, run.device, summary)
    plot_run(run.run_png, run.records, f"{args.dataset} {args.model} (seed {args.seed}, {args.version})",
             saver.best_step, saver.metric)
    print(summary_text(summary))
    print(f"checkpoint: {saver.best_path}")
    print(f"log: {run.log_file} (plot: {run.run_png})")
    return summary


def main(argv=None):
    args = parse_main_args(argv)
    run = setup(args)
    step, saved, stopped = train_loop(run)
    return finish(run, step, saved, stopped)


if __name__ == "__main__":
    run_cli(main)
