"""Alarm thresholds on the raw score scale, and the checkpoint's calibration of them (infer.py, stream.py).

A checkpoint of a finished run holds a quantile table of its training normals' scores (main.py's
add_calibration; test.calibrate maps a raw score through it). A threshold is --threshold as given, or
a quantile of normal videos' scores: the test set's when it has normal videos, else the training
normals' from that table.
"""
import numpy as np

from options import NORMAL_QUANTILE
from test import normal_threshold, table_quantile
from utils import InputError


def checkpoint_calibration(record):
    """The checkpoint record's (Q,) quantile table of training-normal scores as float64, or None
    (with a printed note) for a bare state dict or a run that did not finish."""
    if record is not None and "calibration" in record:
        return record["calibration"].double().numpy()
    print("note: this checkpoint holds no calibration of normal scores (a bare state dict, or a run that did "
          "not finish); the calibrated column is left empty")
    return None


def choose_threshold(threshold, normal_quantile, table, normal_scores=None):
    """(raw threshold or None, how it was chosen or why there is none).

    `threshold` (--threshold) if given; else the `normal_quantile` quantile of the test set's normal
    videos' frame scores (`normal_scores`, (F,), when there are any); else the same quantile of the
    training normals (`table`, the checkpoint's calibration); else None.
    """
    q = normal_quantile
    if threshold is not None:
        return threshold, "--threshold"
    if normal_scores is not None and len(normal_scores):
        return normal_threshold(normal_scores, np.ones(len(normal_scores), bool), q), \
            f"quantile {q} of the test set's normal videos' scores"
    if table is not None:
        return table_quantile(table, q), f"quantile {q} of the training normals' scores (the checkpoint's calibration)"
    where = "the test set has no normal videos, and " if normal_scores is not None else ""
    return None, (f"{where}this checkpoint holds no calibration (a bare state dict, or a run that did not finish): "
                  f"segments need --threshold")


def resolve_threshold(table, threshold=None, calibrated_threshold=None):
    """(raw threshold, how it was chosen) for alarms: `threshold` as given; `calibrated_threshold` q: the
    raw score the checkpoint's calibration maps to q; neither: choose_threshold's default, the 0.99
    quantile of the training normals' scores. InputError without a threshold where the checkpoint has
    no calibration."""
    if calibrated_threshold is not None and table is None:
        raise InputError("--calibrated_threshold needs a checkpoint that holds a calibration (this one does not: "
                         "a bare state dict, or a run that did not finish); give --threshold on the raw scale")
    q = NORMAL_QUANTILE if calibrated_threshold is None else calibrated_threshold
    value, source = choose_threshold(threshold, q, table)
    if value is None:
        raise InputError("alerts need a threshold: this checkpoint holds no calibration (a bare state dict, or a "
                         "run that did not finish); give --threshold on the raw score scale")
    return float(value), source
