"""Model pieces against direct, dense computations of the spec."""
import torch

from model import BNWVAD, banded_local_mix, dense_local_matrix, local_attention, select_pairs


def test_dense_local_matrix_is_column_normalised():
    T = 7
    P = dense_local_matrix(T)
    i = torch.arange(1, T + 1, dtype=torch.float32)
    A = torch.exp(-(i[None] - i[:, None]).abs() / torch.e)
    assert torch.allclose(P, A / A.sum(1)[None, :], atol=1e-7)   # column j divided by s[j]
    assert not torch.allclose(P.sum(1), torch.ones(T))            # rows do not sum to 1


def test_local_attention_matches_dense_for_all_lengths():
    torch.manual_seed(0)
    for T in (1, 2, 5, 63, 64, 65, 129, 256, 257, 700):
        g = torch.randn(2, T, 16)
        err = (local_attention(g) - dense_local_matrix(T) @ g).abs().max()
        assert err < 1e-5, (T, err)


def test_banded_mix_small_block_matches_dense():
    torch.manual_seed(1)
    x = torch.randn(1, 300, 3)
    t = torch.arange(300)
    A = torch.exp(-(t[None] - t[:, None]).abs().float() / torch.e)
    assert (banded_local_mix(x, block=7) - A @ x).abs().max() < 1e-5


def test_select_pairs_follows_spec_order():
    torch.manual_seed(2)
    B, T, C = 4, 10, 3
    feats = torch.randn(B, T, C)
    dist = torch.rand(B, T)
    pos, neg = select_pairs(feats, dist, ratio_sample=0.2, ratio_batch=0.4)
    half = B // 2
    abn = dist[half:]
    chosen = torch.zeros_like(abn, dtype=torch.bool)
    for v in range(half):                                       # 2 per video
        chosen[v, abn[v].argsort(descending=True)[:2]] = True
    flat = abn.reshape(-1).argsort(descending=True)[:int(half * T * 0.4)]
    chosen.view(-1)[flat] = True
    expected_neg = feats[half:][chosen]                         # video-major, then time
    assert torch.equal(neg, expected_neg)
    M = len(expected_neg)
    k = M // half + 1
    ranks = [feats[v, dist[v].argsort(descending=True)[r]] for r in range(k) for v in range(half)]
    assert torch.equal(pos, torch.stack(ranks)[:M])            # rank-major


def test_eval_returns_scores_and_train_returns_selection():
    torch.manual_seed(3)
    model = BNWVAD(len_feature=32)
    x = torch.randn(4, 20, 32)
    out = model.train()(x)
    assert out["cls_scores"].shape == (4, 20)
    assert len(out["layers"]) == 2
    scores = model.eval()(x)
    assert scores.shape == (4, 20) and (scores >= 0).all()
    assert model.eval()(x[:, None]).shape == (4, 20)           # (B, 1, T, D) works too
