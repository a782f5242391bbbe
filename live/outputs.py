"""A live run's outputs in its folder, safe to restart into: scores.csv, events.jsonl and stream.log are
appended (flushed per line, a torn last line from a crash trimmed and reported), rolled over by day or
size, and rolled files older than a retention removed; metrics.json is rewritten atomically.

A run into a folder that holds an earlier run's outputs continues them: its snippet numbers, stream
time and event numbers follow on from the earlier run's last (resume_point), nothing is refused and
nothing truncated but a torn last line, which only a process killed mid-write leaves.
"""
import csv
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

from live.alarms import iso
from live.reader import Resume
from utils import InputError, make_dir, one_line, write_text


SCORES_HEADER = ["video", "snippet", "score", "exceedance", "normal_per_hour", "start_s", "end_s", "wall_time"]
APPENDED = ("scores.csv", "events.jsonl", "stream.log")
SIZE_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9}


def parse_rollover(text):
    """'day' -> 'day'; '100MB' (B, KB, MB, GB) -> bytes as an int; 'none' -> None. ValueError otherwise."""
    text = str(text).strip()
    if text.lower() in ("day", "none"):
        return None if text.lower() == "none" else "day"
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?B?)", text.upper())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"expected 'day', a size such as 100MB, or 'none', got {text!r}")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def format_rollover(rollover):
    return "none" if rollover is None else rollover if rollover == "day" else f"{rollover}B"


def trim_torn_line(path):
    """Cut a file's torn last line (bytes after its last newline, left by a process killed mid-write).
    Returns the number of bytes dropped (0 when the file ends in a newline, is empty or absent)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
    return size - keep


def last_line(path):
    """The last whole line of a text file, a torn one (no newline yet) left out ('' when it has none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            text = f.read()
    except OSError:
        return ""
    lines = text.split(b"\n")[:-1]          # what follows the last newline is torn or empty
    return lines[-1].rstrip(b"\r").decode("utf-8", "replace") if lines else ""


def first_line(path):
    """The first line of a text file, its newline included ('' when unreadable)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def rolled_files(path):
    """The rolled files of an appended output `path` (<stem>.<date...><suffix>), oldest first."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.stem) + r"\.\d{4}-\d\d-\d\d[-T\d]*" + re.escape(path.suffix))
    found = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.stat().st_mtime)


class AppendedFile:
    """One appended output (flushed per line), rolled over to <stem>.<date><suffix> by day or by size;
    rolled files older than keep_days are removed. `header` (a CSV's first line) starts each file."""

    def __init__(self, path, header=None, rollover=None, keep_days=None, note=print):
        self.path, self.header, self.rollover, self.keep_days, self.note = Path(path), header, rollover, keep_days, note
        dropped = trim_torn_line(self.path)
        if dropped:
            note(f"{self.path}: dropped a torn last line ({dropped} bytes) left by a run that stopped mid-write")
        self.file = None
        if self.path.exists() and self.path.stat().st_size and self.header is not None and \
                first_line(self.path) != self.header:          # an earlier version's columns: never mixed
            target = self._roll(self._day_of_file())
            note(f"{self.path}: its columns are not this version's ({self.header.strip()}); moved to {target.name}")
        elif self.path.exists() and self.path.stat().st_size and self._due(self._day_of_file()):
            self._roll(self._day_of_file())
        self._open()
        self.prune()

    def _day_of_file(self):
        return datetime.date.fromtimestamp(self.path.stat().st_mtime).isoformat()

    def _open(self):
        self.file = open(self.path, "a", encoding="utf-8", newline="")
        self.day = datetime.date.today().isoformat()
        if self.header is not None and self.file.tell() == 0:
            self.file.write(self.header)
            self.file.flush()

    def _due(self, day):
        if self.rollover == "day":
            return day != datetime.date.today().isoformat()
        return self.rollover is not None and self.path.stat().st_size >= self.rollover

    def write(self, text):
        """Append `text` (whole lines), rolling the file over first when its day or size is up."""
        if self.rollover is not None and self.file.tell() > len(self.header or "") and self._due(self.day):
            self.file.close()
            self._roll(self.day)
            self._open()
            self.prune()
        self.file.write(text)
        self.file.flush()

    def _roll(self, day):
        label = day if self.rollover == "day" else datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        target, n = self.path.with_name(f"{self.path.stem}.{label}{self.path.suffix}"), 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.stem}.{label}-{n}{self.path.suffix}")
        os.replace(self.path, target)
        return target

    def prune(self):
        """Remove rolled files last written more than keep_days ago (none when keep_days is None)."""
        if self.keep_days is None:
            return
        removed = remove_older(rolled_files(self.path), self.keep_days)
        if removed:
            self.note(f"removed {len(removed)} rolled file{'s' * (len(removed) != 1)} older than {self.keep_days:g} "
                      f"days: {', '.join(p.name for p in removed)}")

    def close(self):
        self.file.close()


def remove_older(paths, days):
    """Remove the files last written more than `days` days ago; returns those removed."""
    limit, removed = time.time() - days * 86400, []
    for path in paths:
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    return removed


def resume_point(folder):
    """Where an earlier run into `folder` stopped: (Resume or None, the last event number). The last
    row of scores.csv (or of its newest rolled file) gives the snippet and stream time; the last record
    of events.jsonl (or its newest rolled file) the event number. A torn last line is not read."""
    folder, found = Path(folder), {}
    for name, parse in (("scores.csv", _scores_row), ("events.jsonl", _event_record)):
        for path in [folder / name] + rolled_files(folder / name)[::-1]:
            value = parse(last_line(path), path)
            if value is not None:
                found[name] = value
                break
    return found.get("scores.csv"), found.get("events.jsonl", 0)


def _scores_row(line, path):
    """A Resume from scores.csv's last row, read by the file's own header (an earlier version's columns too)."""
    if not line:
        return None
    try:
        header = next(csv.reader([first_line(path)]), None) or SCORES_HEADER
        row = dict(zip(header, next(csv.reader([line]))))
        wall = datetime.datetime.fromisoformat(row["wall_time"]).timestamp()
        return Resume(int(row["snippet"]) + 1, float(row["end_s"]), wall)
    except (ValueError, IndexError, KeyError, StopIteration):
        return None                 # the header, or a row from another layout


def _event_record(line, path=None):
    if not line:
        return None
    try:
        return int(json.loads(line)["event"])
    except (ValueError, KeyError, TypeError):
        return None


class Outputs:
    """scores.csv, events.jsonl and stream.log (AppendedFile each) and metrics.json (atomic) in `folder`.
    rollover: None, 'day' or a size in bytes; keep_days: retention of rolled files and of clips."""

    def __init__(self, folder, video, quiet=False, rollover=None, keep_days=None, prefix=""):
        self.folder, self.video, self.quiet, self.prefix = Path(folder), video, quiet, prefix
        make_dir(folder, "output")
        notes = []
        try:
            kept = dict(rollover=rollover, keep_days=keep_days, note=notes.append)
            self.log_file = AppendedFile(self.folder / "stream.log", **kept)
            self.scores_file = AppendedFile(self.folder / "scores.csv", ",".join(SCORES_HEADER) + "\r\n", **kept)
            self.events = AppendedFile(self.folder / "events.jsonl", **kept)
        except OSError as e:
            raise InputError(f"cannot write the outputs in {folder}: {one_line(e)}") from None
        self.keep_days = keep_days
        for note in notes:
            self.log(note)

    def score(self, snippet, score, calibrated):
        """calibrated: {exceedance, normal_per_hour} (thresholds.Calibration) or None."""
        cal = ["", ""] if calibrated is None else [f"{calibrated['exceedance']:.4g}",
                                                   f"{calibrated['normal_per_hour']:.4g}"]
        row = [self.video, snippet.index, f"{score:.6g}", *cal, f"{snippet.start_s:.3f}", f"{snippet.end_s:.3f}", iso(snippet.wall)]
        line = []
        csv.writer(_Collect(line)).writerow(row)
        self.scores_file.write(line[0])

    def event(self, record):
        self.events.write(json.dumps(record) + "\n")

    def log(self, message, stdout=False):
        """A line for the user (stderr, or stdout for alerts) and stream.log, with the time."""
        line = f"[{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        if not self.quiet:
            print(self.prefix + line, file=sys.stdout if stdout else sys.stderr, flush=True)
        self.log_file.write(line + "\n")

    def metrics(self, record):
        write_text(self.folder / "metrics.json", json.dumps(record, indent=2) + "\n")

    def prune_clips(self):
        """Remove clips last written more than keep_days ago."""
        clips = self.folder / "clips"
        if self.keep_days is None or not clips.is_dir():
            return
        removed = remove_older([p for p in clips.iterdir() if p.suffix == ".mp4"], self.keep_days)
        if removed:
            self.log(f"removed {len(removed)} clip{'s' * (len(removed) != 1)} older than {self.keep_days:g} days")

    def close(self):
        for f in (self.scores_file, self.events, self.log_file):
            f.close()


class _Collect:
    """A file-like that keeps what csv.writer writes, so a row goes out in one write."""

    def __init__(self, out):
        self.out = out

    def write(self, text):
        self.out.append(text)
