// The sweep list: GET /sweeps every 2 s.
"use strict";

function sweepRow(sweep) {
  const ended = sweep.counts.succeeded + sweep.counts.failed + sweep.counts.cancelled;
  const link = el("a", { href: `${ROOT}/ui/sweeps/${encodeURIComponent(sweep.id)}` }, sweep.id.slice(0, 8));
  return el(
    "tr",
    { dataset: { sweepId: sweep.id, status: sweep.status } },
    el("td", {}, link),
    el("td", {}, sweep.families.filter((f, i, all) => all.indexOf(f) === i).join(", ")),
    el("td", {}, statusBadge(sweep.status)),
    el("td", {}, progressBar((100 * ended) / Math.max(1, sweep.n_jobs))),
    el("td", {}, `${sweep.cells_done}/${sweep.n_cells}`),
    el("td", {}, `${ended}/${sweep.n_jobs}`),
    el("td", {}, sweep.status === "running" ? seconds(sweep.eta_seconds) : ""),
    el("td", { title: sweep.created_at }, new Date(sweep.created_at).toLocaleString()),
  );
}

async function refresh() {
  const page = await getJSON("/sweeps?limit=50");
  if (!page) return;
  document.querySelector("#sweeps tbody").replaceChildren(...page.items.map(sweepRow));
  document.getElementById("empty").hidden = page.items.length > 0;
  document.getElementById("count").textContent = `${page.total} sweeps`;
}

every(2000, refresh);
