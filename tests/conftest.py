"""Shared test helpers: small synthetic feature sets written to a temporary folder, and the
path of ../shared (tests that need it skip when it is absent)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(*parts):
    """A path under ../shared, or skip the test when it is absent (a user's clone has none)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is not available")
    return p


def write_xd_dataset(root, n_train=6, n_test=4, crops=5, D=64, T_range=(12, 40), seed=0):
    """A small XD-layout dataset: train/ and test/ crop files, train.list, test.list, gt.npy.

    n_train / n_test videos of each class; abnormal videos carry one bright stretch.
    Returns a dict with the paths and the test lengths.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    direction = rng.random(D) < 0.2
    lists, gt_parts, test_lengths = {}, [], []
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(2 * n):
            abnormal = i < n
            name = f"vid{split}{i:02d}_label_{'B1-0-0' if abnormal else 'A'}"
            T = int(rng.integers(*T_range))
            x = rng.normal(0.5, 0.2, (T, D)).astype(np.float32)
            g = np.zeros(T * 16, np.uint8)
            if abnormal:
                a = int(rng.integers(0, T // 2))
                b = a + max(T // 4, 2)
                x[a:b] += 1.5 * direction
                g[a * 16:b * 16] = 1
            for k in range(crops):
                rel = f"{split}/{name}__{k}.npy"
                np.save(root / rel, x + rng.normal(0, 0.01, x.shape).astype(np.float32))
                lines.append(rel)
            if split == "test":
                gt_parts.append(g)
                test_lengths.append(T)
        lists[split] = root / f"{split}.list"
        lists[split].write_text("\n".join(lines) + "\n")
    np.save(root / "gt.npy", np.concatenate(gt_parts))
    return dict(root=root, train_list=lists["train"], test_list=lists["test"], gt=root / "gt.npy",
                test_lengths=test_lengths, D=D)


def data_args(ds, tmp_path, **extra):
    """Command-line flags for main.py/infer.py on a dataset from write_xd_dataset, small and fast."""
    args = ["--dataset", "xd", "--root_dir", str(ds["root"]), "--train_list", str(ds["train_list"]),
            "--test_list", str(ds["test_list"]), "--gt", str(ds["gt"]), "--len_feature", str(ds["D"]),
            "--num_workers", "0", "--device", "cpu"]
    for k, v in extra.items():
        args += [f"--{k}"] + ([str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)])
    return args


def run_script(script, args, cwd=ROOT):
    """Run one of the project's scripts in a subprocess, as a user would."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
