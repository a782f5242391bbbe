"""export.py: both releases' detectors, exported once each, give the releases' scores and torch's at
every length in ONNX Runtime, in memory linear in T; one-line errors; the README's onnxruntime example
runs as written. Skips, with the install command, where onnx, onnxruntime or onnxscript is missing."""
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoints import load_model
from conftest import ROOT, shared_path
from model import BNWVAD
from onnx_export import INSTALL, PACKAGES, TOL
from utils import InputError

MISSING = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: {INSTALL}")
LENGTHS = (1, 2, 7, 41, 63, 255, 256, 257, 1001, 2049)   # odd, around the local attention's blocks


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{fixture name: (its detector.onnx written by export.py, the release checkpoint)}; exported once."""
    import export
    files = {}
    for name in ("parity", "urdmu"):
        ckpt = shared_path("fixtures", name, "state_dict.pkl")
        out = tmp_path_factory.mktemp(name)
        export.main(["--model_path", str(ckpt), "--out", str(out)])
        files[name] = (out / "detector.onnx", ckpt)
    return files


def session(path):
    import onnxruntime
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["parity", "urdmu"])
def test_exported_detectors_give_release_scores(exported, name):
    path, _ = exported[name]
    fixture = shared_path("fixtures", name)
    x = np.load(fixture / "test_input.npy")                                   # (5, 41, 1024)
    got = session(path).run(None, {"features": x})[0]
    expected = np.load(fixture / "test_scores.npy")
    assert got.shape == expected.shape == (5, 41)
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ["parity", "urdmu"])
def test_exported_detectors_give_torch_scores_at_every_length(exported, name):
    path, ckpt = exported[name]
    model, s = load_model(ckpt)[0], session(path)
    rng = np.random.default_rng(7)
    for T in LENGTHS:
        x = rng.standard_normal((3 if T < 300 else 1, T, 1024), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = s.run(None, {"features": x})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOL * max(1.0, np.abs(expected).max()), T


MEMORY = """
import resource, sys, numpy as np, onnxruntime
s = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
run = lambda T: s.run(None, {"features": np.zeros((1, T, 1024), np.float32)})
run(512)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run(4096)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_exported_attention_holds_no_t_by_t_matrix(exported):
    """At T = 4096 one (heads, T, T) float32 attention matrix is 256 MB, and an unfused attention holds
    two (scores, softmax); the whole run's peak memory grows by less than one (measured: about 160 MB,
    all of it linear in T), and the graph has no Softmax left (each attention is one fused operator)."""
    import onnx
    path, _ = exported["parity"]
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "Softmax" not in ops
    grown = int(subprocess.run([sys.executable, "-c", MEMORY, str(path)], capture_output=True, text=True,
                               check=True).stdout)
    assert grown < 4 * 4096 ** 2 * 4, grown


def readme_snippet():
    """The README's python block of the section on exporting."""
    section = (ROOT / "README.md").read_text().split("## Exporting to ONNX", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_scores_a_feature_file_with_onnxruntime_alone(exported, tmp_path):
    path, ckpt = exported["parity"]
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "detector.onnx").symlink_to(path)
    (tmp_path / "features").mkdir()
    x = np.load(shared_path("fixtures", "parity", "test_input.npy"))          # 5 crops of one 41-snippet video
    for k, crop in enumerate(x):
        np.save(tmp_path / "features" / f"video__{k}.npy", crop)
    # torch is hidden from the snippet: it must run on numpy and onnxruntime alone
    code = "import sys; sys.modules['torch'] = None\n" + readme_snippet()
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    with torch.no_grad():
        scores = load_model(ckpt)[0](torch.from_numpy(x)).mean(0).numpy()
    lines = out.splitlines()
    assert len(lines) == 5
    for line, t in zip(lines, np.argsort(-scores, kind="stable")[:5]):
        got = re.fullmatch(r"snippet (\d+) \(frames (\d+)-(\d+)\): ([\d.]+)", line).groups()
        assert (int(got[0]), int(got[1]), int(got[2])) == (t, 16 * t, 16 * t + 16)
        assert abs(float(got[3]) - scores[t]) <= 1e-4


class DataDependent(BNWVAD):
    """A model whose control flow depends on its input's values: torch.export cannot capture it."""

    def forward(self, x, mask=None):
        return super().forward(x) if x.sum() > 0 else -super().forward(x)


def test_a_model_that_cannot_export_is_one_line_and_writes_nothing(tmp_path):
    from onnx_export import export_detector
    with pytest.raises(InputError) as e:
        export_detector(DataDependent(len_feature=16).eval(), tmp_path / "detector.onnx", "checkpoint x.pkl")
    assert str(e.value).startswith("checkpoint x.pkl cannot be exported to ONNX (") and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_command_refusals_are_one_line(tmp_path):
    bad = tmp_path / "other.pkl"
    torch.save({"weight": torch.zeros(3)}, bad)
    for argv, says in [(["--model_path", str(bad)], "is not a known model's state dict"),
                       (["--model_path", str(tmp_path / "none.pkl")], "does not exist")]:
        r = subprocess.run([sys.executable, "export.py", *argv, "--out", str(tmp_path / "out")], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out" / "detector.onnx").exists()


def test_missing_packages_name_the_install_command(monkeypatch):
    import onnx_export
    real = importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda n: None if n == "onnxruntime" else real(n))
    with pytest.raises(InputError, match=re.escape(f"export needs onnxruntime, not installed: {INSTALL}")):
        onnx_export.require_onnx()


def test_exported_i3d_gives_the_ports_features(tmp_path):
    """i3d.onnx on the I3D fixture's three snippets: the public port's features, N taken as given."""
    from onnx_export import export_i3d
    fixture = shared_path("fixtures", "i3d")
    export_i3d(fixture / "i3d_rgb_state_dict.pt", tmp_path / "i3d.onnx")
    frames = np.load(fixture / "frames.npy").astype(np.float32) / 255 * 2 - 1   # (48, 224, 224, 3)
    clips = np.ascontiguousarray(frames.reshape(3, 16, 224, 224, 3).transpose(0, 4, 1, 2, 3))   # (N, 3, 16, 224, 224)
    got = session(tmp_path / "i3d.onnx").run(None, {"clips": clips})[0]
    assert got.shape == (3, 1024)
    assert np.abs(got - np.load(fixture / "features.npy")).max() <= 1e-4
