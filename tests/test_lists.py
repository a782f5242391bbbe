"""Lists, crops, labels, resampling, ground truth, demo data."""
import numpy as np
import pytest

from dataset import DATASETS, TestSet, make_demo, resample_segments
from core.features import split_crop
from core.lists import frame_gt, read_list
from utils import InputError


def resample_loop(x, S):
    """The release's loop, with int64 boundaries."""
    b = np.linspace(0, x.shape[0], S + 1).astype(np.int64)
    out = np.zeros((S, x.shape[1]), np.float32)
    for i in range(S):
        out[i] = x[b[i]] if b[i] == b[i + 1] else x[b[i]:b[i + 1]].mean(0)
    return out


@pytest.mark.parametrize("T", [1, 7, 199, 200, 201, 1000])
def test_resample_matches_release_loop(T):
    x = np.random.default_rng(T).normal(size=(T, 8)).astype(np.float32)
    got = resample_segments(x, 200)
    assert got.shape == (200, 8) and got.dtype == np.float32
    assert np.abs(got - resample_loop(x, 200)).max() < 1e-5


def test_resample_single_snippet_repeats_it():
    x = np.arange(4, dtype=np.float32)[None]
    assert (resample_segments(x, 5) == x).all()


def test_resample_past_uint16():
    """The release's uint16 boundaries wrap past 65,535 snippets; ours cover the whole video."""
    T = 70_000
    x = np.arange(T, dtype=np.float32)[:, None]                    # row value = its index
    got = resample_segments(x, 200)[:, 0]
    b = (np.arange(201) * T) // 200
    assert np.allclose(got, (b[:-1] + b[1:] - 1) / 2)
    assert got[-1] == pytest.approx((69_650 + 69_999) / 2)


def test_split_crop_uses_last_double_underscore():
    assert split_crop("test/Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6__3.npy") == \
        ("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6", 3)
    assert split_crop("x/video.npy") == ("video", None)


def write_list(tmp_path, names):
    p = tmp_path / "l.list"
    p.write_text("\n".join(names) + "\n")
    return p


def test_read_list_groups_crops_and_labels_by_name(tmp_path):
    names = [f"a/v1_label_A__{k}.npy" for k in range(5)] + [f"a/v2_label_B1-0-0__{k}.npy" for k in range(5)]
    videos = read_list(write_list(tmp_path, names), str(tmp_path), DATASETS["xd"])
    assert [(v.name, v.normal, len(v.paths)) for v in videos] == [("v1_label_A", True, 5),
                                                                  ("v2_label_B1-0-0", False, 5)]
    assert videos[0].paths[2].endswith("v1_label_A__2.npy")


@pytest.mark.parametrize("ks", [[0, 1, 2, 3], [0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 5]])
def test_read_list_rejects_missing_or_repeated_crops(tmp_path, ks):
    names = [f"v_label_A__{k}.npy" for k in ks]
    with pytest.raises(InputError, match="v_label_A"):
        read_list(write_list(tmp_path, names), str(tmp_path), DATASETS["xd"])


def test_read_list_puts_crops_in_crop_order(tmp_path):
    """Crops are videos' rows by their index, wherever the list names them (crop 0 of the DeepMIL
    layout, `<video>.npy`, can stand anywhere among `<video>__1.npy` ..)."""
    names = [f"v_label_A__{k}.npy" for k in (0, 1, 3, 2, 4)] + ["w_label_A__3.npy", "w_label_A__1.npy",
                                                                "w_label_A.npy", "w_label_A__4.npy", "w_label_A__2.npy"]
    v, w = read_list(write_list(tmp_path, names), str(tmp_path), DATASETS["xd"])
    assert [p.rsplit("/", 1)[1] for p in v.paths] == [f"v_label_A__{k}.npy" for k in range(5)]
    assert [p.rsplit("/", 1)[1] for p in w.paths] == ["w_label_A.npy"] + [f"w_label_A__{k}.npy" for k in range(1, 5)]


def test_frame_gt_end_exclusive_and_cut():
    g = frame_gt([2, 1], [[(3, 5), (30, 99)], []])
    assert g.shape == (48,)
    assert list(np.flatnonzero(g)) == [3, 4, 30, 31]


def test_demo_dataset_is_consistent(tmp_path):
    make_demo(str(tmp_path), len_feature=16, n_train=3, n_test=2)
    info = DATASETS["demo"]
    train = read_list(str(tmp_path / "demo_train.list"), str(tmp_path), info)
    test = read_list(str(tmp_path / "demo_test.list"), str(tmp_path), info)
    assert sum(v.normal for v in train) == 3 and len(train) == 6
    ts = TestSet(test, 16, str(tmp_path / "demo_gt.npy"))
    assert ts.gt.sum() > 0 and len(ts.gt) == ts.n_frames
    assert ts.features[0].shape[0] == 5
    # the gt marks frames of abnormal videos only
    assert ts.gt[~ts.abnormal_frames].sum() == 0
