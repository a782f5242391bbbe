"""The review page: what infer.py, stream.py or main.py already wrote, as ONE self-contained HTML
file (inline CSS and JS, no network access, no server) that opens in any current browser.

  python report.py outputs/               infer.py's or stream.py's output folder -> outputs/report.html
  python report.py logs/                  every training log (*.jsonl) in the folder -> logs/report.html
  python report.py logs/demo_2022.jsonl   one training log -> logs/demo_2022.html, beside its .png

A scoring folder holds scores.csv and, when infer.py wrote it, segments.csv, metrics.json and
videos.csv (label, source video relative to the folder, ground-truth intervals in frames). A stream
folder (stream.py) holds scores.csv with a wall_time column and events.jsonl, whose events become
that video's segments (an event's saved clip is embedded when it is opened); its threshold comes
from metrics.json or threshold.json. The page's first screen is a table of videos sortable by every
column (peak score, time above the threshold, name, ...) and a viewer for the opened video: the video
itself, its score over time with the threshold line, the ground-truth intervals shaded and the
detected segments as a strip along the top edge, the segments listed. Above them, folded into one
line (the metrics and threshold), the run's details: checkpoint, settings, the threshold and how it
was chosen, the metrics and per-class table when there is a ground truth. Clicking the
timeline or a segment seeks the video there, and a playhead follows playback. Times are the
start_s/end_s columns, the video's own timestamps; without them the axis is frames, and the video
is linked, not synced.

A training log holds one JSON object per line (step, lr, losses, AUC, AP, ...). Its page draws the
metrics over the steps and one small chart per other numeric key (losses, lr, grad_norm, whatever
the model logs), the best-AP step marked in each. A folder with several logs gives one page: a
table of the runs, best AP first, then one section per log, in file-name order, so that seeds and
versions can be compared; .jsonl files whose first record has no `step` are not logs and are left
out.

Size and speed: the snippet scores and times go in once, as base64 float32 arrays; the table has
one row per video and a video's canvas is drawn only when it is opened, so a test set of 800 videos
and 150,000 snippets makes a page of about 3 MB that loads in well under a second.

Safety and portability: everything read from files reaches the page as JSON inside a <script
type="application/json"> block (<, > and & escaped) and is put into the page with textContent,
never parsed as HTML; video paths are URL-encoded segment by segment. Absolute paths (a checkpoint
given as /home/me/...) are shown by their last part, so the page holds no path of the machine that
made it, and works wherever its folder is copied together with its videos. The page is written
atomically, after every file has been read and checked.
"""
import argparse
import base64
import csv
import html
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from utils import InputError, run_cli, write_text

PAGE = "report.html"
METRICS = ("AUC", "AP", "AUC_sub", "AP_sub")
SUMMARY_KEYS = {"checkpoint", "step", "model", "settings", "threshold", "per_class", "videos", *METRICS}
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
        bad = [i for i, t in enumerate(texts) if not blank[i] and finite(as_float(t)) is None]
    if len(bad):
        raise InputError(f"{table.path} line {table.lines[bad[0]]}: {name} {texts[bad[0]]!r} is not a number")
    return values


def as_float(text):
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


def is_absolute(path):
    """True for absolute paths of this or another machine (/..., ~/..., C:\\...)."""
    return os.path.isabs(path) or path.startswith("~") or re.match(r"[A-Za-z]:[\\/]", path) is not None


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


def media_path(path, folder):
    """A video or clip path as the page uses it: relative to the page's folder, forward slashes;
    None when empty. An absolute path (outside the contract) is made relative to the folder."""
    if not path:
        return None
    if is_absolute(path):
        path = os.path.relpath(path, folder)
    return path.replace("\\", "/")


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
        return {k: (finite(v) if k != "source" else str(v)) for k, v in value.items()
                if k == "source" or finite(v) is not None}
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
    plain = lambda key: portable(metrics.get(key)) if is_plain(metrics.get(key)) else None
    summary = dict(
        checkpoint=plain("checkpoint"), step=plain("step"), model=plain("model"),
        metrics={k: finite(metrics[k]) for k in METRICS if k in metrics},
        per_class=[[str(c), finite(m.get("AUC")), finite(m.get("AP")), finite(m.get("videos"))]
                   for c, m in per_class.items() if isinstance(m, dict)],
        settings=shown, threshold=threshold)
    return summary, threshold, files


def read_scores(path):
    """scores.csv -> (video names in order of appearance, (N,) snippet counts, {column: (S,) float64}
    with each video's rows together, in that order). Columns: score, calibrated, start_s, end_s
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
        calibrated=numbers(table, "calibrated", empty_ok=True) if "calibrated" in table.columns else blank,
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


# what a browser's <video> plays: these containers, by preference, holding these codecs
BROWSER_CONTAINERS = (".mp4", ".webm", ".m4v", ".ogv", ".mov")
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1", "theora"}
CODEC_NAMES = {"mpeg4": "MPEG-4 Part 2", "hevc": "HEVC (H.265)", "msmpeg4v3": "MS MPEG-4 v3", "mjpeg": "Motion JPEG",
               "mpeg2video": "MPEG-2", "mpeg1video": "MPEG-1"}


def playback_problem(path):
    """Why a browser is unlikely to play the video file at `path` (its container or its video codec, as
    PyAV reads them from the header), or None when it should play."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in BROWSER_CONTAINERS:
        return f"its container ({ext or 'no extension'}) is not one browsers play"
    try:
        import av
        with av.open(path) as container:
            codec = container.streams.video[0].codec_context.name if container.streams.video else None
    except Exception:   # unreadable here: nothing to say about it (the page shows what the browser does)
        return None
    if codec is not None and codec not in BROWSER_CODECS:
        return f"its video is {CODEC_NAMES.get(codec, codec)}, which browsers do not decode"
    return None


def playable_copy(path):
    """The ffmpeg command that writes a copy of the video browsers play (H.264 in MP4) beside it."""
    copy = os.path.splitext(path)[0] + (".browser.mp4" if path.lower().endswith(".mp4") else ".mp4")
    return f"ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p -movflags +faststart -an {copy}"


def choose_source(paths):
    """(the file of a video the page should link, the line to say about it or None) from the files
    that share its name: one the browser plays first (an MP4 or WebM before an AVI beside it), then by
    container preference, then path order; a warning names the others when there are several."""
    rank = lambda p: (playback_problem(p) is not None, (BROWSER_CONTAINERS + (os.path.splitext(p)[1].lower(),))
                      .index(os.path.splitext(p)[1].lower()), p)
    chosen = min(paths, key=rank)
    if len(paths) == 1:
        return chosen, None
    others = ", ".join(p for p in sorted(paths) if p != chosen)
    return chosen, f"{len(paths)} files share the name {os.path.splitext(os.path.basename(chosen))[0]!r}: " \
                   f"linking {chosen}, not {others}"


def playback_warnings(videos, folder):
    """A warning line for each linked video (the page's, relative to `folder`) a browser is unlikely to play."""
    out = []
    for video in videos:
        source = video.get("source")
        if not source or re.match(r"^[a-z]+://", source):
            continue
        path = os.path.normpath(os.path.join(folder, source))
        problem = playback_problem(path) if os.path.isfile(path) else None
        if problem:
            out.append(f"{video['name']}: {path} is unlikely to play in a browser ({problem}); a playable copy: "
                       f"{playable_copy(path)}")
    return out


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
    peak_calibrated, mean}. InputError naming the file and line for a cell that is not a number."""
    def value(name, required=False):
        text = row.get(name, "").strip()
        if not text and not required:
            return None
        if finite(as_float(text)) is None:
            raise InputError(f"{path} line {line}: {name} {text!r} is not a number")
        return float(text)
    start_frame, end_frame = value("start_frame", True), value("end_frame", True)
    if timing is not None and value("start_s") is not None and value("end_s") is not None:
        start, end, peak = value("start_s"), value("end_s"), value("peak_s")
    else:
        start, end = (finite(x) for x in frames_to_axis([start_frame, end_frame], timing))
        peak = None
    return dict(rank=int(value("rank") or rank), start=start, end=end, peak_at=peak,
                peak_score=value("peak_score", True), peak_calibrated=value("peak_calibrated"),
                mean=value("mean_score"))


def event_record(event, rank, folder):
    """One stream event -> a segment in seconds, with its wall-clock times and its clip (or None)."""
    text = lambda key: str(event[key]) if event.get(key) is not None else None
    return dict(event=True, rank=rank, start=float(event["start_s"]), end=float(event["end_s"]), peak_at=None,
                peak_score=finite(event.get("peak_score")), peak_calibrated=finite(event.get("peak_calibrated")),
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
    calibrated = values["calibrated"]
    return dict(kind="scores", title=folder_title(folder), summary=summary,
                has_gt=any(v["gt"] is not None for v in listing.values()),
                threshold=threshold["value"] if threshold else None, videos=videos,
                arrays=dict(score=float32_base64(values["score"]), start=float32_base64(start),
                            end=float32_base64(end),
                            calibrated=None if np.isnan(calibrated).all() else float32_base64(calibrated)))


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


def read_log(path):
    """A training log -> {file, text, steps, metrics: {key: values}, others: {key: values}, best}.

    Records are ordered by step; every numeric key becomes a series (None where a record lacks it):
    AUC, AP, AUC_sub, AP_sub in `metrics`, the rest (lr, losses, grad_norm, ...) in `others`; text:
    the [key, value] pairs of text values (version). best: the record with the highest AP (its step and metrics), or None.
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
    ap = series.get("AP", [])
    best = None
    if any(v is not None for v in ap):
        i = max((i for i, v in enumerate(ap) if v is not None), key=lambda i: ap[i])
        best = dict(step=records[i]["step"], **{k: series[k][i] for k in METRICS if k in series})
    return dict(file=os.path.basename(path), text=text, steps=[r["step"] for r in records],
                metrics={k: series[k] for k in METRICS if k in series},
                others={k: v for k, v in series.items() if k not in METRICS}, best=best)


def training_data(paths, title):
    """Training logs -> the page's data, one run per log."""
    return dict(kind="training", title=title, runs=[read_log(p) for p in paths])


# ---------------------------------------------------------------------------------------------
# the page

def folder_title(folder):
    """The name the page is titled by: the folder's own name (never its full path)."""
    return os.path.basename(os.path.abspath(folder)) or "report"


def embed_json(data):
    """JSON that can sit inside <script type="application/json">: no '<', '>' or '&' can end the
    block or open a tag, whatever the strings hold; non-ASCII as \\u escapes."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data):
    """The page's HTML text for the data of scoring_data() or training_data(); ASCII only."""
    parts = dict(TITLE=html.escape(data["title"]).encode("ascii", "xmlcharrefreplace").decode("ascii"),
                 CSS=CSS, DATA=embed_json(data),
                 SCRIPT=COMMON_JS + (SCORES_JS if data["kind"] == "scores" else TRAINING_JS))
    return re.sub(r"@@(\w+)@@", lambda m: parts[m.group(1)], TEMPLATE)   # one pass: no inserted text is rescanned


def write_report(path):
    """Build the review page for `path` and write it atomically. Returns the page's path.

    path: an output folder of infer.py or stream.py (one holding scores.csv) or a folder of
    training logs (*.jsonl), both -> <path>/report.html; or one training log file ->
    <log without .jsonl>.html beside it. Raises InputError, with one line naming the file, when the
    path does not exist, holds nothing this page shows, or a file in it is malformed; then nothing
    is written (an earlier page stays as it was).
    """
    if os.path.isfile(path):
        if not path.endswith(".jsonl"):
            raise InputError(f"{path} is not a training log (.jsonl); give it, an output folder or a folder of logs")
        data = training_data([path], os.path.basename(path))
        out = os.path.splitext(path)[0] + ".html"
    elif os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "scores.csv")):
            data = scoring_data(path)
            for line in playback_warnings(data["videos"], path):
                print(f"warning: {line}", file=sys.stderr)
        else:
            logs = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".jsonl"))
            logs = [p for p in logs if os.path.isfile(p) and is_training_log(p)]
            if not logs:
                raise InputError(f"{path} holds neither scores.csv (infer.py, stream.py) nor training logs "
                                 f"(*.jsonl with a step)")
            data = training_data(logs, folder_title(path))
        out = os.path.join(path, PAGE)
    else:
        raise InputError(f"{path} does not exist")
    write_text(out, render(data))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the review page (one self-contained HTML file) for an "
                                                 "output folder of infer.py or stream.py, or for training logs.")
    parser.add_argument("path", help="an output folder (-> PATH/report.html), a folder of training logs "
                                     "(-> PATH/report.html), or one training log file (-> its name with .html)")
    print(write_report(parser.parse_args(argv).path))


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; media-src * file: blob: data:; img-src data:">
<title>@@TITLE@@</title>
<style>@@CSS@@</style>
</head>
<body>
<header><h1 id="title"></h1><p id="subtitle"></p></header>
<main id="main"></main>
<script type="application/json" id="report-data">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body>
</html>
"""

CSS = """
:root { --fg: #1d232a; --muted: #5f6b76; --line: #d9dee3; --panel: #f5f7f9; --accent: #1f6fb4;
        --open: #e3eefa; --gt: rgba(214, 39, 40, 0.16); --seg: rgba(255, 127, 14, 0.22); --head: #e4572e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
header { padding: 10px 20px; border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 20px; }
h2 { margin: 0 0 6px; font-size: 16px; overflow-wrap: anywhere; }
h3 { margin: 10px 0 4px; font-size: 14px; }
main { padding: 12px 20px 40px; }
.muted, #subtitle { color: var(--muted); margin: 2px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px 28px; margin-bottom: 14px; align-items: flex-start; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
table { border-collapse: collapse; }
th, td { padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }                 /* "3.20 s" never splits from its unit */
.kv th { color: var(--muted); font-weight: normal; padding-left: 0; }
.kv td { overflow-wrap: anywhere; max-width: 40em; }
.browser { display: grid; grid-template-columns: minmax(380px, 1fr) minmax(420px, 1.4fr); gap: 16px;
           align-items: start; }
@media (max-width: 900px) { .browser { grid-template-columns: 1fr; } }
.list { border: 1px solid var(--line); border-radius: 6px; overflow: hidden; }
.list .tools { display: flex; gap: 8px; align-items: center; padding: 6px 8px; background: var(--panel);
               border-bottom: 1px solid var(--line); }
.list input { flex: 1; padding: 3px 6px; }
.scroll { max-height: 82vh; overflow: auto; }
table.videos { width: 100%; }
table.videos thead th { position: sticky; top: 0; background: var(--panel); cursor: pointer;
                        vertical-align: bottom; user-select: none; border-bottom: 1px solid var(--line); }
table.videos th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
table.videos th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
table.videos td.name { overflow-wrap: anywhere; min-width: 9em; max-width: 16em; }
table.videos tbody tr { cursor: pointer; border-bottom: 1px solid #eef1f4; }
table.videos tbody tr:hover { background: #f2f6fb; }
table.videos tbody tr.open { background: var(--open); }
.viewer { position: sticky; top: 8px; }
.badge { display: inline-block; font-size: 12px; padding: 0 6px; border-radius: 8px; background: var(--panel);
         border: 1px solid var(--line); margin-left: 6px; vertical-align: middle; }
.badge.abnormal { background: #fde2e1; border-color: #f3b2ae; }
.badge.normal { background: #e2f3e4; border-color: #aed8b4; }
video { display: block; height: 36vh; width: auto; max-width: 100%; background: #000; border-radius: 4px; }
.note { background: #fff8e1; border: 1px solid #f0dc9a; border-radius: 4px; padding: 4px 8px; margin: 6px 0; }
.timeline, .chart { position: relative; margin-top: 8px; }
.timeline canvas { cursor: crosshair; }
canvas { display: block; width: 100%; }
.playhead, .cursor { position: absolute; top: 0; width: 2px; margin-left: -1px; background: var(--head);
                     pointer-events: none; }
.cursor { background: rgba(0, 0, 0, 0.35); width: 1px; }
.readout { font-variant-numeric: tabular-nums; color: var(--muted); min-height: 1.45em; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px; border-radius: 2px; }
table.segments { width: 100%; margin-top: 4px; }
table.segments thead th { border-bottom: 1px solid var(--line); color: var(--muted); font-weight: normal; }
table.segments tbody tr { cursor: pointer; }
table.segments tbody tr:hover { background: #f2f6fb; }
table.segments tbody tr.current { background: #ffe9d6; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px 18px; }
section.run { border-top: 1px solid var(--line); padding-top: 12px; margin-top: 16px; }
details.run-details { margin-bottom: 10px; }
details.run-details > summary { cursor: pointer; color: var(--muted); }
details.run-details[open] > summary { margin-bottom: 8px; }
"""

COMMON_JS = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
const DASH = "\u2013";

// An element with properties (text, class, on<event>, attributes) and children (nodes or plain text).
function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function missing(x) { return x === null || x === undefined || Number.isNaN(x); }
function fixed(x, digits) { return missing(x) ? DASH : Number(x).toFixed(digits); }
function score(x) { return missing(x) ? DASH : String(Number(Number(x).toPrecision(4))); }
function plain(v) { return typeof v === "string" ? v : JSON.stringify(v); }
function count(n, noun) { return n + " " + noun + (n === 1 ? "" : "s"); }     // "1 video", "2 videos"
function tickText(v) { return String(Number(v.toPrecision(3))); }

// A time on a video's axis as text: seconds as [h:]m:ss.ss or s.ss s, frames as whole frames.
function time(t, unit) {
  if (missing(t)) return DASH;
  if (unit === "frame") return Math.round(t) + " fr";
  const sign = t < 0 ? "-" : "";
  t = Math.abs(t);
  if (t < 60) return sign + t.toFixed(2) + " s";
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = (t % 60).toFixed(2).padStart(5, "0");
  return sign + (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + s;
}

// A two-column table of [key, value] rows.
function keyValues(rows) {
  return el("table", {class: "kv"}, [el("tbody", {}, rows.map(([k, v]) =>
    el("tr", {}, [el("th", {text: k}), el("td", {text: plain(v)})])))]);
}

// About `count` round tick values between lo and hi.
function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// A canvas sized for its CSS width and the screen's pixel ratio, with a plot frame mapping data to pixels.
function plotFrame(canvas, height, x0, x1, y0, y1) {
  const ratio = window.devicePixelRatio || 1, width = canvas.clientWidth || 600;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  if (!(x1 > x0)) x1 = x0 + 1;
  if (!(y1 > y0)) y1 = y0 + 1;
  ctx.font = "11px system-ui, sans-serif";           // drawAxes' font: the widest y label sets the margin
  const widest = Math.max(0, ...ticks(y0, y1, 4).map(v => ctx.measureText(tickText(v)).width));
  const left = Math.max(48, Math.ceil(widest) + 10), right = width - 10, top = 8, bottom = height - 24;
  return {
    ctx, width, height, left, right, top, bottom, x0, x1, y0, y1,
    x: v => left + (v - x0) / (x1 - x0) * (right - left),
    y: v => bottom - (v - y0) / (y1 - y0) * (bottom - top),
    xAt: px => x0 + (px - left) / (right - left) * (x1 - x0),
  };
}

function drawAxes(f, xTitle) {
  const ctx = f.ctx;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#5f6b76";
  ctx.strokeStyle = "#e6e9ec";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of ticks(f.y0, f.y1, 4)) {
    const y = Math.round(f.y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(f.left, y); ctx.lineTo(f.right, y); ctx.stroke();
    ctx.fillText(tickText(v), f.left - 4, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const v of ticks(f.x0, f.x1, Math.max(2, Math.floor((f.right - f.left) / 80)))) {
    ctx.fillText(String(v), f.x(v), f.bottom + 4);
  }
  ctx.textAlign = "right";
  ctx.fillText(xTitle, f.right, f.bottom + 13);
  ctx.strokeStyle = "#9aa4ad";
  ctx.strokeRect(f.left + 0.5, f.top + 0.5, f.right - f.left, f.bottom - f.top);
}

function legend(items) {
  return el("div", {class: "legend muted"}, items.map(([name, color]) =>
    el("span", {}, [el("i", {style: "background:" + color}), name])));
}

// Redraw what is on screen when the window's width changes.
const redraws = [];
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => redraws.forEach(draw => draw()), 150);
});

document.getElementById("title").textContent = DATA.title;
"""

SCORES_JS = r"""
const S = DATA.summary;
const UNIT_TITLE = {s: "time (s)", frame: "frame"};
const SEGMENT_COLOR = "rgba(255, 127, 14, 0.85)", SEGMENT_STRIP = 7;     // px tall, at the plot's top edge

// base64 little-endian float32 -> Float32Array
function floats(b64) {
  if (!b64) return null;
  const text = atob(b64), bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}
const A = {score: floats(DATA.arrays.score), start: floats(DATA.arrays.start), end: floats(DATA.arrays.end),
           calibrated: floats(DATA.arrays.calibrated)};

// Path relative to the page -> URL, each segment encoded (names may hold #, %, ? and spaces).
function mediaUrl(path) { return path.split("/").map(encodeURIComponent).join("/"); }

function renderSummary() {
  const cards = el("div", {class: "cards"});
  const run = [];
  if (S.checkpoint !== null) run.push(["checkpoint", S.checkpoint]);
  if (S.step !== null) run.push(["step", S.step]);
  if (S.model !== null) run.push(["model", S.model]);
  run.push(["videos", S.videos]);
  if (S.stream) run.push(["stream", S.stream[0] + " \u2192 " + S.stream[1]]);
  run.push(["read from", S.files.join(", ")]);
  cards.append(el("div", {class: "card"}, [el("h3", {text: "run"}), keyValues(run)]));
  const t = S.threshold;
  if (t) {
    const rows = [["value (raw score)", score(t.value)]];
    if (t.source) rows.push(["chosen by", t.source]);
    if (!missing(t.false_alarm_rate)) rows.push(["false alarms, all normal frames", fixed(t.false_alarm_rate, 2) + " %"]);
    if (!missing(t.false_alarm_rate_normal_videos))
      rows.push(["false alarms, normal videos' frames", fixed(t.false_alarm_rate_normal_videos, 2) + " %"]);
    for (const [k, v] of Object.entries(t))
      if (!["value", "source", "false_alarm_rate", "false_alarm_rate_normal_videos"].includes(k)) rows.push([k, v]);
    cards.append(el("div", {class: "card"}, [el("h3", {text: "threshold"}), keyValues(rows)]));
  } else {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "threshold"}), el("p", {class: "muted", text: "none given"})]));
  }
  const names = Object.keys(S.metrics);
  if (names.length) {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "metrics (%)"}), el("table", {class: "kv"}, [
      el("thead", {}, [el("tr", {}, names.map(k => el("th", {class: "num", text: k})))]),
      el("tbody", {}, [el("tr", {}, names.map(k => el("td", {class: "num", text: fixed(S.metrics[k], 2)})))])])]));
  }
  if (S.per_class.length) {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "per class (%), each class's videos with all normal ones"}),
      el("table", {class: "kv"}, [
        el("thead", {}, [el("tr", {}, ["class", "videos", "AUC", "AP"].map((k, i) => el("th", {class: i ? "num" : "", text: k})))]),
        el("tbody", {}, S.per_class.map(([c, auc, ap, n]) => el("tr", {}, [el("td", {text: c}),
          el("td", {class: "num", text: missing(n) ? DASH : String(n)}), el("td", {class: "num", text: fixed(auc, 2)}),
          el("td", {class: "num", text: fixed(ap, 2)})])))])]));
  }
  if (S.settings.length) cards.append(el("div", {class: "card"}, [el("h3", {text: "settings"}), keyValues(S.settings)]));
  return cards;
}

// The folded details' one line: the metrics and the threshold, which a reviewer may want at a glance.
function detailsLine() {
  const parts = Object.keys(S.metrics).map(k => k + " " + fixed(S.metrics[k], 2));
  if (S.threshold) parts.push("threshold " + score(S.threshold.value));
  return "run details" + (parts.length ? ": " + parts.join(", ") : "") + " (checkpoint, threshold, settings)";
}

// ---- the table of videos
const COLUMNS = [
  {key: "name", title: "video", text: true},
  {key: "label", title: "label", text: true},
  {key: "length", title: "length", show: v => time(v.length, v.unit)},
  {key: "peak", title: "peak score", show: v => score(v.peak)},
  {key: "above", title: "above threshold", show: v => time(v.above, v.unit)},
  {key: "segments", title: DATA.videos.some(v => v.segments.some(s => s.event)) ? "events" : "segments",
   show: v => String(v.segments.length)},
];
const collator = new Intl.Collator(undefined, {numeric: true});
function sortValue(v, key) { return key === "segments" ? v.segments.length : v[key]; }
const sorting = {key: "peak", descending: true};
const rows = DATA.videos.map((v, i) => el("tr", {"data-index": i, onclick: () => openVideo(i)},
  COLUMNS.map(c => el("td", {class: c.text ? c.key : "num", text: c.text ? (v[c.key] || DASH) : c.show(v)}))));
const tbody = el("tbody");
const heads = COLUMNS.map(c => el("th", {class: c.text ? "" : "num", text: c.title, title: "sort by " + c.title,
                                        onclick: () => sortBy(c.key)}));
const filter = el("input", {type: "search", placeholder: "filter by name", oninput: showRows});
const counter = el("span", {class: "muted"});

// Sort by a column: a new column starts with the highest number (or A to Z); the same column flips.
// Missing values go last either way; ties keep name order.
function sortBy(key) {
  if (sorting.key === key) sorting.descending = !sorting.descending;
  else Object.assign(sorting, {key, descending: !COLUMNS.find(c => c.key === key).text});
  showRows();
}
function showRows() {
  const key = sorting.key, sign = sorting.descending ? -1 : 1, text = COLUMNS.find(c => c.key === key).text;
  const order = DATA.videos.map((v, i) => i);
  order.sort((i, j) => {
    const a = sortValue(DATA.videos[i], key), b = sortValue(DATA.videos[j], key);
    if (missing(a) !== missing(b)) return missing(a) ? 1 : -1;
    const c = missing(a) ? 0 : text ? collator.compare(a, b) : a - b;
    return sign * c || collator.compare(DATA.videos[i].name, DATA.videos[j].name);
  });
  COLUMNS.forEach((c, i) => heads[i].setAttribute("aria-sort", c.key === key ? (sorting.descending ? "descending" : "ascending") : "none"));
  const needle = filter.value.trim().toLowerCase();
  const shown = order.filter(i => !needle || DATA.videos[i].name.toLowerCase().includes(needle));
  tbody.replaceChildren(...shown.map(i => rows[i]));
  counter.textContent = (shown.length === DATA.videos.length ? "" : shown.length + " of ") + count(DATA.videos.length, "video");
}

// ---- the viewer: one video at a time
const viewer = el("div", {class: "viewer"});
const state = {index: -1, media: null, frame: null, playhead: null, segmentRows: [], frameId: 0};

function openVideo(i) {
  if (state.media) state.media.pause();
  rows.forEach((r, j) => r.classList.toggle("open", j === i));
  const v = DATA.videos[i];
  state.index = i;
  state.media = null;
  try { history.replaceState(null, "", "#video=" + encodeURIComponent(v.name)); } catch (e) { /* a browser may refuse it for file: pages */ }
  const title = el("h2", {}, [v.name, el("span", {class: "badge " + (v.label || "unknown"), text: v.label || "label unknown"})]);
  const parts = [title];
  if (v.source && v.unit === "s") {
    const media = el("video", {controls: "", preload: "metadata"});
    media.src = mediaUrl(v.source);
    media.addEventListener("error", () => media.replaceWith(el("p", {class: "note",
      text: "cannot play " + v.source + " (not found beside this page, or a format this browser does not play)"})));
    for (const name of ["timeupdate", "seeked", "seeking"]) media.addEventListener(name, () => showPlayhead(media.currentTime));
    media.addEventListener("play", follow);
    state.media = media;
    parts.push(media);
  } else if (v.source) {
    parts.push(el("p", {class: "note"}, ["times unknown (scores.csv has no start_s): the timeline is in frames and not synced with ",
                                          el("a", {href: mediaUrl(v.source), text: v.source})]));
  } else {
    parts.push(el("p", {class: "muted", text: "no source video known for this one"}));
  }
  const canvas = el("canvas", {"aria-label": "anomaly score over time"});
  const playhead = el("div", {class: "playhead", hidden: ""});
  const cursor = el("div", {class: "cursor", hidden: ""});
  const readout = el("div", {class: "readout"});
  state.playhead = playhead;
  parts.push(el("div", {class: "timeline"}, [canvas, playhead, cursor]), readout);
  parts.push(legend([["anomaly score", COLORS[0]], ...(DATA.threshold !== null ? [["threshold " + score(DATA.threshold), "#ff7f0e"]] : []),
                     ...(v.gt && v.gt.length ? [["ground-truth anomaly", "rgba(214,39,40,0.35)"]] : []),
                     ...(v.segments.length ? [["detected " + (v.segments.some(s => s.event) ? "event" : "segment") +
                                               " (strip along the top: above the threshold)", SEGMENT_COLOR]] : [])]));
  if (v.count === 0) parts.push(el("p", {class: "note", text: "scores.csv holds no scores for this video"}));
  const clip = el("div");
  parts.push(segmentTable(v, clip), clip);
  viewer.replaceChildren(...parts);

  const draw = () => {
    state.frame = drawTimeline(canvas, v);
    for (const line of [playhead, cursor]) line.style.height = (state.frame.bottom - state.frame.top) + "px";
    for (const line of [playhead, cursor]) line.style.top = state.frame.top + "px";
    if (state.media) showPlayhead(state.media.currentTime);
  };
  redraws.length = 0;
  redraws.push(draw);
  draw();
  readout.textContent = summaryLine(v);
  canvas.addEventListener("mousemove", e => {
    const t = state.frame.xAt(e.offsetX), k = snippetAt(v, t);
    cursor.hidden = false;
    cursor.style.left = e.offsetX + "px";
    readout.textContent = time(t, v.unit) + (k < 0 ? "" : "   score " + score(A.score[k]) +
      (A.calibrated && !missing(A.calibrated[k]) ? "   calibrated " + fixed(A.calibrated[k], 3) : ""));
  });
  canvas.addEventListener("mouseleave", () => { cursor.hidden = true; readout.textContent = summaryLine(v); });
  canvas.addEventListener("click", e => seek(state.frame.xAt(e.offsetX)));
}

function summaryLine(v) {
  if (!v.count) return "";
  return v.count + " snippets, " + time(v.length, v.unit) + "; peak " + score(v.peak) +
         (missing(v.above) ? "" : "; above the threshold for " + time(v.above, v.unit)) +
         (state.media ? "; click the curve or a segment to seek" : "");
}

// The snippet whose [start, end) holds t, or -1.
function snippetAt(v, t) {
  let lo = v.offset, hi = v.offset + v.count - 1;
  if (!v.count || t < A.start[lo] || t >= A.end[hi]) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (A.start[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return t < A.end[lo] ? lo : -1;
}

function drawTimeline(canvas, v) {
  const a = v.offset, b = v.offset + v.count;
  let x0 = v.count ? A.start[a] : 0, x1 = v.count ? A.end[b - 1] : 1, lo = 0, hi = DATA.threshold || 0;
  for (const s of v.segments) { x0 = Math.min(x0, s.start); x1 = Math.max(x1, s.end); }
  for (let k = a; k < b; k++) { if (A.score[k] > hi) hi = A.score[k]; if (A.score[k] < lo) lo = A.score[k]; }
  const f = plotFrame(canvas, 190, x0, x1, lo, hi > lo ? hi * 1.08 : lo + 1), ctx = f.ctx;
  ctx.clearRect(0, 0, f.width, f.height);
  const band = (s, e, color, top) => { ctx.fillStyle = color; ctx.fillRect(f.x(s), top, Math.max(1, f.x(e) - f.x(s)), f.bottom - top); };
  for (const [s, e] of v.gt || []) band(s, e, "rgba(214, 39, 40, 0.16)", f.top);
  // detected segments: a strip along the top edge (as the PNG plots draw them), never a band from y = 0
  ctx.fillStyle = SEGMENT_COLOR;
  for (const s of v.segments) ctx.fillRect(f.x(s.start), f.top, Math.max(2, f.x(s.end) - f.x(s.start)), SEGMENT_STRIP);
  drawAxes(f, UNIT_TITLE[v.unit]);
  if (DATA.threshold !== null) {
    ctx.strokeStyle = "#ff7f0e"; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.2;
    ctx.beginPath(); ctx.moveTo(f.left, f.y(DATA.threshold)); ctx.lineTo(f.right, f.y(DATA.threshold)); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = COLORS[0]; ctx.lineWidth = 1.5;
  ctx.beginPath();
  for (let k = a; k < b; k++) {                      // a step curve: each snippet's score over its [start, end)
    const y = f.y(A.score[k]);
    if (k === a || A.start[k] !== A.end[k - 1]) ctx.moveTo(f.x(A.start[k]), y); else ctx.lineTo(f.x(A.start[k]), y);
    ctx.lineTo(f.x(A.end[k]), y);
  }
  ctx.stroke();
  return f;
}

function segmentTable(v, clipBox) {
  state.segmentRows = [];
  if (!v.segments.length) return el("p", {class: "muted", text: "no segments above the threshold"});
  const events = v.segments.some(s => s.event);
  const heads = ["#", "start", "end", "peak at", "peak score", "calibrated", "mean"];
  if (events) heads.splice(3, 1, "wall clock", "clip");
  const body = v.segments.map(s => {
    const cells = [String(s.rank), time(s.start, v.unit), time(s.end, v.unit), time(s.peak_at, v.unit),
                   score(s.peak_score), fixed(s.peak_calibrated, 3), score(s.mean)];
    if (events) cells.splice(3, 1, (s.wall_start || DASH) + (s.wall_end ? " \u2192 " + s.wall_end : ""), s.clip ? "clip" : DASH);
    const row = el("tr", {title: "seek to " + time(s.start, v.unit), onclick: () => { seek(s.start); if (s.clip) showClip(s, clipBox); }},
                   cells.map((c, i) => el("td", {class: i > 0 && !(events && i === 3) ? "num" : "", text: c})));
    state.segmentRows.push([s, row]);
    return row;
  });
  const hint = state.media ? " (click to seek the video)" : " (click to mark on the timeline)";
  return el("div", {}, [el("h3", {text: (events ? "events" : "segments") + hint}),
    el("table", {class: "segments"}, [el("thead", {}, [el("tr", {}, heads.map(h => el("th", {text: h})))]), el("tbody", {}, body)])]);
}

function showClip(s, box) {
  const media = el("video", {controls: "", preload: "metadata", class: "clip"});
  media.src = mediaUrl(s.clip);
  media.addEventListener("error", () => media.replaceWith(el("p", {class: "note", text: "cannot play clip " + s.clip})));
  box.replaceChildren(el("h3", {text: "clip of event " + s.rank + ": " + s.clip}), media);
}

// Seek the video (when there is one) and show the playhead at t.
function seek(t) {
  if (state.media) state.media.currentTime = t;
  showPlayhead(t);
}

function showPlayhead(t) {
  const f = state.frame;
  if (!f || !state.playhead) return;
  state.playhead.hidden = !(t >= f.x0 && t <= f.x1);
  state.playhead.style.left = f.x(t) + "px";
  for (const [s, row] of state.segmentRows) row.classList.toggle("current", t >= s.start && t < s.end);
}

// While the video plays, move the playhead every frame the browser draws.
function follow() {
  cancelAnimationFrame(state.frameId);
  const step = () => {
    if (!state.media || state.media.paused) return;
    showPlayhead(state.media.currentTime);
    state.frameId = requestAnimationFrame(step);
  };
  state.frameId = requestAnimationFrame(step);
}

document.getElementById("subtitle").textContent = "review of anomaly scores: " + count(DATA.videos.length, "video") +
  (DATA.has_gt ? ", with ground truth" : "");
// What a reviewer came for comes first: the table of videos and the open video with its timeline. The
// run's details (checkpoint, threshold, metrics, settings) are folded into one line above them.
document.getElementById("main").append(
  el("details", {class: "run-details", id: "run-details"}, [el("summary", {text: detailsLine()}), renderSummary()]),
  el("div", {class: "browser"}, [
    el("div", {class: "list"}, [el("div", {class: "tools"}, [filter, counter]),
      el("div", {class: "scroll"}, [el("table", {class: "videos", id: "videos"}, [el("thead", {}, [el("tr", {}, heads)]), tbody])])]),
    viewer]));
showRows();

// The video named by the page's address (#video=NAME, as opening one sets it), or -1.
function namedVideo() {
  const match = location.hash.match(/^#video=(.*)$/);
  let name = null;
  try { name = match && decodeURIComponent(match[1]); } catch (e) { return -1; }
  return DATA.videos.findIndex(v => v.name === name);
}
window.addEventListener("hashchange", () => { const i = namedVideo(); if (i >= 0 && i !== state.index) openVideo(i); });
if (namedVideo() >= 0) openVideo(namedVideo());
else if (tbody.firstChild) openVideo(Number(tbody.firstChild.dataset.index));
"""

TRAINING_JS = r"""
// A line chart over steps: each series a line with points, the best-AP step as a dotted line.
function lineChart(steps, series, best, title) {
  const canvas = el("canvas", {"aria-label": title});
  const cursor = el("div", {class: "cursor", hidden: ""});
  const readout = el("div", {class: "readout"});
  const box = el("div", {class: "chart"}, [el("h3", {text: title}), el("div", {class: "timeline"}, [canvas, cursor]), readout]);
  if (series.length > 1) box.append(legend(series.map((s, i) => [s.name, COLORS[i % COLORS.length]])));
  let frame = null;
  const draw = () => {
    const values = series.flatMap(s => s.values).filter(v => !missing(v));
    let lo = Math.min(...values), hi = Math.max(...values);
    const pad = hi > lo ? (hi - lo) * 0.05 : Math.abs(lo) * 0.1 || 1;       // a flat line sits mid-chart
    const f = plotFrame(canvas, 200, steps[0], steps[steps.length - 1], lo - pad, hi + pad), ctx = f.ctx;
    ctx.clearRect(0, 0, f.width, f.height);
    drawAxes(f, "step");
    if (best) {
      ctx.strokeStyle = "#555"; ctx.setLineDash([2, 3]); ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(f.x(best.step), f.top); ctx.lineTo(f.x(best.step), f.bottom); ctx.stroke();
      ctx.setLineDash([]);
    }
    series.forEach((s, i) => {
      ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length]; ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      s.values.forEach((v, k) => {
        if (missing(v)) { drawing = false; return; }
        if (drawing) ctx.lineTo(f.x(steps[k]), f.y(v)); else ctx.moveTo(f.x(steps[k]), f.y(v));
        drawing = true;
      });
      ctx.stroke();
      if (steps.length <= 200) s.values.forEach((v, k) => { if (!missing(v)) ctx.fillRect(f.x(steps[k]) - 1.5, f.y(v) - 1.5, 3, 3); });
    });
    cursor.style.top = f.top + "px";
    cursor.style.height = (f.bottom - f.top) + "px";
    frame = f;
  };
  redraws.push(draw);
  canvas.addEventListener("mousemove", e => {
    const at = frame.xAt(e.offsetX);
    let k = 0;
    steps.forEach((s, i) => { if (Math.abs(s - at) < Math.abs(steps[k] - at)) k = i; });
    cursor.hidden = false;
    cursor.style.left = frame.x(steps[k]) + "px";
    readout.textContent = "step " + steps[k] + ": " + series.map(s => s.name + " " + score(s.values[k])).join(", ");
  });
  canvas.addEventListener("mouseleave", () => { cursor.hidden = true; readout.textContent = ""; });
  return {box, draw};
}

function renderRun(run) {
  const best = run.best;
  const facts = [["evaluations", run.steps.length], ["steps", run.steps[0] + " \u2013 " + run.steps[run.steps.length - 1]],
                 ...run.text];
  if (best) facts.push(["best AP", fixed(best.AP, 2) + " at step " + best.step +
                        Object.entries(best).filter(([k]) => k !== "step" && k !== "AP").map(([k, v]) => ", " + k + " " + fixed(v, 2)).join("")]);
  const charts = [];
  const metrics = Object.entries(run.metrics).map(([name, values]) => ({name, values}));
  if (metrics.length) charts.push(lineChart(run.steps, metrics, best, "metrics (%)" + (best ? ", dotted: best AP" : "")));
  for (const [name, values] of Object.entries(run.others)) charts.push(lineChart(run.steps, [{name, values}], best, name));
  const section = el("section", {class: "run", id: "run-" + run.file}, [el("h2", {text: run.file}), keyValues(facts),
    el("div", {class: "charts"}, charts.map(c => c.box))]);
  return {section, charts};
}

const runs = DATA.runs.map(renderRun);
const parts = [];
if (DATA.runs.length > 1) {
  const order = DATA.runs.map((r, i) => i).sort((i, j) =>
    (DATA.runs[j].best ? DATA.runs[j].best.AP : -Infinity) - (DATA.runs[i].best ? DATA.runs[i].best.AP : -Infinity));
  parts.push(el("h2", {text: "runs, best AP first"}), el("table", {class: "kv runs"}, [
    el("thead", {}, [el("tr", {}, ["log", "evaluations", "last step", "best AP", "at step", "AUC there"].map((h, i) => el("th", {class: i ? "num" : "", text: h})))]),
    el("tbody", {}, order.map(i => {
      const r = DATA.runs[i], b = r.best || {};
      return el("tr", {}, [el("td", {}, [el("a", {href: "#run-" + r.file, text: r.file})]),
        ...[r.steps.length, r.steps[r.steps.length - 1], fixed(b.AP, 2), missing(b.step) ? DASH : b.step, fixed(b.AUC, 2)]
          .map(c => el("td", {class: "num", text: String(c)}))]);
    }))]));
}
document.getElementById("subtitle").textContent = "training " + (DATA.runs.length > 1 ? DATA.runs.length + " runs" : "run");
document.getElementById("main").append(...parts, ...runs.map(r => r.section));
runs.forEach(r => r.charts.forEach(c => c.draw()));
"""


if __name__ == "__main__":
    run_cli(main)
