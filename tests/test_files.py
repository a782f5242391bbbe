"""Which files a folder holds (core/scan.py) and how every output is written (utils.write_file): folders
through links and loops, every suffix ffmpeg muxes video into, every file left out named; a write the
system refuses is one line naming the file and the reason, leaves no half file and no earlier file
changed; names that are not UTF-8 are written escaped, the same way in every output and message."""
import csv
import errno
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import extract
import infer
import main
import report
import utils
from conftest import data_args, write_xd_dataset
from core.features import find_videos
from helpers import GridProbe, call, page_data, write_log, write_video
from model import BNWVAD
from core.scan import VIDEO_SUFFIXES, scan_folder
from utils import WriteError, escape_name, save_array, save_checkpoint, save_torch, write_file, write_text
from video.extraction import list_videos

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg command line is not installed (CI installs it)")
EXTRACT = ["--crops", "1", "--resize", "224", "--device", "cpu"]
CREME = os.fsdecode(b"Cr\xe8me_caf\xe9")          # a Latin-1 name, as Linux gives it to Python
CREME_SHOWN = "Cr\\xe8me_caf\\xe9"


def stand_in(path, device="cpu"):
    return GridProbe().to(device)


def clip(path, frames=16, codec=None):
    """A small video written by the ffmpeg command line, its container chosen by the suffix (any case)."""
    codec = codec or {".3gp": "libx264", ".mxf": "mpeg2video"}.get(Path(path).suffix.lower())
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=240x224:rate=25", "-frames:v",
                    str(frames), "-pix_fmt", "yuv420p", *(["-c:v", codec] if codec else []), str(path)], check=True)
    return path


def leftovers(folder):
    """Temporary files of the write path anywhere under folder."""
    return [p for p in Path(folder).rglob(".tmp-*")]


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_one_line(err, *words):
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    assert "Traceback" not in err and "\x1b" not in err
    for w in words:
        assert any(w in line for line in lines), (w, err)


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(after=N, code=ENOSPC, names=None): from now on the files the write path opens (utils.open,
    the temporary files) take N bytes in all, then the system refuses with `code`, as a full disk does
    (a write cut short, then an error); names: only files whose name ends with one of these."""
    def install(after=0, code=errno.ENOSPC, names=None):
        left = [after]

        class Refusing(io.FileIO):
            def write(self, data):
                data = memoryview(data).cast("B")
                if len(data) <= left[0]:
                    left[0] -= len(data)
                    return super().write(data)
                super().write(data[:left[0]])
                left[0] = 0
                raise OSError(code, os.strerror(code))

        real = open

        def opening(path, mode="r", *args, **kwargs):
            if "w" in mode and (names is None or os.fspath(path).endswith(tuple(names))):
                return Refusing(path, "wb")
            return real(path, mode, *args, **kwargs)
        monkeypatch.setattr(utils, "open", opening, raising=False)
    return install


# ---- one folder scanner ----

VIDEO_MUXERS = ("mp4", "mov", "matroska", "webm", "avi", "mpegts", "mpeg", "vob", "svcd", "mxf", "asf", "flv", "ogv",
                "dv", "nut", "yuv4mpegpipe", "3gp", "3g2", "h264", "hevc", "mjpeg", "ipod", "ismv", "f4v", "psp",
                "ivf", "obu", "m4v", "rm", "wtv", "mpeg1video", "mpeg2video", "gxf", "amv")
VIDEO_DEMUXERS = ("h264", "hevc", "dv", "dhav", "yuv4mpegpipe", "vc1", "avi", "flv", "nut", "matroska", "m4v", "mov")
AUDIO_OR_IMAGE = {"wma", "m4a", "m4b", "isma", "ra", "mka", "mks", "mpo", "avif", "heic", "heif"}  # not video


def test_video_suffixes_are_those_ffmpeg_gives_its_video_containers():
    """The reference: the suffixes libavformat (FFmpeg's, as PyAV, which decodes here, carries it) gives
    its muxers and demuxers of video; those of audio and still images are not video files."""
    from av.format import ContainerFormat
    named = set()
    for mode, names in (("w", VIDEO_MUXERS), ("r", VIDEO_DEMUXERS)):
        for name in names:
            named |= set(ContainerFormat(name, mode).extensions)
    assert {"mts", "m2ts", "3gp", "mxf", "vob", "asf", "dv", "y4m", "nut", "ogv", "dav"} <= named
    missing = {f".{e}" for e in named - AUDIO_OR_IMAGE} - VIDEO_SUFFIXES
    assert not missing, f"ffmpeg writes video as {sorted(missing)}, which a scan would leave out"


def folder_tree(tmp):
    """videos/ as users have it: camcorder and phone files in any case, a linked folder holding a linked
    folder, a linked file, a link loop, the same folder linked twice, a broken link, a pipe, notes."""
    videos, nas = tmp / "videos", tmp / "nas"
    (nas / "day2").mkdir(parents=True)
    (tmp / "deep").mkdir()
    videos.mkdir()
    for name in ("cam04.mp4", "00001.MTS", "00002.m2ts", "VID_0003.3gp", "A.MP4", "B.MOV", "c.mxf", "d.VOB",
                 "notes.txt", ".DS_Store"):
        (videos / name).touch()
    (nas / "day2" / "x.mp4").touch()
    (nas / "z.avi").touch()
    (tmp / "deep" / "y.mkv").touch()
    (videos / "day2").symlink_to("../nas/day2")                 # the symlinked folder
    (nas / "day2" / "more").symlink_to("../../deep")            # a link inside a linked folder
    (nas / "day2" / "back").symlink_to("../../videos")          # back to the top: a loop
    (videos / "loop").symlink_to(".")                           # onto itself: a loop
    (videos / "later").symlink_to("../nas/day2")                # a folder scanned already (as day2)
    (videos / "z.avi").symlink_to("../nas/z.avi")               # a linked file
    (videos / "gone.mp4").symlink_to("../nowhere.mp4")          # a broken link
    os.mkfifo(videos / "pipe.mp4")
    return videos


def test_scan_follows_links_takes_every_video_and_names_what_it_leaves_out(tmp_path):
    videos = folder_tree(tmp_path)
    found = scan_folder(videos, VIDEO_SUFFIXES)
    taken = ["00001.MTS", "00002.m2ts", "A.MP4", "B.MOV", "VID_0003.3gp", "c.mxf", "cam04.mp4", "d.VOB",
             "day2/more/y.mkv", "day2/x.mp4", "z.avi"]
    assert [p.relative_to(videos).as_posix() for p in found.files] == taken      # sorted by path, as listed
    why = {p.relative_to(videos).as_posix(): reason for p, reason in found.left_out}
    assert set(why) == {"day2/back", "gone.mp4", "later", "loop", "pipe.mp4"}
    assert "loop" in why["loop"] and "loop" in why["day2/back"]
    assert "scanned already" in why["later"] and "day2" in why["later"]
    assert why["gone.mp4"] == "a broken link (to ../nowhere.mp4: No such file or directory)"
    assert "not a regular file" in why["pipe.mp4"]
    others = {p.name: reason for p, reason in found.others}
    assert others == {"notes.txt": "its suffix .txt is not a video's", ".DS_Store": 'hidden (its name starts with ".")'}


def test_scan_names_a_folder_it_cannot_read(tmp_path, monkeypatch):
    """A folder without read permission is named, with the system's reason. Permissions do not bind root
    (CI runs as root), so there the refusal is the one os.scandir raises for such a folder, injected."""
    (tmp_path / "locked").mkdir()
    (tmp_path / "a.mp4").touch()
    (tmp_path / "locked").chmod(0)
    if os.geteuid() == 0:
        real = os.scandir

        def scandir(path):
            if os.path.basename(os.fspath(path)) == "locked":
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)
        monkeypatch.setattr("core.scan.os.scandir", scandir)
    try:
        found = scan_folder(tmp_path, VIDEO_SUFFIXES)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert found.files == [tmp_path / "a.mp4"]
    assert found.left_out == [(tmp_path / "locked", "a folder that cannot be read (Permission denied)")]


@needs_ffmpeg
def test_extract_takes_the_camera_folder_and_the_linked_day(tmp_path, monkeypatch, capsys):
    """The issue's folder: 00001.MTS, 00002.m2ts, VID_0003.3gp beside cam04.mp4, and videos/day2 ->
    ../nas/day2; one more of the kind: an upper-case .MP4 in the linked folder, and a broken link."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (tmp_path / "nas" / "day2").mkdir(parents=True)
    for name in ("cam04.mp4", "00001.MTS", "00002.m2ts", "VID_0003.3gp"):
        clip(videos / name)
    clip(tmp_path / "nas" / "day2" / "DAY2_0001.MP4")
    (videos / "day2").symlink_to("../nas/day2")
    (videos / "cam05.mp4").symlink_to("../nas/cam05.mp4")
    (tmp_path / "w.pt").touch()
    monkeypatch.setattr(extract, "load_i3d", stand_in)
    code = extract.main([str(videos), "--out", str(tmp_path / "f"), "--i3d_weights", str(tmp_path / "w.pt")] + EXTRACT)
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"5 of 5 videos have features in {tmp_path / 'f'}" in err
    assert f"warning: left out {videos / 'cam05.mp4'}: a broken link (to ../nas/cam05.mp4" in err
    with open(tmp_path / "f" / "manifest.csv", newline="") as f:
        assert sorted(row["video"] for row in csv.DictReader(f)) == ["00001", "00002", "DAY2_0001", "VID_0003",
                                                                     "cam04"]


def test_every_reader_of_folders_follows_links_and_survives_loops(tmp_path, capsys):
    """infer.py --video_root, --features and report.py's folder of logs, through the same scanner."""
    videos = folder_tree(tmp_path)
    (videos / "cam01.txt").touch()
    found = infer.video_files(str(videos), {"x", "y", "00001", "cam01"})
    assert found == {"x": str(videos / "day2" / "x.mp4"), "y": str(videos / "day2" / "more" / "y.mkv"),
                     "00001": str(videos / "00001.MTS")}
    err = capsys.readouterr().err
    assert f"left out {videos / 'cam01.txt'}: its suffix .txt is not a video's" in err
    assert f"left out {videos / 'loop'}: a link back to" in err
    assert "notes.txt" not in err                   # not one of the videos looked for

    feats = tmp_path / "feats"
    (feats / "a").mkdir(parents=True)
    np.save(feats / "a" / "v1__0.npy", np.ones((3, 8), np.float32))
    (feats / "b").symlink_to(tmp_path / "nas")
    np.save(tmp_path / "nas" / "v2__0.npy", np.ones((4, 8), np.float32))
    (feats / "a" / "up").symlink_to("..")
    assert [v.name for v in find_videos([str(feats)], 8)] == ["v1", "v2"]
    assert f"left out {feats / 'a' / 'up'}: a link back to" in capsys.readouterr().err

    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "xd_1.jsonl", [10, 20])
    (logs / "events.jsonl").write_text('{"start_s": 1}\n')
    (logs / "old.jsonl").symlink_to("gone.jsonl")
    r = call(report.main, [str(logs)], capsys)
    assert r.returncode == 0, r.stderr
    assert f"left out {logs / 'events.jsonl'}: a .jsonl file that is not a training log" in r.stderr
    assert f"left out {logs / 'old.jsonl'}: a broken link" in r.stderr
    assert [run["file"] for run in page_data(logs / "report.html")["runs"]] == ["xd_1.jsonl"]


# ---- one write path ----

def test_a_refused_write_is_one_line_and_leaves_the_earlier_file(tmp_path, full_disk):
    writers = {"a.npy": lambda p: save_array(p, np.arange(5000.0)),
               "b.pkl": lambda p: save_torch(p, {"w": torch.zeros(5000)}),
               "c.json": lambda p: write_text(p, "x" * 20000),
               "d.csv": lambda p: write_file(p, lambda f: csv.writer(f).writerows([["x" * 100]] * 200), text=True),
               "e.pkl": lambda p: save_checkpoint(p, BNWVAD(16), 1, {"AP": 1.0})}
    for name, write in writers.items():
        (tmp_path / name).write_bytes(b"an earlier run's file")
    for code, reason in ((errno.ENOSPC, "No space left on device"), (errno.EFBIG, "File too large"),
                         (errno.EROFS, "Read-only file system")):
        full_disk(after=700, code=code)
        for name, write in writers.items():
            with pytest.raises(WriteError) as caught:
                write(tmp_path / name)
            assert str(caught.value) == f"cannot write {tmp_path / name}: {reason}"
            assert (tmp_path / name).read_bytes() == b"an earlier run's file"
    assert leftovers(tmp_path) == []


def test_every_output_is_flushed_before_it_is_renamed(tmp_path, monkeypatch):
    events = []
    monkeypatch.setenv("BNWVAD_FSYNC", "1")
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.fspath(a))), real(a, b)))
    save_array(tmp_path / "a.npy", np.zeros(3))
    assert [kind for kind, _ in events] == ["fsync", "replace"] and events[0][1] == events[1][1]
    assert Path(events[1][1]).parent == tmp_path and Path(events[1][1]).name.startswith(".tmp-")


def test_torch_save_on_a_really_full_disk(tmp_path):
    """A tmpfs of 64 KiB, where mounting is allowed (root): the system's own ENOSPC, not a stand-in."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        for write in (lambda p: save_torch(p, {"w": torch.zeros(100000)}), lambda p: save_array(p, np.zeros(100000))):
            with pytest.raises(WriteError, match=f"cannot write {disk / 'big'}: No space left on device"):
                write(disk / "big")
            assert os.listdir(disk) == []
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(WriteError, match=f"cannot write {disk / 'a.json'}: Read-only file system"):
            write_text(disk / "a.json", "{}")
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "a.json").write_text("earlier")
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only folder here")
        expected = "Read-only file system"
    else:
        folder.chmod(0o555)
        expected = "Permission denied"
    try:
        with pytest.raises(WriteError) as caught:
            write_text(folder / "a.json", "{}")
        assert str(caught.value) == f"cannot write {folder / 'a.json'}: {expected}"
        assert caught.value.refuses_every_file()
        assert (folder / "a.json").read_text() == "earlier" and os.listdir(folder) == ["a.json"]
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)])
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips") / "videos"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write_video(folder / f"{name}.mp4", 32, width=240, height=224)
    (folder.parent / "w.pt").touch()
    return folder


def run_extract(videos, out, capsys, *more):
    code = extract.main([str(videos), "--out", str(out), "--i3d_weights", str(videos.parent / "w.pt")] + EXTRACT
                        + list(more))
    return code, capsys.readouterr().err


def test_extract_goes_on_past_a_video_it_cannot_write(three_clips, tmp_path, monkeypatch, capsys, full_disk):
    monkeypatch.setattr(extract, "load_i3d", stand_in)
    out = tmp_path / "f"
    assert run_extract(three_clips, out, capsys)[0] == 0
    earlier = snapshot(out)
    full_disk(after=100, names=["b__0.npy"])         # b's features do not fit; a's and c's do
    code, err = run_extract(three_clips, out, capsys, "--resize", "256")     # new settings: every video again
    assert code == 1
    line = f"{three_clips / 'b.mp4'}: cannot write {out / 'b__0.npy'}: No space left on device"
    assert f"error: {line}" in err and f"  {line}" in err.split("1 failed:")[1]      # named again at the end
    assert "2 of 3 videos have features" in err and "Traceback" not in err
    now = snapshot(out)
    assert now["b__0.npy"] == earlier["b__0.npy"] and now["b.json"] == earlier["b.json"]    # b's earlier files
    assert now["a.json"] != earlier["a.json"] and now["c.json"] != earlier["c.json"]
    assert leftovers(out) == []
    with open(out / "manifest.csv", newline="") as f:
        assert [row["video"] for row in csv.DictReader(f)] == ["a", "c"]

    full_disk(after=0, code=errno.EROFS)              # the folder refuses everything: the rest is not tried
    code, err = run_extract(three_clips, out, capsys, "--resize", "288")
    assert code == 1
    assert f"{three_clips / 'b.mp4'}: not tried: cannot write {out / 'a__0.npy'}: Read-only file system" in err
    assert f"no manifest.csv: cannot write {out / 'manifest.csv'}: Read-only file system" in err
    assert snapshot(out) == now and leftovers(out) == []


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scored")
    ds = write_xd_dataset(tmp / "data", n_train=1, n_test=2, D=16, T_range=(6, 9))
    save_checkpoint(tmp / "c.pkl", BNWVAD(16), 1, {"AP": 1.0})
    return ds, tmp


def test_every_command_says_a_refused_write_in_one_line(scored, tmp_path, capsys, full_disk):
    """infer.py (an earlier run's folder untouched), main.py's checkpoint and report.py's page."""
    ds, tmp = scored
    args = data_args(ds, tmp_path, model_path=tmp / "c.pkl", threshold=0) + ["--html"]
    assert call(infer.main, args + ["--output_dir", str(tmp_path / "o")], capsys).returncode == 0
    earlier = snapshot(tmp_path / "o")
    full_disk(after=0)
    for out, more in ((tmp_path / "o", ["--overwrite"]), (tmp_path / "new", [])):
        r = call(infer.main, args + ["--output_dir", str(out)] + more, capsys)
        assert r.returncode == 2
        assert_one_line(r.stderr, "error: cannot write ", "No space left on device", str(out))
    assert snapshot(tmp_path / "o") == earlier and leftovers(tmp_path) == []
    assert not (tmp_path / "new").exists()

    r = call(report.main, [str(tmp_path / "o")], capsys)
    assert r.returncode == 2
    assert_one_line(r.stderr, f"error: cannot write {tmp_path / 'o' / 'report.html'}: No space left on device")
    assert snapshot(tmp_path / "o") == earlier

    full_disk(after=0, names=[".pkl"])
    train = data_args(ds, tmp_path, model_path=tmp_path / "ckpts", log_path=tmp_path / "logs", lr="[0.001]*2",
                      batch_size=2, num_segments=8, plot_freq=2, seed=3)
    r = call(main.main, train, capsys)
    assert r.returncode == 2
    assert_one_line(r.stderr, f"cannot write {tmp_path / 'ckpts' / 'xd_best_3.pkl'}: No space left on device")
    assert leftovers(tmp_path) == [] and not list((tmp_path / "ckpts").glob("*.pkl"))


# ---- names that are not UTF-8 ----

def test_names_that_are_not_utf8_are_written_escaped_everywhere(tmp_path, monkeypatch, capsys):
    """b'Cr\\xe8me_caf\\xe9.mp4' (Latin-1), and one more: b'\\xff\\xfecam.MTS' (UTF-16's mark as bytes) beside
    caf\u00e9.mp4 (UTF-8, kept as it is). extract.py, its manifest and --verify, a second run that reuses
    the features, infer.py's CSVs and JSON, the page: the same \\xNN everywhere, and no crash."""
    videos = tmp_path / "videos"
    videos.mkdir()
    names = {CREME + ".mp4": CREME_SHOWN, os.fsdecode(b"\xff\xfecam.mp4"): "\\xff\\xfecam", "caf\u00e9.mp4": "caf\u00e9"}
    for name in names:
        write_video(videos / name, 32, width=240, height=224)
    (tmp_path / "w.pt").touch()
    monkeypatch.setattr(extract, "load_i3d", stand_in)
    out = tmp_path / "f"
    code, err = run_extract(videos, out, capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "manifest.csv", newline="", encoding="utf-8")))
    assert sorted(r["video"] for r in rows) == sorted(names.values())
    assert f"{CREME_SHOWN}__0.npy" in {r["file"] for r in rows}
    record = json.loads((out / f"{CREME}.json").read_text(encoding="utf-8"))
    assert record["video"] == CREME_SHOWN and record["source"]["path"].endswith(f"{CREME_SHOWN}.mp4")
    code, err = run_extract(videos, out, capsys)
    assert code == 0 and "extracting again" not in err                   # the records still match their videos
    assert extract.main(["--verify", str(out / "manifest.csv")]) == 0
    assert "OK, 3 feature files" in capsys.readouterr().out

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pkl", BNWVAD(1024), 1, {})
    r = call(infer.main, ["--model_path", str(tmp_path / "c.pkl"), "--features", str(out), "--output_dir",
                          str(tmp_path / "o"), "--device", "cpu", "--threshold=-1e9", "--crops", "1",
                          "--video_root", str(videos), "--html"], capsys)
    assert r.returncode == 0, r.stderr
    for name in ("scores.csv", "segments.csv", "videos.csv"):
        text = (tmp_path / "o" / name).read_bytes().decode("utf-8")      # valid UTF-8
        assert CREME_SHOWN in text, name
    videos_csv = list(csv.DictReader(open(tmp_path / "o" / "videos.csv", newline="", encoding="utf-8")))
    assert {v["video"]: v["source"] for v in videos_csv}[CREME_SHOWN] == f"../videos/{CREME_SHOWN}.mp4"
    times = [r for r in csv.DictReader(open(tmp_path / "o" / "scores.csv", encoding="utf-8")) if r["video"] == CREME_SHOWN]
    assert times and all(r["start_s"] for r in times)                    # its record was found: real times
    assert CREME_SHOWN in {v["name"] for v in page_data(tmp_path / "o" / "report.html")["videos"]}
    assert sorted(os.listdir(tmp_path / "o" / "frame_scores")) == sorted(f"{Path(n).stem}.npy" for n in names)
    assert escape_name(CREME) == CREME_SHOWN and escape_name("caf\u00e9") == "caf\u00e9"
