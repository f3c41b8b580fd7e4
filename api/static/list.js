// The job list: GET /jobs every 2 s; ticked jobs go to the compare page.
"use strict";

const statusFilter = document.getElementById("status");
const familyFilter = document.getElementById("family");
const datasetFilter = document.getElementById("dataset");
const search = document.getElementById("search");
const sweepFilter = document.getElementById("sweep");
sweepFilter.value = new URLSearchParams(location.search).get("sweep") || ""; // /ui?sweep=ID
const compareButton = document.getElementById("compare");
const selected = new Set();

function row(job) {
  const tick = el("input", { type: "checkbox", "aria-label": `select ${job.id}` });
  tick.checked = selected.has(job.id);
  tick.addEventListener("change", () => {
    if (tick.checked) selected.add(job.id);
    else selected.delete(job.id);
    compareButton.disabled = selected.size < 2;
  });
  const p = job.progress;
  return el(
    "tr",
    { dataset: { jobId: job.id, status: job.status } },
    el("td", {}, tick),
    el("td", {}, jobLink(job), job.name ? el("span", { class: "job-name" }, ` ${job.name}`) : null),
    el("td", {}, job.family),
    el("td", {}, datasetOf(job)),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, progressBar(shownPercent(job))),
    el("td", {}, [p.epochs ? `${p.epoch}/${p.epochs}` : String(p.epoch), phaseText(job)].filter(Boolean).join(", ")),
    el("td", {}, job.status === "running" ? seconds(p.eta_seconds) : ""),
    el("td", {}, job.error ? el("span", { class: "error", title: job.error }, brief(job.error)) : headline(job.result)),
    el("td", { class: "tags" }, ...job.tags.map((t) => el("span", { class: "tag" }, t))),
    el("td", {}, job.sweep_id ? el("a", { href: `${ROOT}/ui/sweeps/${encodeURIComponent(job.sweep_id)}` }, job.sweep_id.slice(0, 8)) : ""),
    el("td", { title: job.created_at }, new Date(job.created_at).toLocaleString()),
  );
}

function brief(error) {
  return error.length > 48 ? `${error.slice(0, 47)}…` : error;
}

async function refresh() {
  const query = new URLSearchParams({ limit: "50" });
  if (statusFilter.value) query.set("status", statusFilter.value);
  if (familyFilter.value) query.set("family", familyFilter.value);
  if (datasetFilter.value.trim()) query.set("dataset", datasetFilter.value.trim());
  if (search.value.trim()) query.set("q", search.value.trim());
  if (sweepFilter.value.trim()) query.set("sweep", sweepFilter.value.trim());
  const page = await getJSON(`/jobs?${query}`);
  if (!page) return;
  document.querySelector("#jobs tbody").replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  const total = page.total ?? page.items.length;
  document.getElementById("count").textContent =
    total > page.items.length ? `newest ${page.items.length} of ${total}` : `${total} jobs`;
}

for (const filter of [statusFilter, familyFilter]) filter.addEventListener("change", refresh);
for (const box of [datasetFilter, search, sweepFilter]) box.addEventListener("input", refresh);
compareButton.addEventListener("click", () => {
  location.href = `${ROOT}/ui/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`;
});
every(2000, refresh);
