"""PNG figures: a video's score over time, the test set's ROC and PR curves, AUC/AP over a run.

matplotlib (Agg backend, no display needed) is imported inside each function, so the scripts only
need it when they plot. Every figure is written atomically.
"""
import numpy as np

from core.features import FRAMES_PER_SNIPPET
from utils import write_file


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    plt = _pyplot()
    write_file(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _runs(mask):
    """(start, end) index pairs of the True runs of a boolean array, end exclusive."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2], edges[1::2]))


def plot_video(path, name, scores, threshold=None, times=None, gt=None, segments=(), label=None, video_end=None):
    """One video's snippet scores as a step curve over seconds (times: (T, 2) start and end of each
    snippet) or frames (times None), with the threshold as a dashed line (threshold None: none), the
    detected segments (find_segments' dicts) as bands along the top, the ground truth's anomalous
    frames (gt: T*16 frames) shaded, and the stretch after the last whole snippet (video_end, in the
    axis' unit: its frames are not scored) hatched. The title gives the label and the verdict: peak
    score and its time, and the time above the threshold."""
    plt = _pyplot()
    T = len(scores)
    if times is None:
        starts = np.arange(T) * FRAMES_PER_SNIPPET
        ends = starts + FRAMES_PER_SNIPPET
        unit = "frame"
    else:
        starts, ends = times[:, 0], times[:, 1]
        unit = "s"
    edges = np.r_[starts, ends[-1]]                                 # (T + 1,) snippet boundaries

    def at(frame):      # a frame number on the time axis: within its snippet, linearly
        i = min(frame // FRAMES_PER_SNIPPET, T - 1)
        return starts[i] + (frame - i * FRAMES_PER_SNIPPET) / FRAMES_PER_SNIPPET * (ends[i] - starts[i])
    fig, ax = plt.subplots(figsize=(9, 3))
    top = 1.1 * max(float(np.max(scores)), threshold if threshold is not None else 0.0)
    if gt is not None:
        for i, (s, e) in enumerate(_runs(gt)):
            ax.axvspan(at(s), at(e), color="tab:red", alpha=0.15, lw=0,
                       label="ground-truth anomaly" if i == 0 else None)
    ax.stairs(scores, edges, baseline=None, color="tab:blue", lw=1.5, label="anomaly score")
    if threshold is not None:
        ax.axhline(threshold, color="tab:orange", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    for i, seg in enumerate(segments):
        ax.axvspan(starts[seg["start"]], ends[seg["end"] - 1], ymin=0.93, ymax=1.0, color="tab:orange", lw=0,
                   label="detected segment" if i == 0 else None)
    right = edges[-1]
    if video_end is not None and video_end > right:
        ax.axvspan(right, video_end, color="gray", alpha=0.25, hatch="//", lw=0,
                   label="last partial snippet (not scored)")
        right = video_end
    ax.set_xlim(edges[0], right)
    ax.set_ylim(0, top)
    ax.set_xlabel("time (s)" if unit == "s" else "frame")
    ax.set_ylabel("anomaly score (raw)")
    peak = int(np.argmax(scores))
    verdict = f"peak {scores[peak]:.3g} at {starts[peak]:.1f} {unit}"
    if threshold is not None:
        above = float(np.sum((ends - starts)[np.asarray(scores) > threshold]))
        verdict += f", {above:.1f} {unit} above the threshold" if unit == "s" else \
            f", {int(above)} frames above the threshold"
    ax.set_title(f"{name}{f' ({label})' if label else ''}\n{verdict}", fontsize=9)
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


def plot_run(path, records, title, best_step, metric="AP"):
    """AUC and AP (percent) on the test set at every evaluation of a training run, the kept step
    (best_step, chosen by `metric`) marked."""
    plt = _pyplot()
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("AUC", "AP"):
        ax.plot(steps, [r[key] for r in records], marker=".", lw=1.5, label=key)
    best = next(r for r in records if r["step"] == best_step)
    ax.axvline(best_step, color="gray", ls=":", lw=1, label=f"kept: step {best_step} (by {metric}), test {metric} "
                                                           f"{best[metric]:.2f}")
    ax.set(xlabel="training step", ylabel="percent", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    _save(fig, path)


def plot_comparison(path, curves):
    """AUC and AP (percent) over training steps of several models: curves {model name: [log records of
    each seed's run]}; per model the mean over its runs, +- their standard deviation shaded, at the
    steps every run evaluated."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (name, histories), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        steps = sorted(set.intersection(*[{r["step"] for r in history} for history in histories]))
        for ax, key in zip(axes, ("AUC", "AP")):
            values = np.array([[next(r[key] for r in history if r["step"] == s) for s in steps]
                               for history in histories])                         # (runs, steps)
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, color=color, lw=1.5, marker=".", label=name)
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    for ax, key in zip(axes, ("AUC", "AP")):
        ax.set(xlabel="training step", ylabel="percent", title=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    _save(fig, path)


def plot_alarm_rate(path, curve, threshold, target, hours):
    """A camera's false alarms per hour against the raw threshold (calibrate.py: curve {threshold, alarms_per_hour}),
    the chosen threshold and the target rate dashed; the y axis is linear up to 1 per hour, logarithmic above."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(curve["threshold"], curve["alarms_per_hour"], where="post", lw=1.5)
    ax.axvline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    ax.axhline(target, color="gray", ls=":", lw=1, label=f"target {target:g} per hour")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set(xlabel="threshold (raw score)", ylabel="alarms per hour",
           title=f"false alarms per hour over {hours:.2f} hours of normal footage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    _save(fig, path)
