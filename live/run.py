"""A live run: the loop that scores a source's snippets as they arrive (LiveRun, run_stream); its outputs
in the output folder (scores.csv, events.jsonl, metrics.json, stream.log) are live.outputs.Outputs.

The main thread crops the snippets that are waiting (video.crops.crop_frames), runs up to
batch_size of them through I3D in one pass (video.snippets.snippet_features), scores each causally
(scoring.CausalScorer) and feeds the Alarm; Ctrl-C, SIGTERM and the end of the stream close every
output complete (an open event is closed and written).
"""
import datetime
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
from live.outputs import Outputs, format_rollover, resume_point
from live.reader import Notice, Reader, Snippet, format_reconnect, is_live, redact, source_name
from live.scoring import CausalScorer
from live.settings import StreamSettings
from utils import InputError, one_line
from video.crops import crop_frames
from video.snippets import SNIPPET, snippet_features


# The checkpoint's calibration is the quantile table of the training normals' scores over whole videos.
# A score over a causal window sees less context and is on another scale (`python -m bench --sections g` measures by how
# much: on the demo, about 8 lower in the median at window 8, from a median of 25), so calibrated values,
# and a threshold taken from the calibration, are approximate here.
CALIBRATION_NOTE = ("the calibration (and a threshold taken from it) comes from scores of whole training videos; "
                    "scores over a causal window run on another scale (docs/live.md measures it), so "
                    "exceedance and normal_per_hour readings are approximate: for exact control use calibrate.py on "
                    "normal footage of this camera, or set --threshold from scores.csv of "
                    "normal footage")     # the clip buffer holds --pre_roll s of frames at up to this frame rate


def stream_output_dir(output_dir, name):
    """The run's output folder: `output_dir` (--output_dir), else outputs/stream/<name>_<start time>. A
    folder that holds an earlier run's outputs is continued (live.outputs)."""
    return output_dir or os.path.join("outputs", "stream", f"{name}_{datetime.datetime.now():%Y%m%d-%H%M%S}")


def run_stream(source, model, i3d, output_dir, threshold, settings=None, *, table=None, name=None, info=None,
               on_score=None, on_event=None, quiet=False):
    """
    Score `source` while it plays until it ends (a file's end, or a live source lost for good) or
    KeyboardInterrupt (re-raised once every output is complete). Returns the run's health summary
    (metrics.json's `health`).

    model: a BN-WVAD or UR-DMU ((B, T, D) -> (B, T) scores in eval mode, which this sets) on the
    device to score on; i3d: the I3D (load_i3d) or any module with `.features(x)`, x (N, 3, 16, 224,
    224) in [-1, 1] -> (N, D); threshold: the raw score alerts are raised above; settings: a
    StreamSettings; table: the checkpoint's thresholds.Calibration (None: no calibrated scores); name: the video
    name in the outputs (default from the source); info: more fields for metrics.json (checkpoint,
    model, step, threshold_source); on_score(row dict) and on_event(kind 'open' | 'close', event dict)
    are called in this thread as they happen. A folder that holds an earlier run's outputs is
    continued (live.outputs: appended, snippet and event numbers going on). A live source that cannot
    be opened is retried under settings.reconnect, each failed attempt said on stderr. Raises
    InputError (one line) when the source cannot be opened, ValueError for settings that cannot work
    together.
    """
    s = settings or StreamSettings()
    s.check()
    if s.amp and next(i3d.parameters()).device.type != "cuda":
        raise ValueError("amp needs the I3D on a CUDA device")
    live = is_live(source) if s.live is None else s.live
    resume, last_event = resume_point(output_dir)
    reader = Reader(source, s, live, resume).start()
    early = []              # notes before the first frame (the clock used, failed attempts), logged once open
    try:
        first = reader.get()
        while first.kind in ("warning", "retry"):
            early.append(first.message)
            if first.kind == "retry" and not quiet:
                print(f"{redact(source)}: {first.message}", file=sys.stderr, flush=True)
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
                      name or source_name(source), on_score, on_event, quiet, last_event)
    return session.run(first.message, info or {}, early)


class LiveRun:
    """One run of run_stream once its source is open: snippets in, scores, events and health out."""

    def __init__(self, reader, model, i3d, output_dir, threshold, settings, table, name, on_score, on_event, quiet,
                 last_event=0, prefix=""):
        s = self.settings = settings
        self.reader, self.i3d, self.threshold, self.table, self.name = reader, i3d, threshold, table, name
        self.on_score, self.on_event = on_score, on_event
        self.paced = reader.live or s.realtime            # a clock to lag behind
        self.out = Outputs(output_dir, name, quiet, s.rollover, s.keep_days, prefix)
        self.health = Health()
        self.scorer = CausalScorer(model, next(model.parameters()).device, s.window, s.delay, name)
        self.alarm = Alarm(threshold, s.min_snippets)
        self.alarm.count = last_event                     # an earlier run's events keep their numbers
        # the clip buffer holds what an event that has not opened yet may need (see ClipRecorder.trim)
        ring = CLIP_FPS_BOUND * s.pre_roll + SNIPPET * (s.min_snippets + s.delay + s.batch_size + 2)
        self.clips = ClipRecorder(Path(output_dir) / "clips", s.pre_roll, s.post_roll, int(ring), self.out.log) \
            if s.save_clips else None
        self.clip_paths = {}                               # open event -> its clip's relative path
        self.said_waiting = False
        self.record = {}

    def run(self, opened, info, early=()):
        """Read, score and alert until the end; every output complete however it ends."""
        self.start(opened, info, early)
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
            self.finish(ended)
        return self.record["health"]

    def start(self, opened, info, early=()):
        """metrics.json and the first lines of stream.log, once the source is open."""
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
        self.out.prune_clips()

    def notice(self, item):
        """Log a reader's Notice; returns why the stream ended for an 'end', raises an 'error''s error."""
        if item.kind == "error":
            raise item.error
        if item.kind == "end":
            return item.message
        self.out.log(item.message if item.kind in ("gap", "warning") else f"{item.kind}: {item.message}")
        return None

    def _loop(self):
        """Batches of the snippets waiting (at most --i3d_batch), the reader's notices in order; returns
        why the stream ended."""
        held, last_status = None, time.monotonic()
        while True:
            if time.monotonic() - last_status >= self.settings.status_every:
                last_status = time.monotonic()
                self.status()
            item, held = held or self.reader.get(timeout=min(1.0, self.settings.status_every)), None
            if item is None:
                continue
            if isinstance(item, Notice):
                ended = self.notice(item)
                if ended is not None:
                    return ended
                continue
            batch = [item]
            while len(batch) < self.settings.batch_size:
                waiting = self.reader.get(0)
                if isinstance(waiting, Notice):
                    held = waiting
                if not isinstance(waiting, Snippet):
                    break
                batch.append(waiting)
            t = time.monotonic()
            crops = np.stack([crop_frames(x.frames, self.settings.crops) for x in batch])  # (B, K, 16, 224, 224, 3)
            features = snippet_features(self.i3d, crops, self.settings.amp).numpy()       # (B, K, 1024)
            self.health.busy += time.monotonic() - t
            self.process(batch, features)

    def process(self, batch, features):
        """Scores, alerts and clips of a batch of snippets and their (B, K, 1024) I3D features."""
        t = time.monotonic()
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
        calibrated = None if self.table is None else dict(
            exceedance=float(self.table.exceedance(score)),
            normal_per_hour=float(self.table.per_hour(score, snippet.end_s - snippet.start_s)))
        self.health.add(snippet, time.monotonic(), self.reader.anchor if self.paced else None)
        self.out.score(snippet, score, calibrated)
        if self.on_score is not None:
            self.on_score(dict(video=self.name, snippet=snippet.index, score=score, **(calibrated or dict(
                               exceedance=None, normal_per_hour=None)),
                               start_s=snippet.start_s, end_s=snippet.end_s, wall_time=snippet.wall))
        for kind, event in self.alarm.update(snippet, score, calibrated):
            self._opened(event) if kind == "open" else self._closed(event)

    def _opened(self, event):
        if self.clips is not None:
            self.clip_paths[event["event"]] = self.clips.open(event["event"], event["start_s"])
        cal = "" if event["peak_calibrated"] is None else \
            f" (about {event['peak_calibrated']['normal_per_hour']:.3g} per hour of normal footage score as high)"
        self.out.log(f"ALERT event {event['event']} from {event['start_s']:.2f} s: score {event['peak_score']:.4g}"
                     f"{cal}, above {self.threshold:.4g} for {self.settings.min_snippets} snippets", stdout=True)
        if self.on_event is not None:
            self.on_event("open", dict(event))

    def _closed(self, event):
        if self.clips is not None:
            self.clips.close(event["event"], event["end_s"])
        record = dict(video=self.name, event=event["event"], start_s=round(event["start_s"], 3),
                      end_s=round(event["end_s"], 3), peak_score=event["peak_score"],
                      **{f"peak_{k}": (event["peak_calibrated"] or {}).get(k)
                         for k in ("exceedance", "normal_per_hour")},
                      mean_score=event["mean_score"],
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

    def status(self, final=False):
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
        if not final:
            self.out.prune_clips()
        release_memory()

    def finish(self, ended):
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
            self.status(final=True)                      # the final health, with metrics.json written once
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
    record["rollover"] = format_rollover(settings.rollover)
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
