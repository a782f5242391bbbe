"""calibrate.py and live/calibration.py: thresholds by false alarms per hour. The alarms a threshold gives are
checked by stream.py's own loop (live.scoring.CausalScorer snippet by snippet into live.alarms.Alarm), not by the
calibration's counting."""
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import calibrate
from live.alarms import Alarm
from live.calibration import (alarm_count, calibration_steps, events_above, threshold_for_rate,
                              threshold_from_steps, total_alarms)
from live.scoring import CausalScorer
from model import BNWVAD
from utils import InputError, save_checkpoint

RATE = 25.0
WINDOW = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain_alarm(scores, threshold, min_snippets):
    alarm = Alarm(threshold, min_snippets)
    for i, s in enumerate(scores):
        alarm.update(SimpleNamespace(index=i, start_s=float(i), end_s=i + 1.0, wall=0.0), float(s), None)
    return alarm.count


def test_counting_agrees_with_alarm_on_generated_scores():
    rng = np.random.default_rng(0)
    # hysteresis makes the count non-monotone: a higher threshold splits this event in two (min_snippets 2)
    split = np.array([0, 5, 5, 3, 3, 5, 5, 0, 0], float)
    assert plain_alarm(split, 2, 2) == 1 and plain_alarm(split, 4, 2) == 2
    cases = [(split, 4.0, 2)] + [(rng.normal(size=rng.integers(1, 120)).round(1), None, int(rng.integers(1, 5)))
                                 for _ in range(300)]
    for scores, threshold, m in cases:
        threshold = float(rng.choice(scores)) if threshold is None else threshold
        expected = plain_alarm(scores, threshold, m)
        assert alarm_count(scores, threshold, m) == expected
        assert events_above(np.flatnonzero(scores > threshold), m) == expected


def test_steps_choose_the_lowest_threshold_no_higher_one_exceeds():
    rng = np.random.default_rng(1)
    for _ in range(30):
        recordings = [rng.normal(size=rng.integers(5, 50)).round(1) for _ in range(3)]
        m = int(rng.integers(1, 4))
        steps = calibration_steps(recordings, m, 10 ** 6)
        scores = np.concatenate(recordings)
        values = np.unique(scores)
        probes = np.unique(np.r_[values - 0.05, values, values + 0.05])   # every behaviour, and the scores
        counts = np.array([total_alarms(recordings, u, m) for u in probes])
        worst_from = np.maximum.accumulate(counts[::-1])[::-1]            # the most alarms at u or above
        for budget in range(6):
            t = threshold_from_steps(steps, budget)
            assert worst_from[np.searchsorted(probes, t)] <= budget       # no threshold from t up exceeds it
            lower = [i for i, u in enumerate(probes) if u < t and ((scores > u) != (scores > t)).any()]
            assert all(worst_from[i] > budget for i in lower)             # below it, a higher one does


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Three normal recordings' features (1 crop, D 32: generated) with extract.py-style names, and a small
    BN-WVAD checkpoint over them."""
    folder = tmp_path_factory.mktemp("calibrate")
    rng = np.random.default_rng(2)
    feats = folder / "features"
    feats.mkdir()
    recordings = []
    for k, T in enumerate((60, 80, 70)):
        x = rng.normal(0.5, 0.3, (1, T, 32)).astype(np.float32)
        np.save(feats / f"cam_day{k}__0.npy", x[0])
        recordings.append(x)
    torch.manual_seed(0)
    model = BNWVAD(32).eval()
    ckpt = folder / "ckpt.pkl"
    save_checkpoint(ckpt, model, 5, {"AP": 50.0})
    return dict(folder=folder, features=feats, recordings=recordings, model=model, ckpt=ckpt,
                hours=sum(x.shape[1] for x in recordings) * 16 / RATE / 3600)


@pytest.mark.parametrize("min_snippets", [1, 2])
def test_target_rate_checked_with_the_stream_alarm_logic(footage, tmp_path, capsys, min_snippets):
    target = 100.0                                    # alarms per hour: a budget of 3 over these 0.037 hours
    out = tmp_path / "cal"
    result = calibrate.main(["--model_path", str(footage["ckpt"]), "--features", str(footage["features"]),
                             "--fps", str(RATE), "--alarms_per_hour", str(target), "--window", str(WINDOW),
                             "--min_snippets", str(min_snippets), "--output_dir", str(out)])
    hours, model, recordings = footage["hours"], footage["model"], footage["recordings"]
    budget = int(target * hours)
    assert budget >= 3 and result["hours"] == pytest.approx(hours)

    streamed = [stream_scores(model, x) for x in recordings]        # stream.py's loop: CausalScorer per snippet

    def stream(threshold):                                          # and its Alarm, fresh per recording
        return sum(plain_alarm(s, threshold, min_snippets) for s in streamed)

    # at the threshold: at most the target; one snippet score lower and the stream raises more than that
    scores = np.concatenate(streamed)
    for rate in (target, 0.0):
        threshold = threshold_for_rate(out / "calibration.json", rate)
        allowed = int(rate * hours)
        assert stream(threshold) <= allowed
        below = scores[scores <= threshold].max()                       # the next snippet score under it
        assert stream(below - 1e-6) > allowed
    assert threshold_for_rate(out / "calibration.json", target) == result["threshold"]
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["settings"]["window"] == WINDOW and calibration["settings"]["min_snippets"] == min_snippets
    assert [r["snippets"] for r in calibration["recordings"]] == [60, 80, 70]
    rows = list(csv.reader(open(out / "alarms_per_hour.csv")))
    assert rows[0] == ["threshold", "alarms_per_hour"] and len(rows) > 50
    assert (out / "alarms_per_hour.png").stat().st_size > 1000
    said = capsys.readouterr()
    assert "0.04 hours of footage" in said.out and "under 24" in said.err        # little footage is warned about


def stream_scores(model, features):
    scorer, scores = CausalScorer(model, "cpu", WINDOW), []
    for t in range(features.shape[1]):
        scores += [s for _, s in scorer.push(t, features[:, t])]
    return np.array(scores)


def test_calibration_file_errors_are_one_line(footage, tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text("{}")
    for path, rate, says in [(tmp_path / "none.json", 1.0, "does not exist"),
                             (bad, 1.0, "is not a calibration file of calibrate.py")]:
        with pytest.raises(InputError, match=says) as e:
            threshold_for_rate(path, rate)
        assert "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:                 # neither recordings nor --features
        calibrate.main(["--model_path", str(footage["ckpt"]), "--alarms_per_hour", "1"])
    assert e.value.code == 2


def test_on_a_video_target_zero_leaves_stream_without_alarms(tmp_path, monkeypatch, capsys):
    """calibrate.py on a normal recording (its I3D path, a stand-in I3D) at 0 per hour: stream.py's run on that
    recording raises no alarm at the threshold, and one as soon as the threshold is under its highest score."""
    import video.weights
    from helpers import GridProbe, write_webm
    from live.run import run_stream
    from live.settings import StreamSettings
    monkeypatch.setattr(video.weights, "load_i3d", lambda path, device: GridProbe().to(device))
    weights = tmp_path / "standin.pt"
    weights.write_bytes(b"stand-in")                 # named in the calibration; the stand-in never reads it
    clip = tmp_path / "normal.webm"
    write_webm(clip, 16 * 12)
    torch.manual_seed(0)
    model = BNWVAD(1024).eval()
    ckpt = tmp_path / "ckpt.pkl"
    save_checkpoint(ckpt, model, 5, {"AP": 50.0})
    out = tmp_path / "cal"
    result = calibrate.main(["--model_path", str(ckpt), str(clip), "--alarms_per_hour", "0", "--window", str(WINDOW),
                             "--min_snippets", "1", "--i3d_weights", str(weights), "--device", "cpu",
                             "--output_dir", str(out)])
    settings = dict(crops=1, window=WINDOW, min_snippets=1, reconnect=(0, None), status_every=60.0)
    peak = json.loads((out / "calibration.json").read_text())["recordings"][0]["peak_score"]
    for threshold, alarms in ((result["threshold"], 0), (peak - 1e-4 * max(1.0, abs(peak)), 1)):
        folder = tmp_path / f"stream{alarms}"
        run_stream(str(clip), model, GridProbe(), folder, threshold, StreamSettings(**settings), quiet=True)
        assert len((folder / "events.jsonl").read_text().splitlines()) == alarms
    assert result["alarms"] == 0
