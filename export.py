"""Export a checkpoint's detector (and optionally I3D) to ONNX, for ONNX Runtime on machines without torch.

  python export.py --model_path ckpts/xd_best_2022.pkl --out exported/
  python export.py --model_path ckpts/xd_best_2022.pkl --out exported/ --i3d --i3d_weights rgb_imagenet.pt

Takes any checkpoint infer.py loads (ours, or the releases' bare state dicts of BN-WVAD and UR-DMU).
Writes in --out:
  detector.onnx   features (N, T, D) float32, T any length -> scores (N, T): each row's per-snippet
                  anomaly scores; a video's score is their mean over its N crops, as infer.py reports
  i3d.onnx        with --i3d: clips (N, 3, 16, 224, 224) RGB in [-1, 1] -> features (N, 1024)
Each file is compared with torch in ONNX Runtime before it is kept (printed: the largest difference);
a failed export writes nothing. Needs `pip install onnx onnxruntime onnxscript`. See onnx_export.py.
"""
import os

from checkpoints import load_model
from onnx_export import CHECK_T, export_detector, export_i3d, require_onnx
from options import Parser
from utils import InputError, make_dir, run_cli


def parse_args(argv=None):
    p = Parser(description="Export a checkpoint's detector (and with --i3d the I3D network) to ONNX files, each "
                           "checked against torch in ONNX Runtime before it is written.")
    p.add_argument("--model_path", required=True,
                   help="checkpoint to export: ours, or a release's bare state dict of BN-WVAD or UR-DMU")
    p.add_argument("--out", required=True, help="folder for detector.onnx (and i3d.onnx); created if missing")
    p.add_argument("--i3d", action="store_true", help="also write i3d.onnx, the I3D network of --i3d_weights")
    p.add_argument("--i3d_weights", help="with --i3d: the I3D RGB state dict (rgb_imagenet.pt of the public PyTorch "
                                         "port); never downloaded")
    args = p.parse_args(argv)
    if args.i3d and not args.i3d_weights:
        p.error("--i3d needs --i3d_weights")
    if args.i3d_weights and not args.i3d:
        p.error("--i3d_weights is for --i3d")
    return args


def main(argv=None):
    args = parse_args(argv)
    require_onnx()
    if args.i3d and not os.path.isfile(args.i3d_weights):
        raise InputError(f"I3D weights not found: {args.i3d_weights}")
    model, _ = load_model(args.model_path)
    make_dir(args.out, "output")
    path = os.path.join(args.out, "detector.onnx")
    gaps = export_detector(model, path, f"checkpoint {args.model_path}")
    print(f"wrote {path}: {type(model).__name__}, features (N, T, {model.len_feature}) -> scores (N, T); "
          f"largest relative difference to torch {max(gaps.values()):.1e} at T = {', '.join(map(str, CHECK_T))}")
    if args.i3d:
        path = os.path.join(args.out, "i3d.onnx")
        gap = export_i3d(args.i3d_weights, path)
        print(f"wrote {path}: clips (N, 3, 16, 224, 224) -> features (N, 1024); largest difference to torch {gap:.1e}")


if __name__ == "__main__":
    run_cli(main)
