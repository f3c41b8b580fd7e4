// One job: GET /jobs/{id} and its metrics every 1.5 s until it ends; its pictures as epochs end,
// and the model's once it exists.
"use strict";

const jobId = document.getElementById("job").dataset.jobId;
const path = `/jobs/${encodeURIComponent(jobId)}`;
const curves = document.getElementById("curves");
let specShown = false;
let picturesAt = null; // the epoch the pictures shown were drawn at
let lastHistory = null;
curves.view = { log: false, smoothing: 0 };

function showJob(job) {
  const p = job.progress;
  document.getElementById("status").replaceChildren(statusBadge(job.status));
  document.getElementById("summary").textContent = [
    `${job.family} on ${datasetOf(job)}`,
    job.n_params ? `${job.n_params.toLocaleString()} parameters` : "",
    job.attempts > 1 ? `attempt ${job.attempts}` : "",
    job.rerun_of ? `reruns ${job.rerun_of.slice(0, 8)}` : "",
    job.started_at ? `started ${new Date(job.started_at).toLocaleString()}` : "",
    job.started_at && job.finished_at
      ? `took ${seconds((Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000)}`
      : "",
  ].filter(Boolean).join(" · ");
  const percent = shownPercent(job);
  document.getElementById("bar").style.width = `${percent}%`;
  document.getElementById("progress-text").textContent = [
    `${percent.toFixed(0)}%`,
    p.epochs ? `epoch ${p.epoch} of ${p.epochs}` : "",
    phaseText(job),
    job.status === "running" && p.eta_seconds !== null ? `about ${seconds(p.eta_seconds)} left` : "",
  ].filter(Boolean).join(" · ");
  const error = document.getElementById("error");
  error.textContent = job.error || "";
  error.hidden = !job.error;
  document.getElementById("cancel").hidden = FINISHED.has(job.status);
  document.getElementById("rerun").hidden = !FINISHED.has(job.status);
  if (job.result) {
    const rows = Object.entries(job.result).map(([name, value]) =>
      el("tr", {}, el("th", {}, name), el("td", {}, number(value))));
    document.querySelector("#result tbody").replaceChildren(...rows);
  }
  if (!specShown) {
    document.getElementById("spec").textContent = JSON.stringify(job.spec, null, 2);
    document.getElementById("name").value = job.name || "";
    document.getElementById("tags").value = job.tags.join(", ");
    document.getElementById("note").value = job.note || "";
    specShown = true;
  }
  document.getElementById("provenance").textContent = JSON.stringify(job.provenance, null, 2);
}

async function showCurves() {
  const metrics = await getJSON(`${path}/metrics`);
  if (metrics && metrics.history.length) {
    lastHistory = metrics.history;
    drawCurves(curves, curveLines(metrics.history));
  }
}

// The API's own figure of the record, the GAN/VAE samples kept over epochs, and once the
// model exists, each picture its family draws (those that do not apply to it are left out).
async function showPictures(job) {
  const paths = [`${path}/plots/learning_curves.png`];
  if (job.spec.model && job.spec.model.sample_epochs) paths.push(`${path}/plots/samples.png`);
  if (job.status === "succeeded") {
    const model = await getJSON(`/models/${encodeURIComponent(jobId)}`);
    for (const name of (model && model.images) || []) {
      paths.push(`/models/${encodeURIComponent(jobId)}/images/${name}.png`);
    }
  }
  const figures = [];
  for (const picture of paths) {
    const url = await imageURL(picture);
    if (url) {
      const name = picture.split("/").pop();
      figures.push(el("figure", {}, el("img", { src: url, alt: name }), el("figcaption", {}, picture)));
    }
  }
  if (figures.length) document.getElementById("pictures").replaceChildren(...figures);
}

every(1500, async () => {
  const job = await getJSON(path);
  if (!job) return false; // the problem is shown; reload to try again
  showJob(job);
  await showCurves();
  if (!FINISHED.has(job.status)) {
    const epoch = Number(curves.dataset.epochs);
    if (lastHistory && epoch !== picturesAt) {
      picturesAt = epoch; // drawn again as epochs end, while it trains
      await showPictures(job);
    }
    return true;
  }
  await showPictures(job);
  return false; // it ended: nothing changes any more
});

document.getElementById("cancel").addEventListener("click", async () => {
  const response = await api(`${path}/cancel`, { method: "POST" });
  if (!response.ok) notice(`cancel: ${response.status} ${await problem(response)}`);
});

document.getElementById("rerun").addEventListener("click", async () => {
  const response = await api(`${path}/rerun`, { method: "POST" });
  if (response.ok) location.href = `${ROOT}/ui/jobs/${encodeURIComponent((await response.json()).id)}`;
  else notice(`run again: ${response.status} ${await problem(response)}`);
});

function redrawCurves() {
  curves.view = {
    log: document.getElementById("log-scale").checked,
    smoothing: Number(document.getElementById("smoothing").value),
  };
  if (lastHistory) drawCurves(curves, curveLines(lastHistory));
}
document.getElementById("log-scale").addEventListener("change", redrawCurves);
document.getElementById("smoothing").addEventListener("input", redrawCurves);

document.getElementById("labels").addEventListener("submit", async (event) => {
  event.preventDefault();
  const tags = document.getElementById("tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  const note = document.getElementById("note").value;
  const name = document.getElementById("name").value.trim();
  const response = await api(path, {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: name || null, tags, note: note || null }),
  });
  const saved = document.getElementById("labels-saved");
  if (response.ok) saved.textContent = "saved";
  else notice(`tags and note: ${response.status} ${await problem(response)}`);
});
