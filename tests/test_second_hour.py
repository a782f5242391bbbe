"""What a new user still tripped on in the second hour (issue N2): a failed run that rewrote a good
run's record, runs that replaced another's files, Ctrl-C that did not say how to resume, degenerate
features that went through silently, paths that do not exist, and crop counts that blamed the list."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import extract
import infer
import main
from conftest import ROOT, data_args, write_xd_dataset
from core.features import Video, degenerate, warn_degenerate
from helpers import GridProbe, call
from utils import InputError
from video.extraction import warn_if_degenerate

D = 32


def small_run(ds, tmp, **extra):
    return data_args(ds, tmp, **{**dict(model_path=tmp / "c", log_path=tmp / "l", lr="[0.001]*2", batch_size=2,
                                        num_segments=8, plot_freq=2), **extra})


def tree(folder):
    """{relative path: (bytes, mtime_ns)} of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("earlier")
    ds = write_xd_dataset(tmp / "data", n_train=2, n_test=1, D=D)
    main.main(small_run(ds, tmp))
    return ds, tmp


def test_a_run_that_fails_its_checks_changes_no_file_of_an_earlier_run(earlier_run):
    ds, tmp = earlier_run
    before = {**tree(tmp / "c"), **tree(tmp / "l")}
    args = small_run(ds, tmp)
    typo = args[:args.index("--root_dir") + 1] + [str(tmp / "data_typo")] + args[args.index("--root_dir") + 2:]
    for argv in (typo + ["--overwrite"], small_run(ds, tmp, batch_size=99) + ["--overwrite"]):
        with pytest.raises(InputError):
            main.main(argv)
        assert {**tree(tmp / "c"), **tree(tmp / "l")} == before


def test_the_run_record_is_inside_the_checkpoint_it_describes(earlier_run):
    import torch
    ds, tmp = earlier_run
    config = json.loads((tmp / "c" / "xd_config_2022.json").read_text())
    for name in ("xd_best_2022.pkl", "xd_last_2022.pkl"):
        run = torch.load(tmp / "c" / name, weights_only=True)["meta"]["run"]
        assert run["args"] == config["args"] and run["git_commit"] == config["git_commit"]
    assert config["args"]["root_dir"] == str(ds["root"])


def test_a_new_run_refuses_to_replace_another_runs_files_without_overwrite(earlier_run, capsys):
    ds, tmp = earlier_run
    before = {**tree(tmp / "c"), **tree(tmp / "l")}
    with pytest.raises(InputError, match=r"already holds a run's outputs \(xd_best_2022.pkl, xd_last_2022.pkl, "
                                         r"xd_2022.jsonl, xd_config_2022.json, xd_2022.png\): give --overwrite .* "
                                         r"--resume .*xd_last_2022.pkl"):
        main.main(small_run(ds, tmp))
    assert {**tree(tmp / "c"), **tree(tmp / "l")} == before


def test_overwrite_replaces_every_file_of_the_earlier_run(tmp_path):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=1, D=D)
    main.main(small_run(ds, tmp_path))
    assert (tmp_path / "l" / "xd_2022.png").exists()
    main.main(small_run(ds, tmp_path, lr="[0.001]*4", stop_after=2) + ["--overwrite"])
    # the earlier run's best checkpoint and plot are gone: none of them is taken for this run's
    assert not (tmp_path / "l" / "xd_2022.png").exists()
    assert [json.loads(x)["step"] for x in (tmp_path / "l" / "xd_2022.jsonl").read_text().splitlines()] == [2]
    assert json.loads((tmp_path / "c" / "xd_config_2022.json").read_text())["args"]["lr"] == [0.001] * 4


def test_ctrl_c_in_training_saves_the_step_and_says_how_to_resume(tmp_path):
    import re
    import threading
    import time
    import torch
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=1, D=D)
    argv = small_run(ds, tmp_path, lr="[0.001]*100000", plot_freq=50000)
    p = subprocess.Popen([sys.executable, "-u", str(ROOT / "main.py"), *argv], cwd=tmp_path, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: p.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not re.search(r" [1-9]\d*/100000", "".join(err)):       # training has begun (tqdm's count)
        assert p.poll() is None and time.monotonic() < deadline, "".join(err)
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    reader.join(10)
    err = "".join(err)
    assert "Traceback" not in err
    last = tmp_path / "c" / "xd_last_2022.pkl"
    step = torch.load(last, weights_only=True)["step"]
    assert err.rstrip().splitlines()[-1] == (f"interrupted at step {step}; continue from step {step} with the same "
                                             f"command plus --resume {last}")
    # the line's command continues the run
    main.main(argv + ["--resume", str(last), "--stop_after", str(step + 1)])
    assert torch.load(last, weights_only=True)["step"] == step + 1


def test_degenerate_features_are_named_on_both_sides_of_the_bounds():
    rng = np.random.default_rng(0)
    real = np.abs(rng.normal(0.5, 0.4, (40, 1024))).astype(np.float32)        # norms ~20, clear spread
    assert degenerate(real) is None
    kinetics = ROOT.parent / "shared" / "fixtures" / "i3d_kinetics" / "reference.npz"
    if kinetics.exists():             # real I3D features (Kinetics weights, 4 snippets of one clip)
        assert degenerate(np.load(kinetics)["snippet_features"]) is None
    unit = real / np.linalg.norm(real, axis=1, keepdims=True)
    assert "median snippet norm is 1e-06" in degenerate(unit * 1e-6)          # a default-initialised I3D
    assert "median snippet norm is 0.009" in degenerate(unit * 0.009)
    assert degenerate(unit * 0.011) is None                                    # just above the bound
    constant = np.tile(real[:1], (40, 1)) + rng.normal(0, 1e-3, (40, 1024)).astype(np.float32)
    assert "nearly the same for every snippet" in degenerate(constant)
    assert degenerate(np.tile(real[:1], (40, 1)) + rng.normal(0, 0.04, (40, 1024)).astype(np.float32)) is None
    assert degenerate(real[:1]) is None                       # one snippet has no spread to judge


def test_main_and_extraction_warn_on_degenerate_features(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=1, D=D)
    main.main(small_run(ds, tmp_path))
    assert "degenerate" not in capsys.readouterr().err
    for f in (tmp_path / "data" / "train").glob("*.npy"):
        np.save(f, np.load(f) * 1e-6)
    main.main(small_run(ds, tmp_path) + ["--overwrite", "--cache_dir", "none"])
    err = capsys.readouterr().err
    assert f"warning: the training features in {ds['root']} look degenerate: their median snippet norm is" in err
    assert "default-initialised I3D" in err
    # extraction names the folder and the weights
    out = tmp_path / "feats"
    out.mkdir()
    np.save(out / "clip__0.npy", np.full((8, 1024), 1e-6, np.float32))
    from pathlib import Path
    assert warn_if_degenerate([Path("videos/clip.mp4")], out, 1, "w.pt")
    assert f"warning: the features in {out} (from --i3d_weights w.pt) look degenerate" in capsys.readouterr().err
    np.save(out / "clip__0.npy", np.random.default_rng(0).random((8, 1024), np.float32))
    assert warn_if_degenerate([Path("videos/clip.mp4")], out, 1, "w.pt") is None


@pytest.mark.parametrize("script, args", [
    ("extract.py", ["my_video/train", "--out", "x", "--i3d_weights", "w.pt"]),
    ("infer.py", ["--model_path", "m.pkl", "--video", "my_videos/nope.mp4", "--i3d_weights", "w.pt"]),
    ("infer.py", ["--model_path", "m.pkl", "--features", "nope/"]),
    ("stream.py", ["nope.mp4", "--model_path", "m.pkl", "--i3d_weights", "w.pt"]),
])
def test_a_path_that_does_not_exist_is_one_line_before_any_loading(tmp_path, monkeypatch, capsys, script, args):
    """Each command's main in this process, as its command line runs it (extract.py and stream.py return
    their exit status)."""
    import stream
    command = {"extract.py": extract.main, "infer.py": infer.main, "stream.py": stream.main}[script]
    monkeypatch.chdir(tmp_path)
    r = call(lambda argv: sys.exit(command(argv)), args, capsys)   # m.pkl and w.pt do not exist either: not reached
    path = next(a for a in args if "nope" in a or "my_video" in a)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and f"{path} does not exist" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []             # nothing created


def test_ctrl_c_during_extraction_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("video.extraction.extract_videos", interrupted)
    monkeypatch.setattr(extract, "load_i3d", lambda *a, **k: GridProbe())    # a network for the backend to hold
    (tmp_path / "v.mp4").write_bytes(b"")
    (tmp_path / "w.pt").write_bytes(b"")
    assert extract.main([str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"), "--i3d_weights",
                         str(tmp_path / "w.pt"), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [         # the runtime line extract.py gives first, then the one line
        "extract.py: I3D on torch fp32 (cpu, picked by --backend auto)",
        "extract.py: interrupted; the same command continues where this one stopped (videos already extracted are "
        "reused)"]


def test_a_checkpoint_of_other_crops_says_both_counts(tmp_path):
    ds5 = write_xd_dataset(tmp_path / "d5", n_train=2, n_test=1, crops=5, D=D)
    main.main(small_run(ds5, tmp_path))
    ds1 = write_xd_dataset(tmp_path / "d1", n_train=2, n_test=1, crops=1, D=D)
    ckpt = tmp_path / "c" / "xd_best_2022.pkl"
    with pytest.raises(InputError, match=rf"checkpoint {ckpt} was trained on 5-crop features, but these have 1 "
                                         rf"crop\(s\) per video \(.*test.list: video .*, line 1\): give --crops 1"):
        infer.main(["--model_path", str(ckpt), "--root_dir", str(ds1["root"]), "--test_list", str(ds1["test_list"]),
                    "--gt", str(ds1["gt"]), "--device", "cpu", "--output_dir", str(tmp_path / "o")])
    # a --crops given on the command line keeps the plain message (the user chose the count)
    with pytest.raises(InputError, match=r"is missing crop\(s\) \[1, 2\] of its 3"):
        infer.main(["--model_path", str(ckpt), "--root_dir", str(ds1["root"]), "--test_list", str(ds1["test_list"]),
                    "--gt", str(ds1["gt"]), "--device", "cpu", "--crops", "3", "--output_dir", str(tmp_path / "o")])
    # with the count they have, they are scored; the settings recorded are those that made the scores
    common = ["--model_path", str(ckpt), "--root_dir", str(ds1["root"]), "--test_list", str(ds1["test_list"]),
              "--gt", str(ds1["gt"]), "--device", "cpu", "--crops", "1", "--output_dir", str(tmp_path / "o")]
    infer.main(common)
    infer.main(common + ["--overwrite"])
    settings = json.loads((tmp_path / "o" / "metrics.json").read_text())["settings"]
    assert settings["crops"] == 1 and "overwrite" not in settings and "output_dir" in settings


def test_compare_shows_no_spread_for_one_seed():
    import compare
    mean = np.array([91.5, 70.25, 80.0, 65.5])
    one = compare.markdown_table({"bnwvad": (mean, None)}, 1)
    assert one.splitlines()[2] == "| BN-WVAD | 91.50 | 70.25 | 80.00 | 65.50 |" and "±" not in one
    two = compare.markdown_table({"bnwvad": (mean, np.array([1.0, 2.0, 0.5, 0.25]))}, 2)
    assert two.splitlines()[2] == "| BN-WVAD | 91.50 ± 1.00 | 70.25 ± 2.00 | 80.00 ± 0.50 | 65.50 ± 0.25 |"
    runs = [dict(model="bnwvad", metrics=dict(zip(compare.METRICS, mean)))]
    assert compare.summary(runs, ["bnwvad"])["bnwvad"][1] is None


def test_the_fresh_install_check_says_in_the_summary_when_it_skips():
    """Asked for (BNWVAD_FRESH_INSTALL=1) but without a local torch wheel, tests/test_readme.py's install check skips: the run's summary says
    which claim went unchecked and why (docs/developing.md's test table says the same)."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "BNWVAD_TORCH_WHEELS": "",
           "BNWVAD_FRESH_INSTALL": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "tests/test_readme.py", "-k",
                        "first_block"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "NOT CHECKED  the README's first block installs and tests in a fresh virtual environment on a clone" \
        in r.stdout and "BNWVAD_TORCH_WHEELS" in r.stdout
    assert "BNWVAD_TORCH_WHEELS" in (ROOT / "docs" / "developing.md").read_text()
