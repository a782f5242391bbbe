"""Thresholds by false alarms per hour: a camera's normal recordings scored as stream.py scores them, and the
alarms its alert logic would raise over them at every threshold (calibrate.py is its command).

Scores come from live.scoring.CausalScorer (the same causal window and delay as stream.py) and alarms from
live.alarms.Alarm (the same hysteresis: min_snippets snippets in a row above the threshold open an event), with a
fresh scorer and alarm per recording, as a stream started on it would have. An alarm is an event opened; one still
open at a recording's end counts.

The alarm count is not monotone in the threshold: with hysteresis a higher threshold can split one event into two.
The threshold chosen for a budget of B alarms is therefore the lowest one at which no higher threshold gives more
than B: raising it never brings more alarms on these recordings. Below the top, any threshold between two
neighbouring scores seen gives the same alarms; the one reported is halfway between them, so that rounding in the
features cannot move a snippet across it. Above every score seen, it is the highest score (scores must be *above*
the threshold).

The calibration file (calibration.json) keeps, for every budget up to MAX_RATE alarms per hour of the footage,
the threshold for it ("steps"), so threshold_for_rate gives the threshold of any rate up to there.
"""
import json
import math
from types import SimpleNamespace

import numpy as np

from live.alarms import Alarm
from live.scoring import CausalScorer
from utils import InputError
from video.records import file_sha256

FORMAT = "bn-wvad-alarm-calibration"
MAX_RATE = 60.0         # alarms per hour up to which the calibration file holds thresholds (one a minute)
FEW_HOURS = 24.0        # footage under this is warned about: a day holds its night, its quiet and its busy hours
CURVE_POINTS = 200      # thresholds on the written curve


def recording_scores(model, features, window, delay=0, device="cpu"):
    """(T,) float64: the scores stream.py gives a recording's (crops, T, D) features, snippet by snippet through
    CausalScorer (window W, delay K; the last K snippets scored at the end with the context there is)."""
    scorer = CausalScorer(model, device, window, delay)
    scores = np.empty(features.shape[1])
    for t in range(features.shape[1]):
        for index, score in scorer.push(t, features[:, t]):
            scores[index] = score
    for index, score in scorer.flush():
        scores[index] = score
    return scores


def alarm_count(scores, threshold, min_snippets):
    """The events live.alarms.Alarm itself opens over one recording's (T,) scores at `threshold`.

    Alarm depends only on which snippets are above the threshold, and a run of more than min_snippets snippets
    above (or below) acts as one of min_snippets, so each run is fed cut to that length: the same count in
    O(runs) steps rather than O(T)."""
    above = np.asarray(scores) > threshold
    if not above.any():
        return 0
    starts = np.flatnonzero(np.r_[True, above[1:] != above[:-1]])         # where each run begins
    lengths = np.diff(np.r_[starts, len(above)])
    alarm = Alarm(threshold, min_snippets)
    snippet = SimpleNamespace(index=0, start_s=0.0, end_s=0.0, wall=0.0)
    high, low = threshold + 1.0, threshold - 1.0
    for is_above, n in zip(above[starts], lengths):
        for _ in range(min(int(n), min_snippets)):
            alarm.update(snippet, high if is_above else low, None)
    return alarm.count


def events_above(positions, min_snippets):
    """Alarm's event count in closed form, from the sorted (k,) positions of the snippets above the threshold.

    Runs of snippets above that are separated by fewer than min_snippets snippets below form a cluster: once an
    event is open, such a gap does not close it, and a longer one does; with no event open, a run shorter than
    min_snippets opens none and any snippet below ends it. So a cluster holds one event if one of its runs is
    min_snippets long, else none. (tests/test_calibrate.py checks it against Alarm on generated scores.)"""
    if len(positions) == 0:
        return 0
    breaks = np.flatnonzero(np.diff(positions) > 1)
    first = positions[np.r_[0, breaks + 1]]                        # each run's first and last snippet
    last = positions[np.r_[breaks, len(positions) - 1]]
    cluster = np.r_[0, np.cumsum(first[1:] - last[:-1] - 1 >= min_snippets)]
    return len(np.unique(cluster[last - first + 1 >= min_snippets]))


def total_alarms(recordings, threshold, min_snippets):
    """Alarms over all recordings ([(T,) scores]) at `threshold`, each with its own Alarm."""
    return sum(events_above(np.flatnonzero(s > threshold), min_snippets) for s in recordings)


def calibration_steps(recordings, min_snippets, max_alarms):
    """[(threshold, alarms)] from the top down: for each alarm count the lowest threshold at which no higher one
    gives more (see the module's docstring), while that count is at most max_alarms. The first entry, the highest
    score seen, gives 0."""
    values = np.unique(np.concatenate(recordings))[::-1]      # distinct scores, highest first
    orders = [np.argsort(-s, kind="stable") for s in recordings]
    ranked = [-s[o] for s, o in zip(recordings, orders)]       # each recording's scores, negated, ascending
    # a threshold in [values[k], values[k - 1]) puts exactly the scores >= values[k - 1] above it; the last
    # candidate, under the lowest score, puts every snippet above
    lows = np.r_[values[1:], values[-1] - 1e-3 * (1 + abs(values[-1]))]
    steps, worst = [(float(values[0]), 0)], 0
    for k, low in enumerate(lows, start=1):
        count = sum(events_above(np.sort(o[:np.searchsorted(r, -values[k - 1], side="right")]), min_snippets)
                    for o, r in zip(orders, ranked))
        if count > max_alarms:
            break
        middle = float((low + values[k - 1]) / 2) if k < len(values) else float(low)
        if count > worst:
            steps.append((middle, count))
            worst = count
        else:
            steps[-1] = (middle, worst)          # a lower threshold with no more alarms than before
    return steps


def threshold_from_steps(steps, budget):
    """The lowest threshold of `steps` whose alarms are at most `budget`."""
    return min((t for t, n in steps if n <= budget), default=steps[0][0])


def alarm_curve(recordings, min_snippets, hours, points=CURVE_POINTS):
    """(thresholds, alarms per hour): the curve over `points` thresholds from the median score to the highest."""
    scores = np.concatenate(recordings)
    thresholds = np.unique(np.linspace(np.median(scores), scores.max(), points))
    return thresholds, np.array([total_alarms(recordings, t, min_snippets) / hours for t in thresholds])


def calibrate(recordings, seconds, min_snippets, alarms_per_hour, max_rate=MAX_RATE):
    """The calibration of `recordings` ([(T,) scores] of normal footage, `seconds` long each) for a target of
    `alarms_per_hour`: a dict with hours, the threshold, the alarms it gives, the steps for every rate up to
    max(alarms_per_hour, max_rate) and the curve. Raises ValueError without footage."""
    hours = float(sum(seconds)) / 3600
    if hours <= 0 or not any(len(s) for s in recordings):
        raise ValueError("no footage to calibrate on")
    recordings = [np.asarray(s, dtype=np.float64) for s in recordings if len(s)]
    cover = max(alarms_per_hour, max_rate)
    steps = calibration_steps(recordings, min_snippets, math.floor(cover * hours))
    budget = math.floor(alarms_per_hour * hours + 1e-9)
    threshold = threshold_from_steps(steps, budget)
    thresholds, rates = alarm_curve(recordings, min_snippets, hours)
    alarms = sum(alarm_count(s, threshold, min_snippets) for s in recordings)     # Alarm itself, as stream.py
    if alarms > budget:
        raise RuntimeError(f"the alarm logic gives {alarms} alarms at threshold {threshold}, over the budget {budget}")
    return dict(hours=hours, alarms_per_hour=alarms_per_hour, threshold=threshold, alarms=alarms, budget=budget,
                covers_alarms_per_hour=cover, steps=[[t, n] for t, n in steps],
                curve=dict(threshold=thresholds.tolist(), alarms_per_hour=rates.tolist()))


def footage_warnings(hours, alarms_per_hour):
    """Lines warning that the estimate rests on little footage."""
    lines = []
    if hours < FEW_HOURS:
        lines.append(f"the estimate rests on {hours:.2f} hours of footage, under {FEW_HOURS:g}: nights, quiet and "
                     f"busy hours may not all be in it, and a rate finer than one alarm in {hours:.2f} hours "
                     f"cannot be told apart from 0")
    elif 0 < alarms_per_hour * hours < 3:
        lines.append(f"{alarms_per_hour:g} alarms per hour over {hours:.1f} hours is {alarms_per_hour * hours:.1f} "
                     f"alarms: too few to estimate the rate well; calibrate on more footage")
    return lines


def read_calibration(path):
    """The calibration file calibrate.py wrote, or InputError (one line) naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise InputError(f"calibration {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise InputError(f"calibration {path} is not readable JSON: {e}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "steps" not in record:
        raise InputError(f"calibration {path} is not a calibration file of calibrate.py")
    return record


def threshold_for_rate(calibration_path, alarms_per_hour, checkpoint=None):
    """The raw threshold at which the calibration's recordings give at most `alarms_per_hour` alarms per hour
    (the lowest such, as calibrate.py chooses it). InputError (one line) for a rate the file does not cover, a
    negative one, or (given the `checkpoint` path) a calibration made with another checkpoint. The threshold holds
    for the window, delay and min_snippets recorded in the file's settings."""
    record = read_calibration(calibration_path)
    if checkpoint is not None and record.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise InputError(f"calibration {calibration_path} was made with another checkpoint than {checkpoint} "
                         f"({record.get('checkpoint')}): its thresholds do not hold for this one")
    if not isinstance(alarms_per_hour, (int, float)) or alarms_per_hour < 0:
        raise InputError(f"alarms_per_hour must be a number at least 0, got {alarms_per_hour!r}")
    if alarms_per_hour > record["covers_alarms_per_hour"]:
        raise InputError(f"calibration {calibration_path} covers up to {record['covers_alarms_per_hour']:g} alarms "
                         f"per hour, not {alarms_per_hour:g}: run calibrate.py again with --alarms_per_hour "
                         f"{alarms_per_hour:g}")
    budget = math.floor(alarms_per_hour * record["hours"] + 1e-9)
    return float(threshold_from_steps(record["steps"], budget))
