"""Train BN-WVAD, evaluate every --plot_freq steps, keep the best-AP checkpoint.

  python main.py --dataset demo            # synthetic data, a few minutes on a CPU
  python main.py --dataset xd --root_dir /data/xd

  python main.py --dataset demo --stop_after 50            # ... ends after step 50, as if interrupted
  python main.py --dataset demo --resume ckpts/demo_last_2022.pkl

Outputs (all written atomically):
(<dataset> stands for <dataset>_<model> for a model other than BN-WVAD, e.g. demo_urdmu_best_2022.pkl)
  <model_path>/<dataset>_best_<seed>.pkl    the best-AP checkpoint; at the end of training it also gets
                                            the calibration of scores (see thresholds.py)
  <model_path>/<dataset>_last_<seed>.pkl    the state at the latest evaluation (model, optimizer, step,
                                            best metrics, batch order, RNG states), for --resume
  <model_path>/<dataset>_config_<seed>.json the resolved flags and the git commit, written once every check has
                                            passed (both checkpoints hold the same record, as meta["run"])
  <log_path>/<dataset>_<seed>.jsonl         one JSON line per evaluation: step, lr, losses, AUC, AP, ...
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

import numpy as np
import torch
from tqdm import tqdm

from dataset import BatchStream, dataset_info, ensure_lists, load_splits, make_demo
from features import load_video, read_record, video_shape, warn_degenerate
from lists import read_list
from model import MODELS
from options import check_accelerator_flags, model_config, parse_main_args
from plots import plot_run
from runs import run_files
from test import evaluate, quantile_table, score_video
from train import train_step
from utils import (InputError, git_commit, pick_device, read_checkpoint, refuse_to_replace,
                   rng_states, run_cli, run_folders, save_checkpoint, save_torch, set_rng_states, set_seed, write_text)


# flags that may differ between an interrupted run and its resumption
RESUME_FREE = ("device", "num_workers", "model_path", "log_path", "resume", "stop_after", "tensorboard", "overwrite",
               "given")


def build_model(args):
    return MODELS[args.model](**model_config(args))


def fmt(metrics):
    return "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def run_config(args):
    """The flags that define a run (those a resumption must repeat), as plain types."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_FREE}


def run_record(args):
    """The resolved flags and the git commit of the code, as plain types: the config file beside the
    checkpoints, and meta["run"] inside both, so the record travels with the checkpoint it describes."""
    return dict(git_commit=git_commit(), given=sorted(args.given),
                args={k: v for k, v in sorted(vars(args).items()) if k != "given"})


def run_config_text(record):
    """run_record as JSON (json.dumps, indent 2) with "given" and each flag's value on one line, so a
    learning-rate list of thousands of steps stays on its flag's line."""
    inline = []                 # the values written compact, each standing in the layout as "@i@"

    def mark(value):
        inline.append(json.dumps(value))
        return f"@{len(inline) - 1}@"
    layout = dict(git_commit=record["git_commit"], given=mark(record["given"]),
                  args={k: mark(v) for k, v in record["args"].items()})
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


def read_resume(path, args):
    """The resume state of a `last` checkpoint, checked against the flags of this run."""
    _, record = read_checkpoint(path)
    if record is None or "resume" not in record["meta"]:
        raise InputError(f"{path} is not a `last` checkpoint of main.py (it holds no resume state)")
    saved, now = record["meta"]["resume"]["config"], run_config(args)
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        k = diff[0]
        shown = lambda v: (f"a list of {len(v)} values" if isinstance(v, list) and len(v) > 8 else repr(v))
        raise InputError(f"--resume {path}: the run used --{k} {shown(saved.get(k))}, this command gives "
                         f"{shown(now.get(k))} (differing flags: {', '.join(diff)})")
    if args.stop_after and args.stop_after <= record["step"]:
        raise InputError(f"--resume {path}: the run is already past --stop_after {args.stop_after} "
                         f"(it stopped after step {record['step']})")
    return record


def last_state(config, optimizer, streams, best, best_step):
    """Everything besides the model that a resumed run needs, as tensors and plain types."""
    return dict(config=config, optimizer=optimizer.state_dict(), best=best, best_step=best_step,
                streams=[s.state_dict() for s in streams], rng=rng_states())


def restore(record, model, optimizer, streams):
    """Load a `last` checkpoint into the run. Returns (next step, best metrics, best step)."""
    state = record["meta"]["resume"]
    model.load_state_dict(record["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    for stream, s in zip(streams, state["streams"]):
        stream.load_state_dict(s)
    set_rng_states(state["rng"])
    return record["step"] + 1, state["best"], state["best_step"]


def read_log_upto(log_file, upto):
    """The log's records up to step `upto` (a resumed run drops those written after its checkpoint)."""
    if not os.path.isfile(log_file):
        raise InputError(f"--resume: the run's log {log_file} does not exist (check --log_path)")
    with open(log_file) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r["step"] <= upto]


def open_tensorboard(args, purge_step):
    """A TensorBoard writer under <log_path>/tensorboard/<dataset>_<seed>, or a one-line error."""
    if importlib.util.find_spec("tensorboard") is None:
        raise InputError("--tensorboard needs the tensorboard package (pip install tensorboard)")
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(os.path.join(args.log_path, "tensorboard", f"{args.dataset}_{args.seed}"),
                         purge_step=purge_step)


def calibration_scores(model, args, device):
    """Snippet scores of the training list's normal videos, scored as test videos are (full length)."""
    videos = [v for v in read_list(args.train_list, args.root_dir, dataset_info(args)) if v.normal]
    model.eval()
    return np.concatenate([score_video(model, load_video(v, args.len_feature), device) for v in videos])


def add_calibration(ckpt_path, model, args, device):
    """Reload the best checkpoint, score the training normals with it, store their quantile table and
    how many snippets it summarizes (thresholds.Calibration reads both)."""
    state, record = read_checkpoint(ckpt_path)
    model.load_state_dict(state)
    scores = calibration_scores(model, args, device)
    record["calibration"] = torch.from_numpy(quantile_table(scores))
    record["calibration_snippets"] = len(scores)
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


def evaluation_steps(args, num_iters):
    """The steps after which the test set is evaluated: every --plot_freq steps from --eval_from (default
    --plot_freq), and the last step; with --eval_before_training also step 0, the untrained model."""
    first = args.eval_from or args.plot_freq
    steps = {s for s in range(first, num_iters + 1) if s % args.plot_freq == 0} | {num_iters}
    return steps | ({0} if args.eval_before_training else set())


def main(argv=None):
    args = parse_main_args(argv)
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
        resume = read_resume(args.resume, args) if args.resume else None
        records = read_log_upto(log_file, resume["step"]) if resume else []
        config = run_config(args)       # as given, before a small dataset lowers the default batch size
        run = run_record(args)

        if args.dataset == "demo":
            make_demo(args.root_dir)
        ensure_lists(args)
        t0 = time.time()
        normal, abnormal, test_set = load_splits(args)
        print(f"data: {len(normal)} normal + {len(abnormal)} abnormal training items, {len(test_set.videos)} test "
              f"videos ({time.time() - t0:.1f}s); model {args.model}, device {device}")
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
        streams = [BatchStream(len(items), args.batch_size, generator) for items in (normal, abnormal)]

        # recorded in both checkpoints; infer.py and stream.py default to the dataset, crops and extraction
        meta = dict(dataset=args.dataset, seed=args.seed, version=args.version, num_segments=args.num_segments,
                    train_crops=args.train_crops, crops=crops, len_feature=args.len_feature, extraction=extraction,
                    run=run)
        best, best_step, start = {"AP": -1.0}, 0, 1
        if resume:
            start, best, best_step = restore(resume, model, optimizer, streams)
        best_auc = max([r["AUC"] for r in records], default=-1.0)
        num_iters = len(args.lr)
        evaluations = evaluation_steps(args, num_iters)
        writer = open_tensorboard(args, resume["step"] + 1 if resume else None) if args.tensorboard else None
    # every check has passed: from here on this run's files replace the earlier run's, all of them
    if not resume:
        for path in (*files, run_png):
            if os.path.exists(path):
                os.remove(path)
    write_run_config(config_file, run)
    write_text(log_file, "".join(json.dumps(r) + "\n" for r in records))

    def evaluate_and_log(step, losses):
        nonlocal best, best_step, best_auc
        metrics, _ = evaluate(run_model, test_set, device, args.eval_snippets, args.amp)
        record = dict(step=step, lr=args.lr[max(step, 1) - 1], **losses, **metrics, version=args.version)
        records.append(record)
        write_text(log_file, "".join(json.dumps(r) + "\n" for r in records))     # whole, as every output
        if writer is not None:
            for k, v in record.items():
                if k not in ("step", "version"):
                    writer.add_scalar(k, v, step)
        best_auc = max(best_auc, metrics["AUC"])
        if metrics["AP"] > best["AP"]:
            best, best_step = metrics, step
            save_checkpoint(ckpt_path, model, step, metrics, model_name=args.model, **meta)
        return metrics

    if start == 1 and 0 in evaluations:
        evaluate_and_log(0, {})
    bar = tqdm(range(start, num_iters + 1), initial=start - 1, total=num_iters, dynamic_ncols=True)
    saved, step = (start - 1 if resume else None), start - 1     # the step of this run's `last` checkpoint
    try:
        with StopRequest() as stop:
            for step in bar:
                for group in optimizer.param_groups:
                    group["lr"] = args.lr[step - 1]
                batch = [items.batch(s.next()).to(device, non_blocking=True)
                         for items, s in zip((normal, abnormal), streams)]
                losses = train_step(run_model, batch[0], batch[1], optimizer, clip_norm=args.clip_norm, amp=args.amp)
                if step in evaluations:
                    metrics = evaluate_and_log(step, losses)
                    bar.set_postfix_str(f"loss {losses['total_loss']:.3f} AUC {metrics['AUC']:.2f} AP "
                                        f"{metrics['AP']:.2f} best AUC {best_auc:.2f} AP {best['AP']:.2f}")
                if step in evaluations or step == args.stop_after or stop.requested:
                    save_checkpoint(last_path, model, step, best, model_name=args.model, **meta,
                                    resume=last_state(config, optimizer, streams, best, best_step))
                    saved = step
                if step == args.stop_after or stop.requested:
                    break
    except KeyboardInterrupt:
        bar.close()
        print(interrupted_line(step, saved, last_path), file=sys.stderr)
        sys.exit(130)
    bar.close()
    if writer is not None:
        writer.close()
    if stop.requested and step < num_iters:
        print(interrupted_line(step, saved, last_path), file=sys.stderr)
        sys.exit(130)
    if args.stop_after and args.stop_after < num_iters:
        print(f"stopped after step {args.stop_after}; continue with --resume {last_path}")
        return
    add_calibration(ckpt_path, model, args, device)
    plot_run(run_png, records, f"{args.dataset} {args.model} (seed {args.seed}, {args.version})")
    print(f"best (step {best_step}): {fmt(best)}")
    print(f"checkpoint: {ckpt_path}")
    print(f"log: {log_file} (plot: {run_png})")


if __name__ == "__main__":
    run_cli(main)
