"""Metrics and health over HTTP: GET /metrics (Prometheus text format) and GET /healthz (JSON).

  server = MetricsServer("127.0.0.1:9108")         # port 0: any free port (server.port says which)
  gate = server.camera("gate")
  gate.set_live(True); gate.decoded(16); gate.scored(1, last_score=0.7, lag_s=0.4); gate.alert()
  server.close()

Per camera (label camera="..."), in a registry of this server's own (prometheus_client.CollectorRegistry):
  bnwvad_snippets_scored_total           snippets scored
  bnwvad_last_score                      the raw score of the last snippet scored
  bnwvad_lag_seconds                     how far the last score is behind real time: from when its snippet's last
                                         frame should have arrived (live) to its score; grows when the camera's
                                         pipeline falls behind
  bnwvad_frames_decoded_total            frames decoded (rate() of it is the decoding rate)
  bnwvad_frames_decoded_per_second       frames decoded per second over the last RATE_WINDOW seconds
  bnwvad_alerts_total                    events raised
  bnwvad_reconnects_total                times the source was reopened
  bnwvad_sink_failures_total{sink=...}   events a sink dropped or failed to deliver
  bnwvad_camera_live                     1 while the camera's source is open and read, else 0
/healthz answers 200 with {"live": [...], "down": [...], "cameras": {name: {"live", "snippets",
"last_score", "lag_s", "seconds_since_score"}}}.
"""
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from utils import InputError

RATE_WINDOW = 10.0     # seconds over which frames_decoded_per_second is measured


def parse_listen(listen):
    """"host:port" ("127.0.0.1:9108", "[::1]:9108", ":9108" for every interface) -> (host, port); InputError
    (one line) otherwise."""
    host, sep, port = str(listen).rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InputError(f"[metrics] listen must be HOST:PORT (e.g. 127.0.0.1:9108), got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class CameraMetrics:
    """One camera's metrics; its methods are called from the camera's threads as things happen."""

    def __init__(self, server, name):
        self.server, self.name = server, name
        m = server.families
        self._scored = m["scored"].labels(name)
        self._last = m["last"].labels(name)
        self._lag = m["lag"].labels(name)
        self._frames = m["frames"].labels(name)
        self._fps = m["fps"].labels(name)
        self._alerts = m["alerts"].labels(name)
        self._reconnects = m["reconnects"].labels(name)
        self._live = m["live"].labels(name)
        self.lock = threading.Lock()
        self.recent = deque()          # (time.monotonic(), frames) of the last RATE_WINDOW seconds
        self.live, self.snippets, self.last_score, self.lag_s, self.scored_at = False, 0, None, None, None

    def scored(self, n, last_score, lag_s=None):
        """n more snippets scored, the last one scoring last_score (raw), lag_s seconds behind real time (None:
        not a live source)."""
        self._scored.inc(n)
        self._last.set(last_score)
        if lag_s is not None:
            self._lag.set(lag_s)
        with self.lock:
            self.snippets += n
            self.last_score, self.lag_s, self.scored_at = float(last_score), lag_s, time.monotonic()

    def decoded(self, frames):
        """frames more frames decoded."""
        self._frames.inc(frames)
        now = time.monotonic()
        with self.lock:
            self.recent.append((now, frames))
            self._fps.set(self._rate(now))

    def _rate(self, now):
        while self.recent and self.recent[0][0] < now - RATE_WINDOW:
            self.recent.popleft()
        if not self.recent:
            return 0.0
        span = max(now - self.recent[0][0], 1.0)      # at least a second, so a first burst is not a huge rate
        return sum(f for _, f in self.recent) / span

    def alert(self):
        self._alerts.inc()

    def reconnect(self):
        self._reconnects.inc()

    def sink_failure(self, sink):
        self.server.families["sink_failures"].labels(self.name, sink).inc()

    def set_live(self, live):
        self._live.set(1 if live else 0)
        with self.lock:
            self.live = bool(live)
            if not live:
                self._fps.set(0.0)
                self.recent.clear()

    def refresh(self):
        """Bring the decoding rate up to now (it decays when no frames come)."""
        with self.lock:
            self._fps.set(self._rate(time.monotonic()))

    def health(self):
        with self.lock:
            since = None if self.scored_at is None else round(time.monotonic() - self.scored_at, 3)
            return dict(live=self.live, snippets=self.snippets, last_score=self.last_score, lag_s=self.lag_s,
                        seconds_since_score=since)


class MetricsServer:
    """GET /metrics and GET /healthz on `listen` ("host:port"), served from a thread. camera(name) -> the
    camera's CameraMetrics (made once per name). Raises InputError (one line) when it cannot listen there."""

    def __init__(self, listen):
        host, port = parse_listen(listen)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.families = dict(
            scored=Counter("bnwvad_snippets_scored", "Snippets scored", ["camera"], registry=r),
            last=Gauge("bnwvad_last_score", "Raw score of the last snippet scored", ["camera"], registry=r),
            lag=Gauge("bnwvad_lag_seconds", "Seconds the last score is behind real time", ["camera"], registry=r),
            frames=Counter("bnwvad_frames_decoded", "Frames decoded", ["camera"], registry=r),
            fps=Gauge("bnwvad_frames_decoded_per_second", f"Frames decoded per second over the last "
                      f"{RATE_WINDOW:g} s", ["camera"], registry=r),
            alerts=Counter("bnwvad_alerts", "Events raised", ["camera"], registry=r),
            reconnects=Counter("bnwvad_reconnects", "Times the source was reopened", ["camera"], registry=r),
            sink_failures=Counter("bnwvad_sink_failures", "Events a sink dropped or failed to deliver",
                                  ["camera", "sink"], registry=r),
            live=Gauge("bnwvad_camera_live", "1 while the camera's source is open and read", ["camera"], registry=r),
        )
        self.cameras, self.lock = {}, threading.Lock()
        try:
            self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as e:
            raise InputError(f"[metrics] cannot listen on {listen}: {e.strerror or e}") from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def camera(self, name):
        with self.lock:
            if name not in self.cameras:
                self.cameras[name] = CameraMetrics(self, name)
            return self.cameras[name]

    def health(self):
        with self.lock:
            cameras = {name: cam.health() for name, cam in self.cameras.items()}
        return dict(live=[n for n, c in cameras.items() if c["live"]],
                    down=[n for n, c in cameras.items() if not c["live"]], cameras=cameras)

    def exposition(self):
        with self.lock:
            cameras = list(self.cameras.values())
        for cam in cameras:
            cam.refresh()
        return generate_latest(self.registry)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _handler(server):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._answer(200, CONTENT_TYPE_LATEST, server.exposition())
            elif path == "/healthz":
                self._answer(200, "application/json", json.dumps(server.health()).encode())
            else:
                self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

        def _answer(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):       # no line per scrape on the service's stderr
            pass

    return Handler
