"""Inputs in the forms users really have, each kind read right or refused in one line, never a silent
wrong answer: feature layouts from the field, text files from other editors, annotations that are
not what they seem, ground truth of another list order, caches that outlive their source, video as a
viewer sees it, and test sets at the edges."""
import csv
import json
import shutil
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

import dataset
import infer
from conftest import shared_path
from dataset import DATASETS, TestSet, ensure_lists
from core.features import Video, find_videos, load_video
from helpers import GridProbe, call, dataset_cli, write_ucf, write_video
from core.lists import load_gt, make_lists, read_annotations, read_list, write_gt
from model import BNWVAD
from options import dataset_info, parse_infer_args, parse_main_args
from utils import InputError, read_text_lines
from video.decode import Decoding
from video.extraction import extract_videos
from video.snippets import video_features

D = 32


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- 1. feature layouts from the field ----

def deepmil_copy(src, dst):
    """The same features in the DeepMIL layout: crop 0 as `<video>.npy`, crops 1..9 as `<video>__<k>.npy`."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.txt"))
    for p in dst.rglob("*__0.npy"):
        p.rename(p.with_name(p.name[:-len("__0.npy")] + ".npy"))


def test_suffixless_crop_zero_reads_as_the_same_videos_everywhere(tmp_path, capsys):
    """make-list, a list file and infer.py --features read the DeepMIL layout as crops 0..9, with the
    same videos and the same scores as the `__0`..`__9` naming."""
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 2, 2))
    deepmil_copy(ds["root"], tmp_path / "deepmil")
    info = DATASETS["ucf"]
    made = {}
    for name in ("ucf", "deepmil"):
        train, test, _ = make_lists(str(tmp_path / name), "ucf", info, str(tmp_path / f"l_{name}"),
                                    test_videos=str(ds["ann"]))
        made[name] = [read_list(p, str(tmp_path / name), info) for p in (train, test)]
    for ours, theirs in zip(*made.values()):
        assert [(v.name, v.normal, len(v.paths)) for v in ours] == [(v.name, v.normal, 10) for v in theirs]
        for a, b in zip(ours, theirs):
            assert b.paths[0].endswith(f"{b.name}.npy") and b.paths[1].endswith(f"{b.name}__1.npy")
            np.testing.assert_array_equal(load_video(a, D), load_video(b, D))
    model = BNWVAD(D)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    scores = {}
    for name in ("ucf", "deepmil"):
        out = tmp_path / f"out_{name}"
        infer.main(["--model_path", str(tmp_path / "bare.pt"), "--features", str(tmp_path / name), "--threshold", "1",
                    "--len_feature", str(D), "--device", "cpu", "--output_dir", str(out)])
        scores[name] = read_csv(out / "scores.csv")
    assert len(scores["ucf"]) == sum(x.shape[1] for x in ds["features"].values())
    assert scores["ucf"] == scores["deepmil"]


def test_suffixless_file_beside_crop_zero_is_the_same_crop_twice(tmp_path):
    for k in range(3):
        np.save(tmp_path / f"v__{k}.npy", np.zeros((4, D), np.float32))
    np.save(tmp_path / "v.npy", np.zeros((4, D), np.float32))
    with pytest.raises(InputError, match=r"video v appears more than once \(.*v.npy and .*v__0.npy\)"):
        find_videos([str(tmp_path)], D)


def test_a_lone_two_d_file_is_not_taken_for_all_ten_crops(tmp_path):
    """A list naming only `<video>.npy` (crop 0) of a 10-crop dataset is refused, not scored as 1 crop."""
    np.save(tmp_path / "Abuse001_x264.npy", np.zeros((4, D), np.float32))
    (tmp_path / "l.list").write_text("Abuse001_x264.npy\n")
    [video] = read_list(str(tmp_path / "l.list"), str(tmp_path), DATASETS["ucf"])
    with pytest.raises(InputError, match="video Abuse001_x264 has 1 crop .* but videos have 10 crops"):
        TestSet([video], D)


# ---- 2. text files from other editors and systems ----

def bom_crlf(path):
    """Rewrite a text file as Windows editors save it: UTF-8 with a byte-order mark, CRLF line ends."""
    path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode())
    return path


def test_bom_and_crlf_text_files_give_the_exact_ground_truth(tmp_path, capsys):
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 2, 2))
    plain = make_lists(str(ds["root"]), "ucf", DATASETS["ucf"], str(tmp_path / "a"), test_videos=str(ds["ann"]))
    plain = [open(p).read() for p in plain[:2]]
    test_list = bom_crlf(tmp_path / "a" / "ucf_test.list")
    for ann in (bom_crlf(ds["ann"]), bom_crlf(ds["ann_urdmu"])):
        write_gt(str(test_list), str(ds["root"]), DATASETS["ucf"], str(ann), str(tmp_path / "gt.npy"))
        np.testing.assert_array_equal(np.load(tmp_path / "gt.npy"), ds["gt"])
    # test-videos and labels files too: the same lists as from the plain files
    bom = make_lists(str(ds["root"]), "ucf", DATASETS["ucf"], str(tmp_path / "b"), test_videos=str(ds["ann"]))
    assert [open(p).read() for p in bom[:2]] == plain
    assert read_text_lines(str(test_list), "list file") == plain[1].splitlines()


def test_other_encodings_are_one_line_errors(tmp_path):
    utf16 = tmp_path / "ann.txt"
    utf16.write_text("v 1 2\n", encoding="utf-16")
    with pytest.raises(InputError, match="ann.txt is not a readable text file .UTF-8 expected"):
        read_annotations(str(utf16))


def test_video_list_with_bom_names_the_videos(tmp_path):
    from video.extraction import list_videos
    (tmp_path / "a.mp4").touch()
    (tmp_path / "videos.txt").write_bytes(b"\xef\xbb\xbfa.mp4\r\n# comment\r\n")
    assert list_videos([tmp_path / "videos.txt"]) == [tmp_path / "a.mp4"]


# ---- 3. annotations that are not what they seem ----

@pytest.mark.parametrize("text, line", [
    ("cam_a,2.5,4.0\ncam_b,1.0,3.5\n", 1),                   # seconds, without the unit
    ("video,start,end\ncam_a,10,20\ncam_b,1.5,3\n", 3),      # one decimal
    ("cam_a 10 20\ncam_b\n", 2),                              # a video without an interval
    ("cam_a 10 20 x 30 40\n", 1),                             # numbers where a class should be
    ("cam_a 10 20 30\n", 1),                                  # an odd count
])
def test_annotations_that_are_not_a_video_and_frame_pairs_are_errors(tmp_path, capsys, text, line):
    ds = write_custom_pair(tmp_path)
    (tmp_path / "ann.txt").write_text(text)
    out = tmp_path / "gt.npy"
    r = call(dataset_cli, ["make-gt", "--dataset", "custom", "--root_dir", str(ds.root), "--test_list",
                           str(ds.test_list), "--annotations", str(tmp_path / "ann.txt"), "--out", str(out)], capsys)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"ann.txt line {line}:" in r.stderr
    assert not out.exists()


def write_custom_pair(tmp_path, T=(20, 30)):
    """Two one-crop test videos `cam_a` (abnormal) and `cam_b` (normal) and their CSV test list."""
    root = tmp_path / "data"
    root.mkdir()
    for name, t in zip(("cam_a", "cam_b"), T):
        np.save(root / f"{name}.npy", np.zeros((t, D), np.float32))
    (tmp_path / "test.csv").write_text("path,label\ncam_a.npy,1\ncam_b.npy,0\n")
    return SimpleNamespace(root=root, test_list=tmp_path / "test.csv")


def test_seconds_annotations_with_fps_give_the_same_frames(tmp_path, capsys):
    """`cam_a,2.5,4.0` in seconds at 24 fps is frames [60, 96); a header line is allowed; the
    frames of `cam_a 60 96` give the identical ground truth."""
    ds = write_custom_pair(tmp_path)
    (tmp_path / "sec.csv").write_text("video,start_s,end_s\ncam_a,2.5,4.0\ncam_a,10.01,11\n")
    (tmp_path / "frames.txt").write_text("cam_a 60 96 241 264\n")        # 10.01 s * 24 = 240.24 -> frame 241
    for ann, unit in (("sec.csv", ["--annotation_unit", "seconds", "--fps", "24"]), ("frames.txt", [])):
        r = call(dataset_cli, ["make-gt", "--dataset", "custom", "--root_dir", str(ds.root), "--test_list",
                               str(ds.test_list), "--annotations", str(tmp_path / ann), "--out",
                               str(tmp_path / f"{ann}.npy"), *unit], capsys)
        assert r.returncode == 0, r.stderr
    gt = np.load(tmp_path / "sec.csv.npy")
    np.testing.assert_array_equal(gt, np.load(tmp_path / "frames.txt.npy"))
    assert list(np.flatnonzero(np.diff(np.r_[0, gt, 0]))) == [60, 96, 241, 264]
    r = call(dataset_cli, ["make-gt", "--dataset", "custom", "--root_dir", str(ds.root), "--test_list",
                           str(ds.test_list), "--annotations", str(tmp_path / "sec.csv"), "--annotation_unit",
                           "seconds", "--out", str(tmp_path / "x.npy")], capsys)
    assert r.returncode == 2 and "give --fps" in r.stderr and not (tmp_path / "x.npy").exists()


def test_ucf_formats_in_seconds_skip_their_words(tmp_path):
    (tmp_path / "a.txt").write_text("Abuse028_x264.mp4  Abuse  1.5  2.0  -1  -1\n"
                                    "Arson/Arson011_x264.mp4 900 Arson 0 0.5 3 4.25\n")
    assert read_annotations(str(tmp_path / "a.txt"), "seconds", 30) == {
        "Abuse028_x264": [(45, 60)], "Arson011_x264": [(0, 15), (90, 128)]}


# ---- 4. ground truth that belongs to another list order ----

def test_gt_of_another_list_order_is_refused_naming_a_video(tmp_path, capsys):
    """Same videos, same total frames, another order (abnormal and normal interleaved): a normal
    video gets abnormal frames, so the gt is refused."""
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 2, 2))
    _, test, _ = make_lists(str(ds["root"]), "ucf", DATASETS["ucf"], str(tmp_path / "l"), test_videos=str(ds["ann"]))
    lines = open(test).read().splitlines()
    reordered = tmp_path / "reordered.list"
    reordered.write_text("\n".join(lines[20:30] + lines[:10] + lines[30:] + lines[10:20]) + "\n")
    np.save(tmp_path / "gt.npy", ds["gt"])                  # the gt of the original order, no sidecar
    videos = read_list(str(reordered), str(ds["root"]), DATASETS["ucf"])
    lengths = [ds["features"][v.name].shape[1] for v in videos]
    assert sum(lengths) * 16 == len(ds["gt"])
    with pytest.raises(InputError, match=r"marks abnormal frames in video Normal_Videos_test00\d_x264, which is "
                                         r"normal .* probably follows another list's order"):
        load_gt(str(tmp_path / "gt.npy"), videos, lengths)


def test_make_gt_sidecar_pins_names_and_order(tmp_path, capsys):
    """make-gt writes <gt>.videos.tsv; a run with a list of another order (even one the label check
    cannot see: two abnormal videos swapped) is refused, naming the first video that differs."""
    ds = write_ucf(tmp_path / "ucf", n=(2, 2, 2, 2))
    _, test, _ = make_lists(str(ds["root"]), "ucf", DATASETS["ucf"], str(tmp_path / "l"), test_videos=str(ds["ann"]))
    gt = tmp_path / "l" / "ucf_gt.npy"
    print(write_gt(test, str(ds["root"]), DATASETS["ucf"], str(ds["ann"]), str(gt)))
    sidecar = tmp_path / "l" / "ucf_gt.videos.tsv"
    rows = sidecar.read_text().splitlines()
    assert rows[0] == "video\tsnippets" and len(rows) == 5
    videos = read_list(test, str(ds["root"]), DATASETS["ucf"])
    lengths = [ds["features"][v.name].shape[1] for v in videos]
    np.testing.assert_array_equal(load_gt(str(gt), videos, lengths), ds["gt"])
    swapped = videos[1::-1] + videos[2:]
    with pytest.raises(InputError, match=f"was made for another list: its video 1 is {videos[0].name} .*the test "
                                         f"list's is {videos[1].name}"):
        load_gt(str(gt), swapped, lengths[1::-1] + lengths[2:])


def test_real_xd_gt_with_a_resorted_test_list_is_refused():
    """XD-Violence's gt.npy (official list order) against the same list sorted by name, as some
    repositories ship it: equal lengths, refused."""
    xd = shared_path("realdata", "xd")
    lengths = dict(line.split("\t") for line in (xd / "test_videos.tsv").read_text().splitlines()[1:])
    official = read_list(str(xd / "XD_Test.list"), "/nonexistent", DATASETS["xd"])
    np.testing.assert_array_equal(load_gt(str(xd / "gt.npy"), official, [int(lengths[v.name]) for v in official]),
                                  np.load(xd / "gt.npy"))
    resorted = sorted(official, key=lambda v: v.name)
    with pytest.raises(InputError, match="which is normal .* another list's order"):
        load_gt(str(xd / "gt.npy"), resorted, [int(lengths[v.name]) for v in resorted])



def test_gt_without_sidecar_is_checked_by_its_abnormal_spans(tmp_path, capsys):
    """Generated test sets (abnormal videos with short events, normal videos after them) whose gt has
    no sidecar, read with the abnormal videos in another order: the gt is refused, naming the video,
    exactly when some abnormal video's frames then hold no abnormal frame; else it is read with a
    warning that its order cannot be checked."""
    rng = np.random.default_rng(7)
    refused = accepted = 0
    for case in range(60):
        n_abnormal, n_normal = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        lengths = [int(t) for t in rng.integers(4, 40, n_abnormal + n_normal)]
        videos = [Video(f"v{case}_{i}" + ("_label_B1-0-0" if i < n_abnormal else "_label_A"), [], i >= n_abnormal)
                  for i in range(len(lengths))]
        parts = []
        for i, T in enumerate(lengths):
            g = np.zeros(T * 16, np.uint8)
            if i < n_abnormal:
                a = int(rng.integers(0, T * 16 - 8))
                g[a:a + int(rng.integers(1, 8 * 16))] = 1
            parts.append(g)
        path = tmp_path / f"gt{case}.npy"
        np.save(path, np.concatenate(parts))
        order = list(rng.permutation(n_abnormal)) + list(range(n_abnormal, len(lengths)))
        shuffled, shuffled_lengths = [videos[i] for i in order], [lengths[i] for i in order]
        bounds = np.cumsum([0] + shuffled_lengths) * 16
        gt = np.concatenate(parts)
        empty = [v.name for v, a, b in zip(shuffled, bounds[:-1], bounds[1:]) if not v.normal and not gt[a:b].any()]
        marked = [v.name for v, a, b in zip(shuffled, bounds[:-1], bounds[1:]) if v.normal and gt[a:b].any()]
        if marked:
            continue                            # the normal-video rule refuses these (tested above)
        if empty:
            with pytest.raises(InputError, match=f"gt{case}.npy marks no abnormal frame in video {empty[0]}, which "
                                                 f"is abnormal"):
                load_gt(str(path), shuffled, shuffled_lengths)
            refused += 1
        else:
            np.testing.assert_array_equal(load_gt(str(path), shuffled, shuffled_lengths), gt)
            assert f"gt{case}.npy has no sidecar gt{case}.videos.tsv: its video order cannot be checked" in \
                capsys.readouterr().err
            accepted += 1
    assert refused >= 10 and accepted >= 5          # both outcomes were exercised

# ---- 5. caches that outlive their source ----

def test_a_second_video_of_the_same_name_gets_features_of_its_own(tmp_path):
    """--video day1/cam01.mp4, then day2/cam01.mp4 into the same output folder: day2 is extracted
    again (3 snippets), not scored with day1's cached 2."""
    weights = shared_path("fixtures", "i3d", "i3d_rgb_state_dict.pt")
    ckpt = shared_path("fixtures", "parity", "state_dict.pkl")
    for day, frames in (("day1", 32), ("day2", 48)):
        (tmp_path / day).mkdir()
        write_video(tmp_path / day / "cam01.mp4", frames, width=224, height=224)
    out = tmp_path / "out"
    for day, snippets in (("day1", 2), ("day2", 3), ("day1", 2)):
        infer.main(["--model_path", str(ckpt), "--video", str(tmp_path / day / "cam01.mp4"), "--i3d_weights",
                    str(weights), "--threshold", "1", "--crops", "1", "--output_dir", str(out), "--device", "cpu",
                    "--resize", "224", "--overwrite"])
        rows = read_csv(out / "scores.csv")
        assert len(rows) == snippets
        assert json.loads((out / "features" / "cam01.json").read_text())["source"]["path"].endswith(
            f"{day}/cam01.mp4")


def test_changed_settings_or_file_extract_again(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", 32, width=240, height=224)
    out = tmp_path / "f"
    assert extract_videos([video], GridProbe(), out, crops=1, progress=False) == {}
    stamp = (out / "v__0.npy").stat().st_mtime_ns
    assert extract_videos([video], GridProbe(), out, crops=1, progress=False) == {}
    assert (out / "v__0.npy").stat().st_mtime_ns == stamp                   # reused
    assert extract_videos([video], GridProbe(), out, crops=1, progress=False, resize=(240, 224)) == {}
    assert "extraction settings differ (resize)" in capsys.readouterr().err
    write_video(video, 48, width=240, height=224)                            # the file changes in place
    assert extract_videos([video], GridProbe(), out, crops=1, progress=False, resize=(240, 224)) == {}
    assert "not the one its features were made from" in capsys.readouterr().err
    assert np.load(out / "v__0.npy").shape == (3, 1024)


def test_lists_made_from_another_folder_are_made_again(tmp_path, capsys, monkeypatch):
    """list/custom_*.list made from one folder is not reused for a run on another --root_dir."""
    def folder(name, names):
        root = tmp_path / name
        for split, videos in names.items():
            (root / split).mkdir(parents=True)
            for v in videos:
                np.save(root / split / f"{v}.npy", np.zeros((5, D), np.float32))
        return root
    a = folder("a", {"train": ["a_n_1", "a_x_1"], "test": ["a_n_2", "a_x_2"]})
    b = folder("b", {"train": ["b_n_1", "b_x_1", "b_x_3"], "test": ["b_n_2", "b_x_2"]})
    monkeypatch.chdir(tmp_path)                     # the default lists are list/custom_*.list, from here
    for root, expected in ((a, "a_x_1"), (a, "a_x_1"), (b, "b_x_1")):
        args = parse_main_args(["--dataset", "custom", "--normal_marker", "_n_", "--len_feature", str(D),
                                "--root_dir", str(root)])
        ensure_lists(args.dataset, args.root_dir, args.train_list, args.test_list, dataset_info(args),
                     len_feature=args.len_feature, given=args.given)
        assert open("list/custom_train.list").read().split()[0] == f"train/{expected}.npy"
    out = capsys.readouterr().out
    assert out.count("making") == 2
    assert "missing: making the lists" in out and "differs in root_dir, files: making them again" in out


# ---- 6. video as a viewer sees it ----

def lossless_clip(path, frames, rotation=0):
    """A lossless RGB clip (libx264rgb, crf 0) of the given (H, W, 3) frames, with a display rotation."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=25)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt, s.options = "rgb24", {"crf": "0"}
        if rotation:
            s.set_display_rotation(rotation)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def scene(n=16, h=240, w=320, seed=0):
    """Frames with structure in both directions (a gradient, a bright block, noise), so a wrong
    turn or mirror changes the features."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.uint8)
    out = []
    for i in range(n):
        f = base.copy()
        f[20 + i:80 + i, 30:110] = [250, 40, 40]
        f = np.clip(f.astype(int) + rng.integers(-10, 10, f.shape), 0, 255).astype(np.uint8)
        out.append(f)
    return out


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="this PyAV cannot write a display rotation")
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_sideways_clip_gives_the_features_of_its_upright_copy(tmp_path, rotation):
    """Stored turned by -rotation with a display rotation of `rotation`: a player shows it upright, and
    so must the extractor (checked here with the stand-in network, and with I3D below)."""
    upright = scene()
    k = round(rotation / 90) % 4
    stored = [np.rot90(f, -k) for f in upright]                  # what a phone writes
    a = video_features(lossless_clip(tmp_path / "up.mp4", upright), GridProbe(), crops=5)
    decoding = Decoding()
    b = video_features(lossless_clip(tmp_path / "side.mp4", stored, rotation), GridProbe(), crops=5, decoding=decoding)
    assert decoding.rotation == 90 * k
    assert np.abs(a - b).max() < 1e-3
    c = video_features(lossless_clip(tmp_path / "plain.mp4", stored), GridProbe(), crops=5)
    assert np.abs(a - c).max() > 0.1                             # unturned, it would differ


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="this PyAV cannot write a display rotation")
def test_a_sideways_clip_through_i3d_matches_its_upright_copy(tmp_path):
    from video.weights import load_i3d
    i3d = load_i3d(shared_path("fixtures", "i3d", "i3d_rgb_state_dict.pt"), torch.device("cpu"))
    upright = scene(h=224, w=256)
    a = video_features(lossless_clip(tmp_path / "up.mp4", upright), i3d, crops=1)
    b = video_features(lossless_clip(tmp_path / "side.mp4", [np.rot90(f) for f in upright], -90), i3d, crops=1)
    assert a.shape == (1, 1, 1024) and np.abs(a).max() > 1
    assert np.abs(a - b).max() < 1e-3


def vfr_clip(path, gaps_ms):
    """A variable-frame-rate clip: frame i shows at sum(gaps_ms[:i]) ms."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 240, 224, "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        t = 0
        for i, gap in enumerate(gaps_ms):
            f = av.VideoFrame.from_ndarray(np.full((224, 240, 3), 3 * i % 256, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            t += gap
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_variable_frame_rate_snippet_times_are_the_frames_timestamps(tmp_path, capsys):
    """16 frames 20 ms apart, then 32 frames 60 ms apart: snippet 1 starts at 0.32 s + ... by the
    timestamps, where frame number / average rate would say otherwise; scores.csv, segments.csv
    and plots take these times."""
    gaps = [20] * 16 + [60] * 32
    video = vfr_clip(tmp_path / "vfr.mp4", gaps)
    stamps = np.r_[0, np.cumsum(gaps)] / 1000                  # frame i's time, and the end of the last
    out = tmp_path / "f"
    assert extract_videos([video], GridProbe(), out, crops=1, progress=False) == {}
    record = json.loads((out / "vfr.json").read_text())
    times = np.array(record["snippet_times"])
    assert times.shape == (3, 2)
    frame = 0.06
    assert np.abs(times[:, 0] - stamps[[0, 16, 32]]).max() < frame
    assert np.abs(times[:, 1] - stamps[[16, 32, 48]]).max() < frame
    np.testing.assert_allclose(times[:, 0], stamps[[0, 16, 32]], atol=1e-6)   # in fact exactly
    torch.save(BNWVAD(1024).state_dict(), tmp_path / "bare.pt")
    infer.main(["--model_path", str(tmp_path / "bare.pt"), "--features", str(out), "--threshold", "-1", "--device",
                "cpu", "--output_dir", str(tmp_path / "o"), "--fps", "25"])           # the record wins over --fps
    assert "note: 1 of 1 videos are timed by their extraction records (the frames' own timestamps), not by " \
           "--fps 25" in capsys.readouterr().out                                  # and says so
    rows = read_csv(tmp_path / "o" / "scores.csv")
    assert [r["start_s"] for r in rows] == ["0.000", "0.320", "1.280"]
    [segment] = read_csv(tmp_path / "o" / "segments.csv")                 # every snippet is above -1
    assert (segment["start_s"], segment["end_s"]) == ("0.000", f"{stamps[48]:.3f}")


@pytest.mark.parametrize("suffix, options", [(".mkv", {}), (".mp4", {"movflags": "faststart"})])
def test_a_cut_off_container_warns_with_frames_decoded_and_expected(tmp_path, capsys, suffix, options):
    """Matroska announces its duration, MP4 (index first, as for streaming) its frame count; both cut
    in half decode to what is there, with a warning."""
    whole = tmp_path / f"whole{suffix}"
    with av.open(str(whole), "w", options=options) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 240, 224, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(96):
            for p in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (224, 240, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.5)])
    out = tmp_path / "f"
    assert extract_videos([whole, cut], GridProbe(), out, crops=1, progress=False) == {}
    err = capsys.readouterr().err
    assert "whole" not in err
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    decoded = json.loads((out / "cut.json").read_text())["frames"]
    assert f"cut{suffix}: decoded {decoded} of the 96 frames its header announces" in warning and decoded < 96
    assert json.loads((out / "cut.json").read_text())["warnings"] == [warning[len("warning: "):]]


# ---- 7. edge sets ----

def test_a_test_set_without_normal_videos_writes_every_output(tmp_path, capsys):
    """No normal test video: no threshold from normal videos (the checkpoint's calibration instead),
    no false-alarm rate on normal videos, each said in one line; metrics and every file written."""
    from conftest import data_args, write_xd_dataset
    import main
    ds = write_xd_dataset(tmp_path / "data", n_train=2, n_test=2, D=D)
    main.main(data_args(ds, tmp_path, model_path=tmp_path / "ckpts", log_path=tmp_path / "logs", lr="[0.001]*2",
                        batch_size=2, num_segments=8, plot_freq=2))
    lines = ds["test_list"].read_text().splitlines()
    abnormal_only = tmp_path / "abnormal.list"
    abnormal_only.write_text("\n".join(x for x in lines if "_label_A" not in x) + "\n")
    n_frames = sum(ds["test_lengths"][:2]) * 16
    np.save(tmp_path / "gt.npy", np.load(ds["gt"])[:n_frames])
    out = tmp_path / "out"
    capsys.readouterr()
    infer.main(data_args(ds, tmp_path, model_path=tmp_path / "ckpts" / "xd_best_2022.pkl", output_dir=out,
                         test_list=abnormal_only, gt=tmp_path / "gt.npy") + ["--plot"])
    printed = capsys.readouterr().out
    assert "the test set has no normal videos" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["AUC"] <= 100 and "false_alarm_rate_normal_videos" not in metrics["threshold"]
    assert "training normals" in metrics["threshold"]["source"]
    for name in ("scores.csv", "segments.csv", "roc_pr.png", "frame_scores"):
        assert (out / name).exists(), name
    assert len(list((out / "plots").iterdir())) == 2
