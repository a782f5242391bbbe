"""Scoring any features (infer.py --features), the outputs a user reads (scores, segments, plots,
calibration, per-class metrics), and resuming an interrupted training run exactly."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.checkpoints import load_model
from conftest import ROOT, data_args, run_script, write_xd_dataset
from dataset import BatchStream
from core.features import find_videos, load_video
from helpers import call
from test import auc_ap, find_segments, per_class_metrics, video_classes
from core.thresholds import quantile_cdf, quantile_table, table_quantile
from utils import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRAIN = dict(lr="[0.001]*12", batch_size=4, num_segments=16, plot_freq=4)   # evaluations at steps 4, 8, 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short uninterrupted training run on a small XD-layout dataset, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("trained")
    ds = write_xd_dataset(tmp / "data")
    out = run("main.py", data_args(ds, tmp, model_path=tmp / "ckpts", log_path=tmp / "logs", **TRAIN))
    assert out.returncode == 0, out.stderr
    return dict(ds=ds, tmp=tmp, ckpt=tmp / "ckpts" / "xd_best_2022.pkl", log=tmp / "logs" / "xd_2022.jsonl")


def run(script, args):
    """run_script with one torch thread: these models are tiny, and idle threads spinning on a busy
    machine only cost time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        return run_script(script, args)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resumed_run_logs_the_same_metrics(trained, tmp_path):
    ds = trained["ds"]
    common = data_args(ds, tmp_path, model_path=tmp_path / "ckpts", log_path=tmp_path / "logs", **TRAIN)
    first = run("main.py", common + ["--stop_after", "6"])     # ends between two evaluations
    assert first.returncode == 0, first.stderr
    last = tmp_path / "ckpts" / "xd_last_2022.pkl"
    record = torch.load(last, map_location="cpu", weights_only=True)
    assert record["step"] == 6 and "calibration" not in record
    assert [json.loads(line)["step"] for line in open(tmp_path / "logs" / "xd_2022.jsonl")] == [4]

    second = run("main.py", common + ["--resume", str(last)])
    assert second.returncode == 0, second.stderr
    assert open(tmp_path / "logs" / "xd_2022.jsonl").read() == open(trained["log"]).read()
    a = torch.load(trained["ckpt"], weights_only=True)
    b = torch.load(tmp_path / "ckpts" / "xd_best_2022.pkl", weights_only=True)
    assert a["step"] == b["step"]
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert torch.equal(a["calibration"], b["calibration"])
    config = json.loads((tmp_path / "ckpts" / "xd_config_2022.json").read_text())
    assert config["args"]["resume"] == str(last) and "git_commit" in config
    assert (tmp_path / "logs" / "xd_2022.png").read_bytes().startswith(PNG_MAGIC)


def test_resume_refuses_a_different_schedule(trained, tmp_path):
    import main
    last = trained["tmp"] / "ckpts" / "xd_last_2022.pkl"
    args = data_args(trained["ds"], tmp_path, model_path=tmp_path, log_path=trained["tmp"] / "logs",
                     **{**TRAIN, "lr": "[0.001]*13"})
    with pytest.raises(InputError, match="--lr"):
        main.main(args + ["--resume", str(last)])
    with pytest.raises(InputError, match="not a `last` checkpoint"):
        main.main(args + ["--resume", str(trained["ckpt"])])


def test_batch_stream_state_round_trip():
    g = torch.Generator().manual_seed(0)
    s = BatchStream(10, 3, g)
    for _ in range(4):
        s.next()
    t = BatchStream(10, 3, torch.Generator())
    t.load_state_dict(s.state_dict())
    assert [s.next().tolist() for _ in range(7)] == [t.next().tolist() for _ in range(7)]


def test_infer_features_folder_writes_scores_segments_and_plots(trained, tmp_path):
    ds, out = trained["ds"], tmp_path / "out"
    res = run("infer.py", ["--model_path", str(trained["ckpt"]), "--features", str(ds["root"] / "test"),
                                  "--len_feature", "64", "--device", "cpu", "--output_dir", str(out),
                                  "--fps", "25", "--plot", "--top_k", "2"])
    assert res.returncode == 0, res.stderr
    names = sorted(p.stem.rsplit("__", 1)[0] for p in (ds["root"] / "test").glob("*__0.npy"))
    assert sorted(p.stem for p in (out / "frame_scores").glob("*.npy")) == names
    rows = read_csv(out / "scores.csv")
    assert len(rows) == sum(ds["test_lengths"])
    for name in names:
        frames = np.load(out / "frame_scores" / f"{name}.npy")
        mine = [r for r in rows if r["video"] == name]
        assert len(frames) == 16 * len(mine)
        np.testing.assert_allclose(frames[::16], [float(r["score"]) for r in mine], rtol=1e-5)
        assert float(mine[1]["start_s"]) == pytest.approx(16 / 25, abs=1e-3)
        assert all(0.0 < float(r["exceedance"]) <= 1.0 for r in mine)
        # 25 fps: 16-frame snippets of 0.64 s, 5625 per hour
        assert all(float(r["normal_per_hour"]) == pytest.approx(5625 * float(r["exceedance"]), rel=1e-3) for r in mine)
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    segments = read_csv(out / "segments.csv")
    assert segments and {r["video"] for r in segments} <= set(names)
    assert all(int(r["rank"]) <= 2 for r in segments)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["videos"] == len(names) and metrics["threshold"]["value"] > 0


def test_infer_test_set_reports_classes_threshold_events_and_curves(trained, tmp_path, capsys):
    """Per-class metrics, both APs, ROC/PR curves; and the threshold. By default it is the 0.99 quantile
    of the training normals (the checkpoint's table), so the false-alarm rates on the test normals are
    measured, not 1% by construction: each equals its independent computation from the model's
    scores. --threshold_from test is the opt-in test-derived threshold (about 1% of the normal videos'
    frames above it), labelled so."""
    import infer
    ds = trained["ds"]
    record = torch.load(trained["ckpt"], weights_only=True)
    model, _ = load_model(str(trained["ckpt"]))
    expected = table_quantile(record["calibration"].double().numpy(), 0.99)
    normal = [v for v in find_videos([str(ds["root"] / "test")], 64) if "_label_A" in v.name]
    scores = [s for _, s in infer.score_features(model, [(v.name, load_video(v, 64)) for v in normal], "cpu")]
    frames = np.concatenate([np.repeat(s, 16) for s in scores])
    alarms = sum(len(find_segments(s, expected, 10 ** 6)) for s in scores)
    hours = len(frames) / 25 / 3600
    reports = {}
    for origin in ("calibration", "test"):
        out = tmp_path / origin
        extra = ["--fps", "25"] + (["--threshold_from", "test"] if origin == "test" else ["--plot"])
        res = call(infer.main, data_args(ds, tmp_path, model_path=trained["ckpt"], output_dir=out) + extra, capsys)
        assert res.returncode == 0, res.stderr
        reports[origin] = json.loads((out / "metrics.json").read_text()), res.stdout
    m, stdout = reports["calibration"]
    assert set(m["per_class"]) == {"B1"} and m["per_class"]["B1"]["videos"] == 4
    # only one class: its videos and the normal ones are the whole test set
    assert m["per_class"]["B1"]["AUC"] == pytest.approx(m["AUC"])
    assert "B1" in stdout and "AP_sklearn" in stdout and 0 < m["AP_sklearn"] <= 100
    assert (tmp_path / "calibration" / "roc_pr.png").read_bytes().startswith(PNG_MAGIC)
    assert m["threshold"]["origin"] == "calibration" and "training normals" in m["threshold"]["source"]
    assert m["threshold"]["value"] == pytest.approx(expected)
    assert m["threshold"]["false_alarm_rate_normal_videos"] == pytest.approx(100 * np.mean(frames > expected))
    assert m["threshold"]["false_alarm_rate"] >= m["threshold"]["false_alarm_rate_normal_videos"]
    assert m["threshold"]["false_alarms_per_hour"] == pytest.approx(alarms / hours)
    assert m["events"]["false_alarms_per_hour"] == m["threshold"]["false_alarms_per_hour"]
    assert m["events"]["events"] == 4 and m["events"]["threshold_origin"] == "calibration"
    assert "alarms per hour of normal video" in stdout and "events at this threshold" in stdout
    t, stdout = reports["test"]
    assert t["threshold"]["origin"] == "test" and "by construction" in t["threshold"]["source"]
    assert t["threshold"]["value"] == pytest.approx(np.quantile(frames, 0.99))
    assert t["threshold"]["false_alarm_rate_normal_videos"] <= 1.0 and "by construction" in stdout
    assert t["threshold"]["value"] != pytest.approx(m["threshold"]["value"])


def test_segments_cover_planted_stretches_of_a_trained_model(trained):
    """A test video with a planted stretch: its top segment, above a threshold halfway between the
    video's median and peak score, overlaps the stretch and peaks inside it."""
    import infer
    ds = trained["ds"]
    model, _ = load_model(str(trained["ckpt"]))
    gt = np.load(ds["gt"])
    name = "vidtest00_label_B1-0-0"                       # abnormal, the first video of the test list
    [video] = find_videos([str(p) for p in (ds["root"] / "test").glob(f"{name}__*.npy")], 64)
    assert video.name == name and len(video.paths) == 5
    [(_, scores)] = infer.score_features(model, [(name, load_video(video, 64))], "cpu")
    planted = gt[:16 * len(scores):16].astype(bool)        # (T,) snippet-level truth
    threshold = (np.median(scores) + scores.max()) / 2
    top = find_segments(scores, threshold, 1)[0]
    assert planted[top["peak_snippet"]]
    inside = np.zeros(len(scores), bool)
    inside[top["start"]:top["end"]] = True
    assert (inside & planted).sum() >= 0.5 * planted.sum()


def test_find_segments_recovers_planted_stretches():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.3, 200)
    scores[20:35] += 1.0
    scores[120:160] += 0.8
    scores[150] = 2.0
    segs = find_segments(scores, 0.5, top_k=5)
    assert [(s["start"], s["end"]) for s in segs] == [(120, 160), (20, 35)]     # highest peak first
    assert segs[0]["peak_snippet"] == 150 and segs[0]["peak"] == pytest.approx(2.0)
    assert find_segments(scores, 0.5, top_k=1) == segs[:1]
    assert find_segments(np.ones(5), 0.5, 3)[0]["end"] == 5        # a run that reaches the video's end
    assert find_segments(scores, 5.0, 3) == []


def test_calibration_is_the_training_normals_cdf():
    normals = np.random.default_rng(0).normal(3.0, 1.0, 20000)
    table = quantile_table(normals)
    assert np.all(np.diff(table) >= 0)
    assert quantile_cdf(normals, table).mean() == pytest.approx(0.5, abs=0.01)
    assert quantile_cdf(3.0, table) == pytest.approx(0.5, abs=0.02)
    assert quantile_cdf(4.645, table) == pytest.approx(0.95, abs=0.01)
    assert quantile_cdf([-100.0, 100.0], table).tolist() == [0.0, 1.0]
    assert quantile_cdf(table_quantile(table, 0.99), table) == pytest.approx(0.99, abs=1e-6)


def test_video_classes_from_names():
    assert video_classes("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6") == ["G", "B2", "B6"]
    assert video_classes("v_label_B2-G-0") == ["B2", "G"]
    assert video_classes("v_label_A") == []
    assert video_classes("Abuse028_x264") == ["Abuse"]
    assert video_classes("Normal_Videos_003_x264") == []


def test_per_class_metrics_pair_each_class_with_all_normals():
    names = ["a_label_B1-0-0", "b_label_G-B1-0", "c_label_A", "d_label_A"]
    normal = [False, False, True, True]
    lengths = [2, 2, 2, 2]
    gt = np.repeat([1, 0, 1, 1, 0, 0, 0, 0], 16)
    scores = np.repeat([0.9, 0.1, 0.3, 0.3, 0.2, 0.2, 0.4, 0.4], 16)
    m = per_class_metrics(names, normal, lengths, scores, gt)
    assert set(m) == {"B1", "G"} and m["B1"]["videos"] == 2 and m["G"]["videos"] == 1
    # G: video b's anomalous frames (0.3) against c's (0.2) and d's (0.4) normal frames, not a's
    assert m["G"]["AUC"] == pytest.approx(50.0)
    mask = np.repeat([0, 1, 1, 1], 32).astype(bool)
    assert m["G"]["AP"] == pytest.approx(auc_ap(scores[mask], gt[mask])[1])
    assert (m["B1"]["AUC"], m["B1"]["AP"]) == pytest.approx(auc_ap(scores, gt))


def test_matplotlib_only_imported_to_plot():
    code = "import sys, infer, main; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def bare_checkpoint(path):
    """A bare state dict, like the release's files: no configuration, no calibration."""
    from model import BNWVAD
    torch.save(BNWVAD(64).state_dict(), path)
    return str(path)


def test_features_with_a_bare_state_dict_and_no_threshold_write_all_but_segments(tmp_path, capsys):
    """A release's bare state dict holds no calibration, so without --threshold there is no threshold:
    the scores, frame scores and plots are written, and one line says that segments need --threshold
    (no segments.csv at all: an empty one would read as 'no anomalies')."""
    import infer
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(0, 1, (8, 64)).astype(np.float32))
    args = ["--model_path", bare_checkpoint(tmp_path / "bare.pt"), "--features", str(tmp_path / "v.npy"),
            "--len_feature", "64", "--device", "cpu", "--output_dir", str(tmp_path / "out"), "--plot"]
    infer.main(args)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "segments need --threshold" in line] == [
        "no segments.csv: this checkpoint holds no calibration (a bare state dict, or a run that did not finish): "
        "segments need --threshold"]
    rows = read_csv(tmp_path / "out" / "scores.csv")
    assert len(rows) == 8 and {r["exceedance"] for r in rows} == {r["normal_per_hour"] for r in rows} == {""}
    assert "start_s" not in rows[0]
    assert np.load(tmp_path / "out" / "frame_scores" / "v.npy").shape == (128,)
    assert (tmp_path / "out" / "plots" / "v.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "out" / "segments.csv").exists()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["threshold"]["value"] is None
    infer.main(args + ["--threshold", "1.0", "--overwrite"])
    assert (tmp_path / "out" / "segments.csv").read_text().startswith("video,rank,")


def test_features_with_a_missing_crop_fail_cleanly(tmp_path):
    import infer
    for k in (0, 2):
        np.save(tmp_path / f"v__{k}.npy", np.zeros((8, 64), np.float32))
    args = ["--model_path", bare_checkpoint(tmp_path / "bare.pt"), "--features", str(tmp_path),
            "--len_feature", "64", "--threshold", "1", "--device", "cpu", "--output_dir", str(tmp_path / "o" / "run")]
    with pytest.raises(InputError, match=r"video v is missing crop\(s\) \[1\] of its 3"):
        infer.main(args)
    assert not (tmp_path / "o").exists()            # a failed run leaves no new folder, nor its new parent


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path):
    import importlib.util
    import main
    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    ds = write_xd_dataset(tmp_path / "data", n_train=1, n_test=1)
    with pytest.raises(InputError, match="pip install tensorboard"):
        main.main(data_args(ds, tmp_path, model_path=tmp_path / "c", log_path=tmp_path / "l") + ["--tensorboard"])


def test_features_one_file_per_video_with_crops(tmp_path):
    """A (T, N, D) file is one video of N crops (N from the dataset, here XD's 5), scored as their mean."""
    import infer
    x = np.random.default_rng(0).normal(0, 1, (8, 5, 64)).astype(np.float32)
    np.save(tmp_path / "clip.npy", x)
    args = ["--model_path", bare_checkpoint(tmp_path / "bare.pt"), "--features", str(tmp_path / "clip.npy"),
            "--len_feature", "64", "--threshold", "1", "--device", "cpu", "--output_dir", str(tmp_path / "o")]
    infer.main(args)
    model, _ = load_model(str(tmp_path / "bare.pt"))
    [(_, expected)] = infer.score_features(model, [("clip", x.transpose(1, 0, 2))], "cpu")
    np.testing.assert_allclose(np.load(tmp_path / "o" / "frame_scores" / "clip.npy")[::16], expected, rtol=1e-5)


def test_features_folder_skips_hidden_cache(tmp_path):
    """A feature root holds the training-item cache in .cache/: those files are not videos."""
    import infer
    for k in range(2):
        np.save(tmp_path / f"v__{k}.npy", np.zeros((8, 64), np.float32))
    (tmp_path / ".cache").mkdir()
    np.save(tmp_path / ".cache" / "items-abc.npy", np.zeros((3, 8, 64), np.float32))
    [video] = find_videos([str(tmp_path)], 64)
    assert video.name == "v" and len(video.paths) == 2
