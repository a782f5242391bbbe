"""A site: every camera of a site file scored in one process (stream.py --config), their snippets sharing
I3D batches, each camera with its own outputs in <output_dir>/<camera>/, none stopping another.

The site file (TOML, read with tomllib):

  model_path = "ckpts/xd_best_2022.pkl"
  output_dir = "site"
  rollover = "day"                  # any camera key here is every camera's default
  keep_days = 30
  [alerts]                          # live.sinks: webhook, mqtt, command, queue, timeout
  webhook = "http://127.0.0.1:8080/hook"
  [metrics]                         # live.metrics: GET /metrics, GET /healthz
  listen = "127.0.0.1:9108"
  [cameras.gate]
  source = "rtsp://..."
  threshold = 3.2                   # or calibrated_threshold = 0.99, or alarms_per_hour = 0.5 + calibration
  [cameras.lobby]
  source = "tcp://..."
  save_clips = true

Keys are stream.py's flag names (`format` for --format, `input_options` a table for --input_option).
A value comes from, first to last: a flag given beside --config (every camera), the camera's table, the
site's top level, the checkpoint (crops, resize, resample_fps), StreamSettings' default. SITE_KEYS are
the whole process's (one I3D for all); CAMERA_KEYS may differ per camera. A mistake in the file is one
line naming the file and the key, before any camera starts.

The loop (SiteRun): one Reader thread per camera; the main thread takes the snippets waiting, one camera
after another in turn, up to --i3d_batch in all, runs them through I3D in one pass, and hands each
camera its snippets' features (live.run.LiveRun.process: scores, alerts, clips, outputs). A camera that
cannot be opened (after its --reconnect policy), is lost for good or fails is ended and said so; the
others go on. The run ends when every camera has ended, or at Ctrl-C / SIGTERM (every output closed).
"""
import math
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from live.alarms import iso
from live.outputs import parse_rollover, resume_point
from live.reader import Notice, Reader, is_live, parse_reconnect, redact
from live.run import LiveRun
from live.settings import StreamSettings
from options import BACKENDS, PRECISIONS, parse_resize
from utils import InputError, one_line
from video.crops import crop_frames
from video.snippets import snippet_features


def _number(low=None, high=None, integer=False, low_open=False):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                (integer and not isinstance(value, int)):
            raise ValueError(f"expected {'a whole number' if integer else 'a number'}, got {value!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(f"must be {'more than' if low_open else 'at least'} {low}, got {value!r}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high}, got {value!r}")
        return value
    return check


def _text(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a text value, got {value!r}")
    return value


def _flag(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _choice(choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    return check


def _parsed(parse):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a text value or a number, got {value!r}")
        try:
            return parse(str(value))
        except Exception as e:      # argparse.ArgumentTypeError or ValueError: the parser's own words
            raise ValueError(str(e)) from None
    return check


def _options(value):
    if not isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value.values()):
        raise ValueError(f"expected a table of FFmpeg options (key = value), got {value!r}")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


# key -> its check; the whole process's keys (top level only) and those a camera may set
SITE_KEYS = dict(model_path=_text, output_dir=_text, i3d_weights=_text, device=_choice(("auto", "cpu", "cuda", "mps")),
                 backend=_choice(BACKENDS), precision=_choice(PRECISIONS), i3d_amp=_flag, crops=_choice((1, 5, 10)),
                 resize=_parsed(parse_resize), resample_fps=_number(0, low_open=True),
                 i3d_batch=_number(1, integer=True), status_every=_number(0, low_open=True))
CAMERA_KEYS = dict(source=_text, threshold=_number(), calibrated_threshold=_number(0, 1),
                   alarms_per_hour=_number(0), calibration=_text, min_snippets=_number(1, integer=True),
                   save_clips=_flag, pre_roll=_number(0), post_roll=_number(0), window=_number(1, integer=True),
                   delay=_number(0, integer=True), queue=_number(1, integer=True), realtime=_flag,
                   reconnect=_parsed(parse_reconnect), timeout=_number(0, low_open=True), format=_text,
                   input_options=_options, rollover=_parsed(parse_rollover), keep_days=_number(0, low_open=True))
THRESHOLD_KEYS = ("threshold", "calibrated_threshold", "alarms_per_hour")
TABLES = ("alerts", "metrics", "cameras")
# stream.py's flag dests that are keys under another name, and the flags a site cannot take
FLAG_KEYS = dict(input_format="format", input_option="input_options")
NOT_WITH_SITE = ("name", "source")
CAMERA_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class CameraConfig:
    """One camera of a site file, resolved: its source, settings, threshold choice and output folder."""
    name: str
    source: str
    settings: StreamSettings
    folder: Path
    threshold: float | None = None              # raw, given
    calibrated_threshold: float | None = None
    alarms_per_hour: float | None = None
    calibration: str | None = None


@dataclass
class SiteConfig:
    """A site file, read and checked (read_site)."""
    path: str
    model_path: str
    output_dir: str
    cameras: list
    i3d_weights: str | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = "fp32"
    alerts: dict = field(default_factory=dict)
    metrics: str | None = None                  # [metrics] listen


def read_site(path, flags=None, recorded=None):
    """
    Read and check the site file at `path` -> SiteConfig, before anything starts. flags: {flag dest:
    value} given on the command line beside --config (they win over the file for every camera);
    recorded(model_path) -> the checkpoint's snippet settings ({'crops', 'resize', 'resample_fps'}, as
    live.settings.extraction_defaults gives them), which come before StreamSettings' defaults.
    Raises InputError, one line naming the file and the key: a file that cannot be read or is not TOML,
    an unknown key, a value of the wrong kind, a camera without a source, two threshold choices.
    """
    flags = {FLAG_KEYS.get(k, k): v for k, v in (flags or {}).items() if k != "config"}
    if "input_options" in flags:
        flags["input_options"] = dict(flags["input_options"])
    for key in NOT_WITH_SITE:
        if key in flags:
            raise InputError(f"--{key} is not for a site: each camera's name is its table's ([cameras.NAME])")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InputError(f"cannot read the site file {path}: {e.strerror or one_line(e)}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not a valid TOML file ({one_line(e)})") from None

    def fail(where, problem):
        raise InputError(f"{path}: {where}: {problem}")

    def checked(table, keys, where):
        out = {}
        for key, value in table.items():
            if key not in keys:
                fail(where + key, f"unknown key (known: {', '.join(sorted(keys))})")
            try:
                out[key] = keys[key](value)
            except ValueError as e:
                fail(where + key, str(e))
        return out

    top = {k: v for k, v in data.items() if k not in TABLES}
    for name in ("alerts", "metrics", "cameras"):
        if name in data and not isinstance(data[name], dict):
            fail(name, "expected a table")
    site = checked(top, {**SITE_KEYS, **{k: v for k, v in CAMERA_KEYS.items() if k != "source"}}, "")
    for key in ("model_path", "output_dir"):
        if key not in site and key not in flags:
            fail(key, f"missing (the {'checkpoint' if key == 'model_path' else 'folder for every camera'})")
    cameras = data.get("cameras") or {}
    if not cameras:
        fail("cameras", "no camera: add a [cameras.NAME] table with a source")
    metrics = data.get("metrics") or {}
    if set(metrics) - {"listen"}:
        fail("metrics." + sorted(set(metrics) - {"listen"})[0], "unknown key (known: listen)")
    if "listen" in metrics and not isinstance(metrics["listen"], str):
        fail("metrics.listen", f"expected HOST:PORT as text, got {metrics['listen']!r}")
    model_path = flags.get("model_path", site.get("model_path"))
    shared = {**site, **{k: v for k, v in flags.items() if k in SITE_KEYS}}
    snippet = {k: v for k, v in (recorded(model_path) if recorded else {}).items() if k not in shared}
    configs = []
    for name, table in cameras.items():
        where = f"cameras.{name}."
        if not isinstance(table, dict):
            fail(f"cameras.{name}", "expected a table ([cameras.NAME] with a source)")
        if not CAMERA_NAME.fullmatch(name):
            fail(f"cameras.{name}", "a camera's name is its folder's: letters, digits, '.', '-' and '_' only")
        own = checked(table, CAMERA_KEYS, where)
        if "source" not in own:
            fail(where + "source", "missing (the camera's URL, device or file)")
        if "://" not in own["source"] and "format" not in {**site, **own, **flags} and \
                not os.path.exists(own["source"]):            # a file or a device: it must be there, as for one camera
            fail(where + "source", f"{own['source']} does not exist")
        chosen = [k for k in THRESHOLD_KEYS if k in own]
        if len(chosen) > 1:
            fail(where + chosen[1], f"give one of {', '.join(THRESHOLD_KEYS)}, not {' and '.join(chosen)}")
        values = {**{k: v for k, v in site.items() if not (chosen and k in THRESHOLD_KEYS)}, **own}
        values.update({k: v for k, v in flags.items() if k in CAMERA_KEYS})
        if any(k in flags for k in THRESHOLD_KEYS):
            values = {k: v for k, v in values.items() if k not in THRESHOLD_KEYS or k in flags}
        if "alarms_per_hour" in values and "calibration" not in values:
            fail(where + "alarms_per_hour", "needs a calibration file (calibration = \"...\", calibrate.py's)")
        settings = _settings({**snippet, **shared, **values})
        try:
            settings.check()
        except ValueError as e:
            fail(f"cameras.{name}", str(e))
        configs.append(CameraConfig(name, values["source"], settings,
                                    Path(flags.get("output_dir", site.get("output_dir"))) / name,
                                    values.get("threshold"), values.get("calibrated_threshold"),
                                    values.get("alarms_per_hour"), values.get("calibration")))
    return SiteConfig(str(path), model_path, flags.get("output_dir", site.get("output_dir")), configs,
                      shared.get("i3d_weights"), shared.get("device", "auto"), shared.get("backend", "auto"),
                      shared.get("precision", "fp32"), dict(data.get("alerts") or {}), metrics.get("listen"))


def _settings(values):
    """StreamSettings from a camera's resolved keys (the rest StreamSettings' defaults)."""
    names = dict(resample_fps="fps", i3d_batch="batch_size", i3d_amp="amp", format="input_format")
    fields = StreamSettings.__dataclass_fields__
    chosen = {names.get(k, k): v for k, v in values.items() if names.get(k, k) in fields}
    return StreamSettings(**chosen)


def camera_threshold(camera, table, site_path, checkpoint=None):
    """(raw threshold, how it was chosen) of a camera: its threshold, its calibrated_threshold, or the
    threshold whose false alarms per hour on its calibration file are at most alarms_per_hour
    (live.calibration.threshold_for_rate; a file made with another `checkpoint`, or with other scoring
    or alarm settings than the camera's, is refused); else the checkpoint calibration's default."""
    from core.thresholds import resolve_threshold
    where = f"{site_path}: cameras.{camera.name}"
    if camera.alarms_per_hour is not None:
        try:
            from live.calibration import read_calibration, threshold_for_rate
        except ImportError:
            raise InputError(f"{where}.alarms_per_hour: this installation has no calibration support "
                             f"(live/calibration.py)") from None
        try:
            value = threshold_for_rate(camera.calibration, camera.alarms_per_hour, checkpoint)
            made_with = read_calibration(camera.calibration).get("settings") or {}
        except InputError as e:
            raise InputError(f"{where}.calibration: {e}") from None
        # its alarm counts hold for the scoring and alarm settings it was made with, not others
        differ = [f"{key} {made_with[key]} (this camera: {getattr(camera.settings, key)})"
                  for key in ("window", "delay", "min_snippets", "crops")
                  if key in made_with and made_with[key] != getattr(camera.settings, key)]
        if differ:
            raise InputError(f"{where}.calibration: {camera.calibration} was made with {', '.join(differ)}; its "
                             f"alarm rates hold only for those settings")
        return float(value), f"{camera.alarms_per_hour:g} false alarms per hour on {camera.calibration}"
    try:
        return resolve_threshold(table, camera.threshold, camera.calibrated_threshold)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


class SiteCamera:
    """One camera of a running site: its reader, then (once open) its LiveRun; ended says why it stopped."""

    def __init__(self, config, threshold, threshold_source, shared, quiet):
        self.config, self.threshold, self.threshold_source, self.shared, self.quiet = \
            config, threshold, threshold_source, shared, quiet
        self.name = config.name
        self.run = self.held = self.ended = None
        self.failed = False
        self.early = []
        self.metrics = shared["metrics"].camera(self.name) if shared["metrics"] is not None else None
        self.frames_seen = 0
        self.last_status = time.monotonic()
        s = config.settings
        resume, self.last_event = resume_point(config.folder)
        self.reader = Reader(config.source, s, is_live(config.source) if s.live is None else s.live, resume,
                             name=f"reader-{self.name}").start()
        if self.metrics is not None:
            self.metrics.set_live(False)

    def say(self, message):
        """A line for the user before the camera's outputs are open (stderr, the camera named)."""
        if not self.quiet:
            print(f"{self.name}: {message}", file=sys.stderr, flush=True)

    def next(self, waiting):
        """The camera's next Snippet, or None (nothing waiting, or a notice held until the camera's
        `waiting` snippets of this batch are scored). Notices are handled here, in order."""
        while self.ended is None:
            item, self.held = self.held or self.reader.get(0), None
            if item is None or not isinstance(item, Notice):
                self._decoded()
                return item
            if waiting and item.kind in ("end", "error", "lost"):
                self.held = item
                return None
            self._notice(item)
        return None

    def _notice(self, item):
        if self.run is None:
            if item.kind in ("warning", "retry"):
                self.early.append(item.message)
                if item.kind == "retry":
                    self.say(f"{redact(self.config.source)}: {item.message}")
            elif item.kind == "opened":
                self._open(item.message)
            elif item.kind == "error":
                raise item.error
            else:
                self.fail(f"cannot open {redact(self.config.source)}: {item.message}")
            return
        if item.kind in ("lost", "reconnected") and self.metrics is not None:
            self.metrics.set_live(item.kind == "reconnected")
            if item.kind == "reconnected":
                self.metrics.reconnect()
        ended = self.run.notice(item)
        if ended is not None:
            self.finish(ended)

    def _open(self, opened):
        c = self.config
        self.run = LiveRun(self.reader, self.shared["model"], self.shared["i3d"], c.folder, self.threshold, c.settings,
                           self.shared["table"], self.name, self._on_score, self._on_event, self.quiet,
                           self.last_event, prefix=f"{self.name}: ")
        info = dict(self.shared["info"], camera=self.name, site=self.shared["path"],
                    threshold_source=self.threshold_source)
        self.run.start(opened, info, self.early)
        if self.metrics is not None:
            self.metrics.set_live(True)

    def _decoded(self):
        if self.metrics is not None and self.reader.frames > self.frames_seen:
            self.metrics.decoded(self.reader.frames - self.frames_seen)
            self.frames_seen = self.reader.frames

    def _on_score(self, row):
        if self.metrics is not None:
            self.metrics.scored(1, row["score"], self.run.health.lag)

    def _on_event(self, kind, event):
        if kind == "open":
            if self.metrics is not None:
                self.metrics.alert()
            event = dict(video=self.name, event=event["event"], start_s=round(event["start_s"], 3),
                         peak_score=event["peak_score"],
                         **{f"peak_{k}": (event["peak_calibrated"] or {}).get(k)
                            for k in ("exceedance", "normal_per_hour")},
                         wall_start=iso(event["wall_start"]), wall_alert=iso(event["wall_alert"]),
                         first_snippet=event["first_snippet"], clip=self.run.clip_paths.get(event["event"]))
        if self.shared["sinks"] is not None:
            self.shared["sinks"].send(self.name, dict(event, state="start" if kind == "open" else "end"))

    def process(self, snippets, features, busy):
        """Score the camera's snippets of a batch; `busy` its share of the batch's I3D seconds."""
        self.run.health.busy += busy
        self.run.process(snippets, features)

    def tick(self, now):
        if self.run is not None and self.ended is None and now - self.last_status >= self.config.settings.status_every:
            self.last_status = now
            self.run.status()

    def fail(self, reason):
        """End the camera for `reason` (its outputs closed complete); the others go on."""
        self.failed = True
        if self.run is None:
            self.say(f"error: {reason}; the other cameras go on")
            self.reader.close(0.1)
            self.ended = f"error: {reason}"
            if self.metrics is not None:
                self.metrics.set_live(False)
        else:
            self.run.out.log(f"this camera stopped ({reason}); the other cameras go on")
            self.finish(f"error: {reason}")

    def finish(self, ended):
        if self.ended is not None:
            return
        self.ended = ended
        if self.metrics is not None:
            self.metrics.set_live(False)
        if self.run is None:
            self.reader.close(0.1)
        else:
            self.run.finish(ended)


def run_site(site, model, i3d, table, info=None, quiet=False):
    """
    Run every camera of `site` (a SiteConfig) until each has ended, or KeyboardInterrupt (re-raised once
    every camera's outputs are complete). model: the detector on its device (shared: scoring keeps no
    state in it); i3d: the I3D (or any module with `.features(x)`), one for all cameras; table: the
    checkpoint's calibration or None; info: fields for each camera's metrics.json. Starts the sinks
    ([alerts], live.sinks) and the metrics server ([metrics], live.metrics) first; thresholds and
    sinks are checked before any camera starts (InputError, one line). Returns {camera: why it ended}.
    """
    thresholds = {c.name: camera_threshold(c, table, site.path, site.model_path) for c in site.cameras}
    shared = dict(model=model.eval(), i3d=i3d.eval(), table=table, info=info or {}, path=site.path,
                  sinks=None, metrics=None)
    try:
        if site.metrics is not None:
            from live.metrics import MetricsServer
            shared["metrics"] = MetricsServer(site.metrics)
            if not quiet:
                print(f"metrics on {shared['metrics'].url}/metrics and /healthz", file=sys.stderr, flush=True)
        if site.alerts:
            from live.sinks import build_sinks
            metrics = shared["metrics"]
            on_failure = (lambda camera, sink: metrics.camera(camera).sink_failure(sink)) if metrics else None
            shared["sinks"] = build_sinks(site.alerts, lambda message: print(f"alerts: {message}", file=sys.stderr,
                                                                             flush=True), on_failure)
    except InputError as e:
        _close_services(shared)
        raise InputError(f"{site.path}: {e}") from None
    cameras = []
    try:
        for config in site.cameras:
            cameras.append(SiteCamera(config, *thresholds[config.name], shared, quiet))
        SiteRun(cameras, shared).loop()
    except KeyboardInterrupt:
        for camera in cameras:
            _guarded(camera, lambda c: c.finish("interrupted"))
        raise
    finally:
        for camera in cameras:
            _guarded(camera, lambda c: c.finish("stopped"))
        _close_services(shared)
    return {camera.name: camera.ended for camera in cameras}


def _close_services(shared):
    if shared["sinks"] is not None:
        shared["sinks"].close(10.0)
    if shared["metrics"] is not None:
        shared["metrics"].close()


def _guarded(camera, action):
    """Do `action(camera)`; an error of one camera ends that camera only."""
    try:
        action(camera)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:      # noqa: BLE001 (a camera's fault, whatever it is, must not stop the others)
        if camera.ended is None:
            reason = f"{type(e).__name__}: {one_line(e)}" if not isinstance(e, InputError) else str(e)
            try:
                camera.fail(reason)
            except Exception:   # noqa: BLE001 (its outputs could not be closed either: said, and left)
                camera.ended = f"error: {reason}"
                camera.say(f"error: {reason}")


class SiteRun:
    """The site's loop: the snippets waiting from every camera, in turn, in shared I3D batches."""

    def __init__(self, cameras, shared):
        self.cameras, self.shared = cameras, shared
        s = cameras[0].config.settings
        self.batch_size, self.crops, self.amp = s.batch_size, s.crops, s.amp
        self.turn = 0

    def loop(self):
        while True:
            active = [c for c in self.cameras if c.ended is None]
            if not active:
                return
            now = time.monotonic()
            for camera in active:
                _guarded(camera, lambda c: c.tick(now))
            batch = self._gather(active)
            if not batch:
                time.sleep(0.01)
                continue
            self._run(batch)

    def _gather(self, active):
        """[(camera, Snippet)] up to the batch size, one snippet per camera in turn (fair under load)."""
        batch, mine = [], {c.name: 0 for c in active}
        self.turn = (self.turn + 1) % len(active)
        order = active[self.turn:] + active[:self.turn]
        progress = True
        while progress and len(batch) < self.batch_size:
            progress = False
            for camera in order:
                if len(batch) >= self.batch_size or camera.ended is not None:
                    continue
                got = []
                _guarded(camera, lambda c: got.append(c.next(mine[c.name])))
                if got and got[0] is not None:
                    batch.append((camera, got[0]))
                    mine[camera.name] += 1
                    progress = True
        return batch

    def _run(self, batch):
        """One I3D pass for the batch's snippets (every camera's), then each camera scores its own."""
        t = time.monotonic()
        items = []
        for camera, snippet in batch:
            try:
                items.append((camera, snippet, crop_frames(snippet.frames, self.crops)))  # (K, 16, 224, 224, 3)
            except Exception as e:      # noqa: BLE001 (a frame this camera cannot crop ends this camera only)
                _guarded(camera, lambda c, e=e: c.fail(f"{type(e).__name__}: {one_line(e)}"))
        items = [item for item in items if item[0].ended is None]
        if not items:
            return
        features = snippet_features(self.shared["i3d"], np.stack([crop for _, _, crop in items]),
                                    self.amp).numpy()                             # (B, K, 1024)
        share = (time.monotonic() - t) / len(items)
        for camera in {id(c): c for c, _, _ in items}.values():
            rows = [i for i, (c, _, _) in enumerate(items) if c is camera]
            _guarded(camera, lambda c: c.process([items[i][1] for i in rows], features[rows], share * len(rows)))
