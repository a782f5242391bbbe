"""Time the fast paths against the plain reference paths (reference.py) in one run, on generated data.

  python bench.py                          # sections a-f at the default sizes (a few minutes on 2 cores)
  python bench.py --sections b --eval_fraction 1     # the whole UCF-Crime-length test set
  python bench.py --sections d --long 2000 20000 100000
  python bench.py --sections f --dist_videos 8
  python bench.py --model urdmu --sections bcd     # UR-DMU on the same fast paths
  python bench.py --sections k --json k.json      # I3D on each backend and precision, and the GEMM peak

Sections (each prints fast, reference and their ratio):
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
     not depend on them), and decoding alone
  f  extraction over processes: extract.py under torchrun on --dist_videos generated videos (1 crop,
     random weights), 2 processes against 1 on this CPU (torchrun gives each of 2 processes one
     thread, the one process all of them), and all GPUs against 1 when there are any; each rate is
     snippets / (time of the run - time of a second run that finds every video done), so process
     start-up, listing and the manifest are not counted
  h  the review page (report.py) of an 800-video, 150,000-snippet output folder: time to build it
     against writing one PNG plot per video, and, with Chromium and selenium installed, its load
     time and the time to open a video in the browser
Live video (stream.py; not in the default run: `python bench.py --sections gij`):
  g  what causal scoring costs: AUC/AP of a test set (by default the demo's, with the checkpoint
     `python main.py --dataset demo` trains; --causal_dataset/--causal_root_dir/--causal_checkpoint
     for your own) scored offline (whole videos) and as stream.py scores it, each snippet over the
     last --windows snippets (0: all past ones), and with --delays later snippets
  i  sustainable snippets per second (the pipeline's capacity, reading a generated 320x256 25 fps
     file as fast as it can) and latency p50/p95 at a live pace it can sustain (--realtime, 25 fps
     or slower), for 1 and 5 crops, random-weight I3D on --device; and whether it keeps up at 25 fps
  k  I3D per backend (video/backends.py: torch, OpenVINO, ONNX Runtime) and precision (fp32; bf16 where
     the hardware has it): clips (snippet crops) per second through the network alone, for 1, 5 and
     10 crops at each of --i3d_batches snippets per pass, against torch fp32 at the same size; the
     CPU's measured GEMM peak (2048^3 matmul) in fp32 and bf16 and the fraction of it each row reaches
     (I3D's FLOPs per clip from torch's flop counter); the same rows for torch on CUDA when present.
     Random weights (the speed does not depend on them); the ONNX export is timed once
  j  memory over a long stream: --stream_hours of FFmpeg's testsrc2 pattern (25 fps) through
     run_stream as fast as it goes, with a cheap stand-in for I3D (the stream code's memory does not
     depend on the network), events and clips on; resident memory after 1, 10, 30, 60... minutes and at the end
Feature files are written to a temporary folder (in the OS page cache, so "from disk" reads are
mostly memory reads) and removed at the end.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataset import TestSet, TrainItems
from features import Video
from model import BNWVAD, MODELS
from reference import load_items, release_model, score_videos
from test import EVAL_SNIPPETS, evaluate, frame_metrics, score_batched, snippet_metrics, to_frames
from train import train_step
from utils import one_line

UCF_LENGTHS = Path(__file__).resolve().parent.parent / "shared" / "realdata" / "ucf" / "test_videos.tsv"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fast paths vs the release's plain paths, on generated data.")
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
    p.add_argument("--causal_checkpoint", default="ckpts/demo_best_2022.pkl",
                   help="(g) the checkpoint (default: the demo's, from python main.py --dataset demo)")
    p.add_argument("--causal_dataset", default="demo", help="(g) the dataset whose test list is scored")
    p.add_argument("--causal_root_dir", help="(g) its --root_dir (default: the dataset's)")
    p.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 0],
                   help="(g) causal windows in snippets, 0: all past snippets")
    p.add_argument("--delays", type=int, nargs="*", default=[2, 4, 8], help="(g) delays at --delay_window")
    p.add_argument("--delay_window", type=int, nargs="+", default=[8, 64], help="(g) windows the delays are "
                   "measured at")
    p.add_argument("--stream_snippets", type=int, default=12, help="(i) snippets of each timed run")
    p.add_argument("--stream_hours", type=float, default=1.0, help="(j) length of the simulated stream")
    p.add_argument("--dist_videos", type=int, default=4, help="(f) generated videos of --extract_frames frames each")
    p.add_argument("--review_videos", type=int, default=800, help="(h) videos on the review page")
    p.add_argument("--i3d_batches", type=int, nargs="+", default=[1, 2], help="(k) snippets per pass")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--score_one", type=int, nargs=3, metavar=("T", "CROPS", "REF"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def row(results, section, what, fast, ref, unit, higher_is_better):
    ratio = None if fast is None or ref is None else (fast / ref if higher_is_better else ref / fast)
    results.append(dict(section=section, what=what, fast=fast, ref=ref, unit=unit, speedup=ratio))
    fmt = lambda v: "-" if v is None else f"{v:,.3f}"
    print(f"  {what:48s} fast {fmt(fast):>12s}  ref {fmt(ref):>12s}  {unit:10s} "
          f"x{'-' if ratio is None else f'{ratio:.1f}'}", flush=True)


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


def proc_status(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes, or None where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


def peak_rss():
    """Peak resident memory of this process in bytes: VmHWM (reset by exec, unlike ru_maxrss,
    which Linux carries over from the parent), ru_maxrss where /proc is absent."""
    peak = proc_status("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
            cmd = [sys.executable, __file__, "--score_one", str(T), str(args.long_crops), str(ref),
                   "--len_feature", str(args.len_feature), "--eval_snippets", str(args.eval_snippets),
                   "--model", args.model]
            r = subprocess.run(cmd, capture_output=True, text=True)
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


def write_clip(path, frames, rng):
    """A 320x256, 25 fps video of random frames."""
    import av
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 256, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def section_extract(args, work, rng, results):
    from video.decode import decode_frames
    from video.snippets import video_features
    from video.i3d import InceptionI3d
    from utils import pick_device
    device = pick_device(args.device)
    path = os.path.join(work, "clip.mp4")
    write_clip(path, args.extract_frames, rng)
    T = args.extract_frames // 16
    print(f"(e) I3D extraction: {args.extract_frames} frames 320x256 ({T} snippets), device {device}")
    model = InceptionI3d().to(device).eval()
    _, t_decode = timed(lambda: sum(1 for _ in decode_frames(path)))
    row(results, "e", "decode + resize, frames/s", args.extract_frames / t_decode, None, "frames/s", True)
    video_features(path, model, crops=1, batch_size=1)          # warm-up
    for crops, batch in ((1, 4), (10, 1)):
        _, t = timed(lambda: video_features(path, model, crops=crops, batch_size=batch))
        row(results, "e", f"{crops:2d} crops: snippets/s per crop", T * crops / t, None, "snippets/s", True)


def section_causal(args, work, rng, results):
    from dataset import load_test_set
    from checkpoints import load_model
    from options import parse_infer_args
    from live.scoring import causal_scores
    if not os.path.isfile(args.causal_checkpoint):
        print(f"(g) skipped: {args.causal_checkpoint} does not exist (python main.py --dataset demo trains the demo's)")
        return
    flags = ["--dataset", args.causal_dataset, "--model_path", args.causal_checkpoint, "--num_workers", "0"]
    infer_args = parse_infer_args(flags + (["--root_dir", args.causal_root_dir] if args.causal_root_dir else []))
    model, _ = load_model(infer_args.model_path)
    test_set = load_test_set(infer_args, both_classes=False)
    device = torch.device("cpu")
    print(f"(g) causal scoring, {args.causal_dataset} test set: {len(test_set.videos)} videos, "
          f"{sum(test_set.lengths):,} snippets (longest {max(test_set.lengths)}), {len(test_set.features[0])} crops, "
          f"{args.causal_checkpoint}")
    print(f"  {'scoring':26s}{'AUC':>8s}{'AP':>8s}{'AUC_sub':>9s}{'AP_sub':>8s}{'|causal - offline|':>20s}"
          f"  {'latency added':>14s}{'time':>7s}")
    offline, t = timed(lambda: score_batched(model, test_set.features, device))
    everything = np.concatenate(offline)
    print(f"  (offline raw scores: median {np.median(everything):.3f}, 99th percentile {np.quantile(everything, 0.99):.3f})")

    def report(what, scores, seconds, delay):
        m = snippet_metrics(scores, test_set.gt, test_set.abnormal_frames)
        gap = np.abs(np.concatenate(scores) - everything)      # per snippet, on the raw score scale
        added = f"{delay} x 0.64 s" if delay else "-"
        print(f"  {what:26s}{m['AUC']:8.2f}{m['AP']:8.2f}{m['AUC_sub']:9.2f}{m['AP_sub']:8.2f}"
              f"{f'{gap.mean():.3f} (p95 {np.quantile(gap, 0.95):.3f})':>20s}  {added:>14s}{seconds:6.0f}s", flush=True)
        results.append(dict(section="g", what=what, delay=delay, seconds=seconds, mean_abs_diff=float(gap.mean()),
                            p95_abs_diff=float(np.quantile(gap, 0.95)), **m))

    report("offline (whole video)", offline, t, 0)
    configs = [(w, 0) for w in args.windows] + [(w, k) for w in args.delay_window for k in args.delays if k < w]
    for window, delay in configs:
        scores, t = timed(lambda: [causal_scores(model, f, window or None, delay, device) for f in test_set.features])
        what = f"window {window or 'all past'}" + (f", delay {delay}" if delay else "")
        report(what, scores, t, delay)


def write_pattern_video(path, frames, rate, rng):
    """A 320x256 video of moving noise blocks at `rate` fps (mpeg4), for timing the stream pipeline."""
    import av
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 320, 256, "yuv420p"
        base = rng.integers(0, 256, (256, 640, 3), dtype=np.uint8)
        for i in range(frames):
            image = np.ascontiguousarray(base[:, (8 * i) % 320:(8 * i) % 320 + 320])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def section_stream(args, work, rng, results):
    from video.i3d import InceptionI3d
    from live.run import run_stream
    from live.settings import StreamSettings
    from utils import pick_device
    device = pick_device(args.device)
    i3d = InceptionI3d().to(device).eval()
    model = BNWVAD(1024).to(device).eval()
    n = args.stream_snippets
    window = StreamSettings.window
    print(f"(i) live pipeline: 320x256 video, random-weight I3D on {device}, window {window}, {n} snippets a run")
    with torch.inference_mode():
        i3d.features(torch.zeros(2, 3, 16, 224, 224, device=device))       # warm-up: first-call allocations
    fast = write_pattern_video(os.path.join(work, "fast.mp4"), 16 * n, 25, rng)
    for crops in (1, 5):
        def run(path, name, realtime):
            return run_stream(path, model, i3d, os.path.join(work, f"{name}-{crops}"), float("inf"),
                              StreamSettings(crops=crops, window=window, realtime=realtime, live=False,
                                             amp=device.type == "cuda", status_every=1e9), quiet=True)
        capacity = run(fast, "fast", False)
        rate = capacity["snippets_per_busy_s"]
        fps = int(min(25, max(1, np.floor(0.8 * rate * 16))))      # a live pace with 20% to spare
        paced = write_pattern_video(os.path.join(work, f"paced-{crops}.mp4"), 16 * n, fps, rng)
        live = run(paced, "paced", True)
        at25 = run(fast, "live25", True) if fps < 25 else live
        kept = "kept up" if at25["kept_up"] else (f"cannot keep up: {at25['speed']:.2f}x real time, lag "
                                                  f"{at25['max_lag_s']:.1f} s after {n} snippets")
        print(f"  {crops} crop{'s' if crops > 1 else ' '}: {rate:6.2f} snippets/s ({rate * 0.64:.2f}x real time at "
              f"25 fps); at {fps:g} fps live: latency p50 {live['latency_p50_s']:.2f} s, p95 "
              f"{live['latency_p95_s']:.2f} s; at 25 fps: {kept}", flush=True)
        results.append(dict(section="i", crops=crops, device=str(device), snippets_per_s=rate, live_fps=fps,
                            latency_p50_s=live["latency_p50_s"], latency_p95_s=live["latency_p95_s"],
                            kept_up_at_25fps=at25["kept_up"], speed_at_25fps=at25["speed"]))


class PoolProbe(torch.nn.Module):
    """A stand-in for I3D that costs next to nothing: each clip's 1024-d grid of means."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))     # tells the pipeline the device

    def features(self, x):                                     # (N, 3, 16, 224, 224) -> (N, 1024)
        return x[..., ::32, ::32].flatten(1)[:, :1024]         # of (N, 3 * 16 * 7 * 7) samples


def section_memory(args, work, rng, results):
    from live.health import release_memory
    from live.run import run_stream
    from live.settings import StreamSettings
    seconds = int(args.stream_hours * 3600)
    source = f"testsrc2=size=320x256:rate=25:duration={seconds}"
    torch.manual_seed(0)
    torch.set_num_threads(1)        # the small windows run faster on one thread than two on two busy cores
    model = BNWVAD(1024).eval()
    settings = lambda: StreamSettings(input_format="lavfi", live=False, save_clips=True, pre_roll=2.0, post_roll=2.0,
                                      status_every=10.0)
    first = []
    run_stream(source.replace(f"duration={seconds}", "duration=60"), model, PoolProbe(), os.path.join(work, "pre"),
               float("inf"), settings(), on_score=lambda row: first.append(row["score"]), quiet=True)
    threshold = float(np.quantile(first, 0.9))       # events now and then, with their clips
    marks = {}                       # stream minute -> resident bytes when it was scored

    def resident():
        """(resident bytes now, and once the allocator has returned what it holds free)"""
        now = proc_status("VmRSS")
        release_memory()
        return now, proc_status("VmRSS")

    def on_score(row):
        for minute in (1, 10, 30, 60, 90, 120, 180):
            if row["end_s"] >= 60 * minute and minute not in marks:
                marks[minute] = resident()
    out = os.path.join(work, "long")
    print(f"(j) memory: {seconds / 3600:g} h of testsrc2 320x256 25 fps through run_stream, stand-in I3D, "
          f"threshold at the 0.9 quantile of the first minute's scores, clips on")
    summary, t = timed(lambda: run_stream(source, model, PoolProbe(), out, threshold, settings(), on_score=on_score,
                                          quiet=True))
    marks[summary["video_s"] / 60] = resident()
    clips = len(os.listdir(os.path.join(out, "clips"))) if os.path.isdir(os.path.join(out, "clips")) else 0
    scores_mb = os.path.getsize(os.path.join(out, "scores.csv")) / 2 ** 20
    print(f"  {summary['snippets']:,} snippets ({summary['video_s'] / 3600:.2f} h of video) in {t:.0f} s, "
          f"{summary['events']} events, {clips} clips, scores.csv {scores_mb:.1f} MB")
    print("  resident memory (MB, as found / once the allocator returned its free memory): "
          + ", ".join(f"after {m:.0f} min {now >> 20} / {trimmed >> 20}" for m, (now, trimmed) in marks.items())
          + f"; peak {peak_rss() >> 20} (run it alone: other sections' memory stays in the process)", flush=True)
    results.append(dict(section="j", hours=seconds / 3600, snippets=summary["snippets"], events=summary["events"],
                        rss_by_minute={f"{m:.0f}": list(rss) for m, rss in marks.items()}, seconds=t))
def section_distributed(args, work, rng, results):
    from video.i3d import InceptionI3d
    folder = os.path.join(work, "dist_videos")
    os.makedirs(folder)
    for i in range(args.dist_videos):
        write_clip(os.path.join(folder, f"clip{i:03d}.mp4"), args.extract_frames, rng)
    weights = os.path.join(work, "i3d_random.pt")
    torch.save(InceptionI3d().state_dict(), weights)
    snippets = args.dist_videos * (args.extract_frames // 16)
    gpus = torch.cuda.device_count()
    print(f"(f) extraction under torchrun: {args.dist_videos} videos of {args.extract_frames} frames 320x256 "
          f"({snippets} snippets), 1 crop; {os.cpu_count()} CPUs, {gpus} GPUs")

    def rate(processes, device):
        """Snippets per second of extract.py with this many processes, start-up and bookkeeping excluded."""
        out = tempfile.mkdtemp(dir=work)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(Path(__file__).resolve().parent / "extract.py"), folder, "--out", out, "--i3d_weights", weights,
               "--crops", "1", "--device", device]
        seconds = []
        for _ in range(2):          # the second run finds every video done: its time is the overhead
            r, t = timed(lambda: subprocess.run(cmd, capture_output=True, text=True))
            if r.returncode != 0:
                print(f"  {processes} process(es) on {device} failed (exit {r.returncode}): "
                      f"{r.stderr.strip().splitlines()[-1:]}")
                return None
            seconds.append(t)
        print(f"  {processes} process(es) on {device}: {seconds[0]:.1f} s, of which {seconds[1]:.1f} s start-up and "
              f"bookkeeping")
        return snippets / (seconds[0] - seconds[1])
    one, two = rate(1, "cpu"), rate(2, "cpu")
    row(results, "f", "CPU: snippets/s, 2 processes vs 1", two, one, "snippets/s", True)
    if gpus:
        single = rate(1, "cuda")
        row(results, "f", "1 GPU: snippets/s", single, one, "snippets/s", True)
        if gpus > 1:
            every = rate(gpus, "cuda")
            row(results, "f", f"{gpus} GPUs: snippets/s vs 1 GPU", every, single, "snippets/s", True)
            row(results, "f", f"{gpus} GPUs: snippets/s per GPU vs 1 GPU", every and every / gpus, single,
                "snippets/s", True)


def review_folder(folder, rng, videos=800, snippets=150_000):
    """An infer.py-like output folder of `videos` videos and about `snippets` snippets in all, 25 fps."""
    counts = rng.multinomial(snippets - 20 * videos, np.ones(videos) / videos) + 20
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump({"threshold": {"value": 0.9, "source": "bench"}}, f)
    scores, lines, listing = {}, ["video,snippet,score,calibrated,start_frame,end_frame,start_s,end_s"], []
    segments = ["video,rank,start_frame,end_frame,start_s,end_s,peak_s,peak_score,peak_calibrated,mean_score"]
    for v, n in enumerate(counts):
        name = f"v{v:03d}"
        scores[name] = rng.random(n)
        lines += [f"{name},{i},{x:.6g},,{16 * i},{16 * i + 16},{16 * i / 25:.3f},{(16 * i + 16) / 25:.3f}"
                  for i, x in enumerate(scores[name])]
        segments += [f"{name},1,0,16,0.000,0.640,0.000,0.95,,0.95"]
        listing.append(f"{name},{'abnormal' if v % 2 else 'normal'},{n},,{'32-96' if v % 2 else ''}")
    for name, text in (("scores.csv", lines), ("segments.csv", segments),
                       ("videos.csv", ["video,label,snippets,source,gt"] + listing)):
        with open(os.path.join(folder, name), "w") as f:
            f.write("\n".join(text) + "\n")
    return scores


def section_review(args, work, rng, results):
    from review.page import write_report
    from plots import plot_video
    print(f"(h) the review page of {args.review_videos} videos, 150,000 snippets: built (report.py) against one "
          f"PNG plot per video (plots.py, the review before the page); loaded in headless Chromium when installed")
    folder = os.path.join(work, "review")
    scores = review_folder(folder, rng, args.review_videos)
    page, t_page = timed(lambda: write_report(folder))
    plot_dir = os.path.join(work, "review_plots")
    os.makedirs(plot_dir)
    _, t_plots = timed(lambda: [plot_video(os.path.join(plot_dir, f"{n}.png"), n, x, 0.9) for n, x in scores.items()])
    print(f"  page {os.path.getsize(page) / 1e6:.1f} MB")
    row(results, "h", "build the page vs every video's plot (s)", t_page, t_plots, "s", False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    except Exception as e:          # no selenium, no browser: the build figures stand alone
        print(f"  page load not measured: {one_line(e)}")
        return
    try:
        browser.get("file://" + os.path.abspath(page))
        load = browser.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
        opened = browser.execute_script("const t = performance.now(); document.querySelector('#videos tbody "
                                        "tr:last-child').click(); return performance.now() - t")
    finally:
        browser.quit()
    row(results, "h", "page load in Chromium (ms)", load, None, "ms", False)
    row(results, "h", "open a video: draw its curve (ms)", opened, None, "ms", False)


def gemm_peak(dtype, device, n=2048, reps=5):
    """Best GFLOP/s of an n x n x n matmul in `dtype` on `device` (2 n^3 FLOPs each)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(reps + 1):                   # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def section_backends(args, work, rng, results):
    from torch.utils.flop_counter import FlopCounterMode
    from video.i3d import InceptionI3d
    from video.backends import BackendError, has_bf16, i3d_backend, installed
    cpu = torch.device("cpu")
    model = InceptionI3d().eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.features(torch.zeros(1, 3, 16, 224, 224))
    gflop = counter.get_total_flops() / 1e9
    devices = [cpu] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    # bf16 without hardware bf16 is emulated (~60x slower than fp32 here): measured on 512^3 once, for the record
    peaks = {(d.type, p): gemm_peak(dtype, d) if p == "fp32" or has_bf16(d) else gemm_peak(dtype, d, 512, 1)
             for d in devices for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"(k) I3D per backend and precision: 16x224x224 clips, {gflop:.1f} GFLOP each; GEMM peak (2048^3) "
          + ", ".join(f"{d} {p} {v:,.0f} GFLOP/s{'' if p == 'fp32' or has_bf16(torch.device(d)) else ' (emulated: no bf16 hardware)'}"
                      for (d, p), v in peaks.items()))
    for d in devices:
        for p in ("fp32", "bf16"):
            results.append(dict(section="k", what=f"GEMM peak {d.type} {p}", gflops=peaks[(d.type, p)]))
    sizes = [(crops, batch) for crops in (1, 5, 10) for batch in args.i3d_batches]
    x = {n: torch.rand(n, 3, 16, 224, 224) * 2 - 1 for n in {c * b for c, b in sizes}}
    cache = os.path.join(work, "i3d-cache")

    def rates(i3d, device):
        out = {}
        with torch.inference_mode():
            i3d.features(x[1].to(device))                                   # warm-up (and export)
            for crops, batch in sizes:
                clips = x[crops * batch].to(device)
                best = float("inf")
                for _ in range(2 if crops * batch <= 2 else 1):
                    _, t = timed(lambda: i3d.features(clips).cpu())
                    best = min(best, t)
                out[(crops, batch)] = crops * batch / best
        return out

    runs = [(d, b, p) for d in devices for b in (("torch", "openvino", "onnxruntime") if d.type == "cpu" else ("torch",))
            for p in ("fp32", "bf16")]
    reference = {}
    for device, backend, precision in runs:
        if not installed(backend):
            print(f"  {backend} {precision} on {device}: not installed")
            continue
        try:
            i3d = i3d_backend(model.to(device), backend, precision, device, cache)
        except BackendError as e:
            print(f"  {backend} {precision} on {device}: skipped: {e}")
            continue
        if backend != "torch" and not any(Path(cache).glob("*.onnx")):
            _, t_export = timed(lambda: i3d.features(x[1]))
            print(f"  ONNX export (once per weights and shape, then read from the cache): {t_export:.1f} s")
        measured = rates(i3d, device)
        if backend == "torch" and precision == "fp32":
            reference[device.type] = measured
        for (crops, batch), rate in measured.items():
            what = f"{device.type} {backend} {precision}, {crops:2d} crops x {batch} snippets"
            row(results, "k", what, rate, reference[device.type][(crops, batch)], "clips/s", True)
            results[-1]["peak_fraction"] = rate * gflop / peaks[(device.type, precision)]
        best = max(measured.values())
        print(f"    best {best:.2f} clips/s = {best * gflop:,.0f} GFLOP/s, "
              f"{best * gflop / peaks[(device.type, precision)]:.0%} of the {device.type} {precision} GEMM peak", flush=True)


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
                    j=section_memory, k=section_backends)
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        for s in args.sections:
            sections[s](args, work, rng, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
