"""Train BN-WVAD, evaluate every --plot_freq steps, keep the best-AP checkpoint.

  python main.py --dataset demo            # synthetic data, a few minutes on a CPU
  python main.py --dataset xd --root_dir /data/xd

Outputs: <model_path>/<dataset>_best_<seed>.pkl (the best-AP checkpoint, written atomically) and
<log_path>/<dataset>_<seed>.jsonl (one JSON line per evaluation: step, losses, AUC, AP, ... in percent).
"""
import json
import os
import time

import torch
from tqdm import tqdm

from dataset import BatchStream, load_splits, make_demo
from model import BNWVAD
from options import check_accelerator_flags, parse_main_args
from test import evaluate
from train import train_step
from utils import make_dir, pick_device, run_cli, save_checkpoint, set_seed


def build_model(args):
    return BNWVAD(args.len_feature, args.ratios, args.kernel_sizes, args.ratio_sample, args.ratio_batch)


def fmt(metrics):
    return "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def main(argv=None):
    args = parse_main_args(argv)
    device = pick_device(args.device)
    check_accelerator_flags(args, device)
    make_dir(args.model_path, "checkpoint")
    make_dir(args.log_path, "log")
    ckpt_path = os.path.join(args.model_path, f"{args.dataset}_best_{args.seed}.pkl")
    log_file = os.path.join(args.log_path, f"{args.dataset}_{args.seed}.jsonl")

    if args.dataset == "demo":
        make_demo(args.root_dir)
    t0 = time.time()
    normal, abnormal, test_set = load_splits(args)
    print(f"data: {len(normal)} normal + {len(abnormal)} abnormal training items, {len(test_set.videos)} test "
          f"videos ({time.time() - t0:.1f}s); device {device}")
    if normal.cache_path:
        reused = normal.from_cache and abnormal.from_cache
        print(f"training items {'read from' if reused else 'cached in'} {os.path.dirname(normal.cache_path)}")

    set_seed(args.seed)
    model = build_model(args).to(device)
    run_model = torch.compile(model, dynamic=True) if args.compile else model   # shares model's parameters
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr[0], betas=(0.9, 0.999),
                                 weight_decay=args.weight_decay)
    generator = torch.Generator()
    if args.seed >= 0:
        generator.manual_seed(args.seed)
    streams = [BatchStream(len(items), args.batch_size, generator) for items in (normal, abnormal)]

    best, best_step = {"AP": -1.0}, 0
    num_iters = len(args.lr)
    open(log_file, "w").close()
    bar = tqdm(range(1, num_iters + 1), dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = args.lr[step - 1]
        batch = [items.batch(s.next()).to(device, non_blocking=True) for items, s in zip((normal, abnormal), streams)]
        losses = train_step(run_model, batch[0], batch[1], optimizer, amp=args.amp)
        if step % args.plot_freq == 0 or step == num_iters:
            metrics, _ = evaluate(run_model, test_set, device, args.eval_snippets, args.amp)
            record = dict(step=step, **losses, **metrics, version=args.version)
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            if metrics["AP"] > best["AP"]:
                best, best_step = metrics, step
                save_checkpoint(ckpt_path, model, step, metrics, dataset=args.dataset, seed=args.seed,
                                version=args.version, num_segments=args.num_segments)
            bar.set_postfix_str(f"loss {losses['total_loss']:.3f} AUC {metrics['AUC']:.2f} AP {metrics['AP']:.2f} "
                                f"best AP {best['AP']:.2f}")
    bar.close()
    print(f"best (step {best_step}): {fmt(best)}")
    print(f"checkpoint: {ckpt_path}")
    print(f"log: {log_file}")


if __name__ == "__main__":
    run_cli(main)
