"""Reload a checkpoint, score the test set and evaluate it.

  python infer.py --dataset demo --model_path ckpts/demo_best_2022.pkl

Accepts our checkpoints (model configuration stored inside) and the authors' release's bare state
dicts (configuration from the flags). Prints AUC / AUC_sub / AP / AP_sub and writes
<output_dir>/metrics.json and <output_dir>/scores.csv (video,snippet,score).
"""
import csv
import json
import os

import torch

from dataset import load_test_set, make_demo
from model import BNWVAD
from options import check_accelerator_flags, parse_infer_args
from test import evaluate
from utils import atomic_write, load_state, make_dir, pick_device, read_checkpoint, run_cli, write_text


def load_model(args):
    """The checkpoint's model, in eval mode; a bare state dict takes its configuration from the flags."""
    state, record = read_checkpoint(args.model_path)
    if record is not None:
        config = record["model_config"]
    else:
        config = dict(len_feature=args.len_feature, ratios=args.ratios, kernel_sizes=args.kernel_sizes,
                      ratio_sample=args.ratio_sample, ratio_batch=args.ratio_batch)
    model = BNWVAD(**config)
    load_state(model, state, args.model_path)
    return model.eval(), record


def write_scores(path, videos, scores):
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video", "snippet", "score"])
            for v, s in zip(videos, scores):
                w.writerows((v.name, i, f"{x:.6g}") for i, x in enumerate(s))
    atomic_write(path, write)


def main(argv=None):
    args = parse_infer_args(argv)
    device = pick_device(args.device)
    check_accelerator_flags(args, device)
    model, record = load_model(args)
    args.len_feature = model.len_feature
    make_dir(args.output_dir, "output")
    if args.dataset == "demo":
        make_demo(args.root_dir)
    test_set = load_test_set(args)
    model = model.to(device)
    run_model = torch.compile(model, dynamic=True) if args.compile else model
    metrics, scores = evaluate(run_model, test_set, device, args.eval_snippets, args.amp)

    for name in ("AUC", "AUC_sub", "AP", "AP_sub"):
        if name in metrics:
            print(f"{name:8s}{metrics[name]:.4f}")
    result = dict(checkpoint=args.model_path, step=record["step"] if record else None, **metrics)
    write_text(os.path.join(args.output_dir, "metrics.json"), json.dumps(result, indent=2) + "\n")
    write_scores(os.path.join(args.output_dir, "scores.csv"), test_set.videos, scores)
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')} and scores.csv")


if __name__ == "__main__":
    run_cli(main)
