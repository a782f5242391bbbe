"""Alert sinks: events sent on to a webhook, an MQTT broker or a command, each through its own bounded queue.

The site file's [alerts] table names them (build_sinks):
  webhook = "http://host:8080/hook"        HTTP POST, JSON body: the event record plus "camera"; retried with
                                            exponential backoff on a connection error, a timeout, 408, 429 or 5xx
  mqtt = "mqtt://user:pass@host:1883/bnwvad"   topic <prefix>/<camera>/events, QoS 1 (at least once); the client
                                            reconnects by itself when the broker restarts (needs paho-mqtt)
  command = "notify-send-alert --urgent"   (or a list of arguments; no shell) run per event with the JSON on stdin
                                            and in $BNWVAD_EVENT, the camera in $BNWVAD_CAMERA, under a timeout
  queue = 256                               events each sink may hold while it is slow or its peer is away
  timeout = 10                              seconds per delivery attempt (an HTTP request, a command, an MQTT ack)

Sinks.send never blocks the scoring thread: the event is serialized there (the record as it is at that moment) and
put on each sink's queue; a sink's own thread delivers it. When a queue is full the event is dropped for that sink,
and the drop is logged and counted. A delivery that fails (after its retries) is logged and counted, and the event
stays in the camera's events.jsonl. Sinks.stats() gives each sink's counts.
"""
import json
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from utils import InputError, one_line

MQTT_INSTALL = "pip install paho-mqtt"
KEYS = ("webhook", "mqtt", "command", "queue", "timeout")


class Sink:
    """One destination: a bounded queue of (camera, JSON text) and a thread that delivers them in order.

    Subclasses implement deliver(camera, body, event) -> None (delivered) or raise with the reason it failed.
    Counts: queued (events accepted), delivered, failed (given up after retries, or left at close), dropped
    (the queue was full), pending (in the queue now)."""

    kind = "sink"

    def __init__(self, name, log, size=256, timeout=10.0, on_failure=None):
        self.name, self.log, self.timeout, self.on_failure = name, log, timeout, on_failure
        self.queue = queue.Queue(maxsize=size)
        self.lock = threading.Lock()
        self.counts = dict(queued=0, delivered=0, failed=0, dropped=0)
        self.stopping = threading.Event()      # set at close when time is up: no more waiting between retries
        self.busy = False                      # an event is in delivery now
        self.abandoned = False                 # close gave up on what was left (and counted it)
        self.thread = threading.Thread(target=self._work, name=f"sink-{name}", daemon=True)
        self.thread.start()

    def send(self, camera, body, event):
        """Queue one event (its JSON text `body`) without waiting; a full queue drops it, logged and counted."""
        try:
            self.queue.put_nowait((camera, body, event))
        except queue.Full:
            self._count("dropped")
            self.log(f"{self.name}: queue full ({self.queue.maxsize} events waiting), event {event.get('event')} "
                     f"of camera {camera} dropped for this sink (it is in the camera's events.jsonl)")
            self._failed_hook(camera)
            return
        self._count("queued")

    def _work(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            camera, body, event = item
            with self.lock:
                self.busy = True
            try:
                self.deliver(camera, body, event)
                failure = None
            except Exception as e:          # any failure of one delivery is reported, never the thread's end
                failure = one_line(e)
            with self.lock:
                self.busy = False
                if self.abandoned:          # close counted it already
                    return
                self.counts["failed" if failure else "delivered"] += 1
            if failure:
                self.log(f"{self.name}: event {event.get('event')} of camera {camera} not delivered: {failure}")
                self._failed_hook(camera)

    def deliver(self, camera, body, event):
        raise NotImplementedError

    def wait(self, seconds):
        """Sleep between retries; False when the sinks are closing and the wait was cut short."""
        return not self.stopping.wait(seconds)

    def close(self, deadline):
        """Deliver what is queued until `deadline` (time.monotonic()); what is left then is counted failed."""
        while True:         # the end marker must get in, even behind a full queue
            try:
                self.queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            self.stopping.set()
            with self.lock:
                self.abandoned = True
                left = int(self.busy)        # the one in delivery now
                while True:
                    try:
                        left += self.queue.get_nowait() is not None
                    except queue.Empty:
                        break
                self.counts["failed"] += left
            if left:
                self.log(f"{self.name}: {left} event{'s' * (left != 1)} not delivered before shutdown")
        self.shutdown()

    def shutdown(self):
        """Release connections (subclasses)."""

    def stats(self):
        with self.lock:
            return dict(self.counts, pending=self.queue.qsize())

    def _count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def _failed_hook(self, camera):
        if self.on_failure is not None:
            self.on_failure(camera, self.name)


class Webhook(Sink):
    """HTTP POST of the event's JSON to `url`. Retried after a connection error, a timeout, 408, 429 or a 5xx,
    waiting backoff[0], then twice as long each time up to backoff[1], `attempts` tries in all; another 4xx is
    not retried (the request itself is wrong)."""

    kind = "webhook"

    def __init__(self, url, log, attempts=5, backoff=(0.5, 8.0), **kw):
        self.url, self.attempts, self.backoff = url, attempts, backoff
        super().__init__("webhook", log, **kw)

    def deliver(self, camera, body, event):
        wait = self.backoff[0]
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.url, data=body.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                return
            except urllib.error.HTTPError as e:
                reason = f"HTTP {e.code} {e.reason}"
                if e.code < 500 and e.code not in (408, 429):
                    raise RuntimeError(f"{redact(self.url)} answered {reason}") from None
            except (urllib.error.URLError, OSError) as e:
                reason = one_line(getattr(e, "reason", e))
            if attempt == self.attempts or not self.wait(wait):
                raise RuntimeError(f"{redact(self.url)}: {reason} ({attempt} attempt{'s' * (attempt != 1)})")
            wait = min(wait * 2, self.backoff[1])


class Command(Sink):
    """Runs `args` (no shell) once per event: the JSON on stdin and in $BNWVAD_EVENT, the camera in $BNWVAD_CAMERA.
    A non-zero exit or a run past the timeout (the command is killed) is a failed delivery; not retried, since a
    command may have acted before it failed."""

    kind = "command"

    def __init__(self, args, log, **kw):
        self.args = args
        super().__init__("command", log, **kw)

    def deliver(self, camera, body, event):
        env = dict(os.environ, BNWVAD_EVENT=body, BNWVAD_CAMERA=camera)
        try:
            done = subprocess.run(self.args, input=body.encode(), env=env, capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.args[0]} ran past {self.timeout:g} s and was stopped") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"{self.args[0]} exited with status {done.returncode}"
                               + (f": {said[-1][:200]}" if said else ""))


class Mqtt(Sink):
    """Publishes each event to <prefix>/<camera>/events with QoS 1 through paho-mqtt. The client connects in its
    own thread and reconnects by itself (waits of 0.5 s doubling to 30 s) when the broker is away; an event waits
    in this sink's queue meanwhile, and counts as delivered once the broker acknowledged it (PUBACK). One that gets
    no acknowledgement within `hold` seconds is counted failed (paho may still send it once the broker is back)."""

    kind = "mqtt"

    def __init__(self, url, log, hold=60.0, **kw):
        import paho.mqtt.client as paho
        parts = urllib.parse.urlsplit(url)
        self.url, self.prefix, self.hold = url, parts.path.strip("/") or "bnwvad", hold
        self.acked, self.ack = set(), threading.Condition()
        self.connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=f"bnwvad-{os.uname().nodename}-{os.getpid()}-{id(self):x}")
        if parts.username:
            self.client.username_pw_set(urllib.parse.unquote(parts.username),
                                        urllib.parse.unquote(parts.password or "") or None)
        self.client.reconnect_delay_set(min_delay=0.5, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.was_connected = False
        super().__init__("mqtt", log, **kw)
        self.client.connect_async(parts.hostname, parts.port or 1883, keepalive=30)
        self.client.loop_start()

    def deliver(self, camera, body, event):
        deadline = time.monotonic() + self.hold
        while not self.connected.wait(0.2):          # the broker is away: the event waits here, in order
            if self.stopping.is_set() or time.monotonic() > deadline:
                raise RuntimeError(f"no connection to the broker at {redact(self.url)}")
        info = self.client.publish(f"{self.prefix}/{camera}/events", body, qos=1)
        with self.ack:
            while info.mid not in self.acked:
                if self.stopping.is_set() or time.monotonic() > deadline:
                    raise RuntimeError(f"the broker at {redact(self.url)} did not acknowledge it "
                                       f"within {self.hold:g} s")
                self.ack.wait(0.2)
            self.acked.discard(info.mid)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.log(f"mqtt: the broker at {redact(self.url)} refused the connection: {reason_code}")
            return
        if self.was_connected:
            self.log(f"mqtt: reconnected to {redact(self.url)}")
        self.was_connected = True
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected.is_set():
            self.log(f"mqtt: lost the broker at {redact(self.url)} ({reason_code}); reconnecting")
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.ack:
            self.acked.add(mid)
            self.ack.notify_all()

    def shutdown(self):
        self.client.disconnect()
        self.client.loop_stop()


class Sinks:
    """The configured sinks. send(camera, event) queues the event on each; close(timeout) delivers what is
    queued (within timeout seconds in all) and stops them; stats() -> {sink: {queued, delivered, failed,
    dropped, pending}}."""

    def __init__(self, sinks):
        self.sinks = sinks

    def send(self, camera, event):
        """Queue `event` (a JSON-able dict, e.g. an events.jsonl record) for every sink, with "camera" added.
        Returns at once: the record is serialized here, so later changes to the dict do not reach the sinks."""
        if not self.sinks:
            return
        body = json.dumps({**event, "camera": camera}, default=str)
        for sink in self.sinks:
            sink.send(camera, body, event)

    def close(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        for sink in self.sinks:
            sink.close(deadline)

    def stats(self):
        return {sink.name: sink.stats() for sink in self.sinks}

    def __bool__(self):
        return bool(self.sinks)


def build_sinks(alerts, log, on_failure=None):
    """Sinks from the site file's [alerts] table (a dict; empty or None: no sinks). log(message) takes the lines
    for the user (drops, failures, reconnections); on_failure(camera, sink_name), when given, is called for each
    dropped or failed delivery (the metrics' sink_failure). Raises InputError (one line) for an unknown key, a
    URL that is not http(s):// or mqtt://, a command that is not found, or MQTT without paho-mqtt."""
    alerts = dict(alerts or {})
    unknown = sorted(set(alerts) - set(KEYS))
    if unknown:
        raise InputError(f"[alerts]: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    size, timeout = alerts.get("queue", 256), alerts.get("timeout", 10.0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InputError(f"[alerts] queue must be a whole number of events, at least 1, got {size!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise InputError(f"[alerts] timeout must be a positive number of seconds, got {timeout!r}")
    common = dict(size=size, timeout=float(timeout), on_failure=on_failure)
    sinks = []
    try:
        if "webhook" in alerts:
            sinks.append(Webhook(check_url(alerts["webhook"], "webhook", ("http", "https")), log, **common))
        if "mqtt" in alerts:
            url = check_url(alerts["mqtt"], "mqtt", ("mqtt",))
            try:
                import paho.mqtt.client  # noqa: F401 (optional: only MQTT needs it)
            except ImportError:
                raise InputError(f"[alerts] mqtt needs the paho-mqtt package: {MQTT_INSTALL}") from None
            sinks.append(Mqtt(url, log, **common))
        if "command" in alerts:
            sinks.append(Command(command_args(alerts["command"]), log, **common))
    except BaseException:
        Sinks(sinks).close(0)
        raise
    return Sinks(sinks)


def check_url(url, key, schemes):
    if not isinstance(url, str):
        raise InputError(f"[alerts] {key} must be a URL string, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise InputError(f"[alerts] {key} must be a {' or '.join(s + '://' for s in schemes)} URL with a host, "
                         f"got {redact(url)!r}")
    try:
        parts.port
    except ValueError:
        raise InputError(f"[alerts] {key}: the port of {redact(url)!r} is not a number from 0 to 65535") from None
    return url


def command_args(command):
    """A command as a list of arguments (a string is split as a shell would split it, but run without one)."""
    if isinstance(command, str):
        args = shlex.split(command)
    elif isinstance(command, list) and all(isinstance(a, str) for a in command):
        args = list(command)
    else:
        raise InputError(f"[alerts] command must be a string or a list of strings, got {command!r}")
    if not args:
        raise InputError("[alerts] command is empty")
    if shutil.which(args[0]) is None:
        raise InputError(f"[alerts] command: {args[0]} not found (not executable, or not on PATH)")
    return args


def redact(url):
    """A URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
