"""The plain reference paths, computed the way the authors' release does, for tests and the benchmarks (bench/).

The fast paths (model.local_attention, test.evaluate, dataset.TrainItems with its cache) must give
the same numbers as these; `python -m bench` times both in one run.
  release_model        a copy of a model whose attention builds softmax(q k^T) explicitly and the
                       dense T x T local matrix, repeated for every row and head
  resample_loop        the release's per-segment Python loop over one feature file
  load_items           per-file loading of training items (read and resampled on every access)
  score_videos         per-video scoring, re-reading every test file, one forward pass per video
The metric reference is test.frame_metrics (scikit-learn on every frame).
"""
import copy

import numpy as np
import torch

from core.features import load_features
from model import Attention, dense_local_matrix

RELEASE_MEMORY = 4 * 2 ** 30   # bytes of T x T copies the reference allows in one forward pass


class ReleaseAttention(Attention):
    """Attention as the release computes it: explicit softmax, dense P copied per row and head."""

    def forward(self, x, mask=None):
        B, T, _ = x.shape
        h = self.heads
        q, k, v, g = (t.reshape(B, T, h, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(4, dim=-1))  # (B, h, T, d)
        dots = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5   # (B, h, T, T)
        P = dense_local_matrix(T, x.device)[None, None].repeat(B, h, 1, 1)  # (B, h, T, T)
        out = torch.cat([torch.matmul(dots.softmax(-1), v), torch.matmul(P, g)], dim=-1)  # (B, h, T, 2d)
        return self.to_out(out.transpose(1, 2).reshape(B, T, -1))


def release_model(model):
    """A deep copy of model (same weights) running ReleaseAttention."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if type(m) is Attention:
            m.__class__ = ReleaseAttention
    return ref


def resample_loop(features, num_segments):
    """dataset.resample_segments written as the release's loop (int64 boundaries instead of its uint16)."""
    out = np.zeros((num_segments, features.shape[1]), dtype=np.float32)
    r = np.linspace(0, len(features), num_segments + 1).astype(np.int64)
    for i in range(num_segments):
        if r[i] != r[i + 1]:
            out[i] = np.mean(features[r[i]:r[i + 1]], 0)
        else:
            out[i] = features[r[i]]
    return out


def load_items(paths, index, num_segments, len_feature):
    """Training items at `index`, each read from its file and resampled now: (n, S, D) float32."""
    return torch.from_numpy(np.stack([resample_loop(load_features(paths[i], len_feature), num_segments)
                                      for i in index]))


@torch.no_grad()
def score_videos(model, videos, len_feature, device):
    """Per video: read its crop files, score all crops in one pass (crop by crop when the T x T
    copies would exceed RELEASE_MEMORY, where the release itself runs out of memory), average."""
    model.eval()
    scores = []
    for v in videos:
        x = torch.from_numpy(np.stack([load_features(p, len_feature) for p in v.paths])).to(device)  # (N, T, D)
        N, T, _ = x.shape
        per_pass = max(1, RELEASE_MEMORY // (3 * 4 * T * T * 4))   # dots, softmax, P: (rows, 4, T, T) float32
        s = torch.cat([model(x[i:i + per_pass]) for i in range(0, N, per_pass)])  # (N, T)
        scores.append(s.mean(0).float().cpu().numpy())
    return scores
