"""The fast paths give the reference paths' numbers: banded local attention vs the dense matrix,
packed evaluation vs per-video scoring, run metrics vs scikit-learn on every frame, the
training-item cache vs reading the files."""
import os

import numpy as np
import pytest
import torch

import dataset
from conftest import data_args, run_script, write_xd_dataset
from dataset import DATASETS, TrainItems, resample_segments
from core.lists import read_list
from model import BNWVAD, LOCAL_BLOCK, LOCAL_REACH, dense_local_matrix, local_attention
from options import check_accelerator_flags, parse_infer_args
from bench.reference import load_items, release_model, resample_loop, score_videos
from test import (evaluate, frame_metrics, plan_batches, score_batched, score_test_set, score_video, snippet_metrics,
                  to_frames)
from utils import InputError

CPU = torch.device("cpu")
D = 64


def random_model(seed=0, **kw):
    """A model with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = BNWVAD(D, **kw)
    for bn in model.normal_head.bns:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("T", [1, 2, 5, LOCAL_REACH - 1, LOCAL_REACH, LOCAL_REACH + 1, 2 * LOCAL_REACH + 3,
                               LOCAL_BLOCK - 1, LOCAL_BLOCK, LOCAL_BLOCK + 1, 2 * LOCAL_BLOCK + 77])
def test_local_attention_matches_dense_matrix(T):
    g = torch.randn(3, T, 16)
    ref = dense_local_matrix(T) @ g                                  # column-normalised P, (3, T, 16)
    assert (local_attention(g) - ref).abs().max() <= 1e-5


def test_dense_matrix_divides_columns():
    T = 7
    t = torch.arange(T)
    A = torch.exp(-(t[:, None] - t[None, :]).abs().float() / np.e)
    assert torch.allclose(dense_local_matrix(T), A / A.sum(1)[None, :])
    assert not torch.allclose(dense_local_matrix(T), A / A.sum(1)[:, None])


def test_masked_local_attention_is_each_rows_own():
    lengths = [1, 30, LOCAL_REACH + 5, LOCAL_BLOCK + 40]
    L = max(lengths) + 100                                          # padding past the kernel's reach too
    g = torch.randn(len(lengths), L, 8)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    out = local_attention(g, mask)
    for r, T in enumerate(lengths):
        ref = dense_local_matrix(T) @ g[r, :T]
        assert (out[r, :T] - ref).abs().max() <= 1e-5


def test_model_matches_release_attention():
    model = random_model()
    ref = release_model(model)
    x = torch.randn(2, 2, 40, D)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-4               # 4-D, crop-averaged
        assert (model(x[0]) - ref(x[0])).abs().max() <= 1e-4         # 3-D, rows alone
    model.train(), ref.train()
    out, out_ref = model(x[:, 0]), ref(x[:, 0])
    assert (out["cls_scores"] - out_ref["cls_scores"]).abs().max() <= 1e-4


def random_videos(lengths, crops, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.3, 1.0, (crops, T, D)).astype(np.float32) for T in lengths]


@pytest.mark.parametrize("kernel_sizes", [(1, 1, 1), (3, 3, 3)])
def test_packed_scores_match_per_video_scores(kernel_sizes):
    model = random_model(kernel_sizes=kernel_sizes)
    # shorter than the local reach, equal lengths, multi-block, and longer than a pass (max_snippets)
    lengths = [1, 9, 40, 40, 45, LOCAL_REACH + 1, 290]
    feats = random_videos(lengths, crops=2)
    ref = [score_video(model, f, CPU) for f in feats]
    for max_snippets in (250, 10 ** 6):
        out = score_batched(model, feats, CPU, max_snippets)
        assert [len(s) for s in out] == lengths
        assert max(np.abs(a - b).max() for a, b in zip(out, ref)) <= 1e-4


def test_plan_batches_covers_every_row_once_within_budget():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 500, 60)
    crops = rng.integers(1, 11, 60)
    batches = plan_batches(lengths, crops, max_snippets=800)
    rows = sorted(r for b in batches for r in b)
    assert rows == sorted((i, k) for i in range(60) for k in range(crops[i]))
    for b in batches:
        width = max(lengths[i] for i, _ in b)
        assert len(b) * width <= 800 or len(b) == 1
        assert min(lengths[i] for i, _ in b) >= 0.8 * width or len({i for i, _ in b}) == 1


def metric_case(seed, lengths, n_abnormal, ties):
    rng = np.random.default_rng(seed)
    scores = [rng.random(T).astype(np.float32) for T in lengths]
    if ties:
        scores = [np.round(s * 8).astype(np.float32) / 8 for s in scores]   # many equal scores
    gt = np.zeros(sum(lengths) * 16, np.uint8)
    start = 0
    for i, T in enumerate(lengths):
        if i < n_abnormal:                                      # intervals not aligned to snippets
            a = start + int(rng.integers(0, T * 16 // 2))
            gt[a:a + int(rng.integers(1, T * 16 // 2 + 2))] = 1
        start += T * 16
    abnormal_frames = np.repeat(np.arange(len(lengths)) < n_abnormal, np.array(lengths) * 16)
    return scores, gt, abnormal_frames


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_run_metrics_match_sklearn_on_frames(seed, ties):
    scores, gt, abnormal_frames = metric_case(seed, [3, 17, 40, 1, 25, 60, 8], 3, ties)
    ref = frame_metrics(to_frames(scores), gt, abnormal_frames)
    fast = snippet_metrics(scores, gt, abnormal_frames)
    assert set(fast) == set(ref) == {"AUC", "AP", "AP_sklearn", "AUC_sub", "AP_sub"}
    for k in ref:
        assert abs(fast[k] - ref[k]) <= 1e-9, k


def test_run_metrics_without_sub_metrics():
    scores, gt, abnormal_frames = metric_case(3, [10, 20, 30], 1, False)
    gt[:160] = 1                                                # the abnormal video is all abnormal
    ref = frame_metrics(to_frames(scores), gt, abnormal_frames)
    fast = snippet_metrics(scores, gt, abnormal_frames)
    assert set(fast) == set(ref) == {"AUC", "AP", "AP_sklearn"}
    assert all(abs(fast[k] - ref[k]) <= 1e-9 for k in ref)


def test_evaluate_matches_release_path(tmp_path, monkeypatch):
    ds = write_xd_dataset(tmp_path, n_train=2, n_test=4, D=D, T_range=(3, 90))
    videos = read_list(str(ds["test_list"]), str(ds["root"]), DATASETS["xd"])
    model = random_model()
    ref_scores = score_videos(release_model(model), videos, D, CPU)
    ref = frame_metrics(to_frames(ref_scores), np.load(ds["gt"]).astype(np.uint8),
                        dataset.TestSet(videos, D, str(ds["gt"])).abnormal_frames)
    for mapped in (False, True):                                # in memory, and memory-mapped
        if mapped:
            monkeypatch.setattr(dataset, "available_memory", lambda: 0)
        test_set = dataset.TestSet(videos, D, str(ds["gt"]))
        assert test_set.mapped == mapped
        metrics, scores = evaluate(model, test_set, CPU, max_snippets=300)
        assert max(np.abs(a - b).max() for a, b in zip(scores, ref_scores)) <= 1e-4
        if not mapped:
            plain = score_test_set(model, test_set, CPU)                # our model, one video per pass
            assert max(np.abs(a - b).max() for a, b in zip(scores, plain)) <= 1e-4
        assert all(abs(metrics[k] - ref[k]) <= 1e-9 for k in ref)


def test_resample_matches_release_loop():
    rng = np.random.default_rng(0)
    for T in (1, 5, 16, 17, 333):
        x = rng.normal(size=(T, 8)).astype(np.float32)
        assert np.abs(resample_segments(x, 16) - resample_loop(x, 16)).max() <= 1e-6


def test_training_item_cache(tmp_path):
    ds = write_xd_dataset(tmp_path, n_train=3, n_test=1, D=D)
    videos = [v for v in read_list(str(ds["train_list"]), str(ds["root"]), DATASETS["xd"]) if v.normal]
    cache = tmp_path / "cache"
    plain = TrainItems(videos, 16, D)
    first = TrainItems(videos, 16, D, cache_dir=str(cache))
    second = TrainItems(videos, 16, D, cache_dir=str(cache))
    assert not first.from_cache and second.from_cache
    assert not second.data.flags.writeable                          # memory-mapped, read-only
    index = np.array([4, 0, 7])
    expected = load_items(plain.paths, index, 16, D)                # read and resampled per file
    for items in (plain, first, second):
        assert items.batch(index).dtype == torch.float32
        assert torch.allclose(items.batch(index), expected, atol=1e-6)

    # a changed file makes the cache stale: rebuilt, with the new contents
    path = plain.paths[0]
    np.save(path, np.load(path) + 1.0)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    third = TrainItems(videos, 16, D, cache_dir=str(cache))
    assert not third.from_cache
    assert torch.allclose(third.batch(np.array([0])), load_items(plain.paths, [0], 16, D), atol=1e-6)
    assert TrainItems(videos, 16, D, cache_dir=str(cache)).from_cache

    half = TrainItems(videos, 16, D, cache_dir=str(cache), fp16=True)
    assert half.data.dtype == np.float16 and not half.from_cache
    assert TrainItems(videos, 16, D, cache_dir=str(cache), fp16=True).from_cache
    assert torch.allclose(half.batch(index), third.batch(index), atol=2e-3)
    assert len(list(cache.glob("*.npy"))) == 2                      # stale caches are replaced, not kept


def test_main_reuses_cache(tmp_path):
    ds = write_xd_dataset(tmp_path, n_train=2, n_test=1, D=D, T_range=(8, 16))
    args = data_args(ds, tmp_path, batch_size=2, num_segments=8, lr="[0.0001]", plot_freq=1,
                     model_path=tmp_path / "ck", log_path=tmp_path / "lg")
    runs = [run_script("main.py", args + extra) for extra in ([], ["--overwrite"])]     # the same run again
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert "cached in" in runs[0].stdout and "read from" in runs[1].stdout
    assert len(list((ds["root"] / ".cache").glob("items-*.npy"))) == 2     # normal and abnormal items


@pytest.mark.parametrize("flag", ["--amp", "--compile"])
def test_accelerator_flags_need_cuda(flag, tmp_path):
    args = parse_infer_args(["--model_path", "x.pkl", flag])
    with pytest.raises(InputError, match=f"{flag} needs a CUDA device"):
        check_accelerator_flags(args, CPU)
