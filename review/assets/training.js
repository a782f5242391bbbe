// A line chart over steps: each series a line with points, the kept (best) step as a dotted line.
function lineChart(steps, series, best, title) {
  const canvas = el("canvas", {"aria-label": title});
  const cursor = el("div", {class: "cursor", hidden: ""});
  const readout = el("div", {class: "readout"});
  const box = el("div", {class: "chart"}, [el("h3", {text: title}), el("div", {class: "timeline"}, [canvas, cursor]), readout]);
  if (series.length > 1) box.append(legend(series.map((s, i) => [s.name, COLORS[i % COLORS.length]])));
  let frame = null;
  const draw = () => {
    const values = series.flatMap(s => s.values).filter(v => !missing(v));
    let lo = Math.min(...values), hi = Math.max(...values);
    const pad = hi > lo ? (hi - lo) * 0.05 : Math.abs(lo) * 0.1 || 1;       // a flat line sits mid-chart
    const f = plotFrame(canvas, 200, steps[0], steps[steps.length - 1], lo - pad, hi + pad), ctx = f.ctx;
    ctx.clearRect(0, 0, f.width, f.height);
    drawAxes(f, "step");
    if (best) {
      ctx.strokeStyle = "#555"; ctx.setLineDash([2, 3]); ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(f.x(best.step), f.top); ctx.lineTo(f.x(best.step), f.bottom); ctx.stroke();
      ctx.setLineDash([]);
    }
    series.forEach((s, i) => {
      ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length]; ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      s.values.forEach((v, k) => {
        if (missing(v)) { drawing = false; return; }
        if (drawing) ctx.lineTo(f.x(steps[k]), f.y(v)); else ctx.moveTo(f.x(steps[k]), f.y(v));
        drawing = true;
      });
      ctx.stroke();
      if (steps.length <= 200) s.values.forEach((v, k) => { if (!missing(v)) ctx.fillRect(f.x(steps[k]) - 1.5, f.y(v) - 1.5, 3, 3); });
    });
    cursor.style.top = f.top + "px";
    cursor.style.height = (f.bottom - f.top) + "px";
    frame = f;
  };
  redraws.push(draw);
  canvas.addEventListener("mousemove", e => {
    const at = frame.xAt(e.offsetX);
    let k = 0;
    steps.forEach((s, i) => { if (Math.abs(s - at) < Math.abs(steps[k] - at)) k = i; });
    cursor.hidden = false;
    cursor.style.left = frame.x(steps[k]) + "px";
    readout.textContent = "step " + steps[k] + ": " + series.map(s => s.name + " " + score(s.values[k])).join(", ");
  });
  canvas.addEventListener("mouseleave", () => { cursor.hidden = true; readout.textContent = ""; });
  return {box, draw};
}

function renderRun(run) {
  const best = run.best;
  const facts = [["evaluations", run.steps.length], ["steps", run.steps[0] + " \u2013 " + run.steps[run.steps.length - 1]],
                 ...run.text];
  if (best) facts.push(["kept (best " + best.selected_by + ")", "step " + best.step +
                        Object.entries(best).filter(([k]) => k !== "step" && k !== "selected_by").map(([k, v]) => ", " + k + " " + fixed(v, 2)).join("")]);
  const charts = [];
  const metrics = Object.entries(run.metrics).map(([name, values]) => ({name, values}));
  if (metrics.length) charts.push(lineChart(run.steps, metrics, best, "metrics (%)" + (best ? ", dotted: the kept step (best " + best.selected_by + ")" : "")));
  for (const [name, values] of Object.entries(run.others)) charts.push(lineChart(run.steps, [{name, values}], best, name));
  const section = el("section", {class: "run", id: "run-" + run.file}, [el("h2", {text: run.file}), keyValues(facts),
    el("div", {class: "charts"}, charts.map(c => c.box))]);
  return {section, charts};
}

const runs = DATA.runs.map(renderRun);
const parts = [];
if (DATA.runs.length > 1) {
  const order = DATA.runs.map((r, i) => i).sort((i, j) =>
    (DATA.runs[j].best ? DATA.runs[j].best.AP : -Infinity) - (DATA.runs[i].best ? DATA.runs[i].best.AP : -Infinity));
  parts.push(el("h2", {text: "runs, highest AP at the kept step first"}), el("table", {class: "kv runs"}, [
    el("thead", {}, [el("tr", {}, ["log", "evaluations", "last step", "AP at the kept step", "kept step", "AUC there"].map((h, i) => el("th", {class: i ? "num" : "", text: h})))]),
    el("tbody", {}, order.map(i => {
      const r = DATA.runs[i], b = r.best || {};
      return el("tr", {}, [el("td", {}, [el("a", {href: "#run-" + r.file, text: r.file})]),
        ...[r.steps.length, r.steps[r.steps.length - 1], fixed(b.AP, 2), missing(b.step) ? DASH : b.step, fixed(b.AUC, 2)]
          .map(c => el("td", {class: "num", text: String(c)}))]);
    }))]));
}
document.getElementById("subtitle").textContent = "training " + (DATA.runs.length > 1 ? DATA.runs.length + " runs" : "run");
document.getElementById("main").append(...parts, ...runs.map(r => r.section));
runs.forEach(r => r.charts.forEach(c => c.draw()));
