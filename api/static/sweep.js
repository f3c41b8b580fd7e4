// One sweep: progress and cells from GET /sweeps/{id}, the table from /table, the figures from
// /plots, refreshed every 2 s while it runs and as its jobs end.
"use strict";

const SWEEP = document.getElementById("sweep").dataset.sweepId;
const BASE = `/sweeps/${encodeURIComponent(SWEEP)}`;
let shownEnded = -1;

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
    if (table) drawTable(table);
    await drawFigures();
  }
  return !FINISHED.has(sweep.status);
}

download(document.getElementById("csv"), `${BASE}/table?format=csv`, `sweep-${SWEEP}.csv`);
download(document.getElementById("markdown"), `${BASE}/table?format=markdown`, `sweep-${SWEEP}.md`);
download(document.getElementById("latex"), `${BASE}/table?format=latex`, `sweep-${SWEEP}.tex`);
download(document.getElementById("report"), `${BASE}/report.zip`, `sweep-${SWEEP}.zip`);
every(2000, refresh);
