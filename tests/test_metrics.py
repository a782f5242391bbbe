"""Metrics against independent computations: frame AUC and both APs, the event metrics at a threshold,
and the calibration of raw scores (its tail against a known distribution)."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from test import auc_ap, event_metrics, frame_metrics, snippet_metrics, to_frames
from core.thresholds import quantile_cdf, quantile_table
from core.thresholds import Calibration


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


def test_both_aps_stepwise_is_sklearns_and_differs_from_the_trapezoid():
    """AP (trapezoid, the releases') and AP_sklearn (scikit-learn's step-wise average precision) over
    generated snippet runs, both against scikit-learn on the repeated frames."""
    rng = np.random.default_rng(1)
    for case in range(5):
        lengths = rng.integers(1, 30, 8)
        scores = [np.round(rng.random(T), 1 + case % 2).astype(np.float32) for T in lengths]
        gt = (rng.random(int(lengths.sum()) * 16) < 0.3).astype(np.uint8)
        abnormal = np.repeat(rng.random(8) < 0.5, lengths * 16)
        frames = to_frames(scores)
        m = snippet_metrics(scores, gt, abnormal)
        assert m["AP_sklearn"] == pytest.approx(100 * average_precision_score(gt, frames), abs=1e-9)
        assert m["AP"] == pytest.approx(100 * trapezoid_pr_area(frames, gt), abs=1e-9)
        assert frame_metrics(frames, gt, abnormal)["AP_sklearn"] == pytest.approx(m["AP_sklearn"], abs=1e-9)
    labels = np.array([1, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    m = frame_metrics(scores, labels, np.ones(6, bool))
    assert m["AP_sklearn"] == pytest.approx(100 * (1 + 2 / 3 + 1 / 2) / 3)        # sum (R_n - R_n-1) P_n
    assert m["AP"] == pytest.approx(auc_ap(scores, labels)[1]) and m["AP_sklearn"] - m["AP"] == pytest.approx(40 / 9)


def test_event_metrics_on_a_hand_made_case():
    """Two abnormal videos and two normal ones at 25 fps (a snippet 0.64 s):
    video a: event frames 48..96 (3 snippets) inside an alarm of snippets 2..8 (frames 32..128):
             IoU 48 / 96 = 0.5, detected; a second event (frames 200..240) no alarm touches: IoU 0.
    video b: one event, frames 0..40, two alarms over it, snippets 0..1 and 2..4 (frames 0..16, 32..64):
             their union meets the event on 16 + 8 frames, the union of all is 64: IoU 0.375, detected.
    normal videos: 3 alarms in 100 + 50 snippets = 96 s, so 3 / 96 s = 112.5 per hour."""
    a = np.zeros(20)
    a[2:8] = 2.0
    gt_a = np.zeros(320, np.uint8)
    gt_a[48:96] = 1
    gt_a[200:240] = 1
    b = np.array([2.0, 0.0, 2.0, 2.0, 0.0])
    gt_b = np.zeros(80, np.uint8)
    gt_b[0:40] = 1
    c = np.zeros(100)
    c[[10, 50]] = 2.0
    c[51] = 2.0
    d = np.zeros(50)
    d[-1] = 2.0
    m = event_metrics([a, b, c, d], [gt_a, gt_b, np.zeros(1600), np.zeros(800)], [False, False, True, True],
                      threshold=1.0, normal_seconds=150 * 16 / 25)
    assert m["events"] == 3 and m["detected"] == 2
    assert m["event_recall"] == pytest.approx(200 / 3)
    assert m["event_IoU"] == pytest.approx(100 * (0.5 + 0.0 + 0.375) / 3)
    assert m["alarms_normal"] == 3 and m["false_alarms_per_hour"] == pytest.approx(3 * 3600 / 96)
    # no normal videos: no false-alarm rate; no frame rate: no per-hour rate
    assert "alarms_normal" not in event_metrics([a], [gt_a], [False], 1.0, 10.0)
    assert "false_alarms_per_hour" not in event_metrics([c], [np.zeros(1600)], [True], 1.0, None)


def test_calibrated_score_keeps_falling_past_the_highest_training_normal():
    """Raw 3.25 and 6.31, both above every training normal: the old [0, 1] calibrated score reads 1.0
    for both; the exceedance tells them apart, and stays below what the data can resolve (1 / n)."""
    normals = np.random.default_rng(0).normal(1.0, 0.5, 10000)
    table = quantile_table(normals)
    assert normals.max() < 3.25 and quantile_cdf([3.25, 6.31], table).tolist() == [1.0, 1.0]
    cal = Calibration(table, len(normals))
    low, high = cal.exceedance([3.25, 6.31])
    assert 0 < high < low < 1 / len(normals)
    assert high < 1e-6 * low                                   # far rarer, not equal
    assert cal.per_hour(3.25, 0.64) == pytest.approx(low * 5625)
    grid = np.linspace(-1, 8, 500)
    assert np.all(np.diff(cal.exceedance(grid)) <= 0)          # monotone, continuous at the tail's start
    u, _ = cal.tail
    assert cal.exceedance(u - 1e-9) == pytest.approx(cal.exceedance(u + 1e-9), rel=1e-6)
    assert cal.exceedance(np.median(normals)) == pytest.approx(0.5, abs=0.01)


def test_exceedance_tail_against_a_known_distribution():
    """Exponential normal scores (scale b): P(X >= x) = exp(-x / b). The fitted tail reproduces it inside
    the data and beyond its highest score (x / b = 16; 400000 snippets reach about 13), within three
    standard deviations of the fitted scale's sampling error (about 2% for 4000 tail snippets, which
    grows linearly in log-exceedance with the distance from the tail's start)."""
    for seed, b, shift in ((0, 1.0, 0.0), (1, 1.0, 0.0), (2, 2.0, 5.0)):
        normals = np.random.default_rng(seed).exponential(b, 400_000) + shift
        cal = Calibration(quantile_table(normals), len(normals))
        u, _ = cal.tail
        assert normals.max() < shift + 16 * b
        for z in (2.0, 6.0, 10.0, 16.0):
            x = shift + z * b
            allowed = 0.05 + 3 * 0.02 * max(x - u, 0) / b
            assert abs(np.log(cal.exceedance(x)) + z) <= allowed, (seed, z, float(cal.exceedance(x)))
