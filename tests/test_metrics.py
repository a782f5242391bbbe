"""Metrics against independent computations."""
import numpy as np
from sklearn.metrics import roc_auc_score

from test import auc_ap, frame_metrics, to_frames


def trapezoid_pr_area(scores, labels):
    """The PR curve by hand: one point per distinct threshold, plus (recall 0, precision 1)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]          # end of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    # sklearn stops the curve once full recall is reached
    stop = np.argmax(recall >= 1.0) + 1
    r = np.r_[0.0, recall[:stop]]
    p = np.r_[1.0, precision[:stop]]
    return np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2)


def test_auc_ap_match_independent_computation():
    rng = np.random.default_rng(0)
    for n, ties in ((50, False), (1000, True), (5000, False)):
        labels = (rng.random(n) < 0.3).astype(int)
        scores = rng.random(n) + labels * 0.3
        if ties:
            scores = np.round(scores, 1)
        auc, ap = auc_ap(scores, labels)
        assert abs(auc - 100 * roc_auc_score(labels, scores)) < 1e-9
        assert abs(ap - 100 * trapezoid_pr_area(scores, labels)) < 1e-9


def test_ap_is_trapezoidal_not_stepwise():
    labels = np.array([1, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    _, ap = auc_ap(scores, labels)
    # points (0,1) (1/3,1) (1/3,1/2) (2/3,2/3) (2/3,1/2) (2/3,2/5) (1,1/2)
    expected = 100 * (1 / 3 * 1 + 1 / 3 * (1 / 2 + 2 / 3) / 2 + 1 / 3 * (2 / 5 + 1 / 2) / 2)
    assert abs(ap - expected) < 1e-9


def test_frame_metrics_sub_uses_only_abnormal_videos():
    snippet_scores = [np.array([0.1, 0.9, 0.2]), np.array([0.5, 0.6])]   # abnormal video, then normal
    frames = to_frames(snippet_scores)
    assert frames.shape == (80,) and (frames[:16] == 0.1).all()
    gt = np.zeros(80, int)
    gt[16:32] = 1
    abnormal = np.r_[np.ones(48, bool), np.zeros(32, bool)]
    m = frame_metrics(frames, gt, abnormal)
    assert m["AUC_sub"] == 100.0                                    # within the abnormal video, perfect
    assert m["AUC"] == 100.0 * roc_auc_score(gt, frames)
