// What every dashboard page shares: API calls with the user's key, small DOM helpers, and
// learning-curve charts (uPlot). Data from the API is put in the page as text, never as HTML.
"use strict";

const ROOT = document.body.dataset.root || "";
const KEY_STORE = "annlab.apiKey";
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const META = new Set(["epoch", "fold", "seconds", "attempt"]);

// --- the API key and API calls --------------------------------------------------------------

const keyInput = document.getElementById("key");
keyInput.value = localStorage.getItem(KEY_STORE) || "";
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
  location.reload();
});

function notice(text) {
  const p = document.getElementById("notice");
  p.textContent = text || "";
  p.hidden = !text;
}

// fetch() on the API with the stored key; a 401 says so at the top of the page.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(ROOT + path, { ...options, headers });
  if (response.status === 401) {
    notice("This server needs an API key: enter yours at the top right.");
  }
  return response;
}

// The JSON of a GET, or null (with the problem shown) when the answer is not 200.
async function getJSON(path) {
  const response = await api(path);
  if (!response.ok) {
    if (response.status !== 401) notice(`${path}: ${response.status} ${await problem(response)}`);
    return null;
  }
  return response.json();
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.message || (typeof body.detail === "string" ? body.detail : JSON.stringify(body));
  } catch {
    return response.statusText;
  }
}

// An image from the API as an object URL (an <img src> could not send the key); null if none.
async function imageURL(path) {
  const response = await api(path);
  return response.ok ? URL.createObjectURL(await response.blob()) : null;
}

// Run step() now and then every `ms` until it returns false.
function every(ms, step) {
  const tick = async () => {
    let again = true;
    try {
      again = await step();
    } catch (error) {
      notice(String(error));
    }
    if (again !== false) setTimeout(tick, ms);
  };
  tick();
}

// --- DOM helpers ----------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function jobLink(job) {
  return el("a", { href: `${ROOT}/ui/jobs/${encodeURIComponent(job.id)}` }, job.id.slice(0, 8));
}

function statusBadge(status) {
  return el("span", { class: `status ${status}` }, status);
}

function progressBar(percent) {
  const bar = el("div", { style: `width: ${Math.max(0, Math.min(100, percent))}%` });
  return el("div", { class: "progress small", title: `${percent.toFixed(0)}%` }, bar);
}

// The phase a running job is in besides training: "evaluating", "scoring samples 45% (step 360
// of 800)"; "" while it trains or once it has ended.
function phaseText(job) {
  const p = job.progress;
  if (job.status !== "running" || !p.phase || p.phase === "training") return "";
  if (p.phase === "loading") return "loading data";
  if (!p.phase_steps) return p.phase;
  return `${p.phase} ${p.phase_percent.toFixed(0)}% (step ${p.phase_step} of ${p.phase_steps})`;
}

// A running phase counted in steps (scoring samples) shows its own percent; else training's.
function shownPercent(job) {
  const p = job.progress;
  return job.status === "running" && p.phase_steps ? p.phase_percent : p.percent;
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function number(value) {
  if (typeof value !== "number") return JSON.stringify(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1e4 || Math.abs(value) < 1e-3 ? value.toExponential(3) : value.toFixed(4);
}

// An axis label: 4 significant digits at most (0.001, not 0.0010000000000000002).
function tick(value) {
  return value == null ? "" : String(Number(value.toPrecision(4)));
}

// The result's headline figure: test accuracy, else test MSE, else the first test figure.
function headline(result) {
  if (!result) return "";
  const key = ["test_accuracy", "test_accuracy_mean", "test_mse", "test_mse_mean", "test_elbo"]
    .find((k) => k in result) || Object.keys(result).find((k) => k.startsWith("test_"));
  return key ? `${key} ${number(result[key])}` : "";
}

function datasetOf(job) {
  return job.spec && job.spec.dataset ? job.spec.dataset.name : "";
}

// --- learning curves ------------------------------------------------------------------------

// The kind of a metric: `loss` for train_loss and val_loss, `lr` for every learning rate,
// the name itself for the rest (a GAN's d_loss, g_loss...).
function kindOf(name) {
  if (name.startsWith("train_")) return name.slice(6);
  if (name.startsWith("val_")) return name.slice(4);
  if (name === "lr" || name.startsWith("lr_")) return "lr";
  return name;
}

// Lines grouped by kind: {kind: [{label, colour, dash, points: Map(epoch -> value)}]}, one line
// per metric, per fold (cross-validation) and per job (`prefix`, `colour` when comparing).
function curveLines(history, groups = {}, { prefix = "", colour = null } = {}) {
  const folded = history.some((row) => "fold" in row);
  const byLine = new Map();
  for (const row of history) {
    for (const [name, value] of Object.entries(row)) {
      if (META.has(name) || typeof value !== "number") continue;
      const fold = folded ? ` fold ${row.fold + 1}` : "";
      const label = `${prefix}${name}${fold}`;
      if (!byLine.has(label)) {
        const kind = kindOf(name);
        const lines = (groups[kind] = groups[kind] || []);
        const line = {
          label,
          colour: colour || COLOURS[lines.length % COLOURS.length],
          dash: name.startsWith("val_") ? [6, 4] : undefined,
          points: new Map(),
        };
        lines.push(line);
        byLine.set(label, line);
      }
      byLine.get(label).points.set(row.epoch, value);
    }
  }
  return groups;
}

// An exponential moving average of a line's values (weight `a` on the past), gaps kept.
function smoothed(values, a) {
  if (!a) return values;
  let last = null;
  return values.map((v) => {
    if (v === null) return null;
    last = last === null ? v : a * last + (1 - a) * v;
    return last;
  });
}

// Draw (or update) one chart per kind in `container`; its data-epochs says the last epoch the
// charts hold (they start at epoch 0, the initial weights, where the job has it), read from
// the charts' own data. `container.view` may ask for a log scale (kinds whose values are all
// positive) and smoothing (an exponential moving average, 0 to 0.95).
function drawCurves(container, groups) {
  const view = container.view || { log: false, smoothing: 0 };
  const kinds = Object.keys(groups).filter((k) => k !== "lr" || changes(groups[k])).sort(byKind);
  if (!kinds.length) return;
  container.charts = container.charts || {};
  if (!Object.keys(container.charts).length) container.replaceChildren();
  let epochs = 0;
  for (const kind of kinds) {
    const lines = groups[kind];
    const x = [...new Set(lines.flatMap((line) => [...line.points.keys()]))].sort((a, b) => a - b);
    const raw = lines.map((line) => x.map((e) => line.points.get(e) ?? null));
    const data = [x, ...raw.map((values) => smoothed(values, view.smoothing))];
    const log = view.log && raw.flat().every((v) => v === null || v > 0);
    const shape = lines.map((line) => line.label).join("|") + (log ? "|log" : "");
    let chart = container.charts[kind];
    if (chart && chart.shape !== shape) {
      chart.destroy();
      chart = null;
    }
    if (!chart) {
      const box = el("div", { class: "chart", dataset: { kind } });
      container.append(box);
      chart = new uPlot(chartOptions(kind, lines, log), data, box);
      chart.shape = shape;
      container.charts[kind] = chart;
    } else {
      chart.setData(data);
    }
    chart.raw = raw;
    epochs = Math.max(epochs, ...chart.data[0]);
  }
  container.dataset.epochs = String(epochs);
}

// A learning rate is worth a chart only when a schedule changes it.
function changes(lines) {
  return lines.some((line) => new Set(line.points.values()).size > 1);
}

// loss and accuracy first, learning rates last, the rest by name.
function byKind(a, b) {
  const rank = (k) => (k === "loss" ? 0 : k === "accuracy" ? 1 : k === "lr" ? 3 : 2);
  return rank(a) - rank(b) || a.localeCompare(b);
}

function chartOptions(kind, lines, log = false) {
  return {
    title: log ? `${kind} (log scale)` : kind,
    width: 440,
    height: 260,
    scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
    legend: { live: false },
    axes: [{ label: "epoch" }, { size: 60, values: (u, ticks) => ticks.map(tick) }],
    series: [
      { label: "epoch" },
      ...lines.map((line) => ({
        label: line.label,
        stroke: line.colour,
        width: 2,
        dash: line.dash,
        spanGaps: true,
        points: { size: 5 },
      })),
    ],
  };
}
