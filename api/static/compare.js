// Jobs side by side (?ids=a,b,c): their curves on shared axes, one colour per job, and what
// differs between them (the document, from here; results and provenance, from GET /jobs/compare).
"use strict";

const params = new URLSearchParams(location.search);
const ids = [...new Set(params.getAll("ids").flatMap((v) => v.split(",")).filter(Boolean))];
const curves = document.getElementById("curves");

// {"train.optimizer.lr": 0.001, ...}: a document's leaves by dotted path.
function leaves(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = JSON.stringify(value);
  }
  return out;
}

function specDifferences(jobs) {
  const flat = jobs.map((job) => leaves(job.spec));
  const paths = [...new Set(flat.flatMap(Object.keys))].sort();
  const differing = paths.filter((p) => flat.some((f) => f[p] !== flat[0][p]));
  return Object.fromEntries(differing.map((p) => [`spec.${p}`, flat.map((f) => f[p] ?? "")]));
}

function showJobs(jobs) {
  const rows = jobs.map((job, i) =>
    el(
      "tr",
      {},
      el("td", {}, el("span", { class: "swatch", style: `background: ${COLOURS[i % COLOURS.length]}` })),
      el("td", {}, jobLink(job)),
      el("td", {}, job.family),
      el("td", {}, datasetOf(job)),
      el("td", {}, statusBadge(job.status)),
      el("td", {}, headline(job.result)),
    ));
  document.querySelector("#jobs tbody").replaceChildren(...rows);
}

function showDifferences(jobs, differences) {
  const all = { ...specDifferences(jobs), ...differences };
  const head = el("tr", {}, el("th", {}), ...jobs.map((job) => el("th", {}, jobLink(job))));
  const rows = Object.entries(all).map(([name, values]) =>
    el("tr", {}, el("th", {}, name),
      ...values.map((v) => el("td", {}, typeof v === "string" ? v : number(v)))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted" }, "Nothing differs.")));
  document.querySelector("#differences tbody").replaceChildren(head, ...rows);
}

async function refresh() {
  if (ids.length < 2) {
    notice("Pick at least two jobs on the job list (or give ?ids=a,b).");
    return false;
  }
  const query = new URLSearchParams(ids.map((id) => ["ids", id]));
  const comparison = await getJSON(`/jobs/compare?${query}`);
  if (!comparison) return false;
  const { jobs, differences } = comparison;
  showJobs(jobs);
  showDifferences(jobs, differences);
  const groups = {};
  for (const [i, job] of jobs.entries()) {
    const metrics = await getJSON(`/jobs/${encodeURIComponent(job.id)}/metrics`);
    if (metrics) {
      curveLines(metrics.history, groups, {
        prefix: `${job.id.slice(0, 8)} `,
        colour: COLOURS[i % COLOURS.length],
      });
    }
  }
  drawCurves(curves, groups);
  return jobs.some((job) => !FINISHED.has(job.status)); // again while any is unfinished
}

every(2000, refresh);
