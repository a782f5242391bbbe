"""What a new user meets in the first hour: every default shown in --help, the number of iterations,
defaults taken from the checkpoint, output folders that never replace another run's files, and
plots that read right."""
import json
import re

import numpy as np
import pytest
import torch

import infer
import main
from core import plots
from conftest import data_args, write_xd_dataset
from options import parse_infer_args, parse_main_args, parse_tool_args
from utils import InputError

D = 32


@pytest.mark.parametrize("command, shown", [
    (["main.py"], ["--batch_size BATCH_SIZE", "(default: 64)", "(default: [0.0001]*1000)", "(default: 200)"]),
    (["infer.py"], ["(default: 5)", "(default: 0.99)", "outputs/<checkpoint name>/<input>", "(default: 256)"]),
    (["extract.py"], ["(default: 10)", "(default: 256)", "(default: 4)", "(default: auto)"]),
    (["dataset.py", "make-list"], ["(default: xd)", "(default: list)"]),
    (["dataset.py", "make-gt"], ["(default: frames)"]),
])
def test_help_shows_every_default(command, shown, capsys):
    """Each command's --help, from its parser in this process (tests/test_cli.py runs --help as real commands)."""
    import extract
    parse = {"main.py": parse_main_args, "infer.py": parse_infer_args, "extract.py": extract.parse_args,
             "dataset.py": parse_tool_args}[command[0]]
    with pytest.raises(SystemExit) as exit_:
        parse([*command[1:], "--help"])
    assert exit_.value.code in (0, None)
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for words in shown:
        assert words in text, words
    assert "default: None" not in text and "default: False" not in text


def test_num_iters_repeats_or_cuts_the_schedule():
    assert parse_main_args(["--lr", "0.0005", "--num_iters", "7"]).lr == [0.0005] * 7
    assert parse_main_args(["--lr", "[0.1, 0.2, 0.3]", "--num_iters", "7"]).lr == [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1]
    assert parse_main_args(["--lr", "[0.1]*10", "--num_iters", "4"]).lr == [0.1] * 4
    assert len(parse_main_args([]).lr) == 1000
    assert len(parse_main_args(["--model", "urdmu"]).lr) == 3000          # UR-DMU's release schedule


def test_a_single_learning_rate_warns_and_num_iters_trains_that_long(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=1, D=D)
    common = data_args(ds, tmp_path, model_path=tmp_path / "c", log_path=tmp_path / "l", batch_size=2,
                       num_segments=8, plot_freq=2)
    main.main(common + ["--lr", "0.001"])
    err = capsys.readouterr().err
    assert "warning: --lr gives one learning rate, so training runs a single step; give --num_iters N" in err
    assert [json.loads(x)["step"] for x in (tmp_path / "l" / "xd_2022.jsonl").read_text().splitlines()] == [1]
    main.main(common + ["--lr", "0.001", "--num_iters", "4", "--overwrite"])
    assert "--lr gives one" not in capsys.readouterr().err
    assert [json.loads(x)["step"] for x in (tmp_path / "l" / "xd_2022.jsonl").read_text().splitlines()] == [2, 4]


def test_a_small_dataset_lowers_the_default_batch_size_but_not_a_given_one(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=1, n_test=1, D=D)        # 5 items of each class
    common = data_args(ds, tmp_path, model_path=tmp_path / "c", log_path=tmp_path / "l", lr="[0.001]*2",
                       num_segments=8, plot_freq=2)
    main.main(common)
    assert "has 5 normal training items, fewer than the default --batch_size 64: using --batch_size 5" in \
        capsys.readouterr().out
    with pytest.raises(InputError, match="has 5 normal training items, fewer than --batch_size 8"):
        main.main(common + ["--batch_size", "8", "--overwrite"])


@pytest.fixture(scope="module")
def one_crop_checkpoint(tmp_path_factory):
    """A checkpoint trained on 1-crop demo-layout features: it records dataset, crops and width."""
    tmp = tmp_path_factory.mktemp("one_crop")
    ds = write_xd_dataset(tmp / "data", n_train=2, n_test=2, crops=1, D=D)
    main.main(data_args(ds, tmp, model_path=tmp / "c", log_path=tmp / "l", lr="[0.001]*2", batch_size=2,
                        num_segments=8, plot_freq=2) + ["--crops", "1"])
    return ds, tmp, tmp / "c" / "xd_best_2022.pkl"


def test_the_checkpoint_records_what_it_was_trained_on(one_crop_checkpoint):
    _, _, ckpt = one_crop_checkpoint
    record = torch.load(ckpt, weights_only=True)
    assert record["model"] == "bnwvad"
    assert {k: record["meta"][k] for k in ("dataset", "crops", "len_feature")} == dict(dataset="xd", crops=1,
                                                                                      len_feature=D)


def test_infer_takes_dataset_crops_and_width_from_the_checkpoint(one_crop_checkpoint, tmp_path, capsys):
    ds, _, ckpt = one_crop_checkpoint
    args = parse_infer_args(["--model_path", str(ckpt)])
    assert (args.dataset, args.crops) == ("xd", 1) and args.from_checkpoint == dict(model="bnwvad", dataset="xd",
                                                                                    crops=1)
    assert parse_infer_args(["--model_path", str(ckpt), "--crops", "5"]).crops == 5      # a flag overrides
    x = np.random.default_rng(0).normal(0, 1, (6, 1, D)).astype(np.float32)          # a (T, 1, D) one-file video
    np.save(tmp_path / "clip.npy", x)
    infer.main(["--model_path", str(ckpt), "--features", str(tmp_path / "clip.npy"), "--threshold", "0",
                "--output_dir", str(tmp_path / "o"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert "from the checkpoint: --model bnwvad --dataset xd --crops 1 (a flag given here overrides)" in out
    assert len((tmp_path / "o" / "scores.csv").read_text().splitlines()) == 7
    with pytest.raises(InputError, match=f"was built with --len_feature {D} .embedding.conv_1.0.weight has shape"):
        infer.main(["--model_path", str(ckpt), "--features", str(tmp_path / "clip.npy"), "--len_feature", "64",
                    "--output_dir", str(tmp_path / "o2"), "--device", "cpu"])


def test_runs_get_their_own_folders_and_never_replace_another_runs_outputs(one_crop_checkpoint, tmp_path,
                                                                           monkeypatch, capsys):
    ds, run, ckpt = one_crop_checkpoint
    monkeypatch.chdir(tmp_path)
    common = ["--model_path", str(ckpt), "--root_dir", str(ds["root"]), "--train_list", str(ds["train_list"]),
              "--test_list", str(ds["test_list"]), "--gt", str(ds["gt"]), "--len_feature", str(D), "--device", "cpu",
              "--num_workers", "0"]
    infer.main(common)
    test_run = tmp_path / "outputs" / "xd_best_2022" / "xd_test"
    metrics = (test_run / "metrics.json").read_text()
    np.save(tmp_path / "clip.npy", np.zeros((4, D), np.float32))
    infer.main(common + ["--features", str(tmp_path / "clip.npy"), "--threshold", "1"])
    assert (tmp_path / "outputs" / "xd_best_2022" / "clip" / "scores.csv").is_file()
    with pytest.raises(InputError, match="xd_test already holds a run's outputs .* give --overwrite"):
        infer.main(common + ["--threshold", "5"])
    assert (test_run / "metrics.json").read_text() == metrics             # untouched
    (test_run / "plots").mkdir()
    (test_run / "plots" / "old.png").write_bytes(b"")                     # an earlier run's plot
    infer.main(common + ["--threshold", "5", "--overwrite"])
    assert json.loads((test_run / "metrics.json").read_text())["threshold"]["value"] == 5
    assert not (test_run / "plots").exists()                              # nothing of the earlier run is left


def test_plot_reads_right(monkeypatch):
    """No drop to zero at the right edge, the detected segments drawn, the label and the verdict in
    the title, and the unscored tail of a last partial snippet shown."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    scores = np.array([0.1, 0.2, 0.9, 1.0, 0.8, 0.2, 0.1, 0.3])
    times = np.stack([np.arange(8) * 0.64, np.arange(1, 9) * 0.64], 1)             # 25 fps
    segments = [dict(start=2, end=5, peak=1.0, peak_snippet=3, mean=0.9)]
    plots.plot_video("x.png", "cam01", scores, 0.5, times, None, segments, "abnormal", video_end=5.5)
    [fig] = figures
    ax = fig.axes[0]
    assert ax.get_title() == "cam01 (abnormal)\npeak 1 at 1.9 s, 1.9 s above the threshold"
    [steps] = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
    assert steps.get_data().baseline is None                               # no vertical drop at the ends
    labels = [h.get_label() for h in ax.get_legend().legend_handles]
    assert "detected segment" in labels and "last partial snippet (not scored)" in labels
    assert ax.get_xlim() == (0.0, 5.5)
