"""The one checkpoint reader (utils.read_checkpoint, checkpoints.load_model) over a generated corpus:
real BN-WVAD and UR-DMU models saved by torch.save as other training code saves them (every
combination of `module.` / `_orig_mod.` prefixes, the common wrappers, numpy and argparse metadata)
load to the same scores; non-finite weights, code, cut-off files, other files and other shapes are
refused in one plain line that names the file. Then the checks between a checkpoint and its input
(crop count, the features' origin, non-finite scores) on every scoring path."""
import argparse
import itertools
import os
import pickle

import numpy as np
import pytest
import torch

from checkpoints import load_model
from model import BNWVAD, URDMU
from utils import InputError, read_checkpoint

D = 64
PREFIXES = ["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.", "module.module."]
WRAPPERS = [None, "state_dict", "model_state_dict", "model", "net"]
EXTRAS = {   # metadata other training code keeps beside the weights
    "none": {},
    "np.float64": {"ap": np.float64(0.8123), "auc": np.float32(0.9)},
    "np.int64": {"epoch": np.int64(12), "best_step": np.int32(7)},
    "Namespace": {"args": argparse.Namespace(lr=1e-4, batch_size=64, dataset="xd", ratios=[16, 32])},
    "np.ndarray": {"history": np.arange(5, dtype=np.float64), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
}


@pytest.fixture(scope="module")
def models():
    """A real BN-WVAD and UR-DMU (random weights, BN statistics moved off their defaults) and their
    scores on one input."""
    torch.manual_seed(0)
    x = torch.randn(2, 20, D)
    out = {}
    for name, model in (("bnwvad", BNWVAD(D)), ("urdmu", URDMU(D, a_nums=12, n_nums=14))):
        model.train()
        with torch.no_grad():
            model(x)        # BN running statistics off their defaults
        model.eval()
        with torch.no_grad():
            out[name] = (model, model(x), x)
    return out


def wrapped(state, prefix, wrapper, extra):
    """The state dict as other code saves it: keys prefixed, maybe under a wrapper key with metadata."""
    state = {prefix + k: v for k, v in state.items()}
    return state if wrapper is None else {wrapper: state, **extra}


def corpus():
    """Every prefix combination x every wrapper; the metadata kinds rotate so that each meets every
    prefix and every wrapper (a bare state dict has none)."""
    kinds = list(EXTRAS)
    return [(p, w, "none" if w is None else kinds[(i + j) % len(kinds)])
            for (i, p), (j, w) in itertools.product(enumerate(PREFIXES), enumerate(WRAPPERS))]


@pytest.mark.parametrize("name", ["bnwvad", "urdmu"])
@pytest.mark.parametrize("prefix,wrapper,extra", corpus())
def test_other_codes_checkpoints_load_to_the_same_scores(tmp_path, capsys, models, name, prefix, wrapper, extra):
    model, expected, x = models[name]
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped(model.state_dict(), prefix, wrapper, EXTRAS[extra]), path)
    loaded, record = load_model(str(path))
    assert record is None and type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    note = capsys.readouterr().err
    if prefix or wrapper:
        assert note.count("\n") == 1 and f"note: checkpoint {path}: unwrapped" in note
        assert all(f"'{p}.'" in note for p in ("module", "_orig_mod") if p in prefix)
        assert wrapper is None or f"the state dict under '{wrapper}'" in note
    else:
        assert note == ""


def test_a_wrapper_inside_a_wrapper_and_a_compiled_submodule(tmp_path, capsys, models):
    model, expected, x = models["bnwvad"]
    state = {(k.replace("embedding.", "embedding._orig_mod.", 1)): v for k, v in model.state_dict().items()}
    torch.save({"net": {"state_dict": {f"_orig_mod.module.{k}": v for k, v in state.items()}, "epoch": np.int64(3)},
                "args": argparse.Namespace(seed=1)}, tmp_path / "nested.pth")
    loaded, _ = load_model(str(tmp_path / "nested.pth"))
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert "under 'net'" in capsys.readouterr().err


def test_a_checkpoint_pickled_under_numpy_1_loads(tmp_path, models):
    """numpy 1 named its scalar constructor numpy.core.multiarray.scalar (numpy 2: numpy._core)."""
    model, expected, x = models["bnwvad"]
    path = tmp_path / "np1.pth"
    torch.save({"model_state_dict": model.state_dict(), "ap": np.float64(0.5), "hist": np.ones(3)}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded, _ = load_model(str(path))
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


# ---- refusals: one line, no terminal codes, the file named, what blocked it said ----

def refused(path, *words):
    with pytest.raises(InputError) as e:
        load_model(str(path))
    text = str(e.value)
    assert "\n" not in text and "\x1b" not in text and str(path) in text, text
    assert "Weights only load failed" not in text and "weights_only=False" not in text, text
    for word in words:
        assert word in text, text
    return text


class Payload:
    """Pickles as a call of `call` with `args`: a file that runs code when unpickled naively."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call,blocked", [(os.system, os.system.__module__ + ".system"), (exec, "builtins.exec"),
                                          (getattr, "builtins.getattr")])
@pytest.mark.parametrize("where", ["top", "metadata", "namespace"])
def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs_it(tmp_path, models, call, blocked, where):
    marker = tmp_path / "ran"
    payload = Payload(os.system, f"touch {marker}") if call is os.system else \
        Payload(exec, f"open({str(marker)!r}, 'w').close()") if call is exec else Payload(getattr, "x", "upper")
    state = models["bnwvad"][0].state_dict()
    obj = {"top": {"state_dict": state, "x": payload},
           "metadata": {"model_state_dict": state, "meta": {"ap": np.float64(1), "hook": [payload]}},
           "namespace": {"state_dict": state, "args": argparse.Namespace(lr=payload)}}[where]
    torch.save(obj, tmp_path / "ckpt.pth")
    refused(tmp_path / "ckpt.pth", f"holds {blocked}", "not data", "nothing in it is run")
    assert not marker.exists()


def test_a_whole_pickled_model_is_refused_with_what_to_save(tmp_path, models):
    torch.save(models["bnwvad"][0], tmp_path / "whole.pth")
    refused(tmp_path / "whole.pth", "model.BNWVAD", "a whole pickled model: save its state_dict() instead")


@pytest.mark.parametrize("where", ["all", "one"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, models, where, value):
    """A diverged run (every weight NaN) or one bad tensor, bare, wrapped, or in our own format."""
    state = {k: v.clone() for k, v in models["urdmu"][0].state_dict().items()}
    bad = "Amemory.memory_block" if where == "one" else next(k for k, v in state.items() if v.is_floating_point())
    for k, v in state.items():
        if where == "all" and v.is_floating_point():
            v.fill_(value)
    state[bad].view(-1)[3] = value
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "bare.pth")
    refused(tmp_path / "bare.pth", f"tensor {bad} holds", "NaN or inf", "diverged")
    from utils import save_checkpoint
    model = URDMU(D, a_nums=12, n_nums=14)
    model.load_state_dict(state)
    save_checkpoint(tmp_path / "ours.pkl", model, 3, {"AP": 1.0}, model_name="urdmu")
    refused(tmp_path / "ours.pkl", f"tensor {bad} holds")


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_a_cut_off_checkpoint_is_refused(tmp_path, models, legacy, fraction):
    torch.save(models["bnwvad"][0].state_dict(), tmp_path / "full.pth", _use_new_zipfile_serialization=not legacy)
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:int(len(data) * fraction)])
    refused(tmp_path / "cut.pth", "is not a readable PyTorch checkpoint")


@pytest.mark.parametrize("kind", ["text", "empty", "npy", "pickle", "json", "list"])
def test_what_is_not_a_checkpoint_is_refused(tmp_path, kind):
    path = tmp_path / "file.pth"
    if kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((3, 4)))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    elif kind == "json":
        path.write_text('{"state_dict": {}}')
    else:
        torch.save([torch.zeros(2)], path)
    words = {"empty": ["it is empty"], "list": ["neither a BN-WVAD checkpoint nor a state dict", "a list"]}
    refused(path, *words.get(kind, ["is not a readable PyTorch checkpoint"]))


def test_a_state_dict_of_another_shape_is_refused(tmp_path, models):
    state = dict(models["bnwvad"][0].state_dict())
    state["normal_head.conv1.weight"] = torch.zeros(5, 512, 1)     # no ratio gives 5 channels
    torch.save({"state_dict": state}, tmp_path / "shape.pth")
    refused(tmp_path / "shape.pth", "whose shapes fit no bnwvad config", "normal_head.conv1.bias (32,) != (5,)")
    state = {k: v for k, v in models["bnwvad"][0].state_dict().items() if "normal_head" not in k}
    torch.save(state, tmp_path / "keys.pth")
    refused(tmp_path / "keys.pth", "not a known model's state dict")


def test_two_keys_that_unwrap_to_one_name_are_not_merged(tmp_path, models):
    state = models["bnwvad"][0].state_dict()
    both = {**{f"module.{k}": v for k, v in state.items()}, **{f"_orig_mod.{k}": v for k, v in state.items()}}
    torch.save(both, tmp_path / "twice.pth")
    with pytest.raises(InputError, match="neither a BN-WVAD checkpoint nor a state dict"):
        read_checkpoint(str(tmp_path / "twice.pth"))
