"""UR-DMU: the authors' release reproduced (../shared/fixtures/urdmu), the fast paths serving it,
multi-crop training, and telling a bare state dict's model and config from its keys and shapes."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import shared_path
from model import BNWVAD, LOCAL_REACH, MODELS, URDMU, config_from_state_dict
from bench.reference import release_model
from test import score_batched, score_video
from train import train_step
from utils import read_checkpoint

TOL = 1e-4
CPU = torch.device("cpu")
D = 64
LOSS_TERMS = ("att_loss", "N_Aatt", "A_loss", "N_loss", "A_Nloss", "triplet", "kl_loss", "total_loss")


@pytest.fixture
def fixture_dir():
    return shared_path("fixtures", "urdmu")


def release_urdmu(fixture_dir):
    cfg = json.loads((fixture_dir / "expected.json").read_text())["config"]
    model = URDMU(**cfg)
    model.load_state_dict(read_checkpoint(str(fixture_dir / "state_dict.pkl"))[0], strict=True)
    return model


def scores(model, x):
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


@pytest.mark.parametrize("inputs,outputs,shape", [("test_input", "test_scores", (5, 41)),
                                                   ("test_input_4d", "test_scores_4d", (2, 41))])
def test_eval_scores_match_release(fixture_dir, inputs, outputs, shape):
    model = release_urdmu(fixture_dir)
    expected = np.load(fixture_dir / f"{outputs}.npy")
    got = scores(model, np.load(fixture_dir / f"{inputs}.npy"))
    assert got.shape == expected.shape == shape
    assert np.abs(got - expected).max() <= TOL


def test_three_training_steps_match_release(fixture_dir):
    model = release_urdmu(fixture_dir)
    exp = json.loads((fixture_dir / "expected.json").read_text())
    o = exp["optimizer"]
    assert o["clip_grad_norm"] is None
    optimizer = torch.optim.Adam(model.parameters(), lr=o["lr"], betas=tuple(o["betas"]),
                                 weight_decay=o["weight_decay"])
    batch = torch.from_numpy(np.load(fixture_dir / "train_input.npy"))        # (8, 32, D): 4 normal, 4 abnormal
    for i, step in enumerate(exp["train_steps"]):
        torch.manual_seed(1000 + i)                                           # the fixture's seed rule
        got = train_step(model, batch[:4], batch[4:], optimizer, clip_norm=o["clip_grad_norm"])
        assert set(got) == set(step)
        for key in LOSS_TERMS:
            assert abs(got[key] - step[key]) <= TOL, (i, key, got[key], step[key])
        # distance is about 111: compare relatively, as the gradient norm
        for key in ("distance", "grad_norm"):
            assert abs(got[key] - step[key]) <= TOL * max(1.0, abs(step[key])), (i, key, got[key], step[key])
    after = scores(model, np.load(fixture_dir / "test_input.npy"))
    assert np.abs(after - np.load(fixture_dir / "test_scores_after_3_steps.npy")).max() <= TOL


def test_release_state_dicts_are_recognised(fixture_dir):
    exp = json.loads((fixture_dir / "expected.json").read_text())
    state = read_checkpoint(str(fixture_dir / "state_dict.pkl"))[0]
    assert config_from_state_dict(state) == ("urdmu", exp["config"])
    parity = shared_path("fixtures", "parity")
    state = read_checkpoint(str(parity / "state_dict.pkl"))[0]
    assert config_from_state_dict(state) == ("bnwvad", json.loads((parity / "expected.json").read_text())["config"])


def random_urdmu(seed=0, **kw):
    torch.manual_seed(seed)
    return URDMU(D, **kw).eval()


def test_banded_attention_matches_release_attention():
    """The shared enhancer's fast local attention serves UR-DMU: same numbers as the dense release path."""
    model = random_urdmu()
    ref = release_model(model)
    x = torch.randn(2, 2, 2 * LOCAL_REACH + 30, D)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-5             # 4-D, crop-averaged
        assert (model(x[0]) - ref(x[0])).abs().max() <= 1e-5       # 3-D, rows alone
    model.train(), ref.train()
    outs = []
    for m in (model, ref):
        torch.manual_seed(7)                                        # the same dropout masks and noise
        outs.append(m(x[:, 0]))
    assert (outs[0]["cls_scores"] - outs[1]["cls_scores"]).abs().max() <= 1e-5


def test_packed_scores_match_per_video_scores():
    model = random_urdmu()
    rng = np.random.default_rng(0)
    lengths = [1, 9, 40, 40, 45, LOCAL_REACH + 1, 290]
    feats = [rng.normal(0.3, 1.0, (2, T, D)).astype(np.float32) for T in lengths]
    ref = [score_video(model, f, CPU) for f in feats]
    for max_snippets in (250, 10 ** 6):
        out = score_batched(model, feats, CPU, max_snippets)
        assert [len(s) for s in out] == lengths
        assert max(np.abs(a - b).max() for a, b in zip(out, ref)) <= 1e-5


def test_mask_is_for_evaluation_only():
    model = random_urdmu().train()
    x = torch.randn(4, 10, D)
    with pytest.raises(ValueError, match="evaluation mode"):
        model(x, torch.ones(4, 10, dtype=torch.bool))


def test_multi_crop_training_averages_each_crops_selection():
    """(B, N, T, D) training: memory attentions and triplet features are computed per crop (top-k
    per crop row) and then averaged over the crops, so each equals the mean of the 3-D per-crop runs."""
    model = random_urdmu(dropout=0.0).train()
    x = torch.randn(4, 3, 40, D)                                    # 2 normal, 2 abnormal videos, 3 crops
    with torch.no_grad():
        out = model(x)
        per_crop = [model(x[:, c]) for c in range(3)]
    assert out["cls_scores"].shape == (4, 40) and out["A_att"].shape == (2, 40)
    assert out["mu"].shape == (6, 40, 512) and out["anchor"].shape == (2, 512)
    for key in ("A_att", "N_Aatt", "A_Natt", "N_att", "anchor", "positive", "negative", "negative_new"):
        expected = torch.stack([o[key] for o in per_crop]).mean(0)
        assert (out[key] - expected).abs().max() <= 1e-5, key


def test_multi_crop_batch_trains():
    model = random_urdmu()
    x = torch.randn(4, 3, 40, D)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    got = train_step(model, x[:2], x[2:], optimizer, clip_norm=None)
    assert set(got) == set(LOSS_TERMS) | {"distance", "grad_norm"}
    assert all(np.isfinite(v) for v in got.values()) and got["grad_norm"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))   # every parameter trains


def test_no_clipping_reports_the_full_gradient_norm():
    model = random_urdmu()
    x = torch.randn(4, 40, D)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)        # lr 0: the step keeps the gradients readable
    got = train_step(model, x[:2], x[2:], optimizer, clip_norm=None)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert abs(got["grad_norm"] - float(norm)) <= 1e-5 * float(norm)
    got = train_step(model, x[:2], x[2:], optimizer, clip_norm=1e-3)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert got["grad_norm"] > 1e-3 and abs(float(norm) - 1e-3) <= 1e-6   # clipped, the norm before reported


@pytest.mark.parametrize("model", [
    lambda: BNWVAD(D, ratios=(8, 16), kernel_sizes=(3, 1, 3)),
    lambda: BNWVAD(2 * D),
    lambda: URDMU(D, a_nums=20, n_nums=30),
    lambda: URDMU(),
], ids=["bnwvad-shapes", "bnwvad-defaults", "urdmu-shapes", "urdmu-defaults"])
def test_config_is_read_from_shapes(model):
    model = model()
    name, config = config_from_state_dict(model.state_dict())
    assert MODELS[name] is type(model)
    assert config == model.config()
    MODELS[name](**config).load_state_dict(model.state_dict(), strict=True)


def test_settings_shapes_do_not_fix_take_defaults():
    _, config = config_from_state_dict(BNWVAD(D, ratio_sample=0.1, ratio_batch=0.2).state_dict())
    assert (config["ratio_sample"], config["ratio_batch"]) == (0.2, 0.4)
    _, config = config_from_state_dict(URDMU(D, dropout=0.1).state_dict())
    assert config["dropout"] == 0.5


def test_foreign_state_dicts_are_rejected():
    urdmu = URDMU(D, a_nums=20, n_nums=30).state_dict()
    bnwvad = BNWVAD(D).state_dict()
    bad_shape = dict(bnwvad)
    bad_shape["normal_head.conv1.weight"] = torch.zeros(48, 512, 1)  # 512 // 48 = 10 would give 51 channels
    cases = [nn.Linear(3, 4).state_dict(),
             {**urdmu, "extra.weight": torch.zeros(1)},
             {k: v for k, v in bnwvad.items() if k != "normal_head.bn2.running_var"},
             {**urdmu, **bnwvad},
             bad_shape]
    for state in cases:
        with pytest.raises(ValueError) as err:
            config_from_state_dict(state)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="bnwvad.*urdmu"):
        config_from_state_dict(cases[0])


def test_save_and_rebuild_by_config(tmp_path):
    model = random_urdmu(a_nums=20, n_nums=30)
    path = tmp_path / "ckpt.pkl"
    torch.save({"model": "urdmu", "model_config": model.config(), "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    rebuilt = MODELS[ckpt["model"]](**ckpt["model_config"])
    rebuilt.load_state_dict(ckpt["state_dict"], strict=True)
    x = torch.randn(3, 2, 50, D)
    assert np.array_equal(scores(rebuilt, x), scores(model, x))
