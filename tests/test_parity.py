"""The authors' release, reproduced: their checkpoint loads strictly and gives their numbers."""
import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from model import BNWVAD
from train import train_step
from utils import read_checkpoint

TOL = 1e-4


@pytest.fixture
def fixture_dir():
    return shared_path("fixtures", "parity")


def release_model(fixture_dir):
    cfg = json.loads((fixture_dir / "expected.json").read_text())["config"]
    model = BNWVAD(**cfg)
    model.load_state_dict(read_checkpoint(str(fixture_dir / "state_dict.pkl"))[0], strict=True)
    return model


def scores(model, x):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_eval_scores_match_release(fixture_dir):
    model = release_model(fixture_dir)
    x = np.load(fixture_dir / "test_input.npy")
    expected = np.load(fixture_dir / "test_scores.npy")
    got = scores(model, x)
    assert got.shape == expected.shape == (5, 41)
    assert np.abs(got - expected).max() <= TOL


def test_three_training_steps_match_release(fixture_dir):
    model = release_model(fixture_dir)
    exp = json.loads((fixture_dir / "expected.json").read_text())
    o = exp["optimizer"]
    optimizer = torch.optim.Adam(model.parameters(), lr=o["lr"], betas=tuple(o["betas"]),
                                 weight_decay=o["weight_decay"])
    batch = torch.from_numpy(np.load(fixture_dir / "train_input.npy"))
    for step in exp["train_steps"]:
        got = train_step(model, batch[:4], batch[4:], optimizer, clip_norm=o["clip_grad_norm"])
        for key in ("normal_loss", "mpp_loss", "total_loss"):
            assert abs(got[key] - step[key]) <= TOL, (key, got[key], step[key])
        # the gradient norm before clipping is in the hundreds: compare relatively
        assert abs(got["grad_norm"] - step["grad_norm"]) <= TOL * max(1.0, step["grad_norm"])
    after = scores(model, np.load(fixture_dir / "test_input.npy"))
    assert np.abs(after - np.load(fixture_dir / "test_scores_after_3_steps.npy")).max() <= TOL


def test_crops_in_eval_are_averaged_inside(fixture_dir):
    """(B, N, T, D) input: d_1, d_2 and s are averaged over crops before the product."""
    model = release_model(fixture_dir).eval()
    x = torch.from_numpy(np.load(fixture_dir / "test_input.npy"))           # (5, 41, D): 5 crops of one video
    with torch.no_grad():
        got = model(x[None])                                                # (1, 41)
        h = model.selfatt(model.embedding(x))
        (f1, f2), s = model.normal_head(h.transpose(1, 2))
        d = [torch.sqrt(((f - bn.running_mean[:, None]) ** 2 / bn.running_var[:, None]).sum(1))
             for f, bn in zip((f1, f2), model.normal_head.bns)]
    expected = (d[0].mean(0) + d[1].mean(0)) * s.mean(0)
    assert got.shape == (1, 41)
    assert torch.allclose(got[0], expected, atol=1e-5)


def test_multi_crop_training_input(fixture_dir):
    """(B, N, T, D) training batches work (the release crashes on them) and select crop-averaged features."""
    model = release_model(fixture_dir)
    batch = torch.from_numpy(np.load(fixture_dir / "train_input.npy"))      # (8, 32, D)
    crops = torch.stack([batch, batch * 1.01, batch * 0.99], dim=1)         # (8, 3, 32, D)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    got = train_step(model, crops[:4], crops[4:], optimizer)
    assert all(np.isfinite(v) for v in got.values())
    assert got["normal_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.train()
    out = model(crops)
    for layer in out["layers"]:
        assert layer["normal_sel"].shape == layer["abnormal_sel"].shape
        assert layer["normal_sel"].shape[0] > 0
