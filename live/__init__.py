"""The live subsystem: scoring a video while it plays, with alerts (stream.py is its command).

reader (the source, in a thread), scoring (causal scores), alarms (events), clips (event clips),
health (rates, latency, memory), settings (StreamSettings), run (the loop), outputs (restart-safe
files), site (many cameras in one process), sinks (alerts sent on), metrics (/metrics, /healthz).

How a snippet is scored. A reader thread decodes frames with video.decode.decode_frames (the resize and
upright turns of extract.py, times from video.clock.Clock: the frames' own timestamps, made monotonic, or
their arrival when they carry none or a clock the format made up), groups them into 16-frame
snippets with video.snippets.snippets and hands them over through a bounded queue. The main thread crops
them (video.crops.crop_frames) and runs the snippets that are waiting, up to --i3d_batch, through I3D
in one pass (video.snippets.snippet_features: `x / 255 * 2 - 1`). Snippet t is then scored by the
checkpoint's model (BN-WVAD or UR-DMU) over a sliding context of the last --window snippets: the
(crops, W, 1024) features of t-W+1..t go through test.score_video, the function offline scoring
uses, and t's score is the window's last. It is exactly the offline score of those W snippets'
features alone. With --delay K, snippet t is scored once K more snippets have arrived (context
t-W+1+K..t+K, t at position W-1-K): K snippets of latency for context on both sides; at the end of
the stream the last K snippets are scored with the context there is. Offline scoring sees the whole
video, future included; `python -m bench --sections g` measures what the bounded causal context costs (see
docs/live.md).

Alerts. An event opens when the raw score has stayed above the threshold (> threshold) for
--min_snippets snippets in a row, and closes once it has stayed below for as many (hysteresis); it
spans its first to its last snippet above the threshold. The threshold is --threshold (raw scale),
or --calibrated_threshold q (the raw score the checkpoint's calibration maps to q), by default the
0.99 quantile of the training normals' scores stored in the checkpoint (thresholds.resolve_threshold).

Outputs in --output_dir (live.outputs: a folder with an earlier run's outputs is continued, appended, never
truncated; rolled over by day or size with --rollover, old files removed with --keep_days):
  scores.csv     video,snippet,score,exceedance,normal_per_hour,start_s,end_s,wall_time: one row per
                 snippet, flushed as written; start_s/end_s are stream seconds, wall_time when the
                 snippet's last frame arrived (ISO 8601); exceedance and normal_per_hour as infer.py's
                 (thresholds.Calibration), empty without the checkpoint's calibration
  events.jsonl   one JSON object per event, appended when it closes: video, event, start_s, end_s,
                 peak_score, peak_exceedance, peak_normal_per_hour, mean_score, wall_start, wall_end,
                 wall_alert (when it was raised), first_snippet, last_snippet, clip (relative path or
                 null), closed_by
  metrics.json   checkpoint, model, source, settings, threshold {value, source}: written at start;
                 the health below at every status line and at the end (atomically)
  stream.log     the status lines, alerts, reconnects, gaps and warnings, flushed per line
  clips/event_0001.mp4   with --save_clips: each event from --pre_roll s before to --post_roll s after,
                 in the source's own frames and resolution (--resize is for the network only)

Health. Every --status_every seconds a status line gives the snippets scored, their rate, the
pipeline's capacity (snippets per second of compute, and as a multiple of real time), the latency
of the last snippet (from its last frame's arrival to its score) and, for a live source, the lag
behind live. A live source the pipeline cannot keep up with is reported with the factor by which it
is too slow; no frame is ever dropped here (the reader waits, and the time it waited is reported),
and frames a live source lost upstream show as gaps in its timestamps, which are logged. At the end:
latency p50/p95/max, counts, reconnects and gaps. Memory stays flat: queues, the clip buffer and the
scoring context are bounded, and scores are written out, not kept.

Faults. A live source that drops is reopened with exponential backoff (--reconnect: a number of
attempts, or seconds); the gap is logged and stream time goes on by the wall-clock time it lasted.
End of stream, Ctrl-C and SIGTERM close every output complete (an open event is closed and
written). A live source that cannot be opened at the start is retried under the same --reconnect
policy, then (like a file that cannot be read) a one-line error (exit status 2). A source that changes
its frame size mid-stream goes on: each frame is resized from its own size to the size the first
frame set (video.decode, said once in stream.log), and clips keep their first size.

Sites (live.site, stream.py --config): every camera of a site file in one process, their snippets in
shared I3D batches, each camera's outputs in <output_dir>/<camera>/, one camera's failure ending it alone.

Python API (tests and other programs can pass any network with `.features(x)` as the I3D):
  from live.run import run_stream; from live.settings import StreamSettings; from live.scoring import causal_scores
  summary = run_stream(source, model, i3d, 'out/', threshold=1.5, settings=StreamSettings(crops=5))
  scores = causal_scores(model, features, window=64, delay=0)   # (T,) what streaming gives, offline
"""
