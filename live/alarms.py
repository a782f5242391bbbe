"""Alerts: events from snippet scores with hysteresis (Alarm), and the wall-clock times they carry.

An event opens when the raw score has stayed above the threshold for min_snippets snippets in a
row, and closes once it has stayed below for as many; it spans its first to its last snippet above.
"""
import datetime
import math
import time


def iso(wall):
    """time.time() -> ISO 8601 local time with its UTC offset, milliseconds."""
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


class Alarm:
    """Events from snippet scores with hysteresis: an event opens once `min_snippets` snippets in a row
    score above the threshold and closes once as many in a row score below it; it spans its first to
    its last snippet above. Keeps only the current event's running aggregates."""

    def __init__(self, threshold, min_snippets):
        self.threshold, self.min_snippets = threshold, min_snippets
        self.run = None         # a run of snippets above the threshold that has not opened an event yet
        self.event = None       # the open event
        self.below = 0          # snippets below the threshold since the open event's last one above
        self.held = (0.0, 0)    # their score sum and count (they join the event's mean if it goes on)
        self.count = 0          # events opened

    def update(self, snippet, score, calibrated):
        """-> [('open' | 'close', event)] that this snippet's score causes."""
        above = score > self.threshold
        if self.event is None:
            if not above:
                self.run = None
                return []
            if self.run is None:
                self.run = dict(first_snippet=snippet.index, start_s=snippet.start_s, peak_score=-math.inf,
                                wall_start=snippet.wall - (snippet.end_s - snippet.start_s), total=0.0, n=0)
            self._extend(self.run, snippet, score, calibrated)
            if self.run["n"] < self.min_snippets:
                return []
            self.event, self.run, self.below, self.held = self.run, None, 0, (0.0, 0)
            self.count += 1
            self.event.update(event=self.count, wall_alert=time.time())
            return [("open", self.event)]
        if above:
            self.event["total"] += self.held[0]
            self.event["n"] += self.held[1]
            self.below, self.held = 0, (0.0, 0)
            self._extend(self.event, snippet, score, calibrated)
            return []
        self.below += 1
        self.held = (self.held[0] + score, self.held[1] + 1)
        return [("close", self.close("scores"))] if self.below >= self.min_snippets else []

    def close(self, why):
        """Close the open event (None when there is none): its record, with `closed_by` = why."""
        event, self.event = self.event, None
        if event is not None:
            event["mean_score"] = event.pop("total") / event.pop("n")
            event["closed_by"] = why
        return event

    @staticmethod
    def _extend(event, snippet, score, calibrated):
        event.update(last_snippet=snippet.index, end_s=snippet.end_s, wall_end=snippet.wall,
                     total=event["total"] + score, n=event["n"] + 1)
        if score > event["peak_score"]:
            event.update(peak_score=score, peak_calibrated=calibrated)

    def earliest_start(self):
        """Stream time where an event could still start (the run above the threshold in progress), or None."""
        return self.run["start_s"] if self.run is not None else None
