const S = DATA.summary;
const UNIT_TITLE = {s: "time (s)", frame: "frame"};
const SEGMENT_COLOR = cssVar("--seg"), SEGMENT_STRIP = 7;     // px tall, at the plot's top edge

// base64 little-endian float32 -> Float32Array
function floats(b64) {
  if (!b64) return null;
  const text = atob(b64), bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}
const A = {score: floats(DATA.arrays.score), start: floats(DATA.arrays.start), end: floats(DATA.arrays.end),
           normal_per_hour: floats(DATA.arrays.normal_per_hour)};

// Path relative to the page -> URL, each segment encoded (names may hold #, %, ? and spaces).
function mediaUrl(path) { return path.split("/").map(encodeURIComponent).join("/"); }

function renderSummary() {
  const cards = el("div", {class: "cards"});
  const run = [];
  if (S.checkpoint !== null) run.push(["checkpoint", S.checkpoint]);
  if (S.step !== null) run.push(["step", S.step]);
  if (S.model !== null) run.push(["model", S.model]);
  run.push(["videos", S.videos]);
  if (S.stream) run.push(["stream", S.stream[0] + " \u2192 " + S.stream[1]]);
  run.push(["read from", S.files.join(", ")]);
  cards.append(el("div", {class: "card"}, [el("h3", {text: "run"}), keyValues(run)]));
  const t = S.threshold;
  if (t) {
    const rows = [["value (raw score)", score(t.value)]];
    if (t.source) rows.push(["chosen by", t.source]);
    if (!missing(t.false_alarm_rate)) rows.push(["false alarms, all normal frames", fixed(t.false_alarm_rate, 2) + " %"]);
    if (!missing(t.false_alarm_rate_normal_videos))
      rows.push(["false alarms, normal videos' frames", fixed(t.false_alarm_rate_normal_videos, 2) + " %"]);
    if (!missing(t.false_alarms_per_hour))
      rows.push(["false alarms per hour of normal video", score(t.false_alarms_per_hour)]);
    const shown = ["value", "source", "origin", "false_alarm_rate", "false_alarm_rate_normal_videos", "false_alarms_per_hour"];
    for (const [k, v] of Object.entries(t)) if (!shown.includes(k)) rows.push([k, v]);
    cards.append(el("div", {class: "card"}, [el("h3", {text: "threshold"}), keyValues(rows)]));
  } else {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "threshold"}), el("p", {class: "muted", text: "none given"})]));
  }
  const names = Object.keys(S.metrics);
  if (names.length) {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "metrics (%)"}), el("table", {class: "kv"}, [
      el("thead", {}, [el("tr", {}, names.map(k => el("th", {class: "num", text: k})))]),
      el("tbody", {}, [el("tr", {}, names.map(k => el("td", {class: "num", text: fixed(S.metrics[k], 2)})))])])]));
  }
  const E = S.events || {};
  if (!missing(E.event_recall)) {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "events at the threshold"}), keyValues([
      ["detected", E.detected + " of " + E.events + " (recall " + fixed(E.event_recall, 2) + " %)"],
      ["IoU with the ground-truth intervals", fixed(E.event_IoU, 2) + " %"],
      ...(missing(E.alarms_normal) ? [] : [["alarms in normal videos", String(E.alarms_normal)]])])]));
  }
  if (S.per_class.length) {
    cards.append(el("div", {class: "card"}, [el("h3", {text: "per class (%), each class's videos with all normal ones"}),
      el("table", {class: "kv"}, [
        el("thead", {}, [el("tr", {}, ["class", "videos", "AUC", "AP"].map((k, i) => el("th", {class: i ? "num" : "", text: k})))]),
        el("tbody", {}, S.per_class.map(([c, auc, ap, n]) => el("tr", {}, [el("td", {text: c}),
          el("td", {class: "num", text: missing(n) ? DASH : String(n)}), el("td", {class: "num", text: fixed(auc, 2)}),
          el("td", {class: "num", text: fixed(ap, 2)})])))])]));
  }
  if (S.settings.length) cards.append(el("div", {class: "card"}, [el("h3", {text: "settings"}), keyValues(S.settings)]));
  return cards;
}

// The folded details' one line: the metrics and the threshold, which a reviewer may want at a glance.
function detailsLine() {
  const parts = Object.keys(S.metrics).map(k => k + " " + fixed(S.metrics[k], 2));
  if (S.threshold) parts.push("threshold " + score(S.threshold.value));
  return "run details" + (parts.length ? ": " + parts.join(", ") : "") + " (checkpoint, threshold, settings)";
}

// ---- the table of videos
const COLUMNS = [
  {key: "name", title: "video", text: true},
  {key: "label", title: "label", text: true},
  {key: "length", title: "length", show: v => time(v.length, v.unit)},
  {key: "peak", title: "peak score", show: v => score(v.peak)},
  {key: "above", title: "above threshold", show: v => time(v.above, v.unit)},
  {key: "segments", title: DATA.videos.some(v => v.segments.some(s => s.event)) ? "events" : "segments",
   show: v => String(v.segments.length)},
];
const collator = new Intl.Collator(undefined, {numeric: true});
function sortValue(v, key) { return key === "segments" ? v.segments.length : v[key]; }
const sorting = {key: "peak", descending: true};
const rows = DATA.videos.map((v, i) => el("tr", {"data-index": i, onclick: () => openVideo(i)},
  COLUMNS.map(c => el("td", {class: c.text ? c.key : "num", text: c.text ? (v[c.key] || DASH) : c.show(v)}))));
const tbody = el("tbody");
const heads = COLUMNS.map(c => el("th", {class: c.text ? "" : "num", text: c.title, title: "sort by " + c.title,
                                        onclick: () => sortBy(c.key)}));
const filter = el("input", {type: "search", placeholder: "filter by name", oninput: showRows});
const counter = el("span", {class: "muted"});

// Sort by a column: a new column starts with the highest number (or A to Z); the same column flips.
// Missing values go last either way; ties keep name order.
function sortBy(key) {
  if (sorting.key === key) sorting.descending = !sorting.descending;
  else Object.assign(sorting, {key, descending: !COLUMNS.find(c => c.key === key).text});
  showRows();
}
function showRows() {
  const key = sorting.key, sign = sorting.descending ? -1 : 1, text = COLUMNS.find(c => c.key === key).text;
  const order = DATA.videos.map((v, i) => i);
  order.sort((i, j) => {
    const a = sortValue(DATA.videos[i], key), b = sortValue(DATA.videos[j], key);
    if (missing(a) !== missing(b)) return missing(a) ? 1 : -1;
    const c = missing(a) ? 0 : text ? collator.compare(a, b) : a - b;
    return sign * c || collator.compare(DATA.videos[i].name, DATA.videos[j].name);
  });
  COLUMNS.forEach((c, i) => heads[i].setAttribute("aria-sort", c.key === key ? (sorting.descending ? "descending" : "ascending") : "none"));
  const needle = filter.value.trim().toLowerCase();
  const shown = order.filter(i => !needle || DATA.videos[i].name.toLowerCase().includes(needle));
  tbody.replaceChildren(...shown.map(i => rows[i]));
  counter.textContent = (shown.length === DATA.videos.length ? "" : shown.length + " of ") + count(DATA.videos.length, "video");
}

// ---- the viewer: one video at a time
const viewer = el("div", {class: "viewer"});
const state = {index: -1, media: null, frame: null, playhead: null, segmentRows: [], frameId: 0};

function openVideo(i) {
  if (state.media) state.media.pause();
  rows.forEach((r, j) => r.classList.toggle("open", j === i));
  const v = DATA.videos[i];
  state.index = i;
  state.media = null;
  try { history.replaceState(null, "", "#video=" + encodeURIComponent(v.name)); } catch (e) { /* a browser may refuse it for file: pages */ }
  const title = el("h2", {}, [v.name, el("span", {class: "badge " + (v.label || "unknown"), text: v.label || "label unknown"})]);
  const parts = [title];
  if (v.source && v.unit === "s") {
    const media = el("video", {controls: "", preload: "metadata"});
    media.src = mediaUrl(v.source);
    media.addEventListener("error", () => media.replaceWith(el("p", {class: "note",
      text: "cannot play " + v.source + " (not found beside this page, or a format this browser does not play)"})));
    for (const name of ["timeupdate", "seeked", "seeking"]) media.addEventListener(name, () => showPlayhead(media.currentTime));
    media.addEventListener("play", follow);
    state.media = media;
    parts.push(media);
  } else if (v.source) {
    parts.push(el("p", {class: "note"}, ["times unknown (scores.csv has no start_s): the timeline is in frames and not synced with ",
                                          el("a", {href: mediaUrl(v.source), text: v.source})]));
  } else {
    parts.push(el("p", {class: "muted", text: "no source video known for this one"}));
  }
  const canvas = el("canvas", {"aria-label": "anomaly score over time"});
  const playhead = el("div", {class: "playhead", hidden: ""});
  const cursor = el("div", {class: "cursor", hidden: ""});
  const readout = el("div", {class: "readout"});
  state.playhead = playhead;
  parts.push(el("div", {class: "timeline"}, [canvas, playhead, cursor]), readout);
  parts.push(legend([["anomaly score", COLORS[0]], ...(DATA.threshold !== null ? [["threshold " + score(DATA.threshold), "#ff7f0e"]] : []),
                     ...(v.gt && v.gt.length ? [["ground-truth anomaly", cssVar("--gt")]] : []),
                     ...(v.segments.length ? [["detected " + (v.segments.some(s => s.event) ? "event" : "segment") +
                                               " (strip along the top: above the threshold)", SEGMENT_COLOR]] : [])]));
  if (v.count === 0) parts.push(el("p", {class: "note", text: "scores.csv holds no scores for this video"}));
  const clip = el("div");
  parts.push(segmentTable(v, clip), clip);
  viewer.replaceChildren(...parts);

  const draw = () => {
    state.frame = drawTimeline(canvas, v);
    for (const line of [playhead, cursor]) line.style.height = (state.frame.bottom - state.frame.top) + "px";
    for (const line of [playhead, cursor]) line.style.top = state.frame.top + "px";
    if (state.media) showPlayhead(state.media.currentTime);
  };
  redraws.length = 0;
  redraws.push(draw);
  draw();
  readout.textContent = summaryLine(v);
  canvas.addEventListener("mousemove", e => {
    const t = state.frame.xAt(e.offsetX), k = snippetAt(v, t);
    cursor.hidden = false;
    cursor.style.left = e.offsetX + "px";
    readout.textContent = time(t, v.unit) + (k < 0 ? "" : "   score " + score(A.score[k]) +
      (A.normal_per_hour && !missing(A.normal_per_hour[k]) ? "   normal footage scores as high " +
       score(A.normal_per_hour[k]) + " times per hour" : ""));
  });
  canvas.addEventListener("mouseleave", () => { cursor.hidden = true; readout.textContent = summaryLine(v); });
  canvas.addEventListener("click", e => seek(state.frame.xAt(e.offsetX)));
}

function summaryLine(v) {
  if (!v.count) return "";
  return v.count + " snippets, " + time(v.length, v.unit) + "; peak " + score(v.peak) +
         (missing(v.above) ? "" : "; above the threshold for " + time(v.above, v.unit)) +
         (state.media ? "; click the curve or a segment to seek" : "");
}

// The snippet whose [start, end) holds t, or -1.
function snippetAt(v, t) {
  let lo = v.offset, hi = v.offset + v.count - 1;
  if (!v.count || t < A.start[lo] || t >= A.end[hi]) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (A.start[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return t < A.end[lo] ? lo : -1;
}

function drawTimeline(canvas, v) {
  const a = v.offset, b = v.offset + v.count;
  let x0 = v.count ? A.start[a] : 0, x1 = v.count ? A.end[b - 1] : 1, lo = 0, hi = DATA.threshold || 0;
  for (const s of v.segments) { x0 = Math.min(x0, s.start); x1 = Math.max(x1, s.end); }
  for (let k = a; k < b; k++) { if (A.score[k] > hi) hi = A.score[k]; if (A.score[k] < lo) lo = A.score[k]; }
  const f = plotFrame(canvas, 190, x0, x1, lo, hi > lo ? hi * 1.08 : lo + 1), ctx = f.ctx;
  ctx.clearRect(0, 0, f.width, f.height);
  const band = (s, e, color, top) => { ctx.fillStyle = color; ctx.fillRect(f.x(s), top, Math.max(1, f.x(e) - f.x(s)), f.bottom - top); };
  for (const [s, e] of v.gt || []) band(s, e, cssVar("--gt"), f.top);
  // detected segments: a strip along the top edge (as the PNG plots draw them), never a band from y = 0
  ctx.fillStyle = SEGMENT_COLOR;
  for (const s of v.segments) ctx.fillRect(f.x(s.start), f.top, Math.max(2, f.x(s.end) - f.x(s.start)), SEGMENT_STRIP);
  drawAxes(f, UNIT_TITLE[v.unit]);
  if (DATA.threshold !== null) {
    ctx.strokeStyle = "#ff7f0e"; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.2;
    ctx.beginPath(); ctx.moveTo(f.left, f.y(DATA.threshold)); ctx.lineTo(f.right, f.y(DATA.threshold)); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = COLORS[0]; ctx.lineWidth = 1.5;
  ctx.beginPath();
  for (let k = a; k < b; k++) {                      // a step curve: each snippet's score over its [start, end)
    const y = f.y(A.score[k]);
    if (k === a || A.start[k] !== A.end[k - 1]) ctx.moveTo(f.x(A.start[k]), y); else ctx.lineTo(f.x(A.start[k]), y);
    ctx.lineTo(f.x(A.end[k]), y);
  }
  ctx.stroke();
  return f;
}

function segmentTable(v, clipBox) {
  state.segmentRows = [];
  if (!v.segments.length) return el("p", {class: "muted", text: "no segments above the threshold"});
  const events = v.segments.some(s => s.event);
  const heads = ["#", "start", "end", "peak at", "peak score", "normal per hour", "mean"];
  if (events) heads.splice(3, 1, "wall clock", "clip");
  const body = v.segments.map(s => {
    const cells = [String(s.rank), time(s.start, v.unit), time(s.end, v.unit), time(s.peak_at, v.unit),
                   score(s.peak_score), score(s.peak_normal_per_hour), score(s.mean)];
    if (events) cells.splice(3, 1, (s.wall_start || DASH) + (s.wall_end ? " \u2192 " + s.wall_end : ""), s.clip ? "clip" : DASH);
    const row = el("tr", {title: "seek to " + time(s.start, v.unit), onclick: () => { seek(s.start); if (s.clip) showClip(s, clipBox); }},
                   cells.map((c, i) => el("td", {class: i > 0 && !(events && i === 3) ? "num" : "", text: c})));
    state.segmentRows.push([s, row]);
    return row;
  });
  const hint = state.media ? " (click to seek the video)" : " (click to mark on the timeline)";
  return el("div", {}, [el("h3", {text: (events ? "events" : "segments") + hint}),
    el("table", {class: "segments"}, [el("thead", {}, [el("tr", {}, heads.map(h => el("th", {text: h})))]), el("tbody", {}, body)])]);
}

function showClip(s, box) {
  const media = el("video", {controls: "", preload: "metadata", class: "clip"});
  media.src = mediaUrl(s.clip);
  media.addEventListener("error", () => media.replaceWith(el("p", {class: "note", text: "cannot play clip " + s.clip})));
  box.replaceChildren(el("h3", {text: "clip of event " + s.rank + ": " + s.clip}), media);
}

// Seek the video (when there is one) and show the playhead at t.
function seek(t) {
  if (state.media) state.media.currentTime = t;
  showPlayhead(t);
}

function showPlayhead(t) {
  const f = state.frame;
  if (!f || !state.playhead) return;
  state.playhead.hidden = !(t >= f.x0 && t <= f.x1);
  state.playhead.style.left = f.x(t) + "px";
  for (const [s, row] of state.segmentRows) row.classList.toggle("current", t >= s.start && t < s.end);
}

// While the video plays, move the playhead every frame the browser draws.
function follow() {
  cancelAnimationFrame(state.frameId);
  const step = () => {
    if (!state.media || state.media.paused) return;
    showPlayhead(state.media.currentTime);
    state.frameId = requestAnimationFrame(step);
  };
  state.frameId = requestAnimationFrame(step);
}

document.getElementById("subtitle").textContent = "review of anomaly scores: " + count(DATA.videos.length, "video") +
  (DATA.has_gt ? ", with ground truth" : "");
// What a reviewer came for comes first: the table of videos and the open video with its timeline. The
// run's details (checkpoint, threshold, metrics, settings) are folded into one line above them.
document.getElementById("main").append(
  el("details", {class: "run-details", id: "run-details"}, [el("summary", {text: detailsLine()}), renderSummary()]),
  el("div", {class: "browser"}, [
    el("div", {class: "list"}, [el("div", {class: "tools"}, [filter, counter]),
      el("div", {class: "scroll"}, [el("table", {class: "videos", id: "videos"}, [el("thead", {}, [el("tr", {}, heads)]), tbody])])]),
    viewer]));
showRows();

// The video named by the page's address (#video=NAME, as opening one sets it), or -1.
function namedVideo() {
  const match = location.hash.match(/^#video=(.*)$/);
  let name = null;
  try { name = match && decodeURIComponent(match[1]); } catch (e) { return -1; }
  return DATA.videos.findIndex(v => v.name === name);
}
window.addEventListener("hashchange", () => { const i = namedVideo(); if (i >= 0 && i !== state.index) openVideo(i); });
if (namedVideo() >= 0) openVideo(namedVideo());
else if (tbody.firstChild) openVideo(Number(tbody.firstChild.dataset.index));
