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

from core.checkpoints import load_model
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



def test_the_reported_checkpoints_of_other_code_score_through_infer(tmp_path, capsys, models):
    """The reported three: torch.compile's `_orig_mod.` (nanoGPT#325), VadCLIP's {'model_state_dict',
    'ap': numpy.float64}, and {'state_dict', 'args': Namespace}: each scores as the bare state dict does."""
    model = models["bnwvad"][0]
    state = model.state_dict()
    features = feature_folder(tmp_path / "f", 1)
    torch.save(state, tmp_path / "bare.pth")
    assert infer_run(["--model_path", str(tmp_path / "bare.pth"), "--features", str(features)], capsys,
                     tmp_path).returncode == 0
    expected = (tmp_path / "out" / "scores.csv").read_text()
    reported = {"compiled.pth": {f"_orig_mod.{k}": v for k, v in state.items()},
                "vadclip.pth": {"model_state_dict": state, "ap": np.float64(0.8412)},
                "args.pth": {"state_dict": state, "args": argparse.Namespace(lr=0.0005, dataset="xd")}}
    for name, obj in reported.items():
        torch.save(obj, tmp_path / name)
        r = infer_run(["--model_path", str(tmp_path / name), "--features", str(features), "--overwrite"], capsys,
                      tmp_path)
        assert r.returncode == 0 and f"note: checkpoint {tmp_path / name}: unwrapped" in r.stderr, r.stderr
        assert (tmp_path / "out" / "scores.csv").read_text() == expected


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


# ---- a checkpoint and its input: crop count, the features' origin, non-finite scores ----

def our_checkpoint(path, D=D, model=None, **meta):
    """A checkpoint as main.py writes it (save_checkpoint), with the training features' meta."""
    from utils import save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(path, model or BNWVAD(D), 10, {"AP": 50.0}, **{"dataset": "xd", "len_feature": D, **meta})
    return str(path)


def feature_folder(folder, crops, names=("a_label_A", "b_label_B1-0-0"), T=6, D=D, suffix=True, bad=None):
    """Feature files of `crops` crops per video (`<video>__<k>.npy`, or one suffix-less `<video>.npy`
    for a 1-crop video with suffix=False); bad: a value written into the first file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i, name in enumerate(names):
        for k in range(crops):
            x = rng.normal(0.5, 0.2, (T, D)).astype(np.float32)
            if bad is not None and i == 0 and k == 0:
                x[2, 5] = bad
            np.save(folder / (f"{name}__{k}.npy" if suffix else f"{name}.npy"), x)
    return folder


def infer_run(argv, capsys, tmp_path):
    import infer
    from helpers import call
    return call(infer.main, argv + ["--device", "cpu", "--output_dir", str(tmp_path / "out")], capsys)


def one_line_error(r, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "\x1b" not in r.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("trained,given,suffix", [(5, 1, True), (5, 1, False), (1, 5, True), (10, 5, True),
                                                  (5, 10, True)])
def test_features_of_another_crop_count_are_refused_as_a_test_list_refuses_them(tmp_path, capsys, trained, given,
                                                                              suffix):
    ckpt = our_checkpoint(tmp_path / "c.pkl", crops=trained)
    features = feature_folder(tmp_path / "f", given, suffix=suffix)
    said = f"checkpoint {ckpt} was trained on {trained}-crop features, but these have {given} crop(s) per video"
    one_line_error(infer_run(["--model_path", ckpt, "--features", str(features)], capsys, tmp_path), said,
                   f"give --crops {given}")
    assert not (tmp_path / "out").exists()
    # the test-list path says the same, through the same check
    (tmp_path / "test.list").write_text("".join(f"{p.name}\n" for p in sorted(features.iterdir())))
    r = infer_run(["--model_path", ckpt, "--root_dir", str(features), "--test_list", str(tmp_path / "test.list"),
                   "--gt", str(tmp_path / "none.npy")], capsys, tmp_path)
    one_line_error(r, said)
    if (trained, given, suffix) == (5, 1, False):     # the count they have, given on the command line, scores them
        r = infer_run(["--model_path", ckpt, "--features", str(features), "--crops", str(given)], capsys, tmp_path)
        assert r.returncode == 0 and "scored 2 videos" in r.stdout, r.stderr


def test_a_bare_state_dict_scores_features_of_any_crop_count(tmp_path, capsys):
    """A release's state dict records no crop count: nothing to check against."""
    torch.save(BNWVAD(D).state_dict(), tmp_path / "bare.pkl")
    r = infer_run(["--model_path", str(tmp_path / "bare.pkl"), "--features", str(feature_folder(tmp_path / "f", 1))],
                  capsys, tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def probe_i3d(monkeypatch, tmp_path):
    """infer.py --video with the GridProbe stand-in for I3D (cheap) and a weights file to name."""
    from helpers import GridProbe
    monkeypatch.setattr("video.weights.load_i3d", lambda *a, **k: GridProbe())
    weights = tmp_path / "other_i3d.pt"
    weights.write_bytes(b"weights B")
    return weights


def test_a_demo_checkpoint_on_video_names_both_sides(tmp_path, capsys, probe_i3d):
    from helpers import write_video
    ckpt = our_checkpoint(tmp_path / "demo_best_2022.pkl", D=1024, dataset="demo", crops=1, extraction=None)
    video = write_video(tmp_path / "real.mp4", 20)
    r = infer_run(["--model_path", ckpt, "--video", str(video), "--i3d_weights", str(probe_i3d)], capsys, tmp_path)
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"checkpoint {ckpt} was trained on synthetic demo features" in warning[0]
    assert "these videos' features are I3D features of video" in warning[0]



def test_a_demo_checkpoint_on_a_stream_names_both_sides(tmp_path, capsys, monkeypatch):
    import stream
    from helpers import GridProbe, write_video
    monkeypatch.setattr(stream, "load_i3d", lambda path, device: GridProbe().to(device))
    ckpt = our_checkpoint(tmp_path / "demo_best_2022.pkl", D=1024, dataset="demo", crops=1, extraction=None)
    stream.main([str(write_video(tmp_path / "cam.mp4", 20)), "--model_path", ckpt, "--i3d_weights", "x.pt",
                 "--threshold", "1e9", "--window", "4", "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"checkpoint {ckpt} was trained on synthetic demo features" in warning[0]
    assert "the stream's features are I3D features of video" in warning[0]

def test_features_of_other_i3d_weights_or_extractor_name_both_sides(tmp_path, capsys, probe_i3d):
    """--features with extract.py's records beside them: a demo checkpoint, one trained on features of
    other I3D weights, and one of another extractor version each get a warning naming both."""
    from helpers import GridProbe, write_video
    from video.extraction import extract_videos
    from video.records import FEATURE_VERSION, extraction_settings, weights_identity
    videos = [write_video(tmp_path / f"v{i}.mp4", 20) for i in range(2)]
    assert extract_videos(videos, GridProbe(), tmp_path / "f", crops=1, progress=False,
                          weights=weights_identity(probe_i3d)) == {}
    theirs = tmp_path / "kinetics.pt"
    theirs.write_bytes(b"weights A")
    cases = {"demo": (dict(dataset="demo", extraction=None), ["synthetic demo features", "v0"]),
             "weights": (dict(extraction=extraction_settings(1, weights=weights_identity(theirs))),
                         [str(theirs.resolve()), str(probe_i3d.resolve()), "the features of v0", "(and 1 more"]),
             "version": (dict(extraction=extraction_settings(1, weights=weights_identity(probe_i3d)) |
                              dict(version=FEATURE_VERSION - 1)),
                         [f"extractor version {FEATURE_VERSION - 1}", f"are of version {FEATURE_VERSION}"]),
             "same": (dict(extraction=extraction_settings(1, weights=weights_identity(probe_i3d))), None)}
    for name, (meta, words) in cases.items():
        ckpt = our_checkpoint(tmp_path / f"{name}.pkl", D=1024, crops=1, **meta)
        r = infer_run(["--model_path", ckpt, "--features", str(tmp_path / "f"), "--overwrite"], capsys, tmp_path)
        assert r.returncode == 0, r.stderr
        warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
        if words is None:
            assert warnings == []
            continue
        assert len(warnings) == 1 and f"checkpoint {ckpt}" in warnings[0], warnings
        assert all(w in warnings[0] for w in words), warnings[0]


def test_a_checkpoint_of_another_width_on_video_names_both(tmp_path, capsys, probe_i3d):
    from helpers import write_video
    ckpt = our_checkpoint(tmp_path / "clip512.pkl", D=512, crops=1)
    r = infer_run(["--model_path", ckpt, "--video", str(write_video(tmp_path / "v.mp4", 20))], capsys, tmp_path)
    one_line_error(r, f"checkpoint {ckpt} takes 512-d features; I3D gives 1024-d")


def test_a_diverged_checkpoint_is_refused_before_scoring(tmp_path, capsys):
    """Every weight NaN: refused by the reader, with --threshold 0 and with a ground truth (no '0 segments',
    no scikit-learn traceback), and nothing is written."""
    model = BNWVAD(D)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    ckpt = our_checkpoint(tmp_path / "nan.pkl", model=model, crops=1)
    features = feature_folder(tmp_path / "f", 1)
    r = infer_run(["--model_path", ckpt, "--features", str(features), "--threshold", "0"], capsys, tmp_path)
    one_line_error(r, f"checkpoint {ckpt}: tensor embedding.conv_1.0.weight holds")
    (tmp_path / "test.list").write_text("".join(f"{p.name}\n" for p in sorted(features.iterdir())))
    np.save(tmp_path / "gt.npy", np.r_[np.zeros(6 * 16), np.ones(6 * 16)].astype(np.uint8))
    r = infer_run(["--model_path", ckpt, "--root_dir", str(features), "--test_list", str(tmp_path / "test.list"),
                   "--gt", str(tmp_path / "gt.npy")], capsys, tmp_path)
    one_line_error(r, "holds", "NaN or inf")
    assert not (tmp_path / "out").exists()


def nan_model():
    """Finite weights that still give NaN scores: a batch-norm running variance below zero."""
    model = BNWVAD(D).eval()
    with torch.no_grad():
        model.normal_head.bn1.running_var.fill_(-1.0)
    return model


def test_non_finite_scores_of_finite_weights_name_the_video_on_every_path(tmp_path, capsys):
    from dataset import TestSet
    from core.features import find_videos
    from live.scoring import CausalScorer
    from test import evaluate
    ckpt = our_checkpoint(tmp_path / "bn.pkl", model=nan_model(), crops=1)
    features = feature_folder(tmp_path / "f", 1)
    r = infer_run(["--model_path", ckpt, "--features", str(features), "--threshold", "0"], capsys, tmp_path)
    one_line_error(r, "video a_label_A: 6 of its 6 snippet scores are NaN or inf (the first at snippet 0)",
                   "its features are finite")
    assert not (tmp_path / "out").exists()
    videos = find_videos([str(features)], D)
    for v in videos:
        v.normal = v.name.endswith("_A")
    test_set = TestSet(videos, D, annotations=None)
    test_set.gt = np.r_[np.zeros(6 * 16), np.ones(6 * 16)]
    with pytest.raises(InputError, match="video a_label_A: 6 of its 6 snippet scores are NaN"):
        evaluate(nan_model(), test_set, torch.device("cpu"))
    scorer = CausalScorer(nan_model(), torch.device("cpu"), window=4, name="cam1")
    with pytest.raises(InputError, match="video cam1: 1 of its 1 snippet scores are NaN"):
        scorer.push(0, np.ones((1, D), np.float32))


def test_non_finite_features_are_named(tmp_path, capsys):
    """In a feature file: refused naming the file. Reaching the scorer (features of a stream): named as
    the cause."""
    from live.scoring import CausalScorer
    ckpt = our_checkpoint(tmp_path / "c.pkl", crops=1)
    for value in (float("nan"), float("inf")):
        features = feature_folder(tmp_path / f"f{value}", 1, bad=value)
        r = infer_run(["--model_path", ckpt, "--features", str(features)], capsys, tmp_path)
        one_line_error(r, f"feature file {features / 'a_label_A__0.npy'} contains NaN or Inf values")
    scorer = CausalScorer(BNWVAD(D).eval(), torch.device("cpu"), window=4, name="cam2")
    x = np.ones((2, D), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(InputError, match=r"video cam2: .* NaN or inf .*: its features hold 1 NaN or inf value"):
        scorer.push(0, x)
