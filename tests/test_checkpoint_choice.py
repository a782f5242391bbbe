"""Which checkpoint a training run keeps and what it reports about the run: selection by the dataset's
metric (AUC for UCF-Crime), never the untrained step 0, float32 evaluation under --amp, a held-out
selection list, the flags as used, and a summary of best, last and the spread of the last evaluations."""
import json

import numpy as np
import pytest
import torch

import main
import test as metrics_module
from core.checkpoints import load_model
from conftest import data_args, write_xd_dataset
from dataset import Labelled, load_test_set
from helpers import call, dataset_cli, write_ucf
from options import dataset_info, parse_main_args
from test import METRICS, evaluate

D = 32
FAST = ["--len_feature", str(D), "--num_segments", "16", "--num_workers", "0", "--device", "cpu",
        "--cache_dir", "none"]


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def first_best(log, key):
    """The step of the highest `key` after step 0, the first one on a tie (the releases compare strictly)."""
    trained = [r for r in log if r["step"] > 0]
    return max(trained, key=lambda r: (r[key], -r["step"]))["step"]


@pytest.fixture(scope="module")
def ucf_run(tmp_path_factory):
    """A small UCF-layout run (2 crops, default batch size) evaluated before training and after every
    step: its untrained model scores highest, and its best AUC and best AP fall on different steps."""
    tmp = tmp_path_factory.mktemp("ucf")
    ds = write_ucf(tmp / "ucf", crops=2)
    lists = tmp / "list"
    dataset_cli(["make-list", "--dataset", "ucf", "--crops", "2", "--root_dir", str(ds["root"]), "--test_videos",
                 str(ds["ann"]), "--list_dir", str(lists)])
    dataset_cli(["make-gt", "--dataset", "ucf", "--crops", "2", "--root_dir", str(ds["root"]), "--test_list",
                 str(lists / "ucf_test.list"), "--annotations", str(ds["ann"]), "--out", str(tmp / "gt.npy")])
    argv = ["--dataset", "ucf", "--crops", "2", "--root_dir", str(ds["root"]), "--train_list",
            str(lists / "ucf_train.list"), "--test_list", str(lists / "ucf_test.list"), "--gt", str(tmp / "gt.npy"),
            "--lr", "[0.001]*6", "--eval_every", "1", "--eval_before_training", "--seed", "3",
            "--model_path", str(tmp / "ckpts"), "--log_path", str(tmp / "logs")] + FAST
    return tmp, argv


def test_ucf_keeps_the_best_auc_step_and_never_step_0(ucf_run, capsys):
    tmp, argv = ucf_run
    r = call(main.main, argv, capsys)
    assert r.returncode == 0, r.stderr
    log = read_log(tmp / "logs" / "ucf_3.jsonl")
    assert [x["step"] for x in log] == list(range(7))
    # what makes this set a test of the choice: step 0 beats every trained step, and AUC and AP disagree
    assert all(log[0][k] > max(x[k] for x in log[1:]) for k in ("AUC", "AP")), log
    assert first_best(log, "AUC") != first_best(log, "AP"), log
    record = torch.load(tmp / "ckpts" / "ucf_best_3.pkl", weights_only=True)
    assert record["step"] == first_best(log, "AUC")
    assert record["selected_by"] == dict(metric="AUC", on="test", value=log[record["step"]]["AUC"])
    assert set(METRICS) < set(record["metrics"])
    assert record["metrics"] == {k: log[record["step"]][k] for k in record["metrics"]}
    assert f"best (step {record['step']}): AUC {log[record['step']]['AUC']:.2f}" in r.stdout
    assert "chosen by AUC on the test set: the releases' protocol, optimistic" in r.stdout


def test_the_run_record_holds_the_batch_size_used(ucf_run):
    """4 normal videos of 2 crops are 8 items, fewer than the default --batch_size 64: the run uses 8, and
    the config file and both checkpoints say so (the default it replaced in "adjusted")."""
    tmp, _ = ucf_run
    config = json.loads((tmp / "ckpts" / "ucf_config_3.json").read_text())
    assert config["args"]["batch_size"] == 8 and config["adjusted"]["batch_size"] == 64
    assert config["args"]["eval_from"] == 1 and config["args"]["select_by"] == "AUC"
    assert config["args"]["num_iters"] == 6 and "batch_size" not in config["given"]
    for name in ("ucf_best_3.pkl", "ucf_last_3.pkl"):
        assert torch.load(tmp / "ckpts" / name, weights_only=True)["meta"]["run"] == config


def test_the_summary_gives_best_last_and_the_spread_of_the_last_evaluations(ucf_run):
    tmp, _ = ucf_run
    log = read_log(tmp / "logs" / "ucf_3.jsonl")
    record = torch.load(tmp / "ckpts" / "ucf_best_3.pkl", weights_only=True)
    summary = record["summary"]
    assert summary["best_step"] == record["step"] and summary["last_step"] == 6
    assert summary["last"] == {k: log[6][k] for k in METRICS}
    assert summary["recent_steps"] == [2, 3, 4, 5, 6]               # the last 5, step 0 never among them
    for k in METRICS:
        values = [log[s][k] for s in range(2, 7)]
        assert summary["recent_mean"][k] == pytest.approx(np.mean(values), abs=1e-9)
        assert summary["recent_std"][k] == pytest.approx(np.std(values, ddof=1), abs=1e-9)
    text = main.summary_text(summary)
    assert f"last (step 6): AUC {log[6]['AUC']:.2f}" in text
    assert (f"mean ± std of the last 5 evaluations (steps 2, 3, 4, 5, 6): AUC {summary['recent_mean']['AUC']:.2f} ± "
            f"{summary['recent_std']['AUC']:.2f}") in text


def test_select_by_defaults_come_from_the_dataset_table():
    assert parse_main_args(["--dataset", "ucf"]).select_by == "AUC"
    for dataset in ("xd", "custom", "demo"):
        assert parse_main_args(["--dataset", dataset]).select_by == "AP"
    assert parse_main_args(["--dataset", "ucf", "--select_by", "AP"]).select_by == "AP"
    assert parse_main_args(["--dataset", "demo", "--plot_freq", "7"]).eval_every == 7       # the release's name


def test_the_saver_never_keeps_step_0_and_compares_strictly(tmp_path):
    model = torch.nn.Linear(2, 1)
    model.config = lambda: {}
    saver = main.CheckpointSaver(tmp_path / "best.pkl", tmp_path / "last.pkl", "AUC", "test", "bnwvad", {})
    assert not saver.update(model, 0, dict(AUC=99.0, AP=99.0), {})
    assert not (tmp_path / "best.pkl").exists()
    assert saver.update(model, 5, dict(AUC=60.0, AP=90.0), {})
    assert not saver.update(model, 10, dict(AUC=60.0, AP=95.0), {})            # a tie keeps the earlier step
    assert saver.update(model, 15, dict(AUC=61.0, AP=10.0), {})
    assert torch.load(tmp_path / "best.pkl", weights_only=True)["step"] == 15


@pytest.fixture
def cpu_amp(monkeypatch):
    """--amp on this CPU as on a CUDA GPU: training's bfloat16 autocast (train_step's, CPU autocast here),
    and the autocast the scoring code would apply to an evaluation asked for in amp."""
    import contextlib
    monkeypatch.setattr(main, "check_accelerator_flags", lambda args, device: None)
    monkeypatch.setattr(metrics_module, "autocast", lambda device, amp: torch.autocast(
        "cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext())


def test_amp_training_evaluates_in_float32(tmp_path, cpu_amp, monkeypatch, capsys):
    scored = []                 # the snippet scores of each evaluation in training

    def evaluate_spy(*args, **kwargs):
        metrics, scores = evaluate(*args, **kwargs)
        scored.append(scores)
        return metrics, scores
    monkeypatch.setattr(main, "evaluate", evaluate_spy)
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=2, crops=2, D=D)
    argv = data_args(ds, tmp_path, model_path=tmp_path / "c", log_path=tmp_path / "l", lr="[0.001]*4",
                     eval_every=2, num_segments=8, crops=2, cache_dir="none") + ["--amp"]
    r = call(main.main, argv, capsys)
    assert r.returncode == 0, r.stderr
    log = read_log(tmp_path / "l" / "xd_2022.jsonl")
    model, record = load_model(str(tmp_path / "c" / "xd_best_2022.pkl"))
    args = parse_main_args(argv)
    test_set = load_test_set(Labelled(args.test_list, args.gt), args.root_dir, dataset_info(args), D)
    fp32, fp32_scores = evaluate(model, test_set, torch.device("cpu"))
    in_training = scored[[x["step"] for x in log].index(record["step"])]
    for a, b in zip(in_training, fp32_scores):
        np.testing.assert_array_equal(a, b)             # exactly: the evaluation was float32's
    assert {k: log[[x["step"] for x in log].index(record["step"])][k] for k in fp32} == fp32
    _, bf16_scores = evaluate(model, test_set, torch.device("cpu"), amp=True)
    assert any(not np.array_equal(a, b) for a, b in zip(bf16_scores, fp32_scores))   # bfloat16 would show


def test_a_selection_list_chooses_the_checkpoint_and_the_test_set_is_reported(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=2, n_val=2, crops=2, D=D)
    argv = data_args(ds, tmp_path, model_path=tmp_path / "c", log_path=tmp_path / "l", lr="[0.001]*6",
                     eval_every=1, num_segments=8, seed=1, crops=2, cache_dir="none", val_list=ds["val_list"],
                     val_gt=ds["val_gt"])
    r = call(main.main, argv, capsys)
    assert r.returncode == 0, r.stderr
    assert "4 test videos, 4 selection videos" in r.stdout
    log = read_log(tmp_path / "l" / "xd_1.jsonl")
    assert first_best(log, "val_AP") != first_best(log, "AP"), log     # the two sets disagree on this run
    record = torch.load(tmp_path / "c" / "xd_best_1.pkl", weights_only=True)
    step = first_best(log, "val_AP")
    assert record["step"] == step
    assert record["selected_by"] == dict(metric="AP", on=str(ds["val_list"]), value=log[step - 1]["val_AP"])
    assert set(METRICS) < set(record["metrics"])                                    # the test set's, reported
    assert record["metrics"] == {k: log[step - 1][k] for k in record["metrics"]}
    assert f"chosen by AP on the selection list {ds['val_list']}" in r.stdout


def test_a_selection_list_must_be_held_out_and_have_its_ground_truth(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=2, crops=2, D=D)
    common = data_args(ds, tmp_path, model_path=tmp_path / "c", log_path=tmp_path / "l", crops=2)
    r = call(main.main, common + ["--val_list", str(ds["test_list"]), "--val_gt", str(ds["gt"])], capsys)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: video vidtest00_label_B1-0-0 is in both the test list {ds['test_list']} and "
                                f"the selection list {ds['test_list']} (4 such videos)")
    r = call(main.main, common + ["--val_list", str(ds["test_list"])], capsys)
    assert r.returncode == 2 and "--val_list needs its ground truth" in r.stderr
    assert not (tmp_path / "c").exists()
