"""The real XD-Violence and UCF-Crime metadata in ../shared/realdata (lists, annotations, each test
video's T, the shipped gt.npy): our list parsing and ground-truth rule must reproduce them exactly.
Skipped when ../shared is absent."""
import numpy as np
import pytest

from conftest import shared_path
from dataset import DATASETS
from helpers import call, dataset_cli
from core.lists import annotated_gt, load_gt, read_annotations, read_list
from utils import InputError

COUNTS = {  # dataset: (train abnormal, train normal, test abnormal, test normal)
    "xd": (1905, 2049, 500, 300),
    "ucf": (810, 800, 140, 150),
}
LISTS = {"xd": ("XD_Train.list", "XD_Test.list"), "ucf": ("UCF_Train.list", "UCF_Test.list")}


def real_lengths(dataset):
    rows = shared_path("realdata", dataset, "test_videos.tsv").read_text().splitlines()[1:]
    return {name: int(T) for name, T in (r.split("\t") for r in rows)}


def real_list(dataset, which):
    return read_list(str(shared_path("realdata", dataset, LISTS[dataset][which])), "/nonexistent", DATASETS[dataset])


@pytest.mark.parametrize("dataset", ["xd", "ucf"])
def test_real_lists_parse_with_the_right_labels(dataset):
    train, test = real_list(dataset, 0), real_list(dataset, 1)
    n_abn_train, n_nor_train, n_abn_test, n_nor_test = COUNTS[dataset]
    assert len(train) == n_abn_train + n_nor_train and len(test) == n_abn_test + n_nor_test
    # abnormal videos come first in both real lists: the name rule must agree with that position
    assert [v.normal for v in train] == [False] * n_abn_train + [True] * n_nor_train
    assert [v.normal for v in test] == [False] * n_abn_test + [True] * n_nor_test
    crops = DATASETS[dataset].crops
    assert all(len(v.paths) == crops for v in train + test)
    assert not {v.name for v in train} & {v.name for v in test}
    assert [v.name for v in test] == list(real_lengths(dataset))


@pytest.mark.parametrize("dataset, annotation_file", [
    ("xd", "annotations.txt"),
    ("ucf", "Temporal_Anomaly_Annotation.txt"),
    ("ucf", "UCF_Annotation_with_frames.txt"),
])
def test_gt_from_real_annotations_equals_shipped_gt(dataset, annotation_file):
    test = real_list(dataset, 1)
    T = real_lengths(dataset)
    source = str(shared_path("realdata", dataset, annotation_file))
    gt, notes = annotated_gt(test, [T[v.name] for v in test], read_annotations(source), source)
    expected = np.load(shared_path("realdata", dataset, "gt.npy"))
    assert gt.dtype == np.uint8 and gt.shape == expected.shape
    np.testing.assert_array_equal(gt, expected)
    # the real annotations run past some videos' T*16 frames; that is reported, not silent
    assert any("are cut there" in n for n in notes)


def test_make_gt_reads_T_from_headers_of_the_real_ucf_test_list(tmp_path, capsys):
    """make-gt on a folder laid out as the real UCF test list, each crop file (T, 1) with the real T."""
    test_list = shared_path("realdata", "ucf", "UCF_Test.list")
    T = real_lengths("ucf")
    for rel in test_list.read_text().split():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros((T[path.name.rsplit("__", 1)[0]], 1), np.float32))
    out = tmp_path / "gt.npy"
    r = call(dataset_cli, ["make-gt", "--dataset", "ucf", "--root_dir", str(tmp_path), "--test_list",
                           str(test_list), "--annotations",
                           str(shared_path("realdata", "ucf", "UCF_Annotation_with_frames.txt")),
                           "--out", str(out)], capsys)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), np.load(shared_path("realdata", "ucf", "gt.npy")))
    assert "290 test videos, 1109680 frames" in r.stdout


@pytest.mark.parametrize("dataset", ["xd", "ucf"])
def test_real_gts_give_every_abnormal_video_abnormal_frames_and_warn_without_a_sidecar(dataset, capsys):
    """The shipped gts (no sidecar) pass load_gt's rules with the real lists: every abnormal test
    video has abnormal frames, no normal one has any; their order cannot be checked, which is said."""
    test = real_list(dataset, 1)
    T = real_lengths(dataset)
    path = str(shared_path("realdata", dataset, "gt.npy"))
    np.testing.assert_array_equal(load_gt(path, test, [T[v.name] for v in test]), np.load(path))
    assert "has no sidecar gt.videos.tsv: its video order cannot be checked" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["xd", "ucf"])
def test_real_gt_with_its_abnormal_videos_reordered_is_refused(dataset):
    """The abnormal videos of the real test list in another order (normal videos in place, so no
    normal video gets abnormal frames): the spans shift and some abnormal video ends up with none."""
    test = real_list(dataset, 1)
    T = real_lengths(dataset)
    n_abnormal = COUNTS[dataset][2]
    path = str(shared_path("realdata", dataset, "gt.npy"))
    for order in (test[:n_abnormal][::-1], test[1:n_abnormal] + test[:1]):     # reversed; rotated by one
        videos = order + test[n_abnormal:]
        with pytest.raises(InputError, match=r"marks no abnormal frame in video \S+, which is abnormal .* another "
                                             r"list's order"):
            load_gt(path, videos, [T[v.name] for v in videos])
