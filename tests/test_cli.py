"""main.py and infer.py as a user runs them: outputs, reload parity, and one-line errors on bad input."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import infer
import main
from conftest import ROOT, data_args, run_script, shared_path, write_xd_dataset
from helpers import call

TRAIN = dict(lr="[0.0005]*6", batch_size=4, num_segments=16, plot_freq=3, seed=7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    ds = write_xd_dataset(tmp / "data")
    args = data_args(ds, tmp, model_path=tmp / "ckpts", log_path=tmp / "logs", **TRAIN)
    r = run_script("main.py", args)
    assert r.returncode == 0, r.stderr
    return ds, tmp, r


def test_main_writes_best_checkpoint_and_log(trained):
    ds, tmp, r = trained
    ckpt = tmp / "ckpts" / "xd_best_7.pkl"
    lines = [json.loads(x) for x in (tmp / "logs" / "xd_7.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    for x in lines:
        assert 0 <= x["AUC"] <= 100 and 0 <= x["AP"] <= 100
    record = torch.load(ckpt, weights_only=True)
    best = max(lines, key=lambda x: x["AP"])
    assert record["step"] == best["step"]
    assert record["model_config"]["len_feature"] == ds["D"]
    assert "best (step" in r.stdout and str(ckpt) in r.stdout


def test_infer_reproduces_logged_metrics(trained, tmp_path):
    ds, tmp, _ = trained
    lines = [json.loads(x) for x in (tmp / "logs" / "xd_7.jsonl").read_text().splitlines()]
    best = max(lines, key=lambda x: x["AP"])
    out = tmp_path / "out"
    r = run_script("infer.py", data_args(ds, tmp, model_path=tmp / "ckpts" / "xd_best_7.pkl", output_dir=out))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for k in ("AUC", "AP", "AUC_sub", "AP_sub"):
        assert metrics[k] == best[k], k
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("video,snippet,score,")
    assert len(rows) - 1 == sum(ds["test_lengths"])
    assert "AUC_sub" in r.stdout


def test_infer_loads_release_state_dict(tmp_path):
    """A bare state dict in the release's layout, configuration from the flags."""
    fixture = shared_path("fixtures", "parity")
    ds = write_xd_dataset(tmp_path / "data", D=1024, n_test=2, n_train=1, T_range=(8, 12))
    r = run_script("infer.py", data_args(ds, tmp_path, model_path=fixture / "state_dict.pkl",
                                         output_dir=tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["step"] is None


def assert_one_line_error(r, *words):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


def corrupt(kind, ds):
    """Damage a fresh dataset in one way; return words the error must contain."""
    root = ds["root"]
    victim = root / "train" / "vidtrain00_label_B1-0-0__2.npy"
    if kind == "missing file":
        victim.unlink()
        return [victim.name, "does not exist"]
    if kind == "truncated npy":
        victim.write_bytes(victim.read_bytes()[:100])
        return [victim.name]
    if kind == "not npy":
        victim.write_text("hello")
        return [victim.name]
    if kind == "wrong width":
        np.save(victim, np.zeros((20, ds["D"] + 1), np.float32))
        return [victim.name, "width"]
    if kind == "nan":
        x = np.load(victim)
        x[3, 4] = np.nan
        np.save(victim, x)
        return [victim.name, "NaN"]
    if kind == "inf in test":
        t = root / "test" / "vidtest00_label_B1-0-0__0.npy"
        x = np.load(t)
        x[0, 0] = np.inf
        np.save(t, x)
        return [t.name, "Inf"]
    if kind == "no snippets":
        np.save(victim, np.zeros((0, ds["D"]), np.float32))
        return [victim.name, "no snippets"]
    if kind == "no normal":
        lines = [x for x in ds["train_list"].read_text().splitlines() if "_label_A" not in x]
        ds["train_list"].write_text("\n".join(lines) + "\n")
        return ["no normal"]
    if kind == "no abnormal":
        lines = [x for x in ds["train_list"].read_text().splitlines() if "_label_A" in x]
        ds["train_list"].write_text("\n".join(lines) + "\n")
        return ["no abnormal"]
    if kind == "gt length":
        np.save(ds["gt"], np.zeros(17, np.uint8))
        return ["gt.npy", "17 frames"]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["missing file", "truncated npy", "not npy", "wrong width", "nan", "inf in test",
                                  "no snippets", "no normal", "no abnormal", "gt length"])
def test_bad_data_fails_before_training(tmp_path, kind, capsys):
    """main.py in this process as its command line runs it (run_cli); the first case as a real command."""
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=1, D=16)
    words = corrupt(kind, ds)
    args = data_args(ds, tmp_path, model_path=tmp_path / "ckpts", log_path=tmp_path / "logs",
                     **dict(TRAIN, batch_size=2))
    r = run_script("main.py", args) if kind == "missing file" else call(main.main, args, capsys)
    assert_one_line_error(r, *words)
    assert not (tmp_path / "ckpts").exists() and not (tmp_path / "logs").exists()     # no new folder left behind
    assert "it/s" not in r.stderr                                      # no training bar was started


@pytest.mark.parametrize("lr", ["__import__('os').system('echo hi')", "[0.1, 'a']", "[]", "[0.1]*-1", "abc"])
def test_bad_lr_is_rejected(tmp_path, lr, capsys):
    args = ["--dataset", "demo", "--root_dir", str(tmp_path / "d"), "--lr", lr]
    r = run_script("main.py", args) if lr == "abc" else call(main.main, args, capsys)
    assert_one_line_error(r, "--lr")
    assert not (tmp_path / "d").exists()


def test_unwritable_checkpoint_folder(tmp_path):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=1, D=16)
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run_script("main.py", data_args(ds, tmp_path, model_path=blocker / "ckpts", **TRAIN))
    assert_one_line_error(r, "checkpoint folder", str(blocker / "ckpts"))


def test_run_folders_remove_only_the_new_empty_folders_of_a_failed_run(tmp_path):
    from utils import run_folders
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        with run_folders((tmp_path / "new" / "deep", "output"), (tmp_path / "kept" / "sub", "log"),
                         (tmp_path / "cache", "feature cache")):
            (tmp_path / "cache" / "features.npy").write_bytes(b"")     # a file by then: its folder is kept
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists() and not (tmp_path / "kept" / "sub").exists()
    assert (tmp_path / "kept").is_dir() and (tmp_path / "cache" / "features.npy").is_file()
    with run_folders((tmp_path / "done", "output")):          # a run that ends well keeps its folder
        pass
    assert (tmp_path / "done").is_dir()


def test_checkpoint_errors(tmp_path, trained, capsys):
    """The first as a real command line, the others in this process as the command line runs them."""
    ds, run_dir, _ = trained
    not_ckpt = tmp_path / "notes.pkl"
    not_ckpt.write_text("not a checkpoint")
    r = run_script("infer.py", data_args(ds, tmp_path, model_path=not_ckpt, output_dir=tmp_path / "o1"))
    assert_one_line_error(r, "notes.pkl", "not a readable PyTorch checkpoint")

    r = call(infer.main, data_args(ds, tmp_path, model_path=tmp_path / "absent.pkl", output_dir=tmp_path / "o"),
             capsys)
    assert_one_line_error(r, "absent.pkl", "does not exist")

    # a bare state dict of another feature width
    record = torch.load(run_dir / "ckpts" / "xd_best_7.pkl", weights_only=True)
    bare = tmp_path / "bare.pkl"
    torch.save(record["state_dict"], bare)
    r = call(infer.main, data_args(ds, tmp_path, model_path=bare, output_dir=tmp_path / "o2",
                                   len_feature=ds["D"] * 2), capsys)
    assert_one_line_error(r, "bare.pkl", "embedding.conv_1.0.weight", "shape")
    assert not (tmp_path / "o2" / "metrics.json").exists()

    # a pickle that would run code is refused by weights_only loading
    evil = tmp_path / "evil.pkl"
    torch.save({"x": shutil.rmtree}, evil)
    r = call(infer.main, data_args(ds, tmp_path, model_path=evil, output_dir=tmp_path / "o3"), capsys)
    assert_one_line_error(r, "evil.pkl")


# what a training or evaluation command's --help must not load: PyAV, the video/live/review packages and
# the commands that own them (training never loads PyAV)
NOT_LOADED = ("av", "video", "live", "review", "extract", "stream", "report", "i3d", "i3d_backends", "selenium")


@pytest.mark.parametrize("script", ["main.py", "infer.py", "compare.py", "dataset.py"])
def test_help_loads_no_video_live_or_review_code(script):
    """`python <script> --help` in a fresh interpreter, as a user runs it: the modules it loaded, read
    from sys.modules once --help has been printed, hold none of NOT_LOADED."""
    probe = ("import runpy, sys\n"
             f"sys.argv = [{script!r}, '--help']\n"
             "try:\n"
             f"    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    assert e.code in (0, None), e.code\n"
             "print('MODULES', ' '.join(sorted(sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.rsplit("MODULES ", 1)[1].split())
    assert "torch" in loaded and "usage:" in r.stdout       # it did run the command's parser
    assert not {m.split(".")[0] for m in loaded} & set(NOT_LOADED)


def test_i3d_amp_is_cuda_only_in_infer():
    """infer.py's --i3d_amp (I3D's float16, with --video) is a one-line error without CUDA, like --amp."""
    from options import check_accelerator_flags, parse_infer_args
    from utils import InputError
    args = parse_infer_args(["--model_path", "m.pkl", "--video", "v.mp4", "--i3d_amp"])
    with pytest.raises(InputError, match="--i3d_amp needs a CUDA device"):
        check_accelerator_flags(args, torch.device("cpu"))


def test_run_config_is_json_with_one_line_per_flag(tmp_path):
    """The config file beside the checkpoints is json.dumps's, indented, each flag's value on its line
    (a schedule of thousands of steps too), and reads back as the record."""
    from main import run_config_text
    record = dict(git_commit=None, given=["lr"], args={"lr": [0.0001] * 3000, "name": 'a "@0@" b', "seed": 2022})
    text = run_config_text(record)
    assert json.loads(text) == record
    lines = text.splitlines()
    assert len(lines) == 9 and lines[4].startswith('    "lr": [0.0001, ') and lines[5] == '    "name": "a \\"@0@\\" b",'


@pytest.mark.parametrize("fps", ["10", "25"])
def test_infer_video_refuses_fps(tmp_path, capsys, fps):
    """--fps is the source videos' frame rate, which --video reads from the frames' own timestamps: giving
    it is a one-line error that points to --resample_fps, before the checkpoint or any video is read (both
    are missing here) and before any folder is made."""
    r = call(infer.main, ["--model_path", str(tmp_path / "missing.pkl"), "--video", str(tmp_path / "clip.mp4"),
                          "--fps", fps, "--output_dir", str(tmp_path / "out")], capsys)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: --fps with --video") and "--resample_fps" in r.stderr
    assert not (tmp_path / "out").exists()
