"""The benchmark's sections on videos, live streams and the review page (e to m; see bench/__main__.py's docstring):
I3D extraction, extraction under torchrun, causal scoring, the review page, the live pipeline, its
memory over hours, and I3D per backend. Each takes (args, work folder, rng, results).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.tools import peak_rss, proc_status, row, timed
from model import BNWVAD
from test import score_batched, snippet_metrics
from utils import one_line


def write_clip(path, frames, rng, width=320, height=256):
    """A width x height (320x256), 25 fps video of random frames."""
    import av
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
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
    # the frame contract (RGB at the frame's own size, then an RGB resize) beside PyAV's one-step
    # conversion that resizes in YUV while converting (what decoding did before the contract)
    hd = os.path.join(work, "clip_720p.mp4")
    write_clip(hd, 32, rng, 1280, 720)
    _, t_contract = timed(lambda: sum(1 for _ in decode_frames(hd)))
    _, t_one_step = timed(lambda: sum(1 for _ in one_step_frames(hd)))
    row(results, "e", "decode 1280x720 -> 455x256, frames/s", 32 / t_contract, 32 / t_one_step, "frames/s", True)
    video_features(path, model, crops=1, batch_size=1)          # warm-up
    for crops, batch in ((1, 4), (10, 1)):
        _, t = timed(lambda: video_features(path, model, crops=crops, batch_size=batch))
        row(results, "e", f"{crops:2d} crops: snippets/s per crop", T * crops / t, None, "snippets/s", True)


def one_step_frames(path, size=(455, 256)):
    """The frames of `path` converted and resized in one swscale call (in YUV, by PyAV's default colour
    handling): the reference path for the decoding contract's speed."""
    import av
    with av.open(path) as container:
        container.streams.video[0].thread_type = "AUTO"      # as decode_frames decodes
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="BILINEAR")


def section_causal(args, work, rng, results):
    from dataset import Labelled, load_test_set
    from options import dataset_info
    from core.checkpoints import load_model
    from options import parse_infer_args
    from live.scoring import causal_scores
    if not os.path.isfile(args.causal_checkpoint):
        print(f"(g) skipped: {args.causal_checkpoint} does not exist (python main.py --dataset demo trains the demo's)")
        return
    flags = ["--dataset", args.causal_dataset, "--model_path", args.causal_checkpoint, "--num_workers", "0"]
    infer_args = parse_infer_args(flags + (["--root_dir", args.causal_root_dir] if args.causal_root_dir else []))
    model, _ = load_model(infer_args.model_path)
    a = infer_args
    test_set = load_test_set(Labelled(a.test_list, a.gt, a.annotations, a.annotation_unit, a.fps), a.root_dir,
                             dataset_info(a), a.len_feature, a.num_workers, both_classes=False)
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


def random_i3d(seed=0):
    """InceptionI3d with seeded random weights (the speed does not depend on them): sections i and k build the
    same weights, so one ONNX export in the run's cache (i3d_cache) serves both."""
    from video.i3d import InceptionI3d
    torch.manual_seed(seed)
    return InceptionI3d().eval()


def i3d_cache(work):
    """The run's cache of exported I3D networks, in its temporary work folder (never the user's cache)."""
    return os.path.join(work, "i3d-cache")


def warm_up(i3d, device):
    """One pass of 2 clips (first-call allocations; for OpenVINO and ONNX Runtime the ONNX export, or its reading
    from the cache, and the compilation). Returns its seconds."""
    with torch.inference_mode():
        _, t = timed(lambda: i3d.features(torch.zeros(2, 3, 16, 224, 224, device=device)))
    return t


def section_stream(args, work, rng, results):
    from live.run import run_stream
    from live.settings import StreamSettings
    from utils import pick_device
    from video.backends import BackendError, i3d_backend
    device = pick_device(args.device)
    network = random_i3d().to(device)
    try:
        i3d = i3d_backend(network, args.backend, "fp32", device, i3d_cache(work))
    except BackendError as e:
        print(f"(i) live pipeline skipped: {e}")
        return
    reference = i3d_backend(network, "torch", "fp32", device) if i3d.name != "torch" else None
    model = BNWVAD(1024).to(device).eval()
    n = args.stream_snippets
    window = StreamSettings.window
    print(f"(i) live pipeline: 320x256 video, random-weight I3D on {i3d.name} fp32 ({device}"
          f"{', picked by --backend auto' if args.backend == 'auto' else ''}), window {window}, {n} snippets a run"
          + ("; reference: its capacity on torch fp32" if reference else ""))
    t = warm_up(i3d, device)
    if i3d.name != "torch":
        print(f"  {i3d.name}: ONNX export (or its reading from the cache) and compilation {t:.1f} s")
    if reference:
        warm_up(reference, device)
    fast = write_pattern_video(os.path.join(work, "fast.mp4"), 16 * n, 25, rng)
    table = []
    for crops in (1, 5):
        def run(path, name, realtime, network=i3d):
            return run_stream(path, model, network, os.path.join(work, f"{name}-{crops}"), float("inf"),
                              StreamSettings(crops=crops, window=window, realtime=realtime, live=False,
                                             status_every=1e9), quiet=True)
        capacity = run(fast, "fast", False)
        rate = capacity["snippets_per_busy_s"]
        fps = int(min(25, max(1, np.floor(0.8 * rate * 16))))      # a live pace with 20% to spare
        paced = write_pattern_video(os.path.join(work, f"paced-{crops}.mp4"), 16 * n, fps, rng)
        live = run(paced, "paced", True)
        at25 = run(fast, "live25", True) if fps < 25 else live
        ref_rate = run(fast, "reference", False, reference)["snippets_per_busy_s"] if reference else rate
        kept = "kept up" if at25["kept_up"] else (f"cannot keep up: {at25['speed']:.2f}x real time, lag "
                                                  f"{at25['max_lag_s']:.1f} s after {n} snippets")
        row(results, "i", f"{crops} crop{'s' if crops > 1 else ''}: capacity, {i3d.name} vs torch fp32", rate,
            ref_rate, "snippets/s", True)
        results[-1].update(backend=i3d.name, precision="fp32", device=str(device), crops=crops, live_fps=fps,
                           latency_p50_s=live["latency_p50_s"], latency_p95_s=live["latency_p95_s"],
                           kept_up_at_25fps=at25["kept_up"], speed_at_25fps=at25["speed"])
        print(f"    {rate * 0.64:.2f}x real time at 25 fps; at {fps:g} fps live: latency p50 "
              f"{live['latency_p50_s']:.2f} s, p95 {live['latency_p95_s']:.2f} s; at 25 fps: {kept}", flush=True)
        ratio = f" (x{rate / ref_rate:.1f} torch fp32)" if reference else ""
        table.append(f"| {crops} | {rate:.2f} snippets/s{ratio} | {rate * 0.64:.2f}x | {fps:g} fps | "
                     f"{live['latency_p50_s']:.2f} s / {live['latency_p95_s']:.2f} s | {kept} |")
    print(f"  for docs/ ({i3d.name} fp32, {device}):\n"
          "  | crops | capacity | x real time at 25 fps | played live at | latency p50 / p95 | fed 25 fps live |\n"
          "  | --- | --- | --- | --- | --- | --- |\n" + "\n".join(f"  {line}" for line in table), flush=True)


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
               str(Path(__file__).resolve().parents[1] / "extract.py"), folder, "--out", out, "--i3d_weights", weights,
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
    scores, lines, listing = {}, ["video,snippet,score,exceedance,normal_per_hour,start_frame,end_frame,start_s,end_s"], []
    segments = ["video,rank,start_frame,end_frame,start_s,end_s,peak_s,peak_score,peak_exceedance,peak_normal_per_hour,mean_score"]
    for v, n in enumerate(counts):
        name = f"v{v:03d}"
        scores[name] = rng.random(n)
        lines += [f"{name},{i},{x:.6g},,,{16 * i},{16 * i + 16},{16 * i / 25:.3f},{(16 * i + 16) / 25:.3f}"
                  for i, x in enumerate(scores[name])]
        segments += [f"{name},1,0,16,0.000,0.640,0.000,0.95,,,0.95"]
        listing.append(f"{name},{'abnormal' if v % 2 else 'normal'},{n},,{'32-96' if v % 2 else ''}")
    for name, text in (("scores.csv", lines), ("segments.csv", segments),
                       ("videos.csv", ["video,label,snippets,source,gt"] + listing)):
        with open(os.path.join(folder, name), "w") as f:
            f.write("\n".join(text) + "\n")
    return scores


def section_review(args, work, rng, results):
    from review.page import write_report
    from core.plots import plot_video
    print(f"(h) the review page of {args.review_videos} videos, 150,000 snippets: built (report.py) against one "
          f"PNG plot per video (core/plots.py, the review before the page); loaded in headless Chromium when installed")
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
    from video.backends import BackendError, has_bf16, i3d_backend, installed
    cpu = torch.device("cpu")
    model = random_i3d()
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
    probe = x[min(x)]                       # the warm-up's clips, whose features are compared with torch fp32's
    cache = i3d_cache(work)

    def rates(i3d, device):
        """({(crops, batch): clips/s}, the probe's features on the CPU)."""
        out = {}
        with torch.inference_mode():
            first = i3d.features(probe.to(device)).cpu()                    # warm-up (and export)
            for crops, batch in sizes:
                clips = x[crops * batch].to(device)
                best = float("inf")
                for _ in range(2 if crops * batch <= 2 else 1):
                    _, t = timed(lambda: i3d.features(clips).cpu())
                    best = min(best, t)
                out[(crops, batch)] = crops * batch / best
        return out, first

    runs = [(d, b, p) for d in devices for b in (("torch", "openvino", "onnxruntime") if d.type == "cpu" else ("torch",))
            for p in ("fp32", "bf16")]
    reference, columns = {}, {}            # device type -> torch fp32's rates; (device, backend, precision) -> rates
    errors = {}                             # (device, backend, precision) -> the probe's max |features - CPU torch fp32's|,
    exact = None                            # absolute and relative to the largest feature; CPU torch fp32 runs first
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
            _, t_export = timed(lambda: i3d.features(probe[:1]))
            print(f"  ONNX export (once per weights and shape, then read from the cache): {t_export:.1f} s")
        measured, features = rates(i3d, device)
        if backend == "torch" and precision == "fp32":
            reference[device.type] = measured
        exact = features if exact is None else exact
        diff = float((features - exact).abs().max())
        errors[(device.type, backend, precision)] = (diff, diff / float(exact.abs().max()))
        columns[(device.type, backend, precision)] = measured
        for (crops, batch), rate in measured.items():
            what = f"{device.type} {backend} {precision}, {crops:2d} crops x {batch} snippets"
            row(results, "k", what, rate, reference[device.type][(crops, batch)], "clips/s", True)
            results[-1].update(peak_fraction=rate * gflop / peaks[(device.type, precision)], max_abs_diff=diff,
                               max_rel_diff=errors[(device.type, backend, precision)][1])
        best = max(measured.values())
        print(f"    best {best:.2f} clips/s = {best * gflop:,.0f} GFLOP/s, "
              f"{best * gflop / peaks[(device.type, precision)]:.0%} of the {device.type} {precision} GEMM peak; "
              f"features against the CPU's torch fp32: max |diff| {errors[(device.type, backend, precision)][1]:.1e} of the "
              f"largest feature ({diff:.1e} absolute)", flush=True)
    # measured again after the rows: a peak that moved says the machine was busy, and the rates are not an idle one's
    dtypes = dict(fp32=torch.float32, bf16=torch.bfloat16)
    again = {(d, p): gemm_peak(dtypes[p], torch.device(d)) for d, p in peaks if p == "fp32" or has_bf16(torch.device(d))}
    for (d, p), v in again.items():
        results.append(dict(section="k", what=f"GEMM peak {d} {p}, after the rows", gflops=v))
    moved = [f"{d} {p} {peaks[(d, p)]:,.0f} -> {v:,.0f} GFLOP/s" for (d, p), v in again.items()
             if abs(v - peaks[(d, p)]) > 0.1 * peaks[(d, p)]]
    if moved:
        print(f"  warning: the GEMM peak moved by more than 10% during the section ({', '.join(moved)}): the machine "
              f"was busy, so these rates and peak fractions are not an idle machine's; rerun it idle")
    print("  for docs/video.md (clips/s; x: against torch fp32 on the same device; last rows: the warm-up clips' feature "
          "error, and the best rate's share of the GEMM peak in its precision):\n"
          "  | crops x snippets per pass | " + " | ".join(" ".join(key) for key in columns) + " |\n"
          "  | --- |" + " --- |" * len(columns))
    for size in sizes:
        cells = (f"{got[size]:.3f}" + ("" if key[1:] == ("torch", "fp32") else
                                        f" (x{got[size] / reference[key[0]][size]:.1f})")
                 for key, got in columns.items())
        print(f"  | {size[0]} x {size[1]} | " + " | ".join(cells) + " |")
    print("  | max diff to CPU torch fp32 / largest feature | " + " | ".join(
        f"{errors[key][1]:.1e}" for key in columns) + " |")
    print("  | fraction of the GEMM peak | " + " | ".join(
        f"{max(got.values()) * gflop / peaks[(key[0], key[2])]:.0%}" for key, got in columns.items()) + " |", flush=True)


# stream.py as its command line runs, with the I3D replaced (bench.video.stand_in_i3d): sections l and m
STREAM_RUNNER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); kind = sys.argv.pop(1); import stream, bench.video; "
                 "stream.load_i3d = lambda path, device: bench.video.stand_in_i3d(kind).to(device); "
                 "stream.run_cli(stream.main)")


def stand_in_i3d(kind):
    """The network stream.py runs in sections l and m instead of the Kinetics I3D: 'standin' (PoolProbe, next to
    free: the plumbing is timed) or 'random' (InceptionI3d with random weights: I3D's real cost)."""
    return PoolProbe() if kind == "standin" else random_i3d()


def stream_command(kind, *argv):
    return [sys.executable, "-c", STREAM_RUNNER, str(Path(__file__).resolve().parents[1]), kind, *argv]


def score_span(folders):
    """(snippets, seconds from the first snippet's arrival to the last's) over the scores.csv of `folders`."""
    import csv
    import datetime
    walls = []
    for folder in folders:
        with open(os.path.join(folder, "scores.csv"), newline="") as f:
            walls += [datetime.datetime.fromisoformat(r[6]).timestamp() for r in list(csv.reader(f))[1:]]
    return len(walls), max(walls) - min(walls)


def section_site(args, work, rng, results):
    from utils import save_checkpoint
    n, kind = args.site_cameras, args.site_i3d
    checkpoint = os.path.join(work, "site.pkl")
    torch.manual_seed(0)
    save_checkpoint(checkpoint, BNWVAD(1024).eval(), 1, {"AP": 0.0})
    videos = [write_pattern_video(os.path.join(work, f"cam{i}.mp4"), 16 * args.site_snippets, 25, rng)
              for i in range(n)]
    common = ["--device", args.device, "--backend", "torch", "--threshold", "1e9", "--crops", "1", "--queue", "2",
              "--i3d_batch", str(max(n, 2)), "--i3d_weights", "unused", "--status_every", "1e9"]
    what = "PoolProbe stand-in for I3D (plumbing only)" if kind == "standin" else "random-weight I3D, torch fp32"
    print(f"(l) {n} cameras in one process (stream.py --config) against {n} processes (stream.py each): "
          f"{args.site_snippets} snippets of a 320x256 file per camera, read as fast as they go, 1 crop, {what}, "
          f"on {args.device}")
    site = os.path.join(work, "site.toml")
    Path(site).write_text(f'model_path = "{checkpoint}"\noutput_dir = "{os.path.join(work, "site")}"\n' + "".join(
        f'[cameras.cam{i}]\nsource = "{video}"\n' for i, video in enumerate(videos)))
    _, t_one = timed(lambda: subprocess.run(stream_command(kind, "--config", site, *common), check=True,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    one = score_span([os.path.join(work, "site", f"cam{i}") for i in range(n)])

    def separate():
        processes = [subprocess.Popen(stream_command(kind, video, "--model_path", checkpoint, "--output_dir",
                                                     os.path.join(work, f"proc{i}"), *common),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for i, video in enumerate(videos)]
        if any(p.wait() for p in processes):
            raise RuntimeError("a stream.py process failed")
    _, t_many = timed(separate)
    many = score_span([os.path.join(work, f"proc{i}") for i in range(n)])
    rate_one, rate_many = one[0] / one[1], many[0] / many[1]
    row(results, "l", f"{n} cameras: snippets/s scored, one process vs {n} processes ({kind})", rate_one, rate_many,
        "snippets/s", True)
    results[-1].update(i3d=kind, cameras=n, wall_one_s=t_one, wall_many_s=t_many)
    print(f"    whole commands (start-up and model loading included): one process {t_one:.1f} s, {n} processes "
          f"{t_many:.1f} s (x{t_many / t_one:.2f})", flush=True)


def serve_segments(port, seconds, segments, log):
    """A camera that drops: `segments` times, ffmpeg's testsrc2 (320x256, 25 fps, `seconds` long, MPEG-4 in
    MPEG-TS) sent to the one client of tcp://127.0.0.1:port as fast as it takes it, then the connection closed;
    log gets each segment's exit status (0: all of it sent)."""
    for _ in range(segments):
        server = subprocess.run(["ffmpeg", "-v", "quiet", "-f", "lavfi", "-i",
                                 f"testsrc2=size=320x256:rate=25:duration={seconds}", "-c:v", "mpeg4", "-q:v", "5",
                                 "-g", "25", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log.append(server.returncode)


def soak_threshold(checkpoint, work, seconds=60):
    """The 0.95 quantile of the stand-in's live scores over a minute of testsrc2 (run_stream, as stream.py
    scores it): events now and then."""
    from core.checkpoints import load_model
    from live.run import run_stream
    from live.settings import StreamSettings
    model, _ = load_model(checkpoint)
    scores = []
    run_stream(f"testsrc2=size=320x256:rate=25:duration={seconds}", model, PoolProbe(), os.path.join(work, "pre"),
               float("inf"), StreamSettings(input_format="lavfi", live=False, status_every=1e9),
               on_score=lambda row: scores.append(row["score"]), quiet=True)
    return float(np.quantile(scores, 0.95))


def start_broker(work):
    """Debian's mosquitto on a free loopback port, or None when it or paho-mqtt is missing: (process, port, conf)."""
    import importlib.util
    import shutil
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None or importlib.util.find_spec("paho") is None:
        return None
    import pwd
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = os.path.join(work, "mosquitto.conf")
    Path(conf).write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                          f"persistence_location {work}/\nuser {pwd.getpwuid(os.getuid()).pw_name}\n")
    return [subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port, conf]


def section_soak(args, work, rng, results):
    import csv
    import signal
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from live.outputs import last_line
    from utils import save_checkpoint
    segments, seconds = args.soak_segments, args.soak_minutes * 60 / args.soak_segments
    checkpoint = os.path.join(work, "soak.pkl")
    torch.manual_seed(0)
    save_checkpoint(checkpoint, BNWVAD(1024).eval(), 1, {"AP": 0.0})
    threshold = soak_threshold(checkpoint, work)
    delivered = {}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = ("webhook", body["camera"], body["state"])
            delivered[key] = delivered.get(key, 0) + 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    broker = start_broker(work)
    alerts = f'[alerts]\nwebhook = "http://127.0.0.1:{hook.server_address[1]}/hook"\n'
    if broker is not None:
        import paho.mqtt.client as paho
        time.sleep(0.5)
        alerts += f'mqtt = "mqtt://127.0.0.1:{broker[1]}/soak"\n'
        subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-counter", clean_session=False)
        subscriber.reconnect_delay_set(0.1, 1)
        subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe("soak/#", qos=1)

        def on_message(c, u, m):
            body = json.loads(m.payload)
            key = ("mqtt", body["camera"], body["state"])
            delivered[key] = delivered.get(key, 0) + 1
        subscriber.on_message = on_message
        subscriber.connect("127.0.0.1", broker[1])
        subscriber.loop_start()
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    out = os.path.join(work, "soak")
    site = os.path.join(work, "soak.toml")
    Path(site).write_text(f'model_path = "{checkpoint}"\noutput_dir = "{out}"\nrollover = "{args.soak_rollover}"\n'
                          f'reconnect = "forever"\nstatus_every = 5\nsave_clips = true\npre_roll = 1.0\n'
                          f'post_roll = 1.0\nthreshold = {threshold}\n{alerts}'
                          + "".join(f'[cameras.cam{i}]\nsource = "tcp://127.0.0.1:{p}"\n' for i, p in enumerate(ports)))
    print(f"(m) soak: 2 cameras of {args.soak_minutes:g} min of testsrc2 each (320x256, 25 fps), served over TCP as "
          f"fast as taken, the connection dropped every {seconds:.0f} s of video; stream.py --config with the "
          f"PoolProbe stand-in for I3D, clips on, rollover at {args.soak_rollover}; a kill -9 and restart half way"
          + (", a broker restart a third of the way" if broker else " (no mosquitto or paho-mqtt: webhook only)"),
          flush=True)
    served = [[], []]
    feeders = [threading.Thread(target=serve_segments, args=(p, seconds, segments, log), daemon=True)
               for p, log in zip(ports, served)]
    stderr = open(os.path.join(work, "soak.err"), "ab")
    command = stream_command("standin", "--config", site, "--device", "cpu", "--i3d_weights", "unused")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    for feeder in feeders:
        feeder.start()
    start, samples, killed, restarted_broker = time.monotonic(), [], False, broker is None
    last_growth, last_end = time.monotonic(), None
    while True:
        time.sleep(2.0)
        done = sum(map(len, served))
        if not killed and done >= segments:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        if not restarted_broker and done >= 2 * segments / 3:
            broker[0].terminate()
            broker[0].wait()
            time.sleep(1.0)
            broker[0] = subprocess.Popen([broker[0].args[0], "-c", broker[2]], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            restarted_broker = True
        ends = []
        for i in range(2):
            line = last_line(os.path.join(out, f"cam{i}", "scores.csv"))
            try:
                ends.append(float(line.split(",")[5]))
            except (IndexError, ValueError):
                ends.append(0.0)
        samples.append((time.monotonic() - start, sum(ends) / 60, proc_status_of(process.pid, "VmRSS") >> 20))
        if ends != last_end:
            last_growth, last_end = time.monotonic(), ends
        if not any(f.is_alive() for f in feeders) and time.monotonic() - last_growth > 8:
            break
    process.send_signal(signal.SIGTERM)
    code = process.wait(60)
    time.sleep(1.0)
    if broker is not None:
        subscriber.loop_stop()
        broker[0].terminate()
    hook.shutdown()
    # every file parseable; snippets and events counted
    report, bad = {}, []
    per_segment = int(seconds * 25) // 16
    for i in range(2):
        folder = Path(out) / f"cam{i}"
        rows = []
        for path in sorted(folder.glob("scores*.csv")):
            with open(path, newline="") as f:
                for r in csv.DictReader(f):               # by the header: the columns are live.outputs'
                    try:
                        rows.append((int(r["snippet"]), float(r["score"]), float(r["start_s"]), float(r["end_s"])))
                    except (ValueError, KeyError, TypeError):
                        bad.append(f"{path.name}: {r}")
        events = []
        for path in sorted(folder.glob("events*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    bad.append(f"{path.name}: {line[:40]}")
        for path in [*folder.glob("stream*.log"), folder / "metrics.json"]:
            try:
                json.loads(path.read_text()) if path.suffix == ".json" else path.read_text(encoding="utf-8")
            except (ValueError, OSError):
                bad.append(path.name)
        indices = sorted(r[0] for r in rows)
        # the snippets of each connection: stream.log says where each ended ("source lost at T s") and
        # where a restart took over ("continuing the earlier run's outputs at snippet N")
        import re
        cuts = []
        for path in sorted(folder.glob("stream*.log"), key=lambda p: p.stat().st_mtime):
            for line in path.read_text().splitlines():
                lost = re.search(r"source lost at ([\d.]+) s", line)
                resumed = re.search(r"outputs at snippet (\d+)", line)
                if lost:
                    cuts.append(("t", float(lost[1])))
                elif resumed:
                    cuts.append(("n", int(resumed[1])))
        ordered, connections, start = sorted(rows), [], 0
        for kind, value in cuts + [("n", len(rows))]:
            end = start
            while end < len(ordered) and (ordered[end][3] <= value + 1e-6 if kind == "t" else ordered[end][0] < value):
                end += 1
            connections.append(end - start if kind == "t" else f"{end - start} (killed)" if end < len(rows)
                               else end - start)
            start = end
        complete = served[i].count(0)
        report[f"cam{i}"] = dict(segments_complete=complete, segments_cut=len(served[i]) - complete,
                                 snippets_in_complete_segments=complete * per_segment, snippets_scored=len(rows),
                                 numbered_without_gap_or_repeat=indices == list(range(len(indices))),
                                 snippets_per_connection=connections, snippets_per_whole_segment=per_segment,
                                 events_written=len(events), clips=len(list((folder / "clips").glob("*.mp4"))),
                                 rolled_files=len(list(folder.glob("*.20*"))),
                                 delivered={sink: {state: delivered.get((sink, f"cam{i}", state), 0)
                                                   for state in ("start", "end")}
                                            for sink in (["webhook"] + (["mqtt"] if broker else []))})
    print(f"  exit status after SIGTERM {code}; every file parseable: {not bad}" + (f" ({bad[:3]})" if bad else ""))
    for name, r in report.items():
        print(f"  {name}: {r['snippets_scored']} snippets scored, {r['snippets_in_complete_segments']} in the "
              f"{r['segments_complete']} segments sent whole (+{r['segments_cut']} cut by the kill); numbered without "
              f"a gap or repeat: {r['numbered_without_gap_or_repeat']}; per connection {r['snippets_per_connection']} "
              f"(a whole segment is {per_segment}); {r['events_written']} events written, "
              f"delivered {r['delivered']}; {r['clips']} clips; {r['rolled_files']} rolled files", flush=True)
    step = max(1, len(samples) // 8)
    print("  resident memory of the site process (MB) against video minutes scored (both cameras): "
          + ", ".join(f"{v:.0f} min {rss}" for _, v, rss in samples[::step] + samples[-1:]), flush=True)
    results.append(dict(section="m", minutes_per_camera=args.soak_minutes, segments=segments, exit_status=code,
                        parseable=not bad, cameras=report, rss=[list(s) for s in samples]))


def proc_status_of(pid, field):
    """A field of /proc/<pid>/status in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
