"""From raw anomaly scores to what a user reads: a [0, 1] calibration, a threshold, the anomalous
segments of a video, and per-class metrics. Computes and returns; writes nothing.

Calibrated score. The raw score (d_1 + d_2) * s is unbounded and its scale differs from run to
run. At the end of training, main.py scores the training set's normal videos with the best model
(full length, crops averaged, exactly as test videos are scored) and stores CALIBRATION_LEVELS
evenly spaced quantiles of those snippet scores in the checkpoint ("calibration"). The calibrated
score of a raw score x is the empirical CDF of the training normals at x, interpolated linearly
between the stored quantiles: the fraction of normal training snippets that score below x. So 0.5
is a typical normal snippet, 0.99 is above 99% of them, and 1.0 is above all of them. It is a
monotone map of the raw score, reported beside it; metrics are always computed on the raw score.
"""
import re

import numpy as np

from dataset import FRAMES_PER_SNIPPET
from test import auc_ap

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
