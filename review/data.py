"""Reading what infer.py, stream.py or main.py wrote into the review page's data, every file checked.

A scoring folder holds scores.csv and, when infer.py wrote it, segments.csv, metrics.json and
videos.csv (label, source video relative to the folder, ground-truth intervals in frames). A stream
folder (stream.py) holds scores.csv with a wall_time column and events.jsonl, whose events become
that video's segments; its threshold comes from metrics.json or threshold.json. A training log holds
one JSON object per line (step, lr, losses, AUC, AP, ...); .jsonl files whose first record has no
`step` are not logs. A malformed file is an InputError with one line naming it. Absolute paths (a
checkpoint given as /home/me/...) are kept by their last part, so the page holds no path of the
machine that made it. The snippet scores and times go in once, as base64 float32 arrays.
"""
import base64
import csv
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from review.media import is_absolute, media_path
from test import METRICS
from utils import InputError


PAGE_METRICS = (*METRICS, "AP_sklearn")    # the frame metrics the page shows (AP_sklearn: step-wise, beside AP)
EVENT_KEYS = ("event_recall", "event_IoU", "events", "detected", "alarms_normal", "false_alarms_per_hour")
SUMMARY_KEYS = {"checkpoint", "step", "model", "settings", "threshold", "per_class", "videos", "events", "calibration",
                *PAGE_METRICS}
GT_PAIR = re.compile(r"(\d+)-(\d+)")


# ---------------------------------------------------------------------------------------------
# reading and checking the files

@dataclass
class Table:
    """A CSV file read whole: its path, {column: tuple of cell texts}, and each row's line number."""
    path: str
    columns: dict
    lines: list

    def __len__(self):
        return len(self.lines)


def read_csv(path, required):
    """A CSV file as a Table. Blank lines are skipped.

    InputError naming the file when it cannot be read, has no header, lacks one of the `required`
    columns, or a row has another number of cells than the header.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if not header:
        raise InputError(f"{path} is empty (no header line)")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path} has no column {', '.join(missing)} (header: {','.join(header)})")
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(f"{path} line {line}: {len(row)} cells, the header has {len(header)}")
    cells = list(zip(*(row for _, row in rows))) or [()] * len(header)
    return Table(path, dict(zip(header, cells)), [line for line, _ in rows])


def numbers(table, name, empty_ok=False):
    """One column of a Table as a float64 array; empty cells are NaN when empty_ok, else an error.

    InputError naming the file, the line and the cell when a cell is not a finite number.
    """
    texts = table.columns[name]
    blank = np.array([empty_ok and not t.strip() for t in texts], dtype=bool)
    try:
        values = np.array(["nan" if b else t for t, b in zip(texts, blank)], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) & ~blank)
    except ValueError:                                   # some cell is not a number at all: find it
        bad = [i for i, t in enumerate(texts) if not blank[i] and finite(parse_float(t)) is None]
    if len(bad):
        raise InputError(f"{table.path} line {table.lines[bad[0]]}: {name} {texts[bad[0]]!r} is not a number")
    return values


def parse_float(text):
    """float(text), or None when the text is not a number."""
    try:
        return float(text)
    except ValueError:
        return None


def read_json(path):
    """A JSON file's value; InputError naming the file when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e})") from None


def read_json_lines(path):
    """[(line number, object)] of a JSON-lines file, blank lines skipped; InputError naming the file
    and the line when a line is not a JSON object."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path} line {number} is not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise InputError(f"{path} line {number} is not a JSON object")
                records.append((number, record))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    return records


def finite(x):
    """A JSON-safe number: float(x), or None for None, NaN, infinities and anything not a number."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
        return None
    return float(x) if math.isfinite(x) else None


def portable(value):
    """A plain value for the page with the machine's absolute paths hidden: '/home/me/ckpts/x.pkl'
    -> '.../x.pkl'; lists element-wise; non-finite floats -> None."""
    if isinstance(value, str):
        if is_absolute(value):
            return "\u2026/" + re.split(r"[\\/]", value.rstrip("\\/"))[-1]
        return value
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, float):
        return finite(value)
    return value


def is_plain(value):
    """A value the settings block can show: a string, number, bool or null, or a list of those."""
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def read_threshold(value, path):
    """metrics.json's or threshold.json's threshold (a number, {value, source, ...}, or an object
    holding `threshold`) -> {value, source, false_alarm_rate, ...}, or None when absent."""
    if isinstance(value, dict) and "threshold" in value:
        value = value["threshold"]
    if value is None:
        return None
    if finite(value) is not None:
        return {"value": float(value)}
    if isinstance(value, dict) and finite(value.get("value")) is not None:
        return {k: (finite(v) if k not in ("source", "origin") else str(v)) for k, v in value.items()
                if k in ("source", "origin") or finite(v) is not None}
    raise InputError(f"{path}: the threshold {json.dumps(value)[:80]} is neither a number nor an object with a "
                     f"numeric value")


def read_summary(folder):
    """metrics.json (and threshold.json) -> (the page's summary, the threshold or None, files read)."""
    files, metrics = [], {}
    path = os.path.join(folder, "metrics.json")
    if os.path.isfile(path):
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise InputError(f"{path} is not a JSON object")
        files.append("metrics.json")
    threshold = read_threshold(metrics.get("threshold"), path)
    path = os.path.join(folder, "threshold.json")
    if threshold is None and os.path.isfile(path):
        threshold = read_threshold(read_json(path), path)
        files.append("threshold.json")
    settings = metrics.get("settings") if isinstance(metrics.get("settings"), dict) else {}
    shown = [[k, portable(v)] for k, v in settings.items() if is_plain(v)]
    shown += [[k, portable(v)] for k, v in metrics.items()      # a key both places hold is shown once
              if k not in SUMMARY_KEYS and is_plain(v) and not (k in settings and settings[k] == v)]
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    events = metrics.get("events") if isinstance(metrics.get("events"), dict) else {}
    plain = lambda key: portable(metrics.get(key)) if is_plain(metrics.get(key)) else None
    summary = dict(
        checkpoint=plain("checkpoint"), step=plain("step"), model=plain("model"),
        metrics={k: finite(metrics[k]) for k in PAGE_METRICS if k in metrics},
        events={k: finite(events[k]) for k in EVENT_KEYS if k in events},
        per_class=[[str(c), finite(m.get("AUC")), finite(m.get("AP")), finite(m.get("videos"))]
                   for c, m in per_class.items() if isinstance(m, dict)],
        settings=shown, threshold=threshold)
    return summary, threshold, files


def read_scores(path):
    """scores.csv -> (video names in order of appearance, (N,) snippet counts, {column: (S,) float64}
    with each video's rows together, in that order). Columns: score, normal_per_hour, start_s, end_s
    (NaN where empty or absent), start_frame, end_frame (NaN in a stream's file, which has none);
    and wall_time: the first and last cell, when the file has that column (a stream's)."""
    table = read_csv(path, ["video", "score"])
    if not len(table):
        raise InputError(f"{path} holds no scores (only a header)")
    timed = "start_s" in table.columns and "end_s" in table.columns
    framed = "start_frame" in table.columns and "end_frame" in table.columns
    if not timed and not framed:
        raise InputError(f"{path} has neither start_s,end_s nor start_frame,end_frame columns")
    blank = np.full(len(table), np.nan)
    values = dict(
        score=numbers(table, "score"),
        normal_per_hour=numbers(table, "normal_per_hour", empty_ok=True) if "normal_per_hour" in table.columns
        else blank,
        start_s=numbers(table, "start_s", empty_ok=True) if timed else blank,
        end_s=numbers(table, "end_s", empty_ok=True) if timed else blank,
        start_frame=numbers(table, "start_frame") if framed else blank,
        end_frame=numbers(table, "end_frame") if framed else blank)
    order, ids = {}, np.empty(len(table), np.int64)
    for i, name in enumerate(table.columns["video"]):
        ids[i] = order.setdefault(name, len(order))
    grouped = np.argsort(ids, kind="stable")                     # each video's rows together, in file order
    values = {k: v[grouped] for k, v in values.items()}
    if "wall_time" in table.columns:
        values["wall_time"] = [table.columns["wall_time"][0], table.columns["wall_time"][-1]]
    return list(order), np.bincount(ids), values


def read_videos(path, folder):
    """videos.csv -> {video: {label, source, gt}}, file order. source: relative to the folder, or None;
    gt: [(start, end) frames, end exclusive], or None when the file has no gt column. InputError
    naming the file and line for a malformed gt cell."""
    table = read_csv(path, ["video"])
    cells = lambda name, i: table.columns[name][i].strip() if name in table.columns else ""
    videos = {}
    for i, name in enumerate(table.columns["video"]):
        gt = None
        if "gt" in table.columns:
            pairs = [GT_PAIR.fullmatch(p) for p in cells("gt", i).split()]
            if not all(pairs):
                raise InputError(f"{path} line {table.lines[i]}: gt {cells('gt', i)!r} is not space-separated "
                                 f"start-end frame pairs")
            gt = [(int(m.group(1)), int(m.group(2))) for m in pairs]
        videos[name] = dict(label=cells("label", i), source=media_path(cells("source", i), folder), gt=gt)
    return videos


def read_segments(path):
    """segments.csv -> {video: [(line number, {column: cell text})]}, file order."""
    table = read_csv(path, ["video", "start_frame", "end_frame", "peak_score"])
    segments = {}
    for i, name in enumerate(table.columns["video"]):
        row = {column: cells[i] for column, cells in table.columns.items()}
        segments.setdefault(name, []).append((table.lines[i], row))
    return segments


def read_events(path, names):
    """events.jsonl -> {video: [(line number, event)]}. An event names its video by `video`, or
    belongs to the one video of a stream's scores.csv. InputError naming the file and line for an
    event without numeric start_s and end_s."""
    events = {}
    for line, event in read_json_lines(path):
        name = event.get("video", names[0] if len(names) == 1 else None)
        if name is None:
            raise InputError(f"{path} line {line}: the event names no video, and scores.csv holds several")
        for key in ("start_s", "end_s"):
            if finite(event.get(key)) is None:
                raise InputError(f"{path} line {line}: {key} {json.dumps(event.get(key))} is not a number")
        events.setdefault(str(name), []).append((line, event))
    return events


# ---------------------------------------------------------------------------------------------
# a scoring folder -> the page's data

def frames_to_axis(frames, timing):
    """Frame numbers -> a video's time axis. timing: None when the axis is frames, else the video's
    (frame, second) points at its snippet boundaries, between which seconds are interpolated (the
    video's own timestamps, whatever its frame rate did)."""
    frames = np.asarray(frames, dtype=np.float64)
    if timing is None:
        return frames
    frame_points, second_points = timing
    if np.isnan(frame_points).any():                             # a stream's scores have no frames
        return np.full(frames.shape, np.nan)
    return np.interp(frames, frame_points, second_points)


def segment_record(line, row, rank, timing, path):
    """One segments.csv row -> a segment on its video's axis: {rank, start, end, peak_at, peak_score,
    peak_normal_per_hour, mean}. InputError naming the file and line for a cell that is not a number."""
    def value(name, required=False):
        text = row.get(name, "").strip()
        if not text and not required:
            return None
        if finite(parse_float(text)) is None:
            raise InputError(f"{path} line {line}: {name} {text!r} is not a number")
        return float(text)
    start_frame, end_frame = value("start_frame", True), value("end_frame", True)
    if timing is not None and value("start_s") is not None and value("end_s") is not None:
        start, end, peak = value("start_s"), value("end_s"), value("peak_s")
    else:
        start, end = (finite(x) for x in frames_to_axis([start_frame, end_frame], timing))
        peak = None
    return dict(rank=int(value("rank") or rank), start=start, end=end, peak_at=peak,
                peak_score=value("peak_score", True), peak_normal_per_hour=value("peak_normal_per_hour"),
                mean=value("mean_score"))


def event_record(event, rank, folder):
    """One stream event -> a segment in seconds, with its wall-clock times and its clip (or None)."""
    text = lambda key: str(event[key]) if event.get(key) is not None else None
    return dict(event=True, rank=rank, start=float(event["start_s"]), end=float(event["end_s"]), peak_at=None,
                peak_score=finite(event.get("peak_score")),
                peak_normal_per_hour=finite(event.get("peak_normal_per_hour")),
                mean=finite(event.get("mean_score")), wall_start=text("wall_start"), wall_end=text("wall_end"),
                clip=media_path(event["clip"], folder) if isinstance(event.get("clip"), str) else None)


def float32_base64(values):
    """An array as base64 little-endian float32, the page's compact form (NaN stays NaN)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def scoring_data(folder):
    """An infer.py or stream.py output folder -> the page's data.

    Videos come in videos.csv's order, then any others of scores.csv. Each video: name, label,
    source, unit ("s" when all its snippets have start_s/end_s, else "frame"), offset and count of
    its snippets in the embedded arrays, length, peak score, time above the threshold (None without
    a threshold), ground-truth intervals and segments on its axis. Segments of videos that
    scores.csv and videos.csv do not name are left out.
    """
    summary, threshold, files = read_summary(folder)
    names, counts, values = read_scores(os.path.join(folder, "scores.csv"))
    files.append("scores.csv")
    listing, segments, events = {}, {}, {}
    if os.path.isfile(os.path.join(folder, "videos.csv")):
        listing = read_videos(os.path.join(folder, "videos.csv"), folder)
        files.append("videos.csv")
    if os.path.isfile(os.path.join(folder, "segments.csv")):
        segments = read_segments(os.path.join(folder, "segments.csv"))
        files.append("segments.csv")
    if os.path.isfile(os.path.join(folder, "events.jsonl")):
        events = read_events(os.path.join(folder, "events.jsonl"), names)
        files.append("events.jsonl")

    starts = np.concatenate([[0], np.cumsum(counts)])
    start, end = np.empty(len(values["score"])), np.empty(len(values["score"]))   # (S,) on each video's axis
    index = {n: i for i, n in enumerate(names)}
    videos = []
    for name in list(listing) + [n for n in names if n not in listing]:
        info = listing.get(name, dict(label="", source=None, gt=None))
        video = dict(name=name, label=info["label"], source=info["source"], unit="frame", offset=0, count=0,
                     length=None, peak=None, above=None, gt=None, segments=[])
        timing = None
        if name in index:
            a, b = starts[index[name]], starts[index[name] + 1]
            seconds = values["start_s"][a:b], values["end_s"][a:b]
            frames = values["start_frame"][a:b], values["end_frame"][a:b]
            if not (np.isnan(seconds[0]).any() or np.isnan(seconds[1]).any()):
                timing = np.append(frames[0], frames[1][-1]), np.append(seconds[0], seconds[1][-1])
                start[a:b], end[a:b] = seconds
            elif np.isnan(frames[0]).any():
                raise InputError(f"{os.path.join(folder, 'scores.csv')}: video {name} has snippets with neither "
                                 f"seconds nor frames")
            else:
                start[a:b], end[a:b] = frames
            score = values["score"][a:b]
            above = np.sum((end[a:b] - start[a:b])[score > threshold["value"]]) if threshold else None
            video.update(unit="s" if timing else "frame", offset=int(a), count=int(b - a),
                         length=float(end[b - 1] - start[a]), peak=float(score.max()), above=finite(above))
        if info["gt"] is not None:
            bounds = frames_to_axis(np.reshape(info["gt"], (-1, 2)), timing)
            video["gt"] = [[float(s), float(e)] for s, e in bounds if math.isfinite(s) and math.isfinite(e)]
        for rank, (line, row) in enumerate(segments.get(name, []), 1):
            video["segments"].append(segment_record(line, row, rank, timing, os.path.join(folder, "segments.csv")))
        for rank, (line, event) in enumerate(events.get(name, []), 1):
            video["segments"].append(event_record(event, rank, folder))
        video["segments"] = [s for s in video["segments"] if s["start"] is not None and s["end"] is not None]
        videos.append(video)

    if "wall_time" in values:
        summary["stream"] = values["wall_time"]
    summary.update(videos=len(videos), files=files)
    hourly = values["normal_per_hour"]
    return dict(kind="scores", title=folder_title(folder), summary=summary,
                has_gt=any(v["gt"] is not None for v in listing.values()),
                threshold=threshold["value"] if threshold else None, videos=videos,
                arrays=dict(score=float32_base64(values["score"]), start=float32_base64(start),
                            end=float32_base64(end),
                            normal_per_hour=None if np.isnan(hourly).all() else float32_base64(hourly)))


# ---------------------------------------------------------------------------------------------
# training logs -> the page's data

def is_training_log(path):
    """True when a .jsonl file's first record has a `step` (events.jsonl and the like have none)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(next((line for line in f if line.strip()), "null"))
        return isinstance(first, dict) and "step" in first
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def training_run(path):
    """A training log -> {file, text, steps, metrics: {key: values}, others: {key: values}, best}.

    Records are ordered by step; every numeric key becomes a series (None where a record lacks it):
    AUC, AP, AUC_sub, AP_sub in `metrics`, the rest (lr, losses, grad_norm, ...) in `others`; text:
    the [key, value] pairs of text values (version). best: the evaluation main.py kept (its step, the key it
    was selected by and its metrics): the highest value of the record's `selected_by` key (AP in older logs),
    strictly, never step 0; or None.
    InputError naming the file and line for a malformed line or a record without a numeric step.
    """
    records = read_json_lines(path)
    if not records:
        raise InputError(f"{path} holds no records")
    for line, record in records:
        if finite(record.get("step")) is None:
            raise InputError(f"{path} line {line}: no numeric step")
    records = sorted((r for _, r in records), key=lambda r: r["step"])
    keys, text = [], []
    for record in records:
        for k, v in record.items():
            if k != "step" and k not in keys and finite(v) is not None:
                keys.append(k)
            if isinstance(v, str) and [k, v] not in text:
                text.append([k, v])
    series = {k: [finite(r.get(k)) for r in records] for k in keys}
    best = None
    for i, record in enumerate(records):     # main.py's CheckpointSaver: strictly better, never step 0
        key = record.get("selected_by", "AP")           # logs written before the key was recorded: AP
        value = finite(record.get(key))
        if value is not None and record["step"] > 0 and (best is None or value > best[1]):
            best = (i, value)
    if best is not None:
        i = best[0]
        best = dict(step=records[i]["step"], selected_by=records[i].get("selected_by", "AP"),
                    **{k: series[k][i] for k in METRICS if k in series})
    return dict(file=os.path.basename(path), text=text, steps=[r["step"] for r in records],
                metrics={k: series[k] for k in METRICS if k in series},
                others={k: v for k, v in series.items() if k not in METRICS}, best=best)


def training_data(paths, title):
    """Training logs -> the page's data, one run per log."""
    return dict(kind="training", title=title, runs=[training_run(p) for p in paths])


def folder_title(folder):
    """The name the page is titled by: the folder's own name (never its full path)."""
    return os.path.basename(os.path.abspath(folder)) or "report"
