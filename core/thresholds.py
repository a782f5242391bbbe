"""Alarm thresholds on the raw score scale, and the checkpoint's calibration (infer.py, stream.py, live/).

Calibration. The raw score (d_1 + d_2) * s is unbounded and its scale differs from run to run. At the
end of training main.py scores the training set's normal videos with the best model (full length,
crops averaged, as test videos are scored) and stores in the checkpoint CALIBRATION_LEVELS evenly
spaced quantiles of those snippet scores ("calibration") and how many snippets they were
("calibration_snippets"). Calibration.exceedance(x) is the expected fraction of normal snippets that
score at least x:
  - up to the (1 - TAIL) quantile u: the empirical one, 1 - the training normals' CDF at x
    (quantile_cdf, linear between the stored quantiles);
  - above u: an exponential tail, TAIL * exp(-(x - u) / beta), beta fitted by least squares to the
    stored quantiles of the top TAIL (a generalized Pareto tail of shape 0, the peaks-over-threshold
    model). It is continuous at u, keeps falling beyond the highest training normal instead of
    stopping at 0 (the old [0, 1] calibrated score read 1.0 for every score above it), and below
    1 / calibration_snippets it is an extrapolation of the fit, not an observed frequency.
Calibration.per_hour(x, snippet_seconds) = exceedance(x) * 3600 / snippet_seconds: the expected
number of snippets per hour of normal footage (footage like the training normals) that score at
least x, so 0.5 reads "about one such snippet every two hours of normal video".

Thresholds. --threshold as given (raw scale), else a quantile of normal videos' scores: by default
the training normals' (the checkpoint's calibration), so that the false-alarm rate measured on a
test set is a measurement; with --threshold_from test, the test set's own normal videos', whose
false-alarm rate on those videos is then 1 - the quantile by construction (labelled as such).
"""
from dataclasses import dataclass

import numpy as np

from options import NORMAL_QUANTILE
from utils import InputError

TAIL = 0.01         # the exponential tail is fitted to the top 1% of the training normals' snippet scores
TEST_DERIVED = "test"


CALIBRATION_LEVELS = 1001      # quantiles 0, 0.001, ..., 1 of the training normals' snippet scores


def quantile_table(scores):
    """Snippet scores (any shape) -> (CALIBRATION_LEVELS,) float64 quantiles, non-decreasing."""
    return np.quantile(np.asarray(scores, dtype=np.float64).ravel(), np.linspace(0.0, 1.0, CALIBRATION_LEVELS))


def quantile_cdf(raw, table):
    """Raw scores -> [0, 1]: the empirical CDF given by the quantile table (0 below its min, 1 above its max).
    Saturates above the highest training normal: thresholds.Calibration.exceedance is what users read."""
    levels = np.linspace(0.0, 1.0, len(table))
    return np.interp(np.asarray(raw, dtype=np.float64), table, levels)


def table_quantile(table, q):
    """The raw score at quantile q of the calibration table (the inverse of `quantile_cdf`)."""
    return float(np.interp(q, np.linspace(0.0, 1.0, len(table)), table))


@dataclass(frozen=True)
class Calibration:
    """The training normals' snippet scores as a checkpoint stores them.

    table: (Q,) float64 quantiles 0, 1/(Q-1), ..., 1, non-decreasing; snippets: how many snippet
    scores they summarize (None for a checkpoint written before this was recorded).
    """
    table: np.ndarray
    snippets: int | None = None

    @property
    def tail(self):
        """(u, beta): where the exponential tail starts (the 1 - TAIL quantile, raw score) and its scale
        (raw score units), fitted by least squares through (u, TAIL) to the stored quantiles above u:
        q(p) = u + beta ln(TAIL / (1 - p)) for 1 - TAIL < p < 1."""
        levels = np.linspace(0.0, 1.0, len(self.table))
        u = table_quantile(self.table, 1.0 - TAIL)
        top = (levels > 1.0 - TAIL + 1e-12) & (levels < 1.0)
        x = np.log(TAIL / (1.0 - levels[top]))
        beta = float(np.sum(x * (self.table[top] - u)) / np.sum(x * x)) if top.any() else 0.0
        # a flat top (every high score equal) has no scale: a tiny one makes scores above it read ~0
        return u, max(beta, 1e-9 * max(1.0, abs(u)))

    def exceedance(self, raw):
        """Raw scores (any shape) -> float64 of that shape: the expected fraction of normal snippets that
        score at least this high (1 at or below the lowest training normal; never 0)."""
        raw = np.asarray(raw, dtype=np.float64)
        u, beta = self.tail
        body = 1.0 - quantile_cdf(raw, self.table)
        tail = TAIL * np.exp(-(np.maximum(raw, u) - u) / beta)           # (evaluated only where raw > u)
        return np.where(raw > u, tail, body)

    def per_hour(self, raw, snippet_seconds):
        """Expected snippets per hour of normal footage that score at least `raw`, for snippets of
        `snippet_seconds` seconds each (scalar or broadcastable)."""
        return self.exceedance(raw) * 3600.0 / np.asarray(snippet_seconds, dtype=np.float64)

    def record(self):
        """What metrics.json says about the calibration: snippets, tail start and scale."""
        u, beta = self.tail
        return dict(snippets=self.snippets, tail_quantile=1.0 - TAIL, tail_from=u, tail_scale=beta)


def checkpoint_calibration(record):
    """The checkpoint record's Calibration, or None (with a printed note) for a bare state dict or a run
    that did not finish."""
    if record is not None and "calibration" in record:
        n = record.get("calibration_snippets")
        return Calibration(record["calibration"].double().numpy(), int(n) if n is not None else None)
    print("note: this checkpoint holds no calibration of normal scores (a bare state dict, or a run that did "
          "not finish); the exceedance and normal_per_hour columns are left empty")
    return None


def choose_threshold(threshold, normal_quantile, calibration, normal_scores=None, threshold_from="calibration"):
    """(raw threshold or None, how it was chosen or why there is none, its origin).

    origin is "given" (`threshold`, --threshold), "calibration" (the `normal_quantile` quantile of the
    training normals: `calibration`, the checkpoint's), "test" (threshold_from "test": the same quantile
    of the test set's normal videos' frame scores, `normal_scores` (F,)), or None.
    """
    q = normal_quantile
    if threshold is not None:
        return threshold, "--threshold", "given"
    if threshold_from == TEST_DERIVED:
        if normal_scores is not None and len(normal_scores):
            return float(np.quantile(normal_scores, q)), (
                f"quantile {q} of the test set's own normal videos' scores (--threshold_from test: a false-alarm "
                f"rate of at most {100 * (1 - q):.3g}% on those videos by construction)"), TEST_DERIVED
        where = "the test set has no normal videos" if normal_scores is not None else "there is no test set"
        return None, f"--threshold_from test: {where}; give --threshold", None
    if calibration is not None:
        return table_quantile(calibration.table, q), \
            f"quantile {q} of the training normals' scores (the checkpoint's calibration)", "calibration"
    test = " or --threshold_from test" if normal_scores is not None else ""
    return None, ("this checkpoint holds no calibration (a bare state dict, or a run that did not finish): "
                  f"segments need --threshold{test}"), None


def resolve_threshold(calibration, threshold=None, calibrated_threshold=None):
    """(raw threshold, how it was chosen) for alarms: `threshold` as given; `calibrated_threshold` q: the
    raw score at quantile q of the training normals (the checkpoint's calibration); neither: the 0.99
    quantile of the training normals' scores. InputError without a threshold where the checkpoint has
    no calibration."""
    if calibrated_threshold is not None and calibration is None:
        raise InputError("--calibrated_threshold needs a checkpoint that holds a calibration (this one does not: "
                         "a bare state dict, or a run that did not finish); give --threshold on the raw scale")
    q = NORMAL_QUANTILE if calibrated_threshold is None else calibrated_threshold
    value, source, _ = choose_threshold(threshold, q, calibration)
    if value is None:
        raise InputError("alerts need a threshold: this checkpoint holds no calibration (a bare state dict, or a "
                         "run that did not finish); give --threshold on the raw score scale")
    return float(value), source
