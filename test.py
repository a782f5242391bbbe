"""Scoring a test set and the frame-level metrics, in percent. Computes and returns; writes nothing.

Scoring follows the release: every crop is scored as its own row in evaluation mode, the crop
scores are averaged, and each snippet's score holds for its 16 frames. Videos are concatenated in
list order and compared with the frame-level ground truth.
AP is the trapezoidal area under the precision-recall curve, auc(recall, precision), which is what
both releases compute and the published tables report; AP_sklearn beside it is scikit-learn's
step-wise average_precision_score, sum_n (R_n - R_{n-1}) P_n, which does not interpolate between
operating points and reads lower or higher (see docs/method.md). AUC_sub / AP_sub use only the
frames of abnormal test videos.

Two paths give the same numbers: the plain one (score_video per video, frame_metrics on every
frame) is the reference; evaluate() uses the fast one: crops of videos of similar length packed
into zero-padded batches of at most --eval_snippets snippets (masked, so no video's scores change;
a long video's crops go a few at a time), and metrics from per-snippet (score, label, count) runs,
which give scikit-learn's curves exactly, with 16x fewer points.

From raw anomaly scores to what a user reads (the second half of this file): the quantile table of
the training normals' scores (main.py stores it in the checkpoint; thresholds.Calibration turns it
into an exceedance rate), segments above a threshold, and the event-level metrics at a threshold
(event_metrics: segment IoU with the ground-truth intervals, event recall, false alarms per hour of
normal video). Metrics are always computed on the raw score.
"""
import contextlib
import re

import numpy as np
import torch
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from core.features import FRAMES_PER_SNIPPET
from options import EVAL_SNIPPETS
from utils import InputError

METRICS = ("AUC", "AP", "AUC_sub", "AP_sub")   # snippet_metrics' keys, in the published tables' order
MIN_FILL = 0.8          # a video joins a batch only if it is at least this fraction of its padded length


def finite_scores(scores, name, features):
    """`scores` (T,) of video `name`, unchanged when all are finite; else an InputError naming the
    video and the cause: NaN or inf in its features (N, T, D), or, with finite features, in what the
    model made of them (weights that overflow or diverged). Every scoring path ends here (score_video,
    score_batched: infer.py, test-set evaluation, stream.py), so a NaN score never reads as "not
    anomalous": NaN > threshold is False, and a threshold of NaN scores finds no segment."""
    bad = ~np.isfinite(scores)
    if not bad.any():
        return scores
    x = np.asarray(features[0]) if len(features) == 1 else np.stack([np.asarray(f) for f in features])
    inputs = int((~np.isfinite(x)).sum())
    cause = f"its features hold {inputs} NaN or inf value(s)" if inputs else \
        "its features are finite, so the model's weights give them (weights that overflow or diverged)"
    raise InputError(f"video {name}: {int(bad.sum())} of its {len(scores)} snippet scores are NaN or inf (the "
                     f"first at snippet {int(np.argmax(bad))}): {cause}")


@torch.no_grad()
def score_video(model, features, device, name="?"):
    """features: (N, T, D) array -> (T,) snippet scores, the mean over crops of each crop's score.
    name: the video's, for the error when a score is not finite (finite_scores)."""
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    scores = model(x).mean(0).float().cpu().numpy()               # model(x): (N, T), one row per crop
    return finite_scores(scores, name, features)


def score_test_set(model, test_set, device):
    """Snippet scores of every test video, list order."""
    model.eval()
    return [score_video(model, f, device, v.name) for f, v in zip(test_set.features, test_set.videos)]


def to_frames(snippet_scores):
    """Per-video snippet scores -> one frame-level array (each snippet repeated 16 times)."""
    return np.repeat(np.concatenate(snippet_scores), FRAMES_PER_SNIPPET)


def auc_ap(scores, labels):
    """ROC AUC and trapezoidal PR area, in percent."""
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return 100.0 * auc(fpr, tpr), 100.0 * auc(recall, precision)


def frame_metrics(frame_scores, gt, abnormal_frames):
    """AUC, AP (trapezoid) and AP_sklearn (step-wise) over all frames; AUC_sub, AP_sub over the frames
    of abnormal videos. Percent."""
    m = {}
    m["AUC"], m["AP"] = auc_ap(frame_scores, gt)
    m["AP_sklearn"] = 100.0 * average_precision_score(gt, frame_scores)
    sub = abnormal_frames.astype(bool)
    if gt[sub].min() != gt[sub].max():      # both classes present among abnormal videos' frames
        m["AUC_sub"], m["AP_sub"] = auc_ap(frame_scores[sub], gt[sub])
    return m


def plan_batches(lengths, crops, max_snippets=EVAL_SNIPPETS, min_fill=MIN_FILL):
    """Group the rows (video i, crop k) into forward passes, longest videos first.

    Returns a list of row lists. A batch's rows are padded to its longest video; a video joins
    a batch when the rows still fit in max_snippets and it is at least min_fill of that length.
    A video whose crops do not fit together is split into passes of as many crops as fit (>= 1).
    """
    batches, current, width = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        T, N = int(lengths[i]), int(crops[i])
        rows = [(i, k) for k in range(N)]
        if current and (T < min_fill * width or (len(current) + N) * width > max_snippets):
            batches.append(current)
            current = []
        if not current:
            width = T
        if N * T > max_snippets:
            per = max(1, max_snippets // T)
            batches += [rows[j:j + per] for j in range(0, N, per)]
            continue
        current += rows
    if current:
        batches.append(current)
    return batches


def autocast(device, amp):
    """bfloat16 autocast on CUDA when amp is set, else nothing."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def score_batched(model, features, device, max_snippets=EVAL_SNIPPETS, amp=False, names=None):
    """The same scores as [score_video(model, f, device) for f in features], in packed passes.

    features: per video an (N, T, D) array (or a list of N (T, D) arrays, e.g. memory-mapped);
    names: the videos', for the error when a score is not finite (finite_scores).
    """
    model.eval()
    lengths = [len(f[0]) for f in features]
    crops = [len(f) for f in features]
    sums = [np.zeros(T, np.float64) for T in lengths]
    for rows in plan_batches(lengths, crops, max_snippets):
        width = max(lengths[i] for i, _ in rows)
        x = np.zeros((len(rows), width, features[rows[0][0]][0].shape[-1]), np.float32)   # (R, L, D)
        for r, (i, k) in enumerate(rows):
            x[r, :lengths[i]] = features[i][k]
        mask = None
        if any(lengths[i] != width for i, _ in rows):
            mask = torch.arange(width)[None, :] < torch.tensor([lengths[i] for i, _ in rows])[:, None]
            mask = mask.to(device)
        with autocast(device, amp):
            s = model(torch.from_numpy(x).to(device), mask).float().cpu().numpy()   # (R, L), one row per crop
        for r, (i, k) in enumerate(rows):
            sums[i] += s[r, :lengths[i]]
    names = names or [f"{i + 1} of {len(features)}" for i in range(len(features))]
    return [finite_scores((total / n).astype(np.float32), name, f)
            for total, n, name, f in zip(sums, crops, names, features)]


def weighted_auc_ap(scores, abnormal_frames, normal_frames):
    """auc_ap of the frames that `abnormal_frames`/`normal_frames` count per score (each score one snippet).

    The curves are scikit-learn's with sample weights: cumulative counts are exact integers, so
    they equal the curves of the repeated frames exactly.
    """
    labels = np.r_[np.ones(len(scores)), np.zeros(len(scores))]
    weights = np.r_[abnormal_frames, normal_frames].astype(np.float64)
    keep = weights > 0
    labels, both, weights = labels[keep], np.r_[scores, scores][keep], weights[keep]
    fpr, tpr, _ = roc_curve(labels, both, sample_weight=weights)
    precision, recall, _ = precision_recall_curve(labels, both, sample_weight=weights)
    return 100.0 * auc(fpr, tpr), 100.0 * auc(recall, precision)


def weighted_stepwise_ap(scores, abnormal_frames, normal_frames):
    """scikit-learn's average_precision_score (step-wise, percent) of the frames counted as in weighted_auc_ap."""
    labels = np.r_[np.ones(len(scores)), np.zeros(len(scores))]
    weights = np.r_[abnormal_frames, normal_frames].astype(np.float64)
    keep = weights > 0
    return 100.0 * average_precision_score(labels[keep], np.r_[scores, scores][keep], sample_weight=weights[keep])


def snippet_metrics(snippet_scores, gt, abnormal_frames):
    """frame_metrics(to_frames(snippet_scores), gt, abnormal_frames), from one run per snippet."""
    scores = np.concatenate(snippet_scores)                                 # (S,)
    abnormal_count = gt.reshape(-1, FRAMES_PER_SNIPPET).sum(1)              # (S,) abnormal frames per snippet
    normal_count = FRAMES_PER_SNIPPET - abnormal_count                      # (S,) normal frames per snippet
    m = {}
    m["AUC"], m["AP"] = weighted_auc_ap(scores, abnormal_count, normal_count)
    m["AP_sklearn"] = weighted_stepwise_ap(scores, abnormal_count, normal_count)
    sub = abnormal_frames[::FRAMES_PER_SNIPPET].astype(bool)               # (S,) snippets of abnormal videos
    if abnormal_count[sub].any() and normal_count[sub].any():
        m["AUC_sub"], m["AP_sub"] = weighted_auc_ap(scores[sub], abnormal_count[sub], normal_count[sub])
    return m


def evaluate(model, test_set, device, max_snippets=EVAL_SNIPPETS, amp=False):
    """-> (metrics in percent, per-video snippet scores), by the fast path."""
    scores = score_batched(model, test_set.features, device, max_snippets, amp, [v.name for v in test_set.videos])
    return snippet_metrics(scores, test_set.gt, test_set.abnormal_frames), scores


def false_alarm_rate(frame_scores, gt, threshold):
    """Fraction of the normal frames (gt == 0, in any video) scored above the threshold."""
    return float(np.mean(frame_scores[gt == 0] > threshold))


def find_segments(scores, threshold, top_k):
    """Maximal runs of snippets scored above the threshold, the top_k by peak score.

    scores: (T,) -> list of dicts start, end (snippets, end exclusive), peak, peak_snippet, mean,
    highest peak first.
    """
    above = np.concatenate([[False], np.asarray(scores) > threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])            # run starts and ends, alternating
    segments = []
    for start, end in zip(edges[::2], edges[1::2]):
        run = scores[start:end]
        segments.append(dict(start=int(start), end=int(end), peak=float(run.max()),
                             peak_snippet=int(start + run.argmax()), mean=float(run.mean())))
    segments.sort(key=lambda s: -s["peak"])
    return segments[:top_k]


def runs_of(mask):
    """(start, end) of each maximal run of True in a 1-d mask, end exclusive."""
    edges = np.flatnonzero(np.diff(np.r_[0, np.asarray(mask, dtype=np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def event_metrics(snippet_scores, gts, normal, threshold, normal_seconds=None):
    """Event-level metrics at a threshold, beside the frame-level AUC/AP.

    snippet_scores: per video its (T,) raw scores; gts: per video its (16 T,) 0/1 frame ground truth;
    normal: per video True for a normal video; threshold: raw score; normal_seconds: the normal videos'
    total duration in seconds (None: unknown, no per-hour rate).
    An alarm is a maximal run of snippets scored above the threshold (find_segments, every one) and
    covers their 16 frames each; an event is a maximal run of abnormal frames in the ground truth.
    -> dict (percentages in percent):
      events, detected   events, and those that at least one alarm overlaps (a frame in common)
      event_recall       100 detected / events
      event_IoU          mean over events of the IoU, in frames, of the event with the union of the
                         alarms that overlap it (0 for an event no alarm overlaps): how tightly the
                         alarms outline the events (a 3 s event inside a 9.6 s alarm: 31)
      alarms_normal      alarms in normal videos, all of them false
      false_alarms_per_hour   alarms_normal per hour of normal video (with normal_seconds)
    Keys whose inputs are missing (no events, no normal videos) are left out.
    """
    events = detected = alarms_normal = 0
    ious = []
    for scores, gt, is_normal in zip(snippet_scores, gts, normal):
        above = np.repeat(np.asarray(scores) > threshold, FRAMES_PER_SNIPPET)           # (16 T,) alarm frames
        alarms = runs_of(above)
        if is_normal:
            alarms_normal += len(alarms)
        for a, b in runs_of(np.asarray(gt) > 0):
            events += 1
            overlapping = [(s, e) for s, e in alarms if s < b and a < e]
            if not overlapping:
                ious.append(0.0)
                continue
            detected += 1
            union = np.zeros(len(above), bool)
            for s, e in overlapping:
                union[s:e] = True
            inter = union[a:b].sum()
            ious.append(inter / (union.sum() + (b - a) - inter))
    m = {}
    if events:
        m.update(events=events, detected=detected, event_recall=100.0 * detected / events,
                 event_IoU=100.0 * float(np.mean(ious)))
    if any(normal):
        m["alarms_normal"] = alarms_normal
        if normal_seconds:
            m["false_alarms_per_hour"] = alarms_normal * 3600.0 / normal_seconds
    return m


def video_classes(name):
    """The anomaly classes a video's name gives, [] for a normal video or a name without any.

    XD-Violence: the codes after `_label_`, split by '-', without '0' and the normal code 'A'
    (`..._label_B2-G-0` -> ['B2', 'G']). UCF-Crime: the name's prefix before its number
    (`Abuse028_x264` -> ['Abuse']); normal videos (`Normal_Videos_...`) have none.
    """
    if "_label_" in name:
        codes = name.rsplit("_label_", 1)[1].split("-")
        return [c for c in codes if c not in ("0", "A", "")]
    m = re.match(r"([A-Za-z]+)\d+_x264", name)
    return [m.group(1)] if m and m.group(1) != "Normal" else []


def per_class_metrics(names, normal, lengths, frame_scores, gt):
    """Per anomaly class: AUC and AP (percent) of that class's videos together with all normal videos.

    names, normal, lengths: per test video (list order); frame_scores, gt: the concatenated frames.
    A class whose frames hold only one ground-truth value is left out.
    """
    owner = np.repeat(np.arange(len(names)), np.asarray(lengths) * FRAMES_PER_SNIPPET)   # frame -> video
    classes = {}
    for i, name in enumerate(names):
        if not normal[i]:
            for c in video_classes(name):
                classes.setdefault(c, []).append(i)
    normal_videos = [i for i in range(len(names)) if normal[i]]
    result = {}
    for c in sorted(classes):
        mask = np.isin(owner, classes[c] + normal_videos)
        if gt[mask].min() == gt[mask].max():
            continue
        auc_c, ap_c = auc_ap(frame_scores[mask], gt[mask])
        result[c] = dict(AUC=auc_c, AP=ap_c, videos=len(classes[c]))
    return result
