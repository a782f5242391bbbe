"""Alert sinks (live/sinks.py) against real peers: a local HTTP server, Debian's mosquitto started on loopback
(tests/conftest.py), real commands; and /metrics and /healthz (live/metrics.py) fetched over HTTP and parsed with
prometheus_client's own parser."""
import json
import sys
import threading
import time
import urllib.request

import pytest

from live.metrics import MetricsServer
from live.sinks import Sink, Sinks, Webhook, build_sinks
from utils import InputError

EVENT = dict(video="gate", event=3, start_s=12.5, end_s=14.1, peak_score=2.75, peak_calibrated=0.998,
             wall_start="2026-12-07T10:00:00.000+00:00", clip="clips/event_0003.mp4", closed_by="scores")


class Log(list):
    def __call__(self, message):
        assert "\n" not in message
        self.append(message)


def test_webhook_retries_5xx_with_backoff_then_delivers(hook_server):
    hook_server.answers = [500, 503]
    log, failures = Log(), []
    sinks = Sinks([Webhook(hook_server.url, log, backoff=(0.1, 1.0), on_failure=lambda *a: failures.append(a))])
    sinks.send("gate", EVENT)
    sinks.close(10)
    assert hook_server.bodies == [{**EVENT, "camera": "gate"}]
    first, second = hook_server.times[1] - hook_server.times[0], hook_server.times[2] - hook_server.times[1]
    assert first >= 0.1 and second >= 0.2          # backoff: 0.1 s, then twice that
    assert sinks.stats()["webhook"] == dict(queued=1, delivered=1, failed=0, dropped=0, pending=0)
    assert failures == [] and log == []


def test_webhook_down_or_refusing_is_a_counted_logged_failure(hook_server):
    hook_server.close()                          # nothing listens there any more
    log, failures = Log(), []
    sinks = Sinks([Webhook(hook_server.url, log, attempts=3, backoff=(0.02, 0.05),
                           on_failure=lambda *a: failures.append(a))])
    sinks.send("gate", EVENT)
    sinks.close(10)
    assert sinks.stats()["webhook"]["failed"] == 1 and sinks.stats()["webhook"]["delivered"] == 0
    assert failures == [("gate", "webhook")]
    assert len(log) == 1 and "event 3 of camera gate not delivered" in log[0] and "3 attempts" in log[0]


def test_webhook_4xx_is_not_retried(hook_server):
    hook_server.answers = [404]
    log = Log()
    sinks = Sinks([Webhook(hook_server.url, log, backoff=(0.01, 0.01))])
    sinks.send("lobby", EVENT)
    sinks.close(10)
    assert len(hook_server.times) == 1 and sinks.stats()["webhook"]["failed"] == 1
    assert "HTTP 404" in log[0]


def test_mqtt_publishes_to_the_camera_topic_and_survives_a_broker_restart(mosquitto):
    client, got = mosquitto.subscribe("site/+/events")
    log, failures = Log(), []
    sinks = build_sinks({"mqtt": mosquitto.url("site")}, log, on_failure=lambda *a: failures.append(a))
    try:
        sinks.send("gate", EVENT)
        assert got.get(timeout=10) == ("site/gate/events", {**EVENT, "camera": "gate"})
        mosquitto.stop()                          # the broker goes away mid-run; events sent meanwhile wait
        for k in (4, 5):
            sinks.send("lobby", {**EVENT, "event": k})
        time.sleep(0.3)
        mosquitto.start()
        received = [got.get(timeout=15) for _ in range(2)]
        assert [(t, e["event"], e["camera"]) for t, e in received] == [("site/lobby/events", 4, "lobby"),
                                                                       ("site/lobby/events", 5, "lobby")]
    finally:
        sinks.close(5)
        client.loop_stop()
    assert sinks.stats()["mqtt"] == dict(queued=3, delivered=3, failed=0, dropped=0, pending=0)
    assert failures == [] and any("lost the broker" in line for line in log) and any("reconnected" in line
                                                                                      for line in log)


def test_mqtt_broker_away_at_close_counts_the_events_left(mosquitto):
    mosquitto.stop()
    log = Log()
    sinks = build_sinks({"mqtt": mosquitto.url()}, log)
    sinks.send("gate", EVENT)
    sinks.send("gate", {**EVENT, "event": 4})
    sinks.close(0.5)
    assert sinks.stats()["mqtt"]["failed"] == 2 and sinks.stats()["mqtt"]["delivered"] == 0
    assert "2 events not delivered before shutdown" in log[-1]


def test_command_gets_the_event_on_stdin_and_in_its_environment(tmp_path):
    out = tmp_path / "got.jsonl"
    script = ("import json, os, sys; e = json.load(sys.stdin); "
              f"open({str(out)!r}, 'a').write(json.dumps([e, json.loads(os.environ['BNWVAD_EVENT']), "
              "os.environ['BNWVAD_CAMERA']]) + '\\n')")
    sinks = build_sinks({"command": [sys.executable, "-c", script]}, Log())
    sinks.send("gate", EVENT)
    sinks.close(30)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [[{**EVENT, "camera": "gate"},
                                                                            {**EVENT, "camera": "gate"}, "gate"]]
    assert sinks.stats()["command"]["delivered"] == 1


def test_command_failure_and_timeout_are_counted_and_logged():
    log, failures = Log(), []
    fails = build_sinks({"command": [sys.executable, "-c", "import sys; sys.exit('disk full')"]}, log,
                        on_failure=lambda *a: failures.append(a))
    slow = build_sinks({"command": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout": 0.5}, log,
                       on_failure=lambda *a: failures.append(a))
    fails.send("gate", EVENT)
    slow.send("lobby", EVENT)
    fails.close(30)
    slow.close(30)
    assert fails.stats()["command"]["failed"] == slow.stats()["command"]["failed"] == 1
    assert sorted(failures) == [("gate", "command"), ("lobby", "command")]
    assert any("exited with status 1: disk full" in line for line in log)
    assert any("ran past 0.5 s and was stopped" in line for line in log)


class Stuck(Sink):
    """A sink whose peer hangs until `release` is set."""
    kind = "stuck"

    def __init__(self, log, **kw):
        self.release = threading.Event()
        super().__init__("stuck", log, **kw)

    def deliver(self, camera, body, event):
        assert self.release.wait(30)


def test_a_slow_sink_never_blocks_send_and_drops_are_counted_and_logged():
    log, failures = Log(), []
    stuck = Stuck(log, size=2, on_failure=lambda *a: failures.append(a))
    sinks = Sinks([stuck])
    sender = threading.Thread(target=lambda: [sinks.send("gate", {**EVENT, "event": k}) for k in range(10)])
    sender.start()
    sender.join(10)
    assert not sender.is_alive(), "send blocked behind a stuck sink"
    counts = sinks.stats()["stuck"]
    assert counts["queued"] + counts["dropped"] == 10 and counts["dropped"] >= 7 and counts["delivered"] == 0
    assert len(failures) == counts["dropped"] == sum("queue full" in line and "dropped" in line for line in log)
    stuck.release.set()
    sinks.close(10)
    assert sinks.stats()["stuck"]["delivered"] == counts["queued"]


def test_send_serializes_the_record_as_it_is_then(hook_server):
    sinks = build_sinks({"webhook": hook_server.url}, Log())
    event = dict(EVENT)
    sinks.send("gate", event)
    event["peak_score"] = 99.0                   # the alarm's open event keeps changing after it is sent
    sinks.close(10)
    assert hook_server.bodies[0]["peak_score"] == EVENT["peak_score"]


@pytest.mark.parametrize("alerts, says", [
    ({"webhok": "http://x"}, "unknown key 'webhok'"),
    ({"webhook": "ftp://x/hook"}, "http:// or https:// URL"),
    ({"mqtt": "tcp://broker:1883/x"}, "mqtt:// URL"),
    ({"mqtt": "mqtt://broker:port/x"}, "not a number"),
    ({"command": "no-such-alert-command --now"}, "no-such-alert-command not found"),
    ({"command": []}, "command is empty"),
    ({"queue": 0}, "queue must be"),
    ({"timeout": "5s"}, "timeout must be"),
])
def test_bad_alerts_table_is_a_one_line_error(alerts, says):
    with pytest.raises(InputError, match=says) as e:
        build_sinks(alerts, Log())
    assert "\n" not in str(e.value)


def test_mqtt_without_paho_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)       # as if paho-mqtt were not installed
    with pytest.raises(InputError, match=r"needs the paho-mqtt package: pip install paho-mqtt$"):
        build_sinks({"mqtt": "mqtt://127.0.0.1:1883/x"}, Log())


def test_no_sinks():
    sinks = build_sinks({}, Log())
    sinks.send("gate", EVENT)
    sinks.close(1)
    assert not sinks and sinks.stats() == {}


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def test_metrics_and_healthz_over_http():
    from prometheus_client.parser import text_string_to_metric_families
    server = MetricsServer("127.0.0.1:0")
    try:
        gate, lobby = server.camera("gate"), server.camera("lobby")
        gate.set_live(True)
        gate.decoded(32)
        gate.decoded(16)
        gate.scored(2, last_score=1.25, lag_s=0.75)
        gate.scored(1, last_score=3.5, lag_s=0.5)
        gate.alert()
        gate.sink_failure("webhook")
        gate.sink_failure("webhook")
        lobby.reconnect()
        lobby.set_live(False)
        status, kind, text = fetch(server.url + "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}

        def value(name, camera, **labels):
            return samples[(name, tuple(sorted(dict(camera=camera, **labels).items())))]

        assert value("bnwvad_snippets_scored_total", "gate") == 3
        assert value("bnwvad_last_score", "gate") == 3.5
        assert value("bnwvad_lag_seconds", "gate") == 0.5
        assert value("bnwvad_frames_decoded_total", "gate") == 48
        assert 0 < value("bnwvad_frames_decoded_per_second", "gate") <= 48
        assert value("bnwvad_alerts_total", "gate") == 1
        assert value("bnwvad_sink_failures_total", "gate", sink="webhook") == 2
        assert value("bnwvad_reconnects_total", "lobby") == 1
        assert value("bnwvad_camera_live", "gate") == 1 and value("bnwvad_camera_live", "lobby") == 0
        assert value("bnwvad_snippets_scored_total", "lobby") == 0

        status, kind, text = fetch(server.url + "/healthz")
        health = json.loads(text)
        assert status == 200 and kind == "application/json"
        assert health["live"] == ["gate"] and health["down"] == ["lobby"]
        assert health["cameras"]["gate"]["snippets"] == 3 and health["cameras"]["gate"]["lag_s"] == 0.5
        with pytest.raises(urllib.error.HTTPError, match="404"):
            fetch(server.url + "/nothing")
    finally:
        server.close()


def test_metrics_listen_errors_are_one_line():
    server = MetricsServer("127.0.0.1:0")
    try:
        with pytest.raises(InputError, match=rf"cannot listen on 127.0.0.1:{server.port}: "):
            MetricsServer(f"127.0.0.1:{server.port}")
    finally:
        server.close()
    with pytest.raises(InputError, match="listen must be HOST:PORT"):
        MetricsServer("localhost")
