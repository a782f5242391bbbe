"""Scoring a test set and the frame-level metrics, in percent. Computes and returns; writes nothing.

Scoring follows the release: every crop is scored as its own row in evaluation mode, the crop
scores are averaged, and each snippet's score holds for its 16 frames. Videos are concatenated in
list order and compared with the frame-level ground truth.
AP is the trapezoidal area under the precision-recall curve, auc(recall, precision), which is what
the published tables report; AUC_sub / AP_sub use only the frames of abnormal test videos.

Two paths give the same numbers: the plain one (score_video per video, frame_metrics on every
frame) is the reference; evaluate() uses the fast one: crops of videos of similar length packed
into zero-padded batches of at most --eval_snippets snippets (masked, so no video's scores change;
a long video's crops go a few at a time), and metrics from per-snippet (score, label, count) runs,
which give scikit-learn's curves exactly, with 16x fewer points.

From raw anomaly scores to what a user reads (the second half of this file):

Calibrated score. The raw score (d_1 + d_2) * s is unbounded and its scale differs from run to
run. At the end of training, main.py scores the training set's normal videos with the best model
(full length, crops averaged, exactly as test videos are scored) and stores CALIBRATION_LEVELS
evenly spaced quantiles of those snippet scores in the checkpoint ("calibration"). The calibrated
score of a raw score x is the empirical CDF of the training normals at x, interpolated linearly
between the stored quantiles: the fraction of normal training snippets that score below x. So 0.5
is a typical normal snippet, 0.99 is above 99% of them, and 1.0 is above all of them. It is a
monotone map of the raw score, reported beside it; metrics are always computed on the raw score.
"""
import contextlib
import re

import numpy as np
import torch
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from features import FRAMES_PER_SNIPPET
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
    """AUC, AP over all frames; AUC_sub, AP_sub over the frames of abnormal videos."""
    m = {}
    m["AUC"], m["AP"] = auc_ap(frame_scores, gt)
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


def weighted_auc_ap(scores, positives, negatives):
    """auc_ap of the frames that `positives`/`negatives` count per score (each score one snippet).

    The curves are scikit-learn's with sample weights: cumulative counts are exact integers, so
    they equal the curves of the repeated frames exactly.
    """
    labels = np.r_[np.ones(len(scores)), np.zeros(len(scores))]
    weights = np.r_[positives, negatives].astype(np.float64)
    keep = weights > 0
    labels, both, weights = labels[keep], np.r_[scores, scores][keep], weights[keep]
    fpr, tpr, _ = roc_curve(labels, both, sample_weight=weights)
    precision, recall, _ = precision_recall_curve(labels, both, sample_weight=weights)
    return 100.0 * auc(fpr, tpr), 100.0 * auc(recall, precision)


def snippet_metrics(snippet_scores, gt, abnormal_frames):
    """frame_metrics(to_frames(snippet_scores), gt, abnormal_frames), from one run per snippet."""
    scores = np.concatenate(snippet_scores)                                 # (S,)
    positives = gt.reshape(-1, FRAMES_PER_SNIPPET).sum(1)                   # (S,) abnormal frames
    negatives = FRAMES_PER_SNIPPET - positives
    m = {}
    m["AUC"], m["AP"] = weighted_auc_ap(scores, positives, negatives)
    sub = abnormal_frames[::FRAMES_PER_SNIPPET].astype(bool)               # (S,) snippets of abnormal videos
    if positives[sub].any() and negatives[sub].any():
        m["AUC_sub"], m["AP_sub"] = weighted_auc_ap(scores[sub], positives[sub], negatives[sub])
    return m


def evaluate(model, test_set, device, max_snippets=EVAL_SNIPPETS, amp=False):
    """-> (metrics in percent, per-video snippet scores), by the fast path."""
    scores = score_batched(model, test_set.features, device, max_snippets, amp, [v.name for v in test_set.videos])
    return snippet_metrics(scores, test_set.gt, test_set.abnormal_frames), scores


CALIBRATION_LEVELS = 1001      # quantiles 0, 0.001, ..., 1 of the training normals' snippet scores


def quantile_table(scores):
    """Snippet scores (any shape) -> (CALIBRATION_LEVELS,) float64 quantiles, non-decreasing."""
    return np.quantile(np.asarray(scores, dtype=np.float64).ravel(), np.linspace(0.0, 1.0, CALIBRATION_LEVELS))


def calibrate(raw, table):
    """Raw scores -> [0, 1]: the empirical CDF given by the quantile table (0 below its min, 1 above its max)."""
    levels = np.linspace(0.0, 1.0, len(table))
    return np.interp(np.asarray(raw, dtype=np.float64), table, levels)


def table_quantile(table, q):
    """The raw score at quantile q of the calibration table (the inverse of `calibrate`)."""
    return float(np.interp(q, np.linspace(0.0, 1.0, len(table)), table))


def normal_threshold(frame_scores, normal_mask, q):
    """The q-quantile of the scores of frames that belong to normal videos."""
    return float(np.quantile(frame_scores[normal_mask.astype(bool)], q))


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
