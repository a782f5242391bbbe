"""A live run: the loop that scores a source's snippets as they arrive (LiveRun, run_stream) and its
outputs in the output folder (scores.csv, events.jsonl, metrics.json, stream.log; Outputs).

The main thread crops the snippets that are waiting (video.crops.crop_frames), runs up to
batch_size of them through I3D in one pass (video.snippets.snippet_features), scores each causally
(scoring.CausalScorer) and feeds the Alarm; Ctrl-C, SIGTERM and the end of the stream close every
output complete (an open event is closed and written).
"""
import csv
import datetime
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from live.alarms import Alarm, iso
from live.clips import CLIP_FPS_BOUND, ClipRecorder
from live.health import Health, health_record, release_memory
from live.reader import Notice, Reader, Snippet, format_reconnect, is_live, redact, source_name
from live.scoring import CausalScorer
from live.settings import StreamSettings
from test import calibrate
from utils import InputError, make_dir, one_line, write_text
from video.crops import crop_frames
from video.snippets import SNIPPET, snippet_features


SCORES_HEADER = ["video", "snippet", "score", "calibrated", "start_s", "end_s", "wall_time"]
# The checkpoint's calibration is the quantile table of the training normals' scores over whole videos.
# A score over a causal window sees less context and is on another scale (bench.py g measures by how
# much: on the demo, about 8 lower in the median at window 8, from a median of 25), so calibrated values,
# and a threshold taken from the calibration, are approximate here.
CALIBRATION_NOTE = ("the calibration (and a threshold taken from it) comes from scores of whole training videos; "
                    "scores over a causal window run on another scale (docs/live.md measures it), so "
                    "calibrated values are approximate: for exact control set --threshold from scores.csv of "
                    "normal footage")     # the clip buffer holds --pre_roll s of frames at up to this frame rate


class Outputs:
    """scores.csv, events.jsonl and stream.log (appended, flushed per line) and metrics.json (atomic)."""

    def __init__(self, folder, video, quiet=False):
        self.folder, self.video, self.quiet = Path(folder), video, quiet
        make_dir(folder, "output")
        self.scores_file = open(self.folder / "scores.csv", "w", newline="", encoding="utf-8")
        self.scores = csv.writer(self.scores_file)
        self.scores.writerow(SCORES_HEADER)
        self.scores_file.flush()
        self.events = open(self.folder / "events.jsonl", "w", encoding="utf-8")
        self.log_file = open(self.folder / "stream.log", "w", encoding="utf-8")

    def score(self, snippet, score, calibrated):
        self.scores.writerow([self.video, snippet.index, f"{score:.6g}",
                              "" if calibrated is None else f"{calibrated:.4f}", f"{snippet.start_s:.3f}",
                              f"{snippet.end_s:.3f}", iso(snippet.wall)])
        self.scores_file.flush()

    def event(self, record):
        self.events.write(json.dumps(record) + "\n")
        self.events.flush()

    def log(self, message, stdout=False):
        """A line for the user (stderr, or stdout for alerts) and stream.log, with the time."""
        line = f"[{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        if not self.quiet:
            print(line, file=sys.stdout if stdout else sys.stderr, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def metrics(self, record):
        write_text(self.folder / "metrics.json", json.dumps(record, indent=2) + "\n")

    def close(self):
        for f in (self.scores_file, self.events, self.log_file):
            f.close()


def existing_outputs(folder):
    """The files of an earlier run in folder (a new run would overwrite them)."""
    names = ("scores.csv", "events.jsonl", "metrics.json", "stream.log")
    return [n for n in names if (Path(folder) / n).exists()]


def refuse_earlier_outputs(folder):
    """InputError (one line) when `folder` holds an earlier run's outputs: no run overwrites another's."""
    found = existing_outputs(folder)
    if found:
        raise InputError(f"{folder} holds an earlier run's {', '.join(found)}; choose another --output_dir")


def stream_output_dir(output_dir, name):
    """The run's output folder: `output_dir` (--output_dir), else outputs/stream/<name>_<start time>;
    refused (refuse_earlier_outputs) when it holds an earlier run's outputs."""
    folder = output_dir or os.path.join("outputs", "stream", f"{name}_{datetime.datetime.now():%Y%m%d-%H%M%S}")
    refuse_earlier_outputs(folder)
    return folder


def run_stream(source, model, i3d, output_dir, threshold, settings=None, *, table=None, name=None, info=None,
               on_score=None, on_event=None, quiet=False, overwrite=False):
    """
    Score `source` while it plays until it ends (a file's end, or a live source lost for good) or
    KeyboardInterrupt (re-raised once every output is complete). Returns the run's health summary
    (metrics.json's `health`).

    model: a BN-WVAD or UR-DMU ((B, T, D) -> (B, T) scores in eval mode, which this sets) on the
    device to score on; i3d: the I3D (load_i3d) or any module with `.features(x)`, x (N, 3, 16, 224,
    224) in [-1, 1] -> (N, D); threshold: the raw score alerts are raised above; settings: a
    StreamSettings; table: the checkpoint's calibration (None: no calibrated scores); name: the video
    name in the outputs (default from the source); info: more fields for metrics.json (checkpoint,
    model, step, threshold_source); on_score(row dict) and on_event(kind 'open' | 'close', event dict)
    are called in this thread as they happen. Raises InputError (one line) when the source cannot be
    opened or the output folder holds an earlier run's outputs (unless overwrite), ValueError for
    settings that cannot work together.
    """
    s = settings or StreamSettings()
    s.check()
    if s.amp and next(i3d.parameters()).device.type != "cuda":
        raise ValueError("amp needs the I3D on a CUDA device")
    if not overwrite:
        refuse_earlier_outputs(output_dir)
    live = is_live(source) if s.live is None else s.live
    reader = Reader(source, s, live).start()
    early = []              # warnings before the first frame (the clock used, a discontinuity), logged once open
    try:
        first = reader.get()
        while first.kind == "warning":
            early.append(first.message)
            first = reader.get()
    except BaseException:
        reader.close()
        raise
    if first.kind != "opened":
        reader.close()
        if first.kind == "error":
            raise first.error
        raise InputError(f"cannot open {redact(source)}: {first.message}")
    session = LiveRun(reader, model.eval(), i3d.eval(), output_dir, threshold, s, table,
                      name or source_name(source), on_score, on_event, quiet)
    return session.run(first.message, info or {}, early)


class LiveRun:
    """One run of run_stream once its source is open: snippets in, scores, events and health out."""

    def __init__(self, reader, model, i3d, output_dir, threshold, settings, table, name, on_score, on_event, quiet):
        s = self.settings = settings
        self.reader, self.i3d, self.threshold, self.table, self.name = reader, i3d, threshold, table, name
        self.on_score, self.on_event = on_score, on_event
        self.paced = reader.live or s.realtime            # a clock to lag behind
        self.out = Outputs(output_dir, name, quiet)
        self.health = Health()
        self.scorer = CausalScorer(model, next(model.parameters()).device, s.window, s.delay)
        self.alarm = Alarm(threshold, s.min_snippets)
        # the clip buffer holds what an event that has not opened yet may need (see ClipRecorder.trim)
        ring = CLIP_FPS_BOUND * s.pre_roll + SNIPPET * (s.min_snippets + s.delay + s.batch_size + 2)
        self.clips = ClipRecorder(Path(output_dir) / "clips", s.pre_roll, s.post_roll, int(ring), self.out.log) \
            if s.save_clips else None
        self.clip_paths = {}                               # open event -> its clip's relative path
        self.said_waiting = False
        self.record = {}

    def run(self, opened, info, early=()):
        """Read, score and alert until the end; every output complete however it ends."""
        s = self.settings
        self.record = dict(info, source=redact(self.reader.source), video=self.name, live=self.reader.live,
                           settings=settings_record(s),
                           threshold=dict(value=self.threshold, source=info.get("threshold_source", "given")),
                           calibrated=self.table is not None, started=iso(time.time()), ended=None, end_reason=None)
        self.record.pop("threshold_source", None)
        self.record["settings"]["live"] = self.reader.live
        self.out.metrics(self.record)
        self.out.log(f"{opened} as {self.name}: threshold {self.threshold:.4g}, window {s.window}, delay {s.delay}, "
                     f"{s.crops} crop{'s' if s.crops > 1 else ''}, outputs in {self.out.folder}")
        if self.table is not None:
            self.record["calibration_note"] = CALIBRATION_NOTE
            self.out.log(f"note: {CALIBRATION_NOTE}")
        for message in early:
            self.out.log(message)
        ended = "end of stream"
        try:
            ended = self._loop()
        except KeyboardInterrupt:
            ended = "interrupted"
            raise
        except BaseException as e:
            ended = f"error: {type(e).__name__}: {one_line(e)}"
            raise
        finally:
            self._finish(ended)
        return self.record["health"]

    def _loop(self):
        """Batches of the snippets waiting (at most --i3d_batch), the reader's notices in order; returns
        why the stream ended."""
        held, last_status = None, time.monotonic()
        while True:
            if time.monotonic() - last_status >= self.settings.status_every:
                last_status = time.monotonic()
                self._status()
            item, held = held or self.reader.get(timeout=min(1.0, self.settings.status_every)), None
            if item is None:
                continue
            if isinstance(item, Notice):
                if item.kind == "error":
                    raise item.error
                if item.kind == "end":
                    return item.message
                self.out.log(item.message if item.kind in ("gap", "warning") else f"{item.kind}: {item.message}")
                continue
            batch = [item]
            while len(batch) < self.settings.batch_size:
                waiting = self.reader.get(0)
                if isinstance(waiting, Notice):
                    held = waiting
                if not isinstance(waiting, Snippet):
                    break
                batch.append(waiting)
            self._process(batch)

    def _process(self, batch):
        """Crops, I3D and scores of the snippets in one batch."""
        t = time.monotonic()
        s = self.settings
        crops = np.stack([crop_frames(snippet.frames, s.crops) for snippet in batch])   # (B, K, 16, 224, 224, 3)
        features = snippet_features(self.i3d, crops, s.amp).numpy()                     # (B, K, 1024)
        for snippet, f in zip(batch, features):
            if self.clips is not None:
                self.clips.add(snippet)
            for done, score in self.scorer.push(snippet, f):
                self._scored(done, score)
        if self.clips is not None:
            # an event not opened yet starts no earlier than the run above the threshold under way, or
            # else the first snippet not scored yet
            starts = [x.start_s for x in self.scorer.pending] + [batch[-1].end_s]
            if self.alarm.earliest_start() is not None:
                starts.append(self.alarm.earliest_start())
            self.clips.trim(min(starts))
        self.health.busy += time.monotonic() - t

    def _scored(self, snippet, score):
        calibrated = float(calibrate(score, self.table)) if self.table is not None else None
        self.health.add(snippet, time.monotonic(), self.reader.anchor if self.paced else None)
        self.out.score(snippet, score, calibrated)
        if self.on_score is not None:
            self.on_score(dict(video=self.name, snippet=snippet.index, score=score, calibrated=calibrated,
                               start_s=snippet.start_s, end_s=snippet.end_s, wall_time=snippet.wall))
        for kind, event in self.alarm.update(snippet, score, calibrated):
            self._opened(event) if kind == "open" else self._closed(event)

    def _opened(self, event):
        if self.clips is not None:
            self.clip_paths[event["event"]] = self.clips.open(event["event"], event["start_s"])
        cal = "" if event["peak_calibrated"] is None else f" (calibrated {event['peak_calibrated']:.3f})"
        self.out.log(f"ALERT event {event['event']} from {event['start_s']:.2f} s: score {event['peak_score']:.4g}"
                     f"{cal}, above {self.threshold:.4g} for {self.settings.min_snippets} snippets", stdout=True)
        if self.on_event is not None:
            self.on_event("open", dict(event))

    def _closed(self, event):
        if self.clips is not None:
            self.clips.close(event["event"], event["end_s"])
        record = dict(video=self.name, event=event["event"], start_s=round(event["start_s"], 3),
                      end_s=round(event["end_s"], 3), peak_score=event["peak_score"],
                      peak_calibrated=event["peak_calibrated"], mean_score=event["mean_score"],
                      wall_start=iso(event["wall_start"]), wall_end=iso(event["wall_end"]),
                      wall_alert=iso(event["wall_alert"]), first_snippet=event["first_snippet"],
                      last_snippet=event["last_snippet"], clip=self.clip_paths.pop(event["event"], None),
                      closed_by=event["closed_by"])
        self.out.event(record)
        self.out.log(f"event {record['event']}: {record['start_s']:.2f}-{record['end_s']:.2f} s, peak "
                     f"{record['peak_score']:.4g}" + (f", clip {record['clip']}" if record["clip"] else ""),
                     stdout=True)
        if self.on_event is not None:
            self.on_event("close", record)

    def _status(self, final=False):
        """The status line (and what is behind, and by how much); metrics.json's health rewritten."""
        health, reader = self.health, self.reader
        rate, capacity, speed = health.interval()
        if not final:
            parts = [f"{health.scored} snippets", f"{rate:.2f}/s"]
            if capacity is not None:
                parts.append(f"capacity {capacity:.2f}/s ({speed:.2f}x real time)")
            if health.last_latency is not None:
                parts.append(f"latency {health.last_latency:.2f} s")
            if self.paced and health.lag is not None:
                parts.append(f"lag {health.lag:.1f} s")
            parts.append(f"queue {reader.items.qsize()}/{self.settings.queue}")
            self.out.log(" | ".join(parts))
            if self.paced and speed is not None and speed < 1:
                self.out.log(f"behind: the pipeline handles {speed:.2f}x real time, the source needs {1 / speed:.2f}x "
                             f"that; the lag grows by {1 / speed - 1:.2f} s per second of video (fewer --crops, or "
                             f"a GPU with --device)")
            if reader.blocked_s and self.paced and not self.said_waiting:
                self.said_waiting = True
                self.out.log(f"behind: the reader has waited {reader.blocked_s:.1f} s for the network to take "
                             f"snippets; a live source may lose frames meanwhile (they show as gaps)")
        self.record.update(health=health_record(health, reader, self.alarm, self.paced))
        self.out.metrics(self.record)
        release_memory()

    def _finish(self, ended):
        """Score what waits for later snippets, close the open event and clips, write the summary."""
        self.reader.close()
        try:
            if not ended.startswith("error"):
                for done, score in self.scorer.flush():
                    self._scored(done, score)
            event = self.alarm.close(ended)
            if event is not None:
                self._closed(event)
            if self.clips is not None:
                self.clips.finish()
        finally:
            self.record.update(ended=iso(time.time()), end_reason=ended)
            self._status(final=True)                      # the final health, with metrics.json written once
            h = self.record["health"]
            latency = "-" if h["latency_p50_s"] is None else \
                f"p50 {h['latency_p50_s']:.2f} s p95 {h['latency_p95_s']:.2f} s"
            self.out.log(f"ended ({ended}): {h['snippets']} snippets, {h['events']} event{'s' * (h['events'] != 1)}, "
                         f"latency {latency}"
                         + (f", {h['reconnects']} reconnections" if h["reconnects"] else "")
                         + (f", {h['gaps']} gaps in the source" if h["gaps"] else "")
                         + (f"; could not keep up: {h['speed']:.2f}x real time" if h["kept_up"] is False else ""))
            self.out.close()


def settings_record(settings):
    """StreamSettings as plain JSON values (input options shown as given, the resize as its text)."""
    record = asdict(settings)
    record["resize"] = settings.resize if isinstance(settings.resize, int) else "x".join(map(str, settings.resize))
    record["reconnect"] = format_reconnect(settings.reconnect)
    record["backoff"] = list(settings.backoff)
    return record


def stop_on_signals():
    """Ctrl-C and SIGTERM end the run the same way (outputs closed complete); a second one while the
    outputs are being closed is ignored, so it cannot cut them short."""
    state = {"stopping": False}

    def handler(signum, frame):
        if state["stopping"]:
            print("finishing the outputs...", file=sys.stderr, flush=True)
            return
        state["stopping"] = True
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
