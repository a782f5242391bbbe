"""Causal scoring: snippet t scored by the detector over a sliding context of the last W snippets.

The (crops, W, 1024) features of t-W+1..t go through test.score_video, the function offline scoring
uses, and t's score is the window's last: exactly the offline score of those W snippets' features
alone. With delay K, snippet t is scored once K more snippets have arrived (context t-W+1+K..t+K).
"""
from collections import deque

import numpy as np
import torch

from test import EVAL_SNIPPETS, score_batched, score_video


class CausalScorer:
    """Scores snippet t over the features of snippets t-W+1+K .. t+K (W the window, K the delay).

    push() takes each snippet's (crops, D) features as it arrives and returns the snippets it can now
    score with their scores: the window's (crops, w, D) features go through test.score_video (crop
    scores averaged) and t's score is read at its position, so it equals offline scoring of those
    features alone. Only the last W snippets' features are kept (all of them with window None).
    """

    def __init__(self, model, device, window, delay=0, name="the stream"):
        self.model, self.device, self.delay, self.name = model, device, delay, name
        self.features = deque(maxlen=window)   # (crops, D) per snippet, the newest last
        self.pending = deque()                  # snippets received, not yet scored (at most delay + 1)

    def push(self, item, features):
        """features: (crops, D) of the newest snippet -> [(item, score)] of the snippets now scored."""
        self.features.append(np.asarray(features, dtype=np.float32))
        self.pending.append(item)
        return [self._score()] if len(self.pending) > self.delay else []

    def flush(self):
        """At the end: the snippets still waiting for later ones, scored with the context there is."""
        return [self._score() for _ in range(len(self.pending))]

    def _score(self):
        item = self.pending.popleft()
        window = np.stack(self.features, axis=1)                                   # (crops, w, D)
        return item, float(score_video(self.model, window, self.device, self.name)[-1 - len(self.pending)])


def causal_scores(model, features, window, delay=0, device="cpu", max_snippets=EVAL_SNIPPETS):
    """(T,) float32: what streaming scores a video's (crops, T, D) features as: snippet t over the context
    t-W+1+K .. t+K (cut at the video's ends; window None: from the first snippet), as CausalScorer does,
    computed in packed passes (test.score_batched: each context its own masked row, so the same numbers)."""
    device = torch.device(device)
    T = features.shape[1]
    ends = np.minimum(np.arange(T) + delay, T - 1)
    starts = np.zeros(T, int) if window is None else np.maximum(ends - window + 1, 0)
    contexts = [features[:, a:b + 1] for a, b in zip(starts, ends)]
    scores = score_batched(model, contexts, device, max_snippets)
    return np.array([s[t - a] for t, (s, a) in enumerate(zip(scores, starts))], dtype=np.float32)
