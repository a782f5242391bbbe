"""Time the fast paths against the plain reference paths (bench/reference.py) in one run, on generated data.

  python -m bench                          # sections a-f at the default sizes (a few minutes on 2 cores)
  python -m bench --sections b --eval_fraction 1     # the whole UCF-Crime-length test set
  python -m bench --sections d --long 2000 20000 100000
  python -m bench --sections f --dist_videos 8
  python -m bench --model urdmu --sections bcd     # UR-DMU on the same fast paths
  python -m bench --sections ik --json ik.json    # I3D per backend and precision, GEMM peak, live pipeline

Sections (each prints fast, reference and their ratio; e to m are in bench/video.py):
  a  training items per second from disk: per-file loading as the release does (read + resample
     loop on every access) vs TrainItems building its cache (cold) and reusing it (cached: a new
     run's first pass over the items, then two epochs of random batches of 64)
  b  one evaluation pass, 10 crops, lengths of the UCF-Crime test videos (../shared/realdata/ucf/
     test_videos.tsv; absent: 290 lengths drawn log-uniformly from 20 to 6,749 snippets):
     release path (re-read every file, one video per pass, dense local and explicit softmax
     attention, scikit-learn on every frame) vs evaluate() on the test set loaded once
  c  training steps per second: release attention and per-file items vs ours and cached items
  d  peak memory (the process's max RSS, features included) and time scoring one 5-crop video
     of each --long length, each in a fresh subprocess; the reference only where its T x T
     copies fit in --ref_memory
  e  I3D feature extraction (extract.py) on a generated 320x256 video of --extract_frames frames:
     snippets per second per crop for 1 and 10 crops, on --device (random weights: the speed does
     not depend on them), and decoding alone; decoding 1280x720 to 455x256 by the frame contract
     (RGB at its own size, then an RGB resize) beside a one-step YUV scale
  f  extraction over processes: extract.py under torchrun on --dist_videos generated videos (1 crop,
     random weights), 2 processes against 1 on this CPU (torchrun gives each of 2 processes one
     thread, the one process all of them), and all GPUs against 1 when there are any; each rate is
     snippets / (time of the run - time of a second run that finds every video done), so process
     start-up, listing and the manifest are not counted
  h  the review page (report.py) of an 800-video, 150,000-snippet output folder: time to build it
     against writing one PNG plot per video, and, with Chromium and selenium installed, its load
     time and the time to open a video in the browser
Live video and I3D backends (not in the default run: `python -m bench --sections gijkl`):
  g  what causal scoring costs: AUC/AP of a test set (by default the demo's, with the checkpoint
     `python main.py --dataset demo` trains; --causal_dataset/--causal_root_dir/--causal_checkpoint
     for your own) scored offline (whole videos) and as stream.py scores it, each snippet over the
     last --windows snippets (0: all past ones), and with --delays later snippets
  i  the live pipeline on the fastest exact I3D backend (--backend, default auto: video.backends.pick_backend,
     OpenVINO on a CPU; fp32), random weights, on --device: sustainable snippets per second (the pipeline's
     capacity, reading a generated 320x256 25 fps file of --stream_snippets snippets as fast as it can)
     against torch fp32's capacity in the same run, latency p50/p95 at a live pace it can sustain
     (--realtime, 25 fps or slower), and whether it keeps up at 25 fps; for 1 and 5 crops. A few minutes on
     2 idle cores with OpenVINO at the default 12 snippets (torch's 5-crop runs are the long part)
  k  I3D per backend (video/backends.py: torch, OpenVINO, ONNX Runtime) and precision (fp32; bf16 where
     the hardware has it, else a one-line reason): clips (snippet crops) per second through the network
     alone, for 1, 5 and 10 crops at each of --i3d_batches snippets per pass, against torch fp32 at the
     same size; the CPU's measured GEMM peak (2048^3 matmul) in fp32 and bf16 (again after the rows: a
     warning when it moved by over 10%, a busy machine) and the fraction of it each row reaches (I3D's
     FLOPs per clip from torch's flop counter); each row's feature error against the CPU's torch fp32
     (max |diff| over the largest feature, on the warm-up clips); the same rows for torch on CUDA when
     present. Random weights (the speed does not depend on them); the ONNX export is timed once, and
     shared with section i. A few minutes on 2 idle cores at the default --i3d_batches 1 2 4
  j  memory over a long stream: --stream_hours of FFmpeg's testsrc2 pattern (25 fps) through
     run_stream as fast as it goes, with a cheap stand-in for I3D (the stream code's memory does not
     depend on the network), events and clips on; resident memory after 1, 10, 30, 60... minutes and at the end
  l  N cameras in one process against N processes: --site_cameras files of --site_snippets snippets, read
     as fast as they go, through `stream.py --config` (one process, the cameras sharing I3D passes) and
     through one stream.py per camera at once; snippets per second over the span of their arrivals (from
     scores.csv), and the whole commands' times. --site_i3d standin (default; a stand-in that costs next
     to nothing, so the plumbing is what is timed) or random (I3D with random weights)
  m  a soak of the site service: 2 cameras of --soak_minutes of testsrc2 each, served over TCP faster than real
     time and dropped every --soak_minutes / --soak_segments minutes, through stream.py --config with a
     stand-in for I3D (the plumbing is under test), clips on, rollover, a webhook and (with mosquitto and
     paho-mqtt) an MQTT broker restarted a third of the way, and a kill -9 and restart half way; reports the
     site process's resident memory against video time, snippets sent against scored, events written against
     delivered per sink, and whether every file parses
Sections i and k end with their results as a markdown table, to paste into docs/video.md and docs/live.md.
Feature files are written to a temporary folder (in the OS page cache, so "from disk" reads are
mostly memory reads) and removed at the end.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.video import (section_backends, section_causal, section_distributed, section_extract, section_memory,
                         section_review, section_site, section_soak, section_stream)
from bench.tools import peak_rss, row, timed
from dataset import TestSet, TrainItems
from core.features import Video
from model import MODELS
from options import BACKEND_HELP, BACKENDS
from bench.reference import load_items, release_model, score_videos
from test import EVAL_SNIPPETS, evaluate, frame_metrics, score_batched, snippet_metrics, to_frames
from train import train_step

UCF_LENGTHS = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "ucf" / "test_videos.tsv"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description="Fast paths vs the release's plain paths, on generated data.")
    p.add_argument("--sections", default="abcdef", help="which sections to run, e.g. 'ab'")
    p.add_argument("--len_feature", type=int, default=1024, help="feature width D")
    p.add_argument("--model", default="bnwvad", choices=sorted(MODELS),
                   help="(b, c, d) the model timed: BN-WVAD, or UR-DMU on the same fast paths")
    p.add_argument("--items", type=int, default=256, help="(a) training item files")
    p.add_argument("--num_segments", type=int, default=200, help="(a, c) segments per training item")
    p.add_argument("--eval_fraction", type=float, default=0.25,
                   help="(b) share of the test videos, taken evenly over their sorted lengths (1: all)")
    p.add_argument("--crops", type=int, default=10, help="(b) crops per test video")
    p.add_argument("--eval_snippets", type=int, default=EVAL_SNIPPETS, help="(b, d) snippets per packed pass")
    p.add_argument("--batch_size", type=int, default=16, help="(c) normal and abnormal items per step, each")
    p.add_argument("--steps", type=int, default=3, help="(c) timed training steps per path")
    p.add_argument("--long", type=int, nargs="+", default=[2000, 20000], help="(d) video lengths T")
    p.add_argument("--long_crops", type=int, default=5, help="(d) crops of the long video")
    p.add_argument("--ref_memory", type=float, default=8.0, help="(d) GB of T x T copies the reference may use")
    p.add_argument("--extract_frames", type=int, default=64, help="(e) frames of the generated video")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="(e, f, i) device of the I3D network")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help=f"(i) {BACKEND_HELP}; run at fp32, beside torch fp32 as the reference (section k times them all)")
    p.add_argument("--causal_checkpoint", default="ckpts/demo_best_2022.pkl",
                   help="(g) the checkpoint (default: the demo's, from python main.py --dataset demo)")
    p.add_argument("--causal_dataset", default="demo", help="(g) the dataset whose test list is scored")
    p.add_argument("--causal_root_dir", help="(g) its --root_dir (default: the dataset's)")
    p.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 0],
                   help="(g) causal windows in snippets, 0: all past snippets")
    p.add_argument("--delays", type=int, nargs="*", default=[2, 4, 8], help="(g) delays at --delay_window")
    p.add_argument("--delay_window", type=int, nargs="+", default=[8, 64], help="(g) windows the delays are "
                   "measured at")
    p.add_argument("--stream_snippets", type=int, default=12,
                   help="(i) snippets of each timed run (fewer: a shorter, noisier run)")
    p.add_argument("--stream_hours", type=float, default=1.0, help="(j) length of the simulated stream")
    p.add_argument("--dist_videos", type=int, default=4, help="(f) generated videos of --extract_frames frames each")
    p.add_argument("--review_videos", type=int, default=800, help="(h) videos on the review page")
    p.add_argument("--i3d_batches", type=int, nargs="+", default=[1, 2, 4],
                   help="(k) snippets per pass, each with all its crops (extract.py's --batch_size is 4)")
    p.add_argument("--site_cameras", type=int, default=2, help="(l) cameras in the site")
    p.add_argument("--site_snippets", type=int, default=24, help="(l) snippets of each camera's video")
    p.add_argument("--site_i3d", default="standin", choices=("standin", "random"),
                   help="(l) the network: a stand-in that costs next to nothing, or I3D with random weights")
    p.add_argument("--soak_minutes", type=float, default=120.0, help="(m) minutes of video per camera")
    p.add_argument("--soak_segments", type=int, default=8, help="(m) connections per camera (each dropped at its end)")
    p.add_argument("--soak_rollover", default="100KB", help="(m) the cameras' --rollover (small: rolls in a short soak)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--score_one", type=int, nargs=3, metavar=("T", "CROPS", "REF"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def test_lengths(fraction, rng):
    if UCF_LENGTHS.exists():
        lengths = np.loadtxt(UCF_LENGTHS, skiprows=1, usecols=1, dtype=np.int64)
        source = str(UCF_LENGTHS)
    else:
        lengths = np.exp(rng.uniform(np.log(20), np.log(6749), 290)).astype(np.int64)
        source = "synthetic: 290 lengths log-uniform in [20, 6749]"
    order = np.sort(lengths)[::-1]
    keep = order[np.round(np.arange(0, len(order), 1 / fraction)).astype(int).clip(max=len(order) - 1)]
    return keep, source


def write_video(folder, name, T, crops, D, rng):
    paths = []
    for k in range(crops):
        path = os.path.join(folder, f"{name}__{k}.npy")
        np.save(path, rng.standard_normal((T, D), dtype=np.float32) * 0.5 + 0.3)
        paths.append(path)
    return paths


def section_items(args, work, rng, results):
    print(f"(a) training items: {args.items} files, T from the test-length distribution, D {args.len_feature}, "
          f"{args.num_segments} segments")
    lengths, _ = test_lengths(1.0, rng)
    folder = os.path.join(work, "items")
    os.makedirs(folder)
    paths = [write_video(folder, f"item{i:04d}", int(rng.choice(lengths)), 1, args.len_feature, rng)[0]
             for i in range(args.items)]
    videos = [Video(os.path.basename(p), [p], True) for p in paths]
    index = np.arange(args.items)
    _, t_ref = timed(lambda: [load_items(paths, index[i:i + 64], args.num_segments, args.len_feature)
                              for i in range(0, args.items, 64)])
    cache = os.path.join(work, "cache")
    _, t_cold = timed(lambda: TrainItems(videos, args.num_segments, args.len_feature, 2, cache_dir=cache))

    def cached():
        items = TrainItems(videos, args.num_segments, args.len_feature, 2, cache_dir=cache)
        assert items.from_cache
        return items, [items.batch(index[i:i + 64]) for i in range(0, args.items, 64)]
    (items, _), t_cached = timed(cached)
    batches = [rng.permutation(args.items)[:64] for _ in range(2 * args.items // 64)]   # two epochs
    _, t_steady = timed(lambda: [items.batch(b) for b in batches])
    n = args.items
    row(results, "a", "items/s, cold (read, resample, write cache)", n / t_cold, n / t_ref, "items/s", True)
    row(results, "a", "items/s, cached: open + first pass", n / t_cached, n / t_ref, "items/s", True)
    row(results, "a", "items/s, cached: later epochs (random batches)", 64 * len(batches) / t_steady, n / t_ref,
        "items/s", True)


def section_eval(args, work, rng, results):
    lengths, source = test_lengths(args.eval_fraction, rng)
    print(f"(b) evaluation pass: {len(lengths)} videos ({lengths.sum():,} snippets, longest {lengths.max():,}), "
          f"{args.crops} crops, D {args.len_feature}; lengths: {source}")
    folder = os.path.join(work, "test")
    os.makedirs(folder)
    videos = [Video(f"v{i:03d}", write_video(folder, f"v{i:03d}", int(T), args.crops, args.len_feature, rng),
                    i % 2 == 0) for i, T in enumerate(lengths)]
    gt_parts = []
    for v, T in zip(videos, lengths):
        g = np.zeros(T * 16, np.uint8)
        if not v.normal:
            a = int(rng.integers(0, T * 16))
            g[a:a + int(rng.integers(1, T * 8 + 2))] = 1
        gt_parts.append(g)
    gt_path = os.path.join(work, "gt.npy")
    np.save(gt_path, np.concatenate(gt_parts))
    model = MODELS[args.model](args.len_feature).eval()
    device = torch.device("cpu")

    test_set, t_load = timed(lambda: TestSet(videos, args.len_feature, gt_path, num_workers=2))
    (fast, fast_scores), t_fast = timed(lambda: evaluate(model, test_set, device, args.eval_snippets))
    ref_model = release_model(model)

    def reference():
        scores = score_videos(ref_model, videos, args.len_feature, device)
        return frame_metrics(to_frames(scores), test_set.gt, test_set.abnormal_frames), scores
    (ref, ref_scores), t_ref = timed(reference)
    err = max(float(np.abs(a - b).max()) for a, b in zip(fast_scores, ref_scores))
    same = snippet_metrics(ref_scores, test_set.gt, test_set.abnormal_frames)
    print(f"  test set loaded once in {t_load:.1f}s; max |score difference| {err:.2e}; max |metric difference| "
          f"{max(abs(same[k] - ref[k]) for k in ref):.2e} on the same scores, "
          f"{max(abs(fast[k] - ref[k]) for k in ref):.2e} between the two paths' scores (points)")
    row(results, "b", "evaluation pass (s)", t_fast, t_ref, "s", False)


def section_train(args, work, rng, results):
    n = 4 * args.batch_size
    print(f"(c) training steps: batch {args.batch_size} + {args.batch_size} items of {args.num_segments} segments, "
          f"D {args.len_feature}, {args.steps} timed steps after one warm-up")
    folder = os.path.join(work, "train")
    os.makedirs(folder)
    paths = [write_video(folder, f"t{i:04d}", int(rng.integers(50, 2000)), 1, args.len_feature, rng)[0]
             for i in range(n)]
    items = TrainItems([Video(os.path.basename(p), [p], True) for p in paths], args.num_segments,
                       args.len_feature, 2, cache_dir=os.path.join(work, "train_cache"))
    times = {}
    for name in ("fast", "ref"):
        torch.manual_seed(0)
        model = MODELS[args.model](args.len_feature)
        model = release_model(model) if name == "ref" else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        gen = np.random.default_rng(0)

        def step():
            idx = gen.choice(n, 2 * args.batch_size, replace=False)
            if name == "ref":
                x = load_items(paths, idx, args.num_segments, args.len_feature)
            else:
                x = items.batch(idx)
            train_step(model, x[:args.batch_size], x[args.batch_size:], opt,
                       clip_norm=1.0 if args.model == "bnwvad" else None)
        step()
        _, t = timed(lambda: [step() for _ in range(args.steps)])
        times[name] = args.steps / t
    row(results, "c", "training steps/s", times["fast"], times["ref"], "steps/s", True)


def score_one(T, crops, ref, D, eval_snippets, name="bnwvad"):
    """In a fresh process: score one generated video; print time and peak RSS as JSON."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((crops, T, D), dtype=np.float32)
    model = MODELS[name](D).eval()
    if ref:
        model = release_model(model)
        _, t = timed(lambda: torch.no_grad()(model)(torch.from_numpy(x)).mean(0))
    else:
        _, t = timed(lambda: score_batched(model, [x], torch.device("cpu"), eval_snippets))
    peak = peak_rss()
    print(json.dumps(dict(seconds=t, peak_bytes=peak, input_bytes=x.nbytes)))


def section_long(args, work, rng, results):
    print(f"(d) one {args.long_crops}-crop video, D {args.len_feature}: time and peak memory (max RSS, "
          f"features included), fresh process each")
    for T in args.long:
        out = {}
        ref_bytes = 3 * args.long_crops * 4 * T * T * 4          # dots, softmax, repeated P
        for name, ref in (("fast", 0), ("ref", 1)):
            if ref and ref_bytes > args.ref_memory * 2 ** 30:
                print(f"  T={T:,} reference skipped: its T x T copies need {ref_bytes / 2 ** 30:.0f} GB")
                continue
            cmd = [sys.executable, "-m", "bench", "--score_one", str(T), str(args.long_crops), str(ref),
                   "--len_feature", str(args.len_feature), "--eval_snippets", str(args.eval_snippets),
                   "--model", args.model]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if r.returncode != 0:
                print(f"  T={T:,} {name} failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
                continue
            out[name] = json.loads(r.stdout.strip().splitlines()[-1])
        if "fast" in out:
            print(f"  T={T:,}: input {out['fast']['input_bytes'] / 2 ** 30:.2f} GB")
        get = lambda name, key, scale: out[name][key] / scale if name in out else None
        row(results, "d", f"T={T:,} time (s)", get("fast", "seconds", 1), get("ref", "seconds", 1), "s", False)
        row(results, "d", f"T={T:,} peak memory (GB)", get("fast", "peak_bytes", 2 ** 30),
            get("ref", "peak_bytes", 2 ** 30), "GB", False)


def main():
    args = parse_args()
    if args.score_one:
        score_one(*args.score_one, args.len_feature, args.eval_snippets, args.model)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; model {args.model}")
    rng = np.random.default_rng(0)
    results = []
    sections = dict(a=section_items, b=section_eval, c=section_train, d=section_long, e=section_extract,
                    f=section_distributed, g=section_causal, h=section_review, i=section_stream,
                    j=section_memory, k=section_backends, l=section_site, m=section_soak)
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        for s in args.sections:
            sections[s](args, work, rng, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
