// One sweep: progress and cells from GET /sweeps/{id}, the table from /table, the figures from
// /plots, refreshed every 2 s while it runs and as its jobs end.
"use strict";

const SWEEP = document.getElementById("sweep").dataset.sweepId;
const BASE = `/sweeps/${encodeURIComponent(SWEEP)}`;
let shownEnded = -1;
const SVG = "http://www.w3.org/2000/svg";

function cellText(value) {
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value ?? "");
}

function drawTable(table) {
  const figures = table.columns.filter((c) => c.endsWith("_mean")).map((c) => c.slice(0, -5));
  const shown = figures.filter((f) => f.startsWith("test_") || f === "seconds");
  const picked = shown.length > 1 ? shown : figures;
  const fixed = table.columns.filter(
    (c) => !c.endsWith("_mean") && !c.endsWith("_std") && c !== "succeeded" && c !== "repeats",
  );
  const head = el("tr", {}, ...[...fixed, ...picked, "n"].map((c) => el("th", {}, c)));
  document.querySelector("#table thead").replaceChildren(head);
  const rows = table.rows.map((row) => {
    const cells = fixed.map((c) => el("td", {}, cellText(row[c])));
    for (const f of picked) {
      const mean = row[`${f}_mean`];
      const std = row[`${f}_std`];
      const text = mean == null ? "" : std == null ? number(mean) : `${number(mean)} ± ${number(std)}`;
      cells.push(el("td", { dataset: { figure: f } }, text));
    }
    cells.push(el("td", { class: "n" }, `${row.succeeded}/${row.repeats}`));
    return el("tr", { dataset: { cell: String(row.cell) } }, ...cells);
  });
  document.querySelector("#table tbody").replaceChildren(...rows);
}

function drawCells(sweep) {
  const rows = (sweep.cells || []).map((cell) =>
    el(
      "tr",
      {},
      el("td", {}, String(cell.cell)),
      el("td", {}, Object.entries(cell.values).map(([k, v]) => `${k}=${cellText(v)}`).join(", ")),
      el("td", {}, ...cell.jobs.map((job) => el("span", { class: "cell-job" }, jobLink(job), " ", statusBadge(job.status), " "))),
    ),
  );
  document.querySelector("#cells tbody").replaceChildren(...rows);
}

// --- parallel coordinates, for a random search -----------------------------------------------

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

// A scale from a column's values to [0, 1]: numbers linearly (log where `log`), anything else
// as evenly spaced categories. Returns {at(value), ticks: [[position, label]]}.
function scaleOf(values, log = false) {
  const present = values.filter((v) => v !== null && v !== undefined);
  if (present.length && present.every((v) => typeof v === "number")) {
    const f = log && present.every((v) => v > 0) ? Math.log10 : (v) => v;
    const low = Math.min(...present.map(f));
    const high = Math.max(...present.map(f));
    const at = (v) => (high > low ? (f(v) - low) / (high - low) : 0.5);
    const min = Math.min(...present);
    const max = Math.max(...present);
    return { at, ticks: min === max ? [[0.5, number(min)]] : [[0, number(min)], [1, number(max)]] };
  }
  const categories = [...new Set(present.map((v) => JSON.stringify(v)))];
  const at = (v) => (categories.length > 1 ? categories.indexOf(JSON.stringify(v)) / (categories.length - 1) : 0.5);
  return { at, ticks: categories.map((c) => [at(JSON.parse(c)), c.replace(/^"|"$/g, "")]) };
}

// One polyline per cell over the axes and the metric's mean; lines coloured by the metric
// (dark: best, which is the lowest for a loss or error, the highest otherwise).
function drawParallel(node, rows, axes, metric, logAxes = new Set()) {
  const width = Number(node.getAttribute("width"));
  const height = Number(node.getAttribute("height"));
  const top = 40;
  const bottom = height - 30;
  const columns = [...axes, `${metric}_mean`];
  const xs = columns.map((_, k) => 70 + (k * (width - 140)) / Math.max(1, columns.length - 1));
  const scales = columns.map((c) => scaleOf(rows.map((r) => r[c]), logAxes.has(c)));
  const y = (k, value) => bottom - scales[k].at(value) * (bottom - top);
  const lower = /loss|error|mse|mae|seconds/.test(metric);
  const metricScale = scales[columns.length - 1];
  node.replaceChildren();
  for (const row of rows) {
    const value = row[`${metric}_mean`];
    const known = value !== null && value !== undefined;
    const goodness = known ? (lower ? 1 - metricScale.at(value) : metricScale.at(value)) : 0;
    const points = columns
      .map((c, k) => (row[c] === null || row[c] === undefined ? null : `${xs[k]},${y(k, row[c])}`))
      .filter(Boolean)
      .join(" ");
    const line = svg("polyline", {
      points,
      fill: "none",
      stroke: known ? `hsl(210, 80%, ${75 - 50 * goodness}%)` : "#bbb",
      "stroke-width": known ? 2 : 1,
      "stroke-dasharray": known ? "" : "4 3",
      "data-cell": String(row.cell),
    });
    line.append(svg("title", {}, `cell ${row.cell}: ${columns.map((c) => `${c}=${row[c]}`).join(", ")}`));
    node.append(line);
  }
  columns.forEach((c, k) => {
    node.append(svg("line", { x1: xs[k], x2: xs[k], y1: top, y2: bottom, stroke: "#556", "stroke-width": 1 }));
    const name = k === columns.length - 1 ? `${metric} (mean)` : c + (logAxes.has(c) ? " (log)" : "");
    const anchor = k === 0 ? "start" : k === columns.length - 1 ? "end" : "middle";
    node.append(svg("text", { x: xs[k], y: top - 18, "text-anchor": anchor, class: "axis-name" }, name));
    for (const [position, label] of scales[k].ticks) {
      node.append(svg("text", { x: xs[k] + 4, y: bottom - position * (bottom - top) + 4, class: "tick" }, label));
    }
  });
}

function showParallel(sweep, table) {
  const random = sweep.spec.random;
  const figures = table.columns.filter((c) => c.endsWith("_mean")).map((c) => c.slice(0, -5));
  const metric = figures.find((f) => f.startsWith("test_")) || figures[0];
  const section = document.getElementById("parallel-section");
  section.hidden = !random || !metric;
  if (section.hidden) return;
  const axes = [...new Set(sweep.cells.flatMap((cell) => Object.keys(cell.values)))];
  const logAxes = new Set(Object.entries(random.ranges).filter(([, r]) => r.log).map(([p]) => p));
  drawParallel(document.getElementById("parallel"), table.rows, axes, metric, logAxes);
}

async function drawFigures() {
  for (const name of ["metric", "curves"]) {
    const url = await imageURL(`${BASE}/plots/${name}.png`);
    const img = document.getElementById(`${name}-figure`);
    if (url) {
      if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      img.src = url;
    }
  }
}

async function download(link, path, filename) {
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const response = await api(path);
    if (!response.ok) return notice(`${path}: ${response.status}`);
    const a = el("a", { href: URL.createObjectURL(await response.blob()), download: filename });
    a.click();
  });
}

async function refresh() {
  const sweep = await getJSON(BASE);
  if (!sweep) return false;
  const ended = sweep.counts.succeeded + sweep.counts.failed + sweep.counts.cancelled;
  document.getElementById("status").replaceChildren(statusBadge(sweep.status));
  document.getElementById("summary").textContent =
    `${sweep.families.filter((f, i, all) => all.indexOf(f) === i).join(", ")} · ` +
    `${sweep.n_cells} cells x ${sweep.repeats} repeats · ${ended}/${sweep.n_jobs} jobs ended` +
    (sweep.status === "running" && sweep.eta_seconds != null ? ` · ETA ${seconds(sweep.eta_seconds)}` : "");
  document.getElementById("progress").replaceChildren(progressBar((100 * ended) / Math.max(1, sweep.n_jobs)));
  drawCells(sweep);
  if (ended !== shownEnded) {
    shownEnded = ended;
    const table = await getJSON(`${BASE}/table`);
    if (table) {
      drawTable(table);
      showParallel(sweep, table);
    }
    await drawFigures();
  }
  return !FINISHED.has(sweep.status);
}

document.getElementById("its-jobs").href = `${ROOT}/ui?sweep=${encodeURIComponent(SWEEP)}`;
download(document.getElementById("csv"), `${BASE}/table?format=csv`, `sweep-${SWEEP}.csv`);
download(document.getElementById("markdown"), `${BASE}/table?format=markdown`, `sweep-${SWEEP}.md`);
download(document.getElementById("latex"), `${BASE}/table?format=latex`, `sweep-${SWEEP}.tex`);
download(document.getElementById("report"), `${BASE}/report.zip`, `sweep-${SWEEP}.zip`);
every(2000, refresh);
