"""Score videos with a checkpoint: the test set with its ground truth, or any feature files.

  python infer.py --dataset demo --model_path ckpts/demo_best_2022.pkl --fps 24 --plot
  python infer.py --model_path ckpts/xd_best_2022.pkl --features my_features/ --fps 24 --plot

Accepts our checkpoints (model configuration stored inside) and the authors' release's bare state
dicts (configuration from the flags). With a ground truth (the test list, the default) it prints
AUC / AUC_sub / AP / AP_sub and the AUC / AP of each anomaly class the video names give (each
class's videos against all normal videos). With --features it scores every video found in the
given files and folders (crops grouped by the `<video>__<k>.npy` naming), with no list and no
ground truth. Outputs in --output_dir:
  scores.csv           video, snippet, score, calibrated, start_frame, end_frame[, start_s, end_s]
  frame_scores/<video>.npy   (16 T,) float32 raw frame scores (each snippet's score for its 16 frames)
  segments.csv         per video its --top_k anomalous segments (maximal runs of snippets scored
                       above the threshold), highest peak first
  metrics.json         the threshold; with a ground truth also the metrics, the per-class metrics
                       and the threshold's false-alarm rate (percent of the normal frames scored
                       above it, over all videos and over the normal videos only)
  plots/<video>.png    with --plot: score over time, threshold, ground-truth intervals shaded;
  roc_pr.png           with --plot and a ground truth: the test set's ROC and PR curves
score is the raw anomaly score (d_1 + d_2) * s, unbounded; calibrated is its empirical CDF over
the training set's normal snippets, in [0, 1] (see test.py), empty when the checkpoint holds no
calibration (the release's bare state dicts, or a run stopped before its end). The threshold is
--threshold (raw scale), else the --normal_quantile quantile of normal scores: of the test set's
normal videos with a ground truth, else of the training normals (the calibration).
"""
import csv
import json
import os

import numpy as np
import torch

from dataset import (FRAMES_PER_SNIPPET, Video, dataset_info, ensure_lists, load_test_set, load_video, make_demo,
                     scan_features, split_crop, video_shape)
from model import BNWVAD
from options import check_accelerator_flags, parse_infer_args
from test import (calibrate, evaluate, false_alarm_rate, find_segments, normal_threshold, per_class_metrics,
                  score_video, table_quantile, to_frames)
from utils import InputError, atomic_write, load_state, make_dir, pick_device, read_checkpoint, run_cli, write_text


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


def find_feature_videos(paths, len_feature, crops=None):
    """Files and folders (searched recursively for .npy) -> [Video], labels unknown (normal False).

    Crops are grouped by the `<video>__<k>.npy` naming (k = 0..N-1, each once); a file without the
    suffix is one video, (T, D) or holding `crops` crops, (T, N, D) / (N, T, D). Every file's header is
    checked here, before anything is scored.
    """
    files = []
    for path in paths:
        if os.path.isdir(path):       # hidden entries (a training-item .cache/) are not videos
            files += [os.path.join(path, rel) for rel in scan_features(path)]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"--features path {path} does not exist")
    groups = {}
    for f in files:
        name, k = split_crop(f)
        groups.setdefault(name, {})
        if k in groups[name]:
            raise InputError(f"video {name}: crop {k} is given twice ({groups[name][k]} and {f})")
        groups[name][k] = f
    videos = []
    for name, files in groups.items():
        ks = sorted(files, key=lambda k: -1 if k is None else k)
        if ks != [None] and ks != list(range(len(ks))):
            raise InputError(f"video {name}: crop files {ks} (from {files[ks[0]]}); expected one file without "
                             f"a crop suffix, or <video>__0.npy .. <video>__<N-1>.npy")
        video = Video(name, [files[k] for k in ks], False, crops if ks == [None] else None)
        video_shape(video, len_feature)
        videos.append(video)
    return videos


def score_features(model, videos, device):
    """Score videos given as (name, (N, T, D) features) pairs, any iterable (read lazily, one at a time).

    Returns [(name, (T,) raw snippet scores)]. The one entry point for scoring features, whatever
    produced them (feature files, a test list, features extracted from a video).
    """
    model.eval()
    return [(name, score_video(model, features, device)) for name, features in videos]


def checkpoint_calibration(record):
    """The checkpoint's quantile table of training-normal scores, or None (with a note)."""
    if record is not None and "calibration" in record:
        return record["calibration"].double().numpy()
    print("note: this checkpoint holds no calibration of normal scores (a bare state dict, or a run that did "
          "not finish); the calibrated column is left empty")
    return None


def seconds(frames, fps):
    """Frame numbers as seconds text, or empty cells where the frame rate is unknown."""
    return [f"{f / fps:.3f}" if fps else "" for f in frames]


def write_scores(path, results, table, fps):
    """scores.csv: one row per snippet of every video; fps: {video: frame rate or None}."""
    timed = any(fps.values())
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video", "snippet", "score", "calibrated", "start_frame", "end_frame"]
                       + (["start_s", "end_s"] if timed else []))
            for name, scores in results:
                cal = calibrate(scores, table) if table is not None else None
                for i, x in enumerate(scores):
                    a, b = i * FRAMES_PER_SNIPPET, (i + 1) * FRAMES_PER_SNIPPET
                    w.writerow([name, i, f"{x:.6g}", f"{cal[i]:.4f}" if cal is not None else "", a, b]
                               + (seconds((a, b), fps[name]) if timed else []))
    atomic_write(path, write)


def write_frame_scores(folder, results):
    """frame_scores/<video>.npy: (16 T,) float32 raw scores, the ground truth's frame layout."""
    make_dir(folder, "frame scores")
    for name, scores in results:
        frames = to_frames([scores]).astype(np.float32)
        atomic_write(os.path.join(folder, f"{name}.npy"), lambda tmp: np.save(tmp, frames, allow_pickle=False))


def video_segments(results, threshold, top_k):
    """[(name, segments)] with each video's top_k segments above the threshold."""
    return [(name, find_segments(scores, threshold, top_k)) for name, scores in results]


def write_segments(path, segments, table, fps):
    """segments.csv: one row per anomalous segment, frames end exclusive; fps: {video: frame rate or None}."""
    timed = any(fps.values())
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video", "rank", "start_frame", "end_frame"] + (["start_s", "end_s", "peak_s"] if timed else [])
                       + ["peak_score", "peak_calibrated", "mean_score"])
            for name, segs in segments:
                for rank, s in enumerate(segs, 1):
                    a, b = s["start"] * FRAMES_PER_SNIPPET, s["end"] * FRAMES_PER_SNIPPET
                    peak = s["peak_snippet"] * FRAMES_PER_SNIPPET
                    cal = f"{float(calibrate(s['peak'], table)):.4f}" if table is not None else ""
                    w.writerow([name, rank, a, b] + (seconds((a, b, peak), fps[name]) if timed else [])
                               + [f"{s['peak']:.6g}", cal, f"{s['mean']:.6g}"])
    atomic_write(path, write)


def write_plots(folder, results, threshold, fps, gts=None):
    """plots/<video>.png for every video (fps: {video: frame rate or None}; gts: per video (16 T,)
    ground truth, or None)."""
    from plots import plot_video
    make_dir(folder, "plot")
    for i, (name, scores) in enumerate(results):
        plot_video(os.path.join(folder, f"{name}.png"), name, scores, threshold, fps[name],
                   gts[i] if gts is not None else None)


def print_class_table(per_class):
    print(f"{'class':10s}{'videos':>8s}{'AUC':>9s}{'AP':>9s}")
    for c, m in per_class.items():
        print(f"{c:10s}{m['videos']:8d}{m['AUC']:9.2f}{m['AP']:9.2f}")


def evaluate_test_set(args, model, device, result):
    """Score and evaluate the test list; fills `result` (metrics, per class, threshold) and returns
    (per-video results, per-video ground truths, the frame scores and ground truth)."""
    if args.dataset == "demo":
        make_demo(args.root_dir)
    ensure_lists(args)
    test_set = load_test_set(args)
    metrics, scores = evaluate(model, test_set, device, args.eval_snippets, args.amp)
    for name in ("AUC", "AUC_sub", "AP", "AP_sub"):
        if name in metrics:
            print(f"{name:8s}{metrics[name]:.4f}")
    names = [v.name for v in test_set.videos]
    frame_scores = to_frames(scores)
    per_class = per_class_metrics(names, [v.normal for v in test_set.videos], test_set.lengths, frame_scores,
                                  test_set.gt)
    if per_class:
        print_class_table(per_class)
    normal_frames = ~test_set.abnormal_frames.astype(bool)
    if args.threshold is not None:
        threshold, source = args.threshold, "--threshold"
    else:
        threshold = normal_threshold(frame_scores, normal_frames, args.normal_quantile)
        source = f"quantile {args.normal_quantile} of the test set's normal videos' scores"
    far = false_alarm_rate(frame_scores, test_set.gt, threshold)
    far_normal = false_alarm_rate(frame_scores[normal_frames], test_set.gt[normal_frames], threshold)
    print(f"threshold {threshold:.4g} ({source}): false alarms on {100 * far:.2f}% of all normal frames, "
          f"{100 * far_normal:.2f}% of the normal videos' frames")
    result.update(metrics, per_class=per_class, threshold=dict(
        value=threshold, source=source, false_alarm_rate=100 * far, false_alarm_rate_normal_videos=100 * far_normal))
    bounds = np.cumsum(test_set.lengths * FRAMES_PER_SNIPPET)[:-1]
    return list(zip(names, scores)), np.split(test_set.gt, bounds), frame_scores, test_set.gt


def extract_videos_for_scoring(args, device):
    """--video: I3D features of each video (cached in --feature_cache; videos already there are not
    extracted again) -> ([Video], {video: its own frame rate}). A video that fails is reported and
    skipped; none left is an error."""
    from extract import extract_videos, list_videos, output_paths, video_fps
    from i3d import load_i3d
    if args.len_feature != 1024:
        raise InputError(f"checkpoint {args.model_path} takes {args.len_feature}-d features; I3D gives 1024-d")
    if not args.i3d_weights:
        raise InputError("--video needs --i3d_weights (the I3D RGB state dict, rgb_imagenet.pt; see the README)")
    try:
        paths = list_videos(args.video)
        i3d = load_i3d(args.i3d_weights, device)
    except (OSError, ValueError) as e:
        raise InputError(str(e).splitlines()[0]) from None
    if not paths:
        raise InputError(f"no videos found in {' '.join(args.video)}")
    crops = dataset_info(args).crops or 1
    cache = args.feature_cache or os.path.join(args.output_dir, "features")
    make_dir(cache, "feature cache")
    failures = extract_videos(paths, i3d, cache, crops=crops, resize=args.resize)
    done = [p for p in paths if p not in failures]
    if not done:
        raise InputError(f"no video could be read ({len(failures)} failed, see above)")
    videos = [Video(p.stem, [str(f) for f in output_paths(p, cache, crops)], False) for p in done]
    return videos, {p.stem: args.fps or video_fps(p) for p in done}


def main(argv=None):
    args = parse_infer_args(argv)
    device = pick_device(args.device)
    check_accelerator_flags(args, device)
    model, record = load_model(args)
    args.len_feature = model.len_feature
    table = checkpoint_calibration(record)
    make_dir(args.output_dir, "output")
    result = dict(checkpoint=args.model_path, step=record["step"] if record else None)
    model = model.to(device)
    run_model = torch.compile(model, dynamic=True) if args.compile else model

    if args.features and args.video:
        raise InputError("give --features or --video, not both")
    if args.features or args.video:
        if args.threshold is None and table is None:
            raise InputError("give --threshold: without a ground truth the threshold comes from the checkpoint's "
                             "calibration, which this checkpoint does not hold")
        if args.video:
            videos, fps = extract_videos_for_scoring(args, device)
        else:
            videos = find_feature_videos(args.features, args.len_feature, dataset_info(args).crops)
            fps = {v.name: args.fps for v in videos}
        results = score_features(run_model, ((v.name, load_video(v, args.len_feature)) for v in videos), device)
        gts = None
        if args.threshold is not None:
            threshold, source = args.threshold, "--threshold"
        else:
            threshold = table_quantile(table, args.normal_quantile)
            source = f"quantile {args.normal_quantile} of the training normals' scores (the checkpoint's calibration)"
        print(f"scored {len(results)} videos; threshold {threshold:.4g} ({source})")
        result.update(videos=len(results), threshold=dict(value=threshold, source=source))
    else:
        results, gts, frame_scores, gt = evaluate_test_set(args, run_model, device, result)
        fps = {name: args.fps for name, _ in results}

    segments = video_segments(results, result["threshold"]["value"], args.top_k)
    write_text(os.path.join(args.output_dir, "metrics.json"), json.dumps(result, indent=2) + "\n")
    write_scores(os.path.join(args.output_dir, "scores.csv"), results, table, fps)
    write_frame_scores(os.path.join(args.output_dir, "frame_scores"), results)
    write_segments(os.path.join(args.output_dir, "segments.csv"), segments, table, fps)
    if args.plot:
        write_plots(os.path.join(args.output_dir, "plots"), results, result["threshold"]["value"], fps, gts)
        if gts is not None:
            from plots import plot_curves
            plot_curves(os.path.join(args.output_dir, "roc_pr.png"), frame_scores, gt)
    n_segments = sum(len(s) for _, s in segments)
    print(f"wrote metrics.json, scores.csv, segments.csv ({n_segments} segments), frame_scores/"
          f"{' and plots/' if args.plot else ''} in {args.output_dir}")


if __name__ == "__main__":
    run_cli(main)
