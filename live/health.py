"""Health of a live run: rates, capacity, latency quantiles and lag behind live, and keeping memory flat.
"""
import math
import sys
import time

import numpy as np


def _glibc_trim():
    """glibc's malloc_trim, or None elsewhere (macOS, Windows, musl)."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _glibc_trim() if sys.platform.startswith("linux") else None


def release_memory():
    """Give memory the C allocator holds free back to the system. Frames are allocated by the reader
    thread and freed by the scoring thread, and glibc keeps such memory in per-thread arenas: without
    this the resident size creeps up by tens of MB an hour though nothing is kept (`python -m bench --sections j`)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class Latencies:
    """Count, mean, max and quantiles of latencies over a whole run in fixed memory: counts in
    log-spaced bins from 1 ms to 10^4 s, each 2.3% wide (a quantile is its bin's geometric middle, at
    most the largest latency seen)."""
    EDGES = np.geomspace(1e-3, 1e4, 701)

    def __init__(self):
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)
        self.n, self.total, self.max = 0, 0.0, 0.0

    def add(self, seconds):
        self.counts[np.searchsorted(self.EDGES, seconds)] += 1
        self.n, self.total, self.max = self.n + 1, self.total + seconds, max(self.max, seconds)

    def quantile(self, q):
        if not self.n:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n))
        if i == 0:
            return float(self.EDGES[0])
        if i >= len(self.EDGES):
            return self.max
        return min(self.max, float(math.sqrt(self.EDGES[i - 1] * self.EDGES[i])))


class Health:
    """Rates, latency and lag of the scored snippets, for the status lines and the summary."""

    def __init__(self):
        self.latency = Latencies()
        self.scored = 0
        self.busy = 0.0                 # seconds spent cropping, in I3D and scoring
        self.video_s = 0.0              # stream seconds the scored snippets cover
        self.last_latency = self.lag = None
        self.max_lag = 0.0
        self.since = (time.monotonic(), 0, 0.0, 0.0)    # the last status line: time, scored, busy, video_s

    def add(self, snippet, now, anchor):
        self.scored += 1
        self.video_s += snippet.end_s - snippet.start_s
        self.last_latency = now - snippet.arrival
        self.latency.add(self.last_latency)
        if anchor is not None:
            self.lag = max(0.0, now - (anchor + snippet.end_s))
            self.max_lag = max(self.max_lag, self.lag)

    def interval(self):
        """(snippets per wall second, snippets per busy second, x real time) since the last call."""
        now = time.monotonic()
        t, n, busy, video = self.since
        self.since = (now, self.scored, self.busy, self.video_s)
        n, busy, video = self.scored - n, self.busy - busy, self.video_s - video
        rate = n / (now - t) if now > t else 0.0
        capacity = n / busy if busy > 0 else None
        speed = video / busy if busy > 0 and n else None
        return rate, capacity, speed

    def summary(self):
        """The run's health as plain values (seconds)."""
        q = self.latency.quantile
        rnd = lambda x: None if x is None else round(x, 4)
        return dict(snippets=self.scored, video_s=round(self.video_s, 3),
                    snippets_per_busy_s=rnd(self.scored / self.busy) if self.busy else None,
                    speed=rnd(self.video_s / self.busy) if self.busy else None,
                    latency_p50_s=rnd(q(0.5)), latency_p95_s=rnd(q(0.95)), latency_max_s=rnd(self.latency.max),
                    latency_mean_s=rnd(self.latency.total / self.latency.n) if self.latency.n else None,
                    max_lag_s=rnd(self.max_lag))


def health_record(health, reader, alarm, paced):
    """metrics.json's `health`: the summary of Health and the reader's counts; kept_up only for a source
    with a clock to keep up with (live, or played with --realtime)."""
    summary = health.summary()
    summary.update(events=alarm.count, frames=reader.frames, damaged_packets=reader.damaged,
                   reconnects=reader.reconnects, outage_s=round(reader.outage_s, 3), gaps=reader.gaps,
                   gap_s=round(reader.gap_s, 3), reader_waited_s=round(reader.blocked_s, 3),
                   kept_up=None if not paced or summary["speed"] is None else summary["speed"] >= 1.0)
    return summary
