"""Building the review page: the page data as JSON inside the page, and the page's HTML, CSS and JS
(assets/ beside this file: page.html, style.css, common.js, scores.js, training.js) read and inlined
at build time, so the output is ONE self-contained HTML file (no network access, no server).

Everything read from files reaches the page as JSON inside a <script type="application/json"> block
(<, > and & escaped) and is put into the page with textContent, never parsed as HTML. The page is
written atomically, after every file has been read and checked.
"""
import html
import json
import os
import re
import sys
from pathlib import Path

from review.data import folder_title, is_training_log, scoring_data, training_data
from review.media import playback_warnings
from core.scan import name_left_out, scan_folder
from utils import InputError, escape_names, write_text


PAGE = "report.html"
ASSETS = Path(__file__).resolve().parent / "assets"   # package data: the page's HTML, CSS and JS
def embed_json(data):
    """JSON that can sit inside <script type="application/json">: no '<', '>' or '&' can end the
    block or open a tag, whatever the strings hold; non-ASCII as \\u escapes, and a file name's bytes that
    are not UTF-8 as \\xNN (utils.escape_name), as every other output writes them."""
    text = json.dumps(escape_names(data), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def asset(name):
    """The text of assets/<name> (read at each build, so an edited asset needs no restart)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def render(data):
    """The page's HTML text for the data of scoring_data() or training_data(); ASCII only. The
    template's @@NAME@@ marks are filled in one pass, so no inserted text is rescanned."""
    script = asset("scores.js" if data["kind"] == "scores" else "training.js")
    parts = dict(TITLE=html.escape(data["title"]).encode("ascii", "xmlcharrefreplace").decode("ascii"),
                 CSS=asset("style.css"), DATA=embed_json(data), SCRIPT=asset("common.js") + "\n" + script)
    return re.sub(r"@@(\w+)@@", lambda m: parts[m.group(1)], asset("page.html"))


def write_report(path):
    """Build the review page for `path` and write it atomically. Returns the page's path.

    path: an output folder of infer.py or stream.py (one holding scores.csv) or a folder of
    training logs (*.jsonl), both -> <path>/report.html; or one training log file ->
    <log without .jsonl>.html beside it. Raises InputError, with one line naming the file, when the
    path does not exist, holds nothing this page shows, or a file in it is malformed; then nothing
    is written (an earlier page stays as it was).
    """
    if os.path.isfile(path):
        if not path.endswith(".jsonl"):
            raise InputError(f"{path} is not a training log (.jsonl); give it, an output folder or a folder of logs")
        data = training_data([path], os.path.basename(path))
        out = os.path.splitext(path)[0] + ".html"
    elif os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "scores.csv")):
            data = scoring_data(path)
            for line in playback_warnings(data["videos"], path):
                print(f"warning: {line}", file=sys.stderr)
        else:
            try:
                found = scan_folder(path, {".jsonl"}, kind="training log (.jsonl)", recursive=False)
            except OSError as e:
                raise InputError(f"{path} cannot be read ({e.strerror})") from None
            logs = [str(p) for p in found.files if is_training_log(str(p))]
            name_left_out(found.left_out + [(p, "a .jsonl file that is not a training log (no step)")
                                            for p in found.files if str(p) not in logs])
            if not logs:
                raise InputError(f"{path} holds neither scores.csv (infer.py, stream.py) nor training logs "
                                 f"(*.jsonl with a step)")
            data = training_data(logs, folder_title(path))
        out = os.path.join(path, PAGE)
    else:
        raise InputError(f"{path} does not exist")
    write_text(out, render(data))
    return out
