"""The detectors (BN-WVAD, UR-DMU) and I3D as ONNX files for ONNX Runtime, each checked against
torch before it is kept.

detector.onnx: input `features` (N, T, D) float32, N rows scored independently (a video's crops),
T any length; output `scores` (N, T), each row's per-snippet anomaly scores, model(x) in evaluation
mode. infer.py and test.py report a video's scores as their mean over its crops, scores.mean(0):
BN-WVAD's raw (d_1 + d_2) * s, UR-DMU's classifier score in [0, 1].
i3d.onnx: input `clips` (N, 3, 16, 224, 224) RGB in [-1, 1]; output `features` (N, 1024).

The graph is captured by torch.onnx's dynamo exporter with N and T symbolic (model.banded_local_mix
keeps every T-derived size symbolic, so the banded local attention stays O(T)), then onnxscript's
ONNX Runtime fusions replace each global attention (softmax(q k^T / sqrt(d)) v) by ONNX Runtime's
MultiHeadAttention, whose CPU kernel never holds the T x T matrix: memory grows with T, not T^2.
The file therefore needs ONNX Runtime (other runtimes lack that operator).
Needs the optional packages in INSTALL; every function here raises InputError (one line) for a
missing package, a checkpoint that does not load or export, or an export that does not match torch.
"""
import contextlib
import importlib.util
import logging
import warnings

import numpy as np
import torch

from model import Attention
from utils import InputError, atomic_write, one_line

PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INSTALL = "pip install onnx onnxruntime onnxscript"
TRACE_T = 41                   # snippets of the example input the graph is traced with
CHECK_T = (1, 2, 7, 41, 300)   # lengths every exported detector is compared with torch at
MAX_SIZE = 1 << 20              # largest N and T the graph is declared for
TOL = 1e-4                     # largest |ONNX Runtime - torch| accepted, relative to max(1, |score|)


def require_onnx():
    """Raise InputError naming the missing packages and the pip command, if any is missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"export needs {', '.join(missing)}, not installed: {INSTALL}")


def ort_session(path):
    """An ONNX Runtime CPU session of the file at path."""
    import onnxruntime
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def first_line(error):
    """utils.one_line, cut to 300 characters (an exporter's message can be one very long line)."""
    return one_line(error)[:300]


@contextlib.contextmanager
def quiet(logger):
    """Only errors from `logger` while the block runs."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def capture(module, example, names, dynamic, what):
    """torch.onnx (dynamo) graph of module(example) as an onnx_ir model; dynamic: {axis: name} of the input."""
    shapes = ({axis: torch.export.Dim(name, min=1, max=MAX_SIZE) for axis, name in dynamic.items()},)
    try:
        # the exporter's notes on missing torchvision ops and deprecations are not the user's concern
        with torch.no_grad(), warnings.catch_warnings(), quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=shapes, input_names=names[:1],
                                        output_names=names[1:], external_data=False, verbose=False)
    except Exception as e:  # the exporter raises many kinds; each means "this model does not export"
        raise InputError(f"{what} cannot be exported to ONNX ({type(e).__name__}: {first_line(e)})") from None
    return program.model


def fuse_attention(ir_model, expected, what):
    """onnxscript's ONNX Runtime fusions; each of the `expected` global attentions must become one
    MultiHeadAttention and no Softmax may remain (else the graph holds T x T scores)."""
    import onnxscript
    from onnxscript.rewriter.ort_fusions import optimize_for_ort
    fused, _ = optimize_for_ort(ir_model)
    ops = [node.op_type for node in fused.graph.all_nodes()]
    if ops.count("MultiHeadAttention") != expected or "Softmax" in ops:
        raise InputError(f"{what}: onnxscript fused {ops.count('MultiHeadAttention')} of the {expected} global "
                         f"attentions into MultiHeadAttention (onnxscript {onnxscript.__version__}); the rest would "
                         f"hold T x T scores; nothing written")
    return fused


def save_checked(ir_model, path, check):
    """Write ir_model to a temporary file beside path and run check(temporary path) before it becomes
    path (utils.atomic_write): a failed export leaves no file, and an earlier one untouched."""
    import onnx_ir

    def write(tmp):
        onnx_ir.save(ir_model, tmp)
        check(tmp)
    atomic_write(path, write)


def detector_gap(session, model, x):
    """max |ONNX Runtime - torch| / max(1, max |torch|) of the scores of x (N, T, D) float32 array."""
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = session.run(None, {"features": x})[0]
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


def export_detector(model, path, what, check_t=CHECK_T):
    """Export a BNWVAD or URDMU (eval mode) to path and return {T: relative gap to torch} at check_t.

    Raises InputError when it does not export or any gap is above TOL (nothing is written then).
    """
    require_onnx()
    model = model.eval()
    rng = np.random.default_rng(0)
    example = torch.from_numpy(rng.standard_normal((2, TRACE_T, model.len_feature), dtype=np.float32))
    ir_model = capture(model, example, ["features", "scores"], {0: "N", 1: "T"}, what)
    attentions = sum(isinstance(m, Attention) for m in model.modules())
    ir_model = fuse_attention(ir_model, attentions, what)
    gaps = {}

    def check(tmp):
        session = ort_session(tmp)
        for T in check_t:
            x = rng.standard_normal((2, T, model.len_feature), dtype=np.float32)
            gaps[T] = detector_gap(session, model, x)
            if not gaps[T] <= TOL:
                raise InputError(f"{what}: the exported graph's scores differ from torch's by {gaps[T]:.2g} "
                                 f"(relative) at T = {T}, above {TOL}; nothing written")
    save_checked(ir_model, path, check)
    return gaps


def export_i3d(weights, path):
    """Export I3D (the state dict at `weights`) to path: (N, 3, 16, 224, 224) in [-1, 1] -> (N, 1024),
    N dynamic. Returns the largest |ONNX Runtime - torch| on two random clips; raises InputError."""
    require_onnx()
    from video.backends import Features
    from video.weights import load_i3d
    try:
        net = Features(load_i3d(weights)).eval()
    except (OSError, ValueError) as e:
        raise InputError(first_line(e)) from None
    rng = np.random.default_rng(0)
    clips = rng.uniform(-1, 1, (2, 3, 16, 224, 224)).astype(np.float32)
    ir_model = capture(net, torch.from_numpy(clips), ["clips", "features"], {0: "N"}, f"I3D {weights}")
    gap = []

    def check(tmp):
        with torch.no_grad():
            expected = net(torch.from_numpy(clips)).numpy()
        gap.append(float(np.abs(ort_session(tmp).run(None, {"clips": clips})[0] - expected).max()))
        if not gap[0] <= TOL:
            raise InputError(f"I3D {weights}: the exported graph's features differ from torch's by {gap[0]:.2g}, "
                             f"above {TOL}; nothing written")
    save_checked(ir_model, path, check)
    return gap[0]
