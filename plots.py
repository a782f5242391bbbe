"""PNG figures: a video's score over time, the test set's ROC and PR curves, AUC/AP over a run.

matplotlib (Agg backend, no display needed) is imported inside each function, so the scripts only
need it when they plot. Every figure is written atomically.
"""
import numpy as np

from dataset import FRAMES_PER_SNIPPET
from utils import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    plt = _pyplot()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _runs(mask):
    """(start, end) index pairs of the True runs of a boolean array, end exclusive."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2], edges[1::2]))


def plot_video(path, name, scores, threshold, fps=None, gt=None):
    """One video's snippet scores as a step curve over frames (or seconds with fps), the threshold
    as a dashed line and, when gt (T*16 frames) is given, its anomalous frames shaded."""
    plt = _pyplot()
    unit = 1.0 / fps if fps else 1.0
    edges = np.arange(len(scores) + 1) * FRAMES_PER_SNIPPET * unit        # (T + 1,) snippet boundaries
    fig, ax = plt.subplots(figsize=(9, 3))
    if gt is not None:
        for i, (s, e) in enumerate(_runs(gt)):
            ax.axvspan(s * unit, e * unit, color="tab:red", alpha=0.15, lw=0,
                       label="ground-truth anomaly" if i == 0 else None)
    ax.stairs(scores, edges, color="tab:blue", lw=1.5, label="anomaly score")
    ax.axhline(threshold, color="tab:orange", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    ax.set_xlim(0, edges[-1])
    ax.set_ylim(0, 1.1 * max(float(np.max(scores)), threshold))
    ax.set_xlabel("time (s)" if fps else "frame")
    ax.set_ylabel("anomaly score (raw)")
    ax.set_title(name, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_curves(path, frame_scores, gt):
    """The frame-level ROC and precision-recall curves of a test set, with AUC and AP."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve
    plt = _pyplot()
    fpr, tpr, _ = roc_curve(gt, frame_scores)
    precision, recall, _ = precision_recall_curve(gt, frame_scores)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    roc.plot(fpr, tpr, lw=1.5, label=f"AUC {100 * auc(fpr, tpr):.2f}")
    roc.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (frames)")
    pr.plot(recall, precision, lw=1.5, label=f"AP {100 * auc(recall, precision):.2f}")
    pr.axhline(gt.mean(), color="gray", ls=":", lw=1, label=f"chance {gt.mean():.2f}")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall (frames)")
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "lower left", fontsize=9)
    _save(fig, path)


def plot_run(path, records, title):
    """AUC and AP (percent) of every evaluation of a training run, the best-AP step marked."""
    plt = _pyplot()
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("AUC", "AP"):
        ax.plot(steps, [r[key] for r in records], marker=".", lw=1.5, label=key)
    best = max(records, key=lambda r: r["AP"])
    ax.axvline(best["step"], color="gray", ls=":", lw=1, label=f"best AP {best['AP']:.2f} (step {best['step']})")
    ax.set(xlabel="training step", ylabel="percent", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    _save(fig, path)
