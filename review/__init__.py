"""The review page: what infer.py, stream.py or main.py already wrote, as ONE self-contained HTML
file (inline CSS and JS, no network access, no server) that opens in any current browser.

data (the output folders and logs read into page data), media (the videos it links), page (the page
built from assets/: page.html, style.css, common.js, scores.js, training.js). report.py is its command.

The page's first screen is a table of videos sortable by every
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
table of the runs, highest AP at the kept step first, then one section per log, in file-name order, so that seeds and
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
