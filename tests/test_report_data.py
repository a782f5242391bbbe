"""The review page's data (review/data.py through report.py): what it reads from an output folder,
a stream's folder and training logs into the page, what it leaves out (this machine's paths, markup in
a name), its one-line errors, and the command line. The page in a browser: test_report_page.py.
"""
import base64
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_script
from helpers import (REPORT_FPS as FPS, REPORT_NASTY as NASTY, REPORT_THRESHOLD as THRESHOLD, SNIPPET, demo_videos,
                     page_data, write_log, write_output, write_stream)
from review.page import write_report
from review.data import training_run
from test import find_segments
from utils import InputError


def full_metrics(tmp_path):
    """A metrics.json as infer.py writes it with a ground truth, holding absolute paths of this machine."""
    return {"checkpoint": str(tmp_path / "ckpts" / "xd_best_2022.pkl"), "step": 1200, "model": "bnwvad",
            "settings": {"root_dir": str(tmp_path / "data"), "normal_quantile": 0.99, "ratios": [16, 32]},
            "threshold": {"value": THRESHOLD, "source": "quantile 0.99 of the training normals' scores",
                          "origin": "calibration", "false_alarm_rate": 1.25, "false_alarm_rate_normal_videos": 0.5,
                          "false_alarms_per_hour": 3.5},
            "AUC": 91.5, "AP": 70.25, "AP_sklearn": 71.0, "AUC_sub": 80.0, "AP_sub": 65.5,
            "events": {"events": 4, "detected": 3, "event_recall": 75.0, "event_IoU": 41.5, "alarms_normal": 2,
                       "false_alarms_per_hour": 3.5, "threshold_origin": "calibration"},
            "calibration": {"snippets": 5000, "tail_quantile": 0.99, "tail_from": 1.5, "tail_scale": 0.25},
            "per_class": {"B1": {"AUC": 90.0, "AP": 60.0, "videos": 3}, "G": {"AUC": float("nan"), "AP": 1.0,
                                                                                "videos": 1}},
            "videos": 3, "note": "anything plain", "nested": {"not": "shown"}}


def floats(b64):
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


# what the page holds

def test_scoring_folder_data(tmp_path):
    videos = demo_videos()
    out = write_output(tmp_path / "out", videos, metrics=full_metrics(tmp_path), files=False)
    page = write_report(str(out))
    assert page == str(out / "report.html")
    data = page_data(page)
    assert data["kind"] == "scores" and data["threshold"] == THRESHOLD and data["has_gt"]
    assert [v["name"] for v in data["videos"]] == [v["name"] for v in videos]     # videos.csv's order
    score = floats(data["arrays"]["score"])
    start, end = floats(data["arrays"]["start"]), floats(data["arrays"]["end"])
    for v, d in zip(videos, data["videos"]):
        x = np.array(v["scores"])
        assert d["unit"] == "s" and d["count"] == len(x) and d["label"] == v["label"]
        np.testing.assert_allclose(score[d["offset"]:d["offset"] + d["count"]], x, rtol=1e-6)
        np.testing.assert_allclose(start[d["offset"]:d["offset"] + d["count"]], np.arange(len(x)) * SNIPPET / FPS,
                                   atol=1e-3)
        assert d["peak"] == pytest.approx(x.max(), rel=1e-6)
        assert d["above"] == pytest.approx((x > THRESHOLD).sum() * SNIPPET / FPS, abs=1e-3)
        assert d["length"] == pytest.approx(len(x) * SNIPPET / FPS, abs=1e-3)
        assert d["source"] == f"videos/{v['source']}"
        assert d["gt"] == [[a / FPS, b / FPS] for a, b in v["gt"] or []]       # [] : known to hold none
        expected = find_segments(x, THRESHOLD, 5)
        np.testing.assert_allclose(np.reshape([(s["start"], s["end"]) for s in d["segments"]], (-1, 2)),
                                   np.reshape([(e["start"] * SNIPPET / FPS, e["end"] * SNIPPET / FPS)
                                               for e in expected], (-1, 2)), rtol=1e-6, atol=1e-3)
        assert [s["peak_score"] for s in d["segments"]] == pytest.approx([e["peak"] for e in expected], rel=1e-5)
    s = data["summary"]
    assert s["checkpoint"] == "\u2026/xd_best_2022.pkl" and s["step"] == 1200 and s["model"] == "bnwvad"
    assert s["metrics"] == {"AUC": 91.5, "AP": 70.25, "AUC_sub": 80.0, "AP_sub": 65.5, "AP_sklearn": 71.0}
    assert s["events"] == {"events": 4, "detected": 3, "event_recall": 75.0, "event_IoU": 41.5, "alarms_normal": 2,
                           "false_alarms_per_hour": 3.5}
    assert s["threshold"]["origin"] == "calibration" and s["threshold"]["false_alarms_per_hour"] == 3.5
    hourly = floats(data["arrays"]["normal_per_hour"])
    np.testing.assert_allclose(hourly, 5625 * np.exp(-score), rtol=1e-3)     # the scores.csv column, in order
    assert s["per_class"] == [["B1", 90.0, 60.0, 3], ["G", None, 1.0, 1]]
    assert s["threshold"]["source"].startswith("quantile 0.99") and s["threshold"]["false_alarm_rate"] == 1.25
    settings = dict(s["settings"])
    assert settings == {"root_dir": "\u2026/data", "normal_quantile": 0.99, "ratios": [16, 32],
                        "note": "anything plain"}
    assert s["files"] == ["metrics.json", "scores.csv", "videos.csv", "segments.csv"]


def test_page_holds_no_path_of_this_machine(tmp_path):
    out = write_output(tmp_path / "out", demo_videos(), metrics=full_metrics(tmp_path), files=False)
    text = Path(write_report(str(out))).read_text()
    for path in {str(tmp_path), str(ROOT), os.getcwd(), os.path.expanduser("~")}:
        assert path not in text


def test_a_name_cannot_break_the_page(tmp_path):
    out = write_output(tmp_path / "out", demo_videos(), files=False)
    text = Path(write_report(str(out))).read_text()
    assert text.count("<script") == 2 and text.count("</script>") == 2     # the template's own two blocks
    assert "<img" not in text and "<b>" not in text
    assert text.isascii()
    assert page_data(out / "report.html")["videos"][2]["name"] == NASTY       # yet the name comes back intact


def test_frames_axis_when_times_are_unknown(tmp_path):
    videos = demo_videos()[:1]
    out = write_output(tmp_path / "out", videos, timed=False, files=False)
    v = page_data(write_report(str(out)))["videos"][0]
    assert v["unit"] == "frame" and v["gt"] == [[32.0, 80.0]] and v["length"] == 160
    assert v["above"] == 5 * SNIPPET                                         # five snippets above 0.5
    assert [(s["start"], s["end"]) for s in v["segments"]] == [(32, 80), (112, 144)]


def test_videos_csv_is_optional(tmp_path):
    out = write_output(tmp_path / "out", demo_videos(), files=False)
    (out / "videos.csv").unlink()
    (out / "metrics.json").unlink()
    data = page_data(write_report(str(out)))
    assert [v["name"] for v in data["videos"]] == [v["name"] for v in demo_videos()]   # scores.csv's order
    assert all(v["label"] == "" and v["source"] is None and v["gt"] is None for v in data["videos"])
    assert data["threshold"] is None and all(v["above"] is None for v in data["videos"])
    assert not data["has_gt"]


def test_stream_folder(tmp_path):
    folder, events = write_stream(tmp_path / "stream")
    data = page_data(write_report(str(folder)))
    (video,) = data["videos"]
    assert video["name"] == "cam1" and video["unit"] == "s" and video["length"] == pytest.approx(8 * 0.64, abs=1e-3)
    assert data["threshold"] == THRESHOLD and data["summary"]["threshold"]["source"] == "--threshold"
    assert data["summary"]["stream"] == ["2026-11-29T10:00:00", "2026-11-29T10:00:07"]
    assert [(s["start"], s["end"], s["clip"]) for s in video["segments"]] == [
        (e["start_s"], e["end_s"], e["clip"]) for e in events]
    assert video["segments"][0]["wall_start"] == "2026-11-29T10:00:02"
    assert video["segments"][1]["peak_normal_per_hour"] == 0.97


def test_training_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "xd_1.jsonl", [100, 200, 300, 400], best_at=300)
    write_log(logs / "xd_2.jsonl", [100, 200], loss_name="triplet_loss")
    (logs / "events.jsonl").write_text(json.dumps({"start_s": 1.0}) + "\n")       # not a log: left out
    data = page_data(write_report(str(logs)))
    assert data["kind"] == "training" and [r["file"] for r in data["runs"]] == ["xd_1.jsonl", "xd_2.jsonl"]
    first, second = data["runs"]
    assert first["steps"] == [100, 200, 300, 400] and first["best"]["step"] == 300
    assert first["best"]["AP"] == pytest.approx(62.0) and first["best"]["AUC"] == 82.0
    assert list(first["metrics"]) == ["AUC", "AP", "AUC_sub", "AP_sub"]
    assert list(first["others"]) == ["lr", "normal_loss", "mpp_loss", "total_loss", "grad_norm"]
    assert "triplet_loss" in second["others"] and "mpp_loss" not in second["others"]
    assert ["version", "train"] in first["text"]

    page = write_report(str(logs / "xd_2.jsonl"))                           # one log: a page beside it
    assert page == str(logs / "xd_2.html")
    assert [r["file"] for r in page_data(page)["runs"]] == ["xd_2.jsonl"]


def test_training_log_best_is_the_step_main_kept(tmp_path):
    """The page's kept step is the one main.py's CheckpointSaver keeps: the highest value of the key each
    record names in selected_by (AUC on a UCF run, val_AP with a selection set), strictly, never step 0;
    logs without the key fall back to AP."""
    records = [dict(step=0, AUC=90.0, AP=80.0), dict(step=10, AUC=70.0, AP=75.0), dict(step=20, AUC=85.0, AP=60.0),
               dict(step=30, AUC=85.0, AP=70.0), dict(step=40, AUC=60.0, AP=76.0)]
    log = tmp_path / "ucf_1.jsonl"
    log.write_text("".join(json.dumps(dict(r, selected_by="AUC")) + "\n" for r in records))
    best = training_run(str(log))["best"]
    assert best["step"] == 20 and best["selected_by"] == "AUC" and best["AP"] == 60.0
    log.write_text("".join(json.dumps(r) + "\n" for r in records))               # an older log: by AP
    assert training_run(str(log))["best"]["step"] == 40



@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty folder", "holds neither scores.csv"),
    ("score not a number", "scores.csv line 3: score 'abc' is not a number"),
    ("no score column", "scores.csv has no column score"),
    ("short row", "scores.csv line 2: 3 cells"),
    ("bad gt", "videos.csv line 2: gt '32-x' is not"),
    ("bad segment", "segments.csv line 2: peak_score 'high' is not a number"),
    ("bad metrics", "metrics.json is not valid JSON"),
    ("bad event", "events.jsonl line 2 is not valid JSON"),
    ("bad log line", "xd_1.jsonl line 2 is not valid JSON"),
    ("not a log", "scores.csv is not a training log (.jsonl)"),
])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, case, message):
    out = write_output(tmp_path / "out", demo_videos()[:2], files=False)
    def edit(name, old, new, count=1):
        path = out / name
        path.write_text(path.read_text().replace(old, new, count))
    target = str(out)
    if case == "missing":
        target = str(tmp_path / "nowhere")
    elif case == "empty folder":
        target = str(tmp_path / "empty")
        os.mkdir(target)
    elif case == "score not a number":
        lines = (out / "scores.csv").read_text().splitlines()
        lines[2] = lines[2].replace(",0.2,", ",abc,")
        (out / "scores.csv").write_text("\n".join(lines) + "\n")
    elif case == "no score column":
        edit("scores.csv", "score,", "points,")
    elif case == "short row":
        lines = (out / "scores.csv").read_text().splitlines()
        (out / "scores.csv").write_text("\n".join([lines[0], "vid,0,1"] + lines[2:]) + "\n")
    elif case == "bad gt":
        edit("videos.csv", "32-80", "32-x")
    elif case == "bad segment":
        lines = (out / "segments.csv").read_text().splitlines()
        lines[1] = re.sub(r",0\.9,", ",high,", lines[1])
        (out / "segments.csv").write_text("\n".join(lines) + "\n")
    elif case == "bad metrics":
        (out / "metrics.json").write_text("{threshold")
    elif case == "bad event":
        (out / "events.jsonl").write_text('{"start_s": 1, "end_s": 2, "video": "vid2_walk"}\n{oops\n')
    elif case == "bad log line":
        target = str(tmp_path / "logs")
        os.mkdir(target)
        write_log(Path(target) / "xd_1.jsonl", [100, 200])
        with open(Path(target) / "xd_1.jsonl", "r+") as f:
            lines = f.readlines()
            lines[1] = lines[1][:20] + "\n"
            f.seek(0)
            f.truncate()
            f.writelines(lines)
    elif case == "not a log":
        target = str(out / "scores.csv")
    if Path(target).is_dir():
        (Path(target) / "report.html").write_text("the page of an earlier run")
    with pytest.raises(InputError, match=re.escape(message)):
        write_report(target)
    if Path(target).is_dir():
        assert (Path(target) / "report.html").read_text() == "the page of an earlier run"
        assert not [p for p in Path(target).iterdir() if p.name.startswith(".tmp-")]


def test_cli(tmp_path):
    out = write_output(tmp_path / "out", demo_videos()[:2], files=False)
    ok = run_script("report.py", [str(out)])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(out / "report.html") and (out / "report.html").is_file()
    (out / "segments.csv").write_text("video,rank\nx,1\n")
    bad = run_script("report.py", [str(out)])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {out / 'segments.csv'} has no column start_frame, end_frame, "
                                                f"peak_score (header: video,rank)"]

