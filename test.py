"""Scoring a test set and the frame-level metrics, in percent. Computes and returns; writes nothing.

Scoring follows the release: every crop is scored as its own row in evaluation mode, the crop
scores are averaged, and each snippet's score holds for its 16 frames. Videos are concatenated in
list order and compared with the frame-level ground truth.
AP is the trapezoidal area under the precision-recall curve, auc(recall, precision), which is what
the published tables report; AUC_sub / AP_sub use only the frames of abnormal test videos.
"""
import numpy as np
import torch
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from dataset import FRAMES_PER_SNIPPET


@torch.no_grad()
def score_video(model, features, device):
    """features: (N, T, D) array -> (T,) snippet scores, the mean over crops of each crop's score."""
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    return model(x).mean(0).float().cpu().numpy()                 # model(x): (N, T), one row per crop


def score_test_set(model, test_set, device):
    """Snippet scores of every test video, list order."""
    model.eval()
    return [score_video(model, f, device) for f in test_set.features]


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


def evaluate(model, test_set, device):
    """-> (metrics in percent, per-video snippet scores)."""
    scores = score_test_set(model, test_set, device)
    return frame_metrics(to_frames(scores), test_set.gt, test_set.abnormal_frames), scores
