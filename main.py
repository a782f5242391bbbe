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

from dataset import BatchStream, ensure_lists, load_splits, make_demo
from model import BNWVAD
from options import parse_main_args
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
    make_dir(args.model_path, "checkpoint")
    make_dir(args.log_path, "log")
    ckpt_path = os.path.join(args.model_path, f"{args.dataset}_best_{args.seed}.pkl")
    log_file = os.path.join(args.log_path, f"{args.dataset}_{args.seed}.jsonl")

    if args.dataset == "demo":
        make_demo(args.root_dir)
    ensure_lists(args)
    t0 = time.time()
    normal, abnormal, test_set = load_splits(args)
    print(f"data: {len(normal)} normal + {len(abnormal)} abnormal training items, {len(test_set.videos)} test "
          f"videos ({time.time() - t0:.1f}s); device {device}")

    set_seed(args.seed)
    model = build_model(args).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr[0], betas=(0.9, 0.999),
                                 weight_decay=args.weight_decay)
    generator = torch.Generator()
    if args.seed >= 0:
        generator.manual_seed(args.seed)
    streams = [BatchStream(len(items), args.batch_size, generator) for items in (normal, abnormal)]
    data = [torch.from_numpy(items.data) for items in (normal, abnormal)]   # (n_items, S, D) each

    best, best_step, best_auc = {"AP": -1.0}, 0, -1.0
    num_iters = len(args.lr)
    open(log_file, "w").close()
    bar = tqdm(range(1, num_iters + 1), dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = args.lr[step - 1]
        batch = [d[s.next()].to(device, non_blocking=True) for d, s in zip(data, streams)]
        losses = train_step(model, batch[0], batch[1], optimizer)
        if step % args.plot_freq == 0 or step == num_iters:
            metrics, _ = evaluate(model, test_set, device)
            record = dict(step=step, **losses, **metrics, version=args.version)
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            best_auc = max(best_auc, metrics["AUC"])
            if metrics["AP"] > best["AP"]:
                best, best_step = metrics, step
                save_checkpoint(ckpt_path, model, step, metrics, dataset=args.dataset, seed=args.seed,
                                version=args.version, num_segments=args.num_segments, train_crops=args.train_crops)
            bar.set_postfix_str(f"loss {losses['total_loss']:.3f} AUC {metrics['AUC']:.2f} AP {metrics['AP']:.2f} "
                                f"best AUC {best_auc:.2f} AP {best['AP']:.2f}")
    bar.close()
    print(f"best (step {best_step}): {fmt(best)}")
    print(f"checkpoint: {ckpt_path}")
    print(f"log: {log_file}")


if __name__ == "__main__":
    run_cli(main)
