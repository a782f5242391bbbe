"""From video files to anomaly scores: extracted features train through main.py and score through
infer.py (--features and --video), each command's main run in this process as its command line runs it
(tests/test_readme.py runs the same path as real commands)."""
import csv
import json

import numpy as np

import infer
import main
from conftest import ROOT, shared_path
from helpers import GridProbe, call, dataset_cli, write_video
from video.extraction import extract_videos


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_extracted_features_train_and_score(tmp_path, capsys):
    root = tmp_path / "data"
    videos = {"train": [f"n{i}_label_A" for i in range(3)] + [f"a{i}_label_B1-0-0" for i in range(3)],
              "test": ["tn_label_A", "ta_label_B1-0-0"]}
    for split, names in videos.items():
        (tmp_path / split).mkdir()
        paths = [write_video(tmp_path / split / f"{n}.mp4", 48) for n in names]   # 3 snippets each
        assert extract_videos(paths, GridProbe(), root / split, crops=5, progress=False) == {}
    assert sorted(p.name for p in (root / "test").iterdir())[:3] == ["ta_label_B1-0-0.json", "ta_label_B1-0-0__0.npy",
                                                                  "ta_label_B1-0-0__1.npy"]
    assert np.load(root / "test" / "ta_label_B1-0-0__0.npy").shape == (3, 1024)
    annotations = tmp_path / "annotations.txt"
    annotations.write_text("ta_label_B1-0-0 16 48\n")
    lists = tmp_path / "lists"
    r = call(dataset_cli, ["make-list", "--dataset", "xd", "--root_dir", str(root), "--list_dir", str(lists)], capsys)
    assert r.returncode == 0, r.stderr
    common = ["--dataset", "xd", "--root_dir", str(root), "--train_list", str(lists / "xd_train.list"),
              "--test_list", str(lists / "xd_test.list"), "--annotations", str(annotations), "--device", "cpu",
              "--num_workers", "0"]
    r = call(main.main, common + ["--lr", "[0.001]*4", "--batch_size", "4", "--num_segments", "3",
                                  "--plot_freq", "2", "--model_path", str(tmp_path / "ckpts"),
                                  "--log_path", str(tmp_path / "logs")], capsys)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "ckpts" / "xd_best_2022.pkl"
    assert ckpt.exists()

    out = tmp_path / "out"
    r = call(infer.main, ["--model_path", str(ckpt), "--features", str(root / "test"), "--fps", "25",
                          "--output_dir", str(out), "--device", "cpu"], capsys)
    assert r.returncode == 0, r.stderr
    rows = read_csv(out / "scores.csv")
    assert {row["video"] for row in rows} == set(videos["test"])
    assert len(rows) == 6 and rows[1]["start_s"] == "0.640"               # snippet 1 starts at frame 16


def test_infer_video_extracts_and_scores(tmp_path, capsys):
    """infer.py --video with the I3D fixture weights: features cached, scored, times from the video's rate."""
    weights = shared_path("fixtures", "i3d", "i3d_rgb_state_dict.pt")
    video = write_video(tmp_path / "clip.mp4", 20, rate=10)                  # one 16-frame snippet at 10 fps
    ckpt = shared_path("fixtures", "parity", "state_dict.pkl")               # a release checkpoint (1024-d)
    out = tmp_path / "out"
    args = ["--model_path", str(ckpt), "--video", str(video), "--i3d_weights", str(weights), "--threshold", "1",
            "--output_dir", str(out), "--device", "cpu", "--crops", "1"]
    r = call(infer.main, args, capsys)
    assert r.returncode == 0, r.stderr
    cached = out / "features" / "clip__0.npy"
    assert np.load(cached).shape == (1, 1024)
    rows = read_csv(out / "scores.csv")
    assert [(row["video"], row["end_s"]) for row in rows] == [("clip", "1.600")]   # 16 frames at 10 fps
    assert json.loads((out / "metrics.json").read_text())["videos"] == 1
    # a second run into the same folder is refused without --overwrite; with it, it reuses the cached
    # features instead of extracting again
    stamp = cached.stat().st_mtime_ns
    r = call(infer.main, args, capsys)
    assert r.returncode == 2 and "already holds a run's outputs" in r.stderr
    r = call(infer.main, args + ["--overwrite"], capsys)
    assert r.returncode == 0, r.stderr
    assert cached.stat().st_mtime_ns == stamp and "skipped=1" in r.stderr


def test_infer_video_names_a_missing_checkpoint(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", 20)
    r = call(infer.main, ["--model_path", str(ROOT / "missing.pkl"), "--video", str(video)], capsys)
    assert r.returncode == 2 and "missing.pkl" in r.stderr
