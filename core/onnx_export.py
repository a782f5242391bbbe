"""The detectors (BN-WVAD, UR-DMU) and I3D as ONNX files for ONNX Runtime (I3D also as OpenVINO IR),
each checked against torch before it is kept.

detector.onnx: input `features` (N, T, D) float32, N rows scored independently (a video's crops),
T any length; output `scores` (N, T), each row's per-snippet anomaly scores, model(x) in evaluation
mode. infer.py and test.py report a video's scores as their mean over its crops, scores.mean(0):
BN-WVAD's raw (d_1 + d_2) * s, UR-DMU's classifier score in [0, 1].
i3d.onnx: input `clips` (N, 3, 16, 224, 224) RGB in [-1, 1]; output `features` (N, 1024). It is the
file the I3D backends run (video.backends.cached_onnx, torch's TorchScript exporter), copied.
i3d.xml / i3d.bin: the same graph as OpenVINO IR, float32 weights (and detector.xml / .bin).

The detector's graph is captured by torch.onnx's dynamo exporter with N and T symbolic
(model.banded_local_mix keeps every T-derived size symbolic, so the banded local attention stays
O(T)), then onnxscript's ONNX Runtime fusions replace each global attention (softmax(q k^T /
sqrt(d)) v) by ONNX Runtime's MultiHeadAttention (domain com.microsoft), whose CPU kernel never
holds the T x T matrix: memory grows with T, not T^2. The file therefore needs a runtime that has
that operator: ONNX Runtime, or OpenVINO (its ONNX front end reads it; measured with OpenVINO 2026.4:
the release scores within 2e-6, and at T = 4096 peak memory grows by less than one T x T matrix),
so detector.xml / detector.bin are the same graph as OpenVINO IR.
Needs the optional packages in INSTALL; every function here raises InputError (one line) for a
missing package, a checkpoint that does not load or export, or an export that does not match torch.
"""
import contextlib
import importlib.util
import json
import logging
import os
import shutil
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
RUNTIMES = dict(onnxruntime="ONNX Runtime", openvino="OpenVINO")     # how messages name them
TOL = 1e-4                     # largest |ONNX Runtime - torch| accepted, relative to max(1, |score|)


def require_onnx():
    """Raise InputError naming the missing packages and the pip command, if any is missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"export needs {', '.join(missing)}, not installed: {INSTALL}")


def require_openvino():
    """The openvino module, or InputError naming its pip command."""
    try:
        import openvino
    except ImportError:
        raise InputError("OpenVINO IR (--openvino) needs the openvino package, not installed: pip install openvino") \
            from None
    return openvino


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


def ort_run(path):
    """run(x) -> the first output, as a float32 array, of the ONNX file at path in ONNX Runtime."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def detector_gaps(run, model, what, runtime, check_t=CHECK_T):
    """{T: max |run - torch| / max(1, max |torch|)} of the scores of random (2, T, D) features at each
    T of check_t; run(x) gives a runtime's (N, T) scores. Raises InputError at the first gap above TOL."""
    rng = np.random.default_rng(1)
    gaps = {}
    for T in check_t:
        x = rng.standard_normal((2, T, model.len_feature), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = run(x)
        gaps[T] = float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max())) \
            if got.shape == expected.shape else float("inf")
        if not gaps[T] <= TOL:
            raise InputError(f"{what}: the exported graph's scores differ from torch's by {gaps[T]:.2g} "
                             f"(relative) in {runtime} at T = {T}, above {TOL}; nothing written")
    return gaps


def detector_metadata(record, model, threshold=None, threshold_source=None, alarm_calibration=None):
    """{key: JSON text} for detector.onnx's metadata_props (ONNX Runtime: get_modelmeta().custom_metadata_map), so
    that a machine with the file alone scores and alerts as stream.py would. Every value is JSON (null: unknown):
      format            "bn-wvad-detector"
      model             "bnwvad" or "urdmu"; len_feature: D
      threshold         the raw alert threshold (null without one); threshold_source: how it was chosen
      calibration       the checkpoint's (Q,) quantile table of training-normal scores (core.thresholds.quantile_cdf: a raw score
                        s maps to np.interp(s, table, np.linspace(0, 1, Q))); null for a bare state dict
      alarm_calibration calibrate.py's calibration.json without its curve (hours, settings, steps), or null
      crops, resize, resample_fps, pad_last   how the training features were cut (main.py's record), null unknown
      frame_rate        the frame rate snippets are cut at: resample_fps, or "source" (every frame)
      i3d_weights_sha256   SHA-256 of the I3D weights the training features came from, null unknown
    record: the checkpoint's record (None for a bare state dict)."""
    from model import model_name
    meta = (record or {}).get("meta") or {}
    extraction = meta.get("extraction") or {}
    table = None if record is None or "calibration" not in record else \
        [float(x) for x in record["calibration"].double().numpy()]
    weights = extraction.get("weights")
    known = record is not None and "extraction" in meta
    values = dict(format="bn-wvad-detector", model=model_name(model), len_feature=model.len_feature,
                  threshold=threshold, threshold_source=threshold_source, calibration=table,
                  alarm_calibration=alarm_calibration, crops=meta.get("crops"), resize=extraction.get("resize"),
                  resample_fps=extraction.get("fps"), pad_last=extraction.get("pad_last"),
                  frame_rate=(extraction.get("fps") or "source") if known else None,
                  i3d_weights_sha256=weights.get("sha256") if isinstance(weights, dict) else None)
    return {key: json.dumps(value) for key, value in values.items()}


def export_detector(model, path, what, check_t=CHECK_T, xml_path=None, metadata=None):
    """Export a BNWVAD or URDMU (eval mode) to path and return {runtime: largest relative gap to torch
    over check_t} ('onnxruntime', with `xml_path` also 'openvino': OpenVINO IR there, export_openvino,
    checked at the same lengths). metadata: {key: text} written into the file's metadata_props
    (detector_metadata).

    Raises InputError when it does not export or any gap is above TOL (that file is not written then).
    """
    require_onnx()
    model = model.eval()
    rng = np.random.default_rng(0)
    example = torch.from_numpy(rng.standard_normal((2, TRACE_T, model.len_feature), dtype=np.float32))
    ir_model = capture(model, example, ["features", "scores"], {0: "N", 1: "T"}, what)
    attentions = sum(isinstance(m, Attention) for m in model.modules())
    ir_model = fuse_attention(ir_model, attentions, what)
    ir_model.metadata_props.update(metadata or {})
    gaps = {}

    def check(run, runtime):
        gaps[runtime] = max(detector_gaps(run, model, what, RUNTIMES[runtime], check_t).values())
    save_checked(ir_model, path, lambda tmp: check(ort_run(tmp), "onnxruntime"))
    if xml_path is not None:
        export_openvino(path, xml_path, lambda run: check(run, "openvino"), what)
    return gaps


def export_i3d(model, path, what, xml_path=None):
    """Write I3D (`model`, an InceptionI3d in eval mode) to the ONNX file `path`: `clips` (N, 3, 16, 224,
    224) RGB in [-1, 1], N dynamic -> `features` (N, 1024). The graph is the backends' one
    (video.backends.cached_onnx: exported once per weights, shape and torch version into their cache
    folder), copied to `path` only once its ONNX Runtime features on two random clips are within TOL
    of torch's (utils.atomic_write). With `xml_path`, also OpenVINO IR (export_openvino), checked the
    same way. Returns {runtime: largest |difference| to torch}. Raises InputError, one line, when a
    check fails: that file is not written (the IR's two files neither)."""
    require_onnx()
    from video.backends import CLIP_SHAPE, Features, cached_onnx
    source = cached_onnx(model, CLIP_SHAPE)
    clips = np.random.default_rng(0).uniform(-1, 1, (2, 3, *CLIP_SHAPE)).astype(np.float32)
    with torch.no_grad():
        expected = Features(model).eval()(torch.from_numpy(clips)).numpy()   # (2, 1024)

    def gap(run, runtime):
        got = run(clips)
        error = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        if not error <= TOL:
            raise InputError(f"{what}: the exported graph's features differ from torch's by {error:.2g} in "
                             f"{runtime}, above {TOL}; nothing written")
        return error
    gaps = {}

    def check(tmp):
        shutil.copyfile(source, tmp)
        gaps["onnxruntime"] = gap(ort_run(tmp), RUNTIMES["onnxruntime"])
    atomic_write(path, check)
    if xml_path is not None:
        gaps["openvino"] = export_openvino(source, xml_path, lambda run: gap(run, RUNTIMES["openvino"]), what)
    return gaps


def export_openvino(onnx_path, xml_path, check, what):
    """Convert an ONNX file to OpenVINO IR: `xml_path` and its weights beside it (.bin), kept in float32
    (openvino.save_model halves them to float16 by default). The written IR is compiled in OpenVINO
    on the CPU with f32 inference precision (its default is bf16 on CPUs that have it) and handed to
    check(run), run(x) -> the first output as a float32 array; check raises InputError to refuse it,
    and both files are removed then. Returns check's value. Raises InputError, one line, for a missing
    openvino or a graph it cannot convert. For an atomic pair write into a temporary folder and move
    the two files, .bin first (export.py does)."""
    openvino = require_openvino()
    xml_path = os.fspath(xml_path)
    written = (xml_path, os.path.splitext(xml_path)[0] + ".bin")
    try:
        try:
            openvino.save_model(openvino.convert_model(os.fspath(onnx_path)), xml_path, compress_to_fp16=False)
            compiled = openvino.Core().compile_model(xml_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as e:  # OpenVINO raises many kinds (GeneralFailure, OpConversionFailure, ovc's Error)
            raise InputError(f"{what}: OpenVINO cannot convert the ONNX graph ({type(e).__name__}: "
                             f"{first_line(e)}); nothing written") from None
        return check(lambda x: np.asarray(compiled(x)[0], dtype=np.float32))
    except BaseException:
        for name in written:
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
        raise
