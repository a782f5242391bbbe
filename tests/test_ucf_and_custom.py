"""UCF-Crime and custom datasets end to end on small synthetic feature folders: make-list, make-gt,
training through main.py and evaluation through infer.py; the feature layouts, label columns,
annotation formats and ground-truth rule; and a one-line error for every inconsistency."""
import json

import numpy as np
import pytest

import dataset
import infer
import main
from conftest import run_script
from dataset import DATASETS, TrainItems
from core.features import load_video
from helpers import UCF_D, call, dataset_cli, write_ucf
from core.lists import annotated_gt, make_lists, read_annotations, read_list
from options import dataset_info, parse_main_args
from utils import InputError

D = UCF_D
FAST = ["--len_feature", str(D), "--num_segments", "16", "--lr", "[0.0005]*4", "--plot_freq", "2",
        "--num_workers", "0", "--device", "cpu"]


def write_custom(root, n=(6, 3), Dc=24, seed=1):
    """A custom single-crop folder: train/<video>.npy and test/<video>.npy, (T, Dc), names that carry no
    label, n = (train, test) videos of each class, interleaved; a CSV list per split (`path,label` with
    a header) and `video,start,end` annotations."""
    rng = np.random.default_rng(seed)
    direction = (rng.random(Dc) < 0.25).astype(np.float32)
    gt, ann = [], ["video,start,end"]
    lists = {}
    for split, n_each in (("train", n[0]), ("test", n[1])):
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = ["path,label"]
        for i in range(2 * n_each):
            abnormal = i % 2 == 0
            name = f"clip{split}{i:02d}"
            T = int(rng.integers(10, 25))
            x = rng.normal(0.5, 0.2, (T, Dc)).astype(np.float32)
            g = np.zeros(T * 16, np.uint8)
            if abnormal:
                a = int(rng.integers(0, T // 2))
                x[a:a + T // 3] += 2.0 * direction
                g[a * 16:(a + T // 3) * 16] = 1
                if split == "test":
                    ann.append(f"{name},{a * 16},{(a + T // 3) * 16}")
            np.save(root / split / f"{name}.npy", x)
            lines.append(f"{split}/{name}.npy,{int(abnormal)}")
            if split == "test":
                gt.append(g)
        lists[split] = root / f"{split}.csv"
        lists[split].write_text("\n".join(lines) + "\n")
    (root / "annotations.csv").write_text("\n".join(ann) + "\n")
    return dict(root=root, train_list=lists["train"], test_list=lists["test"], ann=root / "annotations.csv",
                gt=np.concatenate(gt), D=Dc)


def outputs(tmp_path):
    return ["--model_path", str(tmp_path / "ckpts"), "--log_path", str(tmp_path / "logs")]


def last_log(tmp_path, name):
    return [json.loads(line) for line in (tmp_path / "logs" / name).read_text().splitlines()]


def test_ucf_ten_crop_make_list_make_gt_train_and_infer(tmp_path, capsys):
    ds = write_ucf(tmp_path / "ucf")
    lists = tmp_path / "list"
    r = call(dataset_cli, ["make-list", "--dataset", "ucf", "--root_dir", str(ds["root"]),
                                  "--test_videos", str(ds["ann"]), "--list_dir", str(lists)], capsys)
    assert r.returncode == 0, r.stderr
    assert "ucf_train.list: 4 abnormal + 4 normal videos, 80 files" in r.stdout
    test_lines = (lists / "ucf_test.list").read_text().split()
    assert len(test_lines) == 40 and test_lines[0] == "Abuse/Abusetest000_x264__0.npy"
    info = DATASETS["ucf"]
    test = read_list(str(lists / "ucf_test.list"), str(ds["root"]), info)
    assert [v.normal for v in test] == [False, False, True, True]           # abnormal first
    assert {v.name for v in test} == set(ds["test"])

    for ann in ("ann", "ann_urdmu"):                                        # both UCF formats
        out = tmp_path / f"gt_{ann}.npy"
        r = call(dataset_cli, ["make-gt", "--dataset", "ucf", "--root_dir", str(ds["root"]), "--test_list",
                               str(lists / "ucf_test.list"), "--annotations", str(ds[ann]), "--out", str(out)], capsys)
        assert r.returncode == 0, r.stderr
        assert "are cut there" in r.stderr                                 # reported, not silent
        order = [ds["test"].index(v.name) for v in test]
        starts = np.cumsum([0] + [ds["features"][n].shape[1] * 16 for n in ds["test"]])
        expected = np.concatenate([ds["gt"][starts[i]:starts[i + 1]] for i in order])
        np.testing.assert_array_equal(np.load(out), expected)

    data = ["--dataset", "ucf", "--root_dir", str(ds["root"]), "--train_list", str(lists / "ucf_train.list"),
            "--test_list", str(lists / "ucf_test.list")]
    r = call(main.main, data + ["--gt", str(tmp_path / "gt_ann.npy"), "--batch_size", "8"] + FAST
                   + outputs(tmp_path), capsys)
    assert r.returncode == 0, r.stderr
    assert "40 normal + 40 abnormal training items" in r.stdout              # one item per crop
    log = last_log(tmp_path, "ucf_2022.jsonl")
    assert [rec["step"] for rec in log] == [2, 4] and all("AUC_sub" in rec for rec in log)
    ckpt = tmp_path / "ckpts" / "ucf_best_2022.pkl"
    best = max(log, key=lambda rec: rec["AUC"])                             # UCF-Crime's runs keep the best AUC

    # infer.py builds the same ground truth on the fly from the annotations
    r = call(infer.main, data + ["--annotations", str(ds["ann"]), "--model_path", str(ckpt), "--output_dir",
                                       str(tmp_path / "out"), "--num_workers", "0", "--device", "cpu"], capsys)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["AUC"] == pytest.approx(best["AUC"], abs=1e-6)
    assert metrics["AP"] == pytest.approx(best["AP"], abs=1e-6)


def test_ucf_defaults_come_from_the_table():
    args = parse_main_args(["--dataset", "ucf"])
    assert (args.ratio_sample, args.ratio_batch) == (0.1, 0.2)
    assert (args.train_list, args.test_list, args.gt) == ("list/ucf_train.list", "list/ucf_test.list",
                                                          "list/ucf_gt.npy")
    args = parse_main_args(["--dataset", "ucf", "--ratio_sample", "0.3", "--annotations", "a.txt"])
    assert args.ratio_sample == 0.3 and args.gt is None
    assert dataset_info(args).crops == 10 and dataset_info(args).normal_marker == "Normal"


def test_one_file_per_video_lists_itself_and_trains_on_all_crops(tmp_path, capsys, monkeypatch):
    """(T, 10, D) files, lists made by main.py itself (none given), --train_crops all, gt from annotations."""
    ds = write_ucf(tmp_path / "ucf", layout="TND")
    monkeypatch.chdir(tmp_path)                 # the default lists are list/ucf_*.list under the working folder
    r = call(main.main, ["--dataset", "ucf", "--root_dir", str(ds["root"]), "--test_videos", str(ds["ann"]),
                               "--annotations", str(ds["ann_urdmu"]), "--train_crops", "all", "--batch_size", "4"]
                   + FAST + outputs(tmp_path), capsys)
    assert r.returncode == 0, r.stderr
    assert "missing: making the lists" in r.stdout
    assert (tmp_path / "list" / "ucf_train.list").read_text().split()[0] == "Abuse/Abusetrain000_x264_i3d.npy"
    assert "4 normal + 4 abnormal training items" in r.stdout               # one item per video
    assert len(last_log(tmp_path, "ucf_2022.jsonl")) == 2


@pytest.mark.parametrize("layout", ["TND", "NTD"])
def test_one_file_layouts_load_like_crop_files(tmp_path, layout):
    crops_ds = write_ucf(tmp_path / "a", layout="crops", n=(1, 1, 1, 1))
    file_ds = write_ucf(tmp_path / "b", layout=layout, n=(1, 1, 1, 1))
    info = DATASETS["ucf"]
    for ds in (crops_ds, file_ds):
        make_lists(str(ds["root"]), "ucf", info, str(ds["root"] / "list"), test_videos=str(ds["ann"]))
    a = read_list(str(crops_ds["root"] / "list" / "ucf_train.list"), str(crops_ds["root"]), info)
    b = read_list(str(file_ds["root"] / "list" / "ucf_train.list"), str(file_ds["root"]), info)
    for va, vb in zip(a, b):
        np.testing.assert_array_equal(load_video(va, D), load_video(vb, D))
        assert load_video(vb, D).shape == crops_ds["features"][va.name].shape     # (N, T, D)
    each, whole = TrainItems(b, 8, D), TrainItems(b, 8, D, all_crops=True)
    assert each.data.shape == (20, 8, D) and whole.data.shape == (2, 10, 8, D)
    np.testing.assert_array_equal(each.data.reshape(2, 10, 8, D), whole.data)


def test_custom_single_crop_csv_labels_train_and_infer(tmp_path, capsys):
    ds = write_custom(tmp_path / "custom")
    data = ["--dataset", "custom", "--root_dir", str(ds["root"]), "--train_list", str(ds["train_list"]),
            "--test_list", str(ds["test_list"]), "--len_feature", str(ds["D"])]
    r = call(main.main, data + ["--annotations", str(ds["ann"]), "--batch_size", "4"] + FAST[2:]
                   + outputs(tmp_path), capsys)
    assert r.returncode == 0, r.stderr
    assert "6 normal + 6 abnormal training items" in r.stdout
    log = last_log(tmp_path, "custom_2022.jsonl")
    best = max(log, key=lambda rec: rec["AP"])
    assert "AUC_sub" in best

    np.save(tmp_path / "gt.npy", ds["gt"])
    r = call(infer.main, data + ["--gt", str(tmp_path / "gt.npy"), "--model_path",
                                       str(tmp_path / "ckpts" / "custom_best_2022.pkl"), "--output_dir",
                                       str(tmp_path / "out"), "--num_workers", "0", "--device", "cpu"], capsys)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("AUC", "AP", "AUC_sub", "AP_sub"):
        assert metrics[key] == pytest.approx(best[key], abs=1e-6)


def test_label_column_sets_labels_and_the_sub_metric_mask(tmp_path):
    ds = write_custom(tmp_path / "custom")
    info = DATASETS["custom"]
    test = read_list(str(ds["test_list"]), str(ds["root"]), info)
    labels = [line.split(",")[1] == "1" for line in ds["test_list"].read_text().split()[1:]]
    assert [not v.normal for v in test] == labels
    test_set = dataset.TestSet(test, ds["D"], annotations=str(ds["ann"]))
    np.testing.assert_array_equal(test_set.gt, ds["gt"])
    expected_mask = np.repeat(labels, test_set.lengths * 16)
    np.testing.assert_array_equal(test_set.abnormal_frames, expected_mask)
    # the whitespace form `path label` reads the same
    spaced = tmp_path / "spaced.list"
    spaced.write_text("\n".join(line.replace(",", " ") for line in ds["test_list"].read_text().split()[1:]) + "\n")
    assert [v.normal for v in read_list(str(spaced), str(ds["root"]), info)] == [v.normal for v in test]


def test_custom_make_list_from_labels_file_or_name_rule(tmp_path):
    ds = write_custom(tmp_path / "custom")
    rows = [line.split(",") for f in ("train_list", "test_list") for line in ds[f].read_text().split()[1:]]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"{p.split('/')[1][:-4]} {label}" for p, label in rows) + "\n")
    train, test, _ = make_lists(str(ds["root"]), "custom", DATASETS["custom"], str(tmp_path / "l1"),
                                labels=str(labels))
    got = [line.split() for line in open(train)] + [line.split() for line in open(test)]
    assert sorted(got) == sorted([list(r) for r in rows])                  # split by train/ and test/ folders
    assert [g[1] for g in got[:6]] == ["1"] * 6                              # abnormal first
    # a name rule instead: here every clip whose name contains "n0" (cliptrain00..09) is normal
    args = parse_main_args(["--dataset", "custom", "--normal_marker", "n0"])
    train, test, _ = make_lists(str(ds["root"]), "custom", dataset_info(args), str(tmp_path / "l2"), label_column=True)
    labelled = [line.split() for f in (train, test) for line in open(f)]
    assert len(labelled) == 18 and all((label == "0") == ("n0" in path) for path, label in labelled)


def test_custom_crop_count_is_inferred_and_checked(tmp_path):
    (tmp_path / "list.txt").write_text("a__0.npy 1\na__1.npy 1\na__2.npy 1\nb__0.npy 0\nb__1.npy 0\nb__2.npy 0\n")
    videos = read_list(str(tmp_path / "list.txt"), str(tmp_path), DATASETS["custom"])
    assert [len(v.paths) for v in videos] == [3, 3] and [v.normal for v in videos] == [False, True]
    (tmp_path / "list.txt").write_text("a__0.npy 1\na__1.npy 1\na__2.npy 1\nb__0.npy 0\nb__2.npy 0\n")
    with pytest.raises(InputError, match=r"video b is missing crop\(s\) \[1\]"):
        read_list(str(tmp_path / "list.txt"), str(tmp_path), DATASETS["custom"])


def test_annotation_formats_read_the_same(tmp_path):
    xd = tmp_path / "xd.txt"
    xd.write_text("v1.mp4 10 20 30 40\nv2 5 9\n")
    ucf = tmp_path / "ucf.txt"
    ucf.write_text("v1  Abuse  10  20  30  40  \nv2.mp4  Arson  5  9  -1  -1\nv3  Normal  -1  -1  -1  -1\n")
    urdmu = tmp_path / "urdmu.txt"
    urdmu.write_text("Abuse/v1.mp4 500 Abuse 10 20 30 40\nArson/v2.mp4 99 Arson 5 9 -1 -1\n")
    custom = tmp_path / "custom.csv"
    custom.write_text("video,start,end\nv1,10,20\nv1,30,40\nv2,5,9\n")
    expected = {"v1": [(10, 20), (30, 40)], "v2": [(5, 9)]}
    for f in (xd, urdmu, custom):
        assert read_annotations(str(f)) == expected
    assert read_annotations(str(ucf)) == {**expected, "v3": []}
    bad = tmp_path / "bad.txt"
    bad.write_text("v1 10 20 30\n")
    with pytest.raises(InputError, match="line 1"):
        read_annotations(str(bad))


def test_annotated_gt_reports_what_it_cannot_use(tmp_path):
    from core.features import Video
    videos = [Video("a", [], False), Video("b", [], False), Video("n", [], True)]
    gt, notes = annotated_gt(videos, [2, 2, 2], {"a": [(0, 10), (20, 40), (50, 60)], "n": []}, "ann.txt")
    np.testing.assert_array_equal(gt[:32], [1] * 10 + [0] * 10 + [1] * 12)
    assert gt[32:].sum() == 0
    text = "\n".join(notes)
    assert "1 abnormal test videos have no annotated interval" in text and "b" in text
    assert "1 annotated intervals end after" in text and "1 annotated intervals start after" in text
    with pytest.raises(InputError, match="names video x, which is not in the test list"):
        annotated_gt(videos, [2, 2, 2], {"x": [(0, 5)]}, "ann.txt")


# ---------------------------------------------------------------- one-line errors before training

def one_line_error(r, *fragments):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def ucf_lists(tmp_path):
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 1, 1))
    make_lists(str(ds["root"]), "ucf", DATASETS["ucf"], str(tmp_path / "list"), test_videos=str(ds["ann"]))
    np.save(tmp_path / "gt.npy", ds["gt"][::-1].copy())       # right length, both classes
    return ds, tmp_path / "list" / "ucf_train.list", tmp_path / "list" / "ucf_test.list"


def run_main(tmp_path, ds, train, test, capsys, *extra):
    return call(main.main, ["--dataset", "ucf", "--root_dir", str(ds["root"]), "--train_list", str(train),
                            "--test_list", str(test), *extra, "--batch_size", "2"] + FAST + outputs(tmp_path), capsys)


def edited(path, tmp_path, edit):
    lines = path.read_text().splitlines()
    out = tmp_path / f"edited_{path.name}"
    out.write_text("\n".join(edit(lines)) + "\n")
    return out


@pytest.mark.parametrize("case", ["missing crop", "duplicate video", "mixed widths", "in both lists",
                                  "unknown annotation", "gt length"])
def test_main_reports_each_inconsistency_in_one_line(tmp_path, ucf_lists, case, capsys):
    ds, train, test = ucf_lists
    gt = ["--gt", str(tmp_path / "gt.npy")]
    if case == "missing crop":
        train = edited(train, tmp_path, lambda lines: lines[:3] + lines[4:])
        expect = ["list", "video Abusetrain000_x264 is missing crop(s) [3]"]
    elif case == "duplicate video":
        train = edited(train, tmp_path, lambda lines: lines + lines[:10])
        expect = ["video Abusetrain000_x264 appears more than once", "line 1 and line 41"]
    elif case == "mixed widths":
        np.save(ds["root"] / "Abuse" / "Abusetrain000_x264__7.npy", np.zeros((15, D + 1), np.float32))
        expect = ["Abusetrain000_x264__7.npy has feature width 33; expected 32"]
    elif case == "in both lists":
        test = edited(test, tmp_path, lambda lines: lines + train.read_text().splitlines()[:10])
        expect = ["video Abusetrain000_x264 is in both the training list"]
    elif case == "unknown annotation":
        ann = tmp_path / "ann.txt"
        ann.write_text(ds["ann"].read_text() + "Ghost001_x264.mp4  Abuse  1  20  -1  -1\n")
        gt = ["--annotations", str(ann)]
        expect = ["ann.txt names video Ghost001_x264, which is not in the test list"]
    else:
        np.save(tmp_path / "gt.npy", ds["gt"][:-16])
        expect = ["gt.npy has", "frames, but the test features give"]
    r = run_main(tmp_path, ds, train, test, capsys, *gt)
    one_line_error(r, *expect)
    assert "data:" not in r.stdout and not (tmp_path / "ckpts" / "ucf_best_2022.pkl").exists()


@pytest.mark.parametrize("case", ["missing crop", "duplicate video", "mixed widths", "unknown test video"])
def test_make_list_reports_each_inconsistency_in_one_line(tmp_path, case, capsys):
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 1, 1))
    root = ds["root"]
    test_videos = ds["ann"]
    if case == "missing crop":
        (root / "Arson" / "Arsontrain001_x264__4.npy").unlink()
        expect = ["video Arsontrain001_x264 is missing crop(s) [4]"]
    elif case == "duplicate video":
        (root / "Other").mkdir()
        np.save(root / "Other" / "Arsontrain001_x264__4.npy", np.zeros((15, D), np.float32))
        expect = ["video Arsontrain001_x264 appears more than once", "Arson/Arsontrain001_x264__4.npy",
                  "Other/Arsontrain001_x264__4.npy"]
    elif case == "mixed widths":
        T = ds["features"]["Arsontrain001_x264"].shape[1]
        np.save(root / "Arson" / "Arsontrain001_x264__4.npy", np.zeros((T, 16), np.float32))
        expect = ["have different feature widths", "Arsontrain001_x264__4.npy"]
    else:
        test_videos = tmp_path / "test_videos.txt"
        test_videos.write_text(ds["ann"].read_text() + "Ghost001_x264.mp4\n")
        expect = ["test video Ghost001_x264 named in", "has no feature files"]
    r = call(dataset_cli, ["make-list", "--dataset", "ucf", "--root_dir", str(root), "--test_videos",
                                  str(test_videos), "--list_dir", str(tmp_path / "list")], capsys)
    one_line_error(r, *expect)
    assert not (tmp_path / "list").exists()


def test_make_list_without_a_split_asks_for_test_videos(tmp_path, capsys):
    ds = write_ucf(tmp_path / "ucf", n=(1, 1, 1, 1))
    r = call(dataset_cli, ["make-list", "--dataset", "ucf", "--root_dir", str(ds["root"]), "--list_dir",
                                  str(tmp_path / "list")], capsys)
    one_line_error(r, "give --test_videos")


def test_custom_list_without_labels_or_rule_is_an_error(tmp_path):
    (tmp_path / "l.list").write_text("a.npy\nb.npy\n")
    with pytest.raises(InputError, match="no label.*--normal_marker"):
        read_list(str(tmp_path / "l.list"), str(tmp_path), DATASETS["custom"])


def test_a_bad_input_exits_nonzero_without_traceback_from_the_command_line(tmp_path):
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 1, 1))
    (ds["root"] / "Abuse" / "Abusetrain000_x264__3.npy").unlink()
    r = run_script("main.py", ["--dataset", "ucf", "--root_dir", str(ds["root"]), "--test_videos", str(ds["ann"]),
                               "--annotations", str(ds["ann"]), "--batch_size", "2"] + FAST + outputs(tmp_path),
                   cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"error: feature folder {ds['root']}: video Abusetrain000_x264 is "
                                                 f"missing crop(s) [3] of its 10 (Abuse/Abusetrain000_x264__0.npy)")


def test_unreadable_text_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "binary.list"
    binary.write_bytes(b"\x80\x81\xfe\n")
    with pytest.raises(InputError, match="binary.list is not a readable text file"):
        read_list(str(binary), str(tmp_path), DATASETS["xd"])
    with pytest.raises(InputError, match="annotation file .*binary.list is not a readable text file"):
        read_annotations(str(binary))


def test_explicit_lists_are_never_made_and_gt_excludes_annotations(tmp_path, capsys):
    ds = write_ucf(tmp_path / "ucf", n=(1, 1, 1, 1))
    missing = tmp_path / "mine_train.list"
    r = call(main.main, ["--dataset", "ucf", "--root_dir", str(ds["root"]), "--train_list", str(missing),
                         "--test_list", str(tmp_path / "mine_test.list")] + FAST + outputs(tmp_path), capsys)
    one_line_error(r, f"list file {missing} does not exist")
    with pytest.raises(SystemExit):
        parse_main_args(["--dataset", "ucf", "--gt", "g.npy", "--annotations", "a.txt"])
    assert "give --gt or --annotations, not both" in capsys.readouterr().err
