"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
const DASH = "\u2013";
const PAGE_STYLE = getComputedStyle(document.documentElement);

// A colour the stylesheet declares (style.css :root), so the canvases and the page share one palette.
function cssVar(name) { return PAGE_STYLE.getPropertyValue(name).trim(); }

// An element with properties (text, class, on<event>, attributes) and children (nodes or plain text).
function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function missing(x) { return x === null || x === undefined || Number.isNaN(x); }
function fixed(x, digits) { return missing(x) ? DASH : Number(x).toFixed(digits); }
function score(x) { return missing(x) ? DASH : String(Number(Number(x).toPrecision(4))); }
function plain(v) { return typeof v === "string" ? v : JSON.stringify(v); }
function count(n, noun) { return n + " " + noun + (n === 1 ? "" : "s"); }     // "1 video", "2 videos"
function tickText(v) { return String(Number(v.toPrecision(3))); }

// A time on a video's axis as text: seconds as [h:]m:ss.ss or s.ss s, frames as whole frames.
function time(t, unit) {
  if (missing(t)) return DASH;
  if (unit === "frame") return Math.round(t) + " fr";
  const sign = t < 0 ? "-" : "";
  t = Math.abs(t);
  if (t < 60) return sign + t.toFixed(2) + " s";
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = (t % 60).toFixed(2).padStart(5, "0");
  return sign + (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + s;
}

// A two-column table of [key, value] rows.
function keyValues(rows) {
  return el("table", {class: "kv"}, [el("tbody", {}, rows.map(([k, v]) =>
    el("tr", {}, [el("th", {text: k}), el("td", {text: plain(v)})])))]);
}

// About `count` round tick values between lo and hi.
function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// A canvas sized for its CSS width and the screen's pixel ratio, with a plot frame mapping data to pixels.
function plotFrame(canvas, height, x0, x1, y0, y1) {
  const ratio = window.devicePixelRatio || 1, width = canvas.clientWidth || 600;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  if (!(x1 > x0)) x1 = x0 + 1;
  if (!(y1 > y0)) y1 = y0 + 1;
  ctx.font = "11px system-ui, sans-serif";           // drawAxes' font: the widest y label sets the margin
  const widest = Math.max(0, ...ticks(y0, y1, 4).map(v => ctx.measureText(tickText(v)).width));
  const left = Math.max(48, Math.ceil(widest) + 10), right = width - 10, top = 8, bottom = height - 24;
  return {
    ctx, width, height, left, right, top, bottom, x0, x1, y0, y1,
    x: v => left + (v - x0) / (x1 - x0) * (right - left),
    y: v => bottom - (v - y0) / (y1 - y0) * (bottom - top),
    xAt: px => x0 + (px - left) / (right - left) * (x1 - x0),
  };
}

function drawAxes(f, xTitle) {
  const ctx = f.ctx;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = cssVar("--muted");
  ctx.strokeStyle = "#e6e9ec";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of ticks(f.y0, f.y1, 4)) {
    const y = Math.round(f.y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(f.left, y); ctx.lineTo(f.right, y); ctx.stroke();
    ctx.fillText(tickText(v), f.left - 4, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const v of ticks(f.x0, f.x1, Math.max(2, Math.floor((f.right - f.left) / 80)))) {
    ctx.fillText(String(v), f.x(v), f.bottom + 4);
  }
  ctx.textAlign = "right";
  ctx.fillText(xTitle, f.right, f.bottom + 13);
  ctx.strokeStyle = "#9aa4ad";
  ctx.strokeRect(f.left + 0.5, f.top + 0.5, f.right - f.left, f.bottom - f.top);
}

function legend(items) {
  return el("div", {class: "legend muted"}, items.map(([name, color]) =>
    el("span", {}, [el("i", {style: "background:" + color}), name])));
}

// Redraw what is on screen when the window's width changes.
const redraws = [];
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => redraws.forEach(draw => draw()), 150);
});

document.getElementById("title").textContent = DATA.title;
