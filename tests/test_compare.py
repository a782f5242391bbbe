"""UR-DMU as a first-class model of the scripts: trained by main.py with its release settings,
reloaded by infer.py to the metrics it logged, resumed exactly, its release's bare state dict
recognised; and compare.py's table of both models."""
import csv
import json

import numpy as np
import pytest
import torch

import compare
import infer
import main
from conftest import data_args, run_script, shared_path, write_xd_dataset
from helpers import call

D = 32
TRAIN = dict(lr="[0.001]*30", batch_size=4, num_segments=16, plot_freq=10)    # UR-DMU: steps 0, 20, 30


@pytest.fixture(scope="module")
def urdmu_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("urdmu")
    ds = write_xd_dataset(tmp / "data", n_train=3, n_test=2, D=D)
    args = data_args(ds, tmp, model_path=tmp / "ckpts", log_path=tmp / "logs", **TRAIN) + ["--model", "urdmu"]
    r = run_script("main.py", args)
    assert r.returncode == 0, r.stderr
    return ds, tmp, args


def test_urdmu_trains_with_its_release_evaluation_schedule(urdmu_run):
    ds, tmp, _ = urdmu_run
    log = [json.loads(line) for line in (tmp / "logs" / "xd_urdmu_2022.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 20, 30]            # before training, then every 10 from step 20
    assert {"att_loss", "triplet", "kl_loss", "distance", "grad_norm"} <= set(log[1])
    record = torch.load(tmp / "ckpts" / "xd_urdmu_best_2022.pkl", weights_only=True)
    assert record["model"] == "urdmu" and record["model_config"]["a_nums"] == 60
    assert "calibration" in record
    config = json.loads((tmp / "ckpts" / "xd_urdmu_config_2022.json").read_text())["args"]
    assert config["clip_norm"] is None and config["model"] == "urdmu"


def test_urdmu_checkpoint_reloads_to_its_logged_metrics(urdmu_run, tmp_path):
    ds, tmp, _ = urdmu_run
    log = [json.loads(line) for line in (tmp / "logs" / "xd_urdmu_2022.jsonl").read_text().splitlines()]
    best = max(log[1:], key=lambda r: r["AP"])                 # step 0, the untrained model, is never kept
    out = tmp_path / "out"
    r = run_script("infer.py", data_args(ds, tmp, model_path=tmp / "ckpts" / "xd_urdmu_best_2022.pkl",
                                         output_dir=out) + ["--plot"])
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "urdmu"
    for k in ("AUC", "AP", "AUC_sub", "AP_sub"):
        assert metrics[k] == best[k], k
    assert (out / "segments.csv").is_file() and len(list((out / "plots").iterdir())) == 4


def test_urdmu_resume_reproduces_the_uninterrupted_run(urdmu_run, tmp_path):
    ds, tmp, _ = urdmu_run
    args = data_args(ds, tmp_path, model_path=tmp_path / "ckpts", log_path=tmp_path / "logs", **TRAIN) + \
        ["--model", "urdmu"]
    main.main(args + ["--stop_after", "25"])
    main.main(args + ["--resume", str(tmp_path / "ckpts" / "xd_urdmu_last_2022.pkl")])
    assert (tmp_path / "logs" / "xd_urdmu_2022.jsonl").read_text() == \
        (tmp / "logs" / "xd_urdmu_2022.jsonl").read_text()
    a = torch.load(tmp / "ckpts" / "xd_urdmu_best_2022.pkl", weights_only=True)
    b = torch.load(tmp_path / "ckpts" / "xd_urdmu_best_2022.pkl", weights_only=True)
    assert a["step"] == b["step"] and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_release_state_dicts_of_both_models_load_without_configuration_flags(tmp_path, capsys):
    """A bare state dict of either release is recognised by its keys; its config comes from its shapes."""
    x = np.random.default_rng(0).normal(0, 1, (12, 1024)).astype(np.float32)
    np.save(tmp_path / "clip.npy", x)
    for name in ("parity", "urdmu"):
        state = shared_path("fixtures", name, "state_dict.pkl")
        out = tmp_path / name
        infer.main(["--model_path", str(state), "--features", str(tmp_path / "clip.npy"), "--threshold", "0.5",
                    "--output_dir", str(out), "--device", "cpu"])
        assert json.loads((out / "metrics.json").read_text())["model"] == {"parity": "bnwvad", "urdmu": "urdmu"}[name]
        assert len((out / "scores.csv").read_text().splitlines()) == 13
    with pytest.raises(Exception, match="holds a urdmu model, but --model bnwvad was given"):
        infer.main(["--model_path", str(shared_path("fixtures", "urdmu", "state_dict.pkl")), "--model", "bnwvad",
                    "--features", str(tmp_path / "clip.npy"), "--output_dir", str(tmp_path / "x"), "--device", "cpu"])


def test_flags_of_the_other_model_are_errors():
    with pytest.raises(SystemExit):
        main.parse_main_args(["--model", "urdmu", "--ratios", "8", "16"])
    with pytest.raises(SystemExit):
        main.parse_main_args(["--a_nums", "30"])


def test_compare_trains_both_models_and_tables_them(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=2, D=D)
    out = tmp_path / "cmp"
    compare.compare(data_args(ds, tmp_path, lr="[0.001]*20", batch_size=4, num_segments=8, plot_freq=10, fps=25)
                    + ["--seeds", "1", "2", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seed"]) for r in rows] == [("bnwvad", "1"), ("bnwvad", "2"), ("urdmu", "1"),
                                                       ("urdmu", "2"), ("bnwvad", "mean"), ("bnwvad", "std"),
                                                       ("urdmu", "mean"), ("urdmu", "std")]
    for model in ("bnwvad", "urdmu"):
        runs = [r for r in rows if r["model"] == model and r["seed"] in ("1", "2")]
        mean = next(r for r in rows if r["model"] == model and r["seed"] == "mean")
        for k in ("AUC", "AP"):
            assert float(mean[k]) == pytest.approx(np.mean([float(r[k]) for r in runs]), abs=1e-4)
        name = "xd" if model == "bnwvad" else "xd_urdmu"
        for r in runs:                                         # each row is that run's best checkpoint
            path = out / "ckpts" / f"{name}_best_{r['seed']}.pkl"
            record = torch.load(path, weights_only=True)
            assert float(r["AP"]) == pytest.approx(record["metrics"]["AP"], abs=1e-4)
            if r["seed"] == "1":        # its event metrics at its calibration's 0.99 quantile, as infer.py's (25 fps)
                events = json.loads((infer_metrics(path, ds, tmp_path / name, capsys)))["events"]
                for k in ("event_recall", "event_IoU", "false_alarms_per_hour"):
                    assert float(r[k]) == pytest.approx(events[k], abs=1e-4), k
    table = (out / "comparison.md").read_text()
    assert table.splitlines()[0] == \
        "| model (2 seeds) | AUC | AP | AUC_sub | AP_sub | event recall | event IoU | FA/h |"
    assert "| BN-WVAD |" in table and "| UR-DMU |" in table and table in printed
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")


def infer_metrics(checkpoint, ds, out, capsys):
    """infer.py's metrics.json text for a checkpoint on the dataset's test list, at 25 fps."""
    r = call(infer.main, data_args(ds, out, model_path=checkpoint, output_dir=out, fps=25), capsys)
    assert r.returncode == 0, r.stderr
    return (out / "metrics.json").read_text()


def test_compare_refuses_flags_it_sets_itself(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--dataset", "demo", "--seed", "3"])
    assert "--seed is set by compare.py" in capsys.readouterr().err


def test_compare_that_fails_leaves_no_output_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):                 # main.py's flags are checked before any training
        compare.compare(["--dataset", "demo", "--lr", "abc", "--output_dir", str(tmp_path / "cmp")])
    assert "--lr" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()
