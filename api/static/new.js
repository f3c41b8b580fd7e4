// Submit a job document as typed (POST /jobs); a 422 lists each failing field. The examples
// are the ones the OpenAPI document carries for POST /jobs, one per family.
"use strict";

const textarea = document.getElementById("document");
const exampleSelect = document.getElementById("example");
let examples = {};

async function loadExamples() {
  const response = await fetch(`${ROOT}/openapi.json`);
  if (!response.ok) return;
  const operation = (await response.json()).paths["/jobs"].post;
  examples = operation.requestBody.content["application/json"].examples || {};
  exampleSelect.replaceChildren(
    el("option", { value: "" }, "(choose a family)"),
    ...Object.keys(examples).map((name) => el("option", { value: name }, name)),
  );
}

exampleSelect.addEventListener("change", () => {
  const example = examples[exampleSelect.value];
  if (example) textarea.value = JSON.stringify(example.value, null, 2);
});

function showErrors(message, fieldErrors = []) {
  document.getElementById("errors").hidden = !message;
  document.getElementById("errors-message").textContent = message || "";
  document.getElementById("error-list").replaceChildren(
    ...fieldErrors.map((e) => el("li", { dataset: { field: e.field } }, el("code", {}, e.field), `: ${e.message}`)),
  );
}

document.getElementById("submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showErrors(null);
  const response = await api("/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: textarea.value,
  });
  if (response.status === 202) {
    const job = await response.json();
    location.href = `${ROOT}/ui/jobs/${encodeURIComponent(job.id)}`;
  } else if (response.status === 422) {
    const body = await response.json();
    const fields = Array.isArray(body.detail) ? body.detail : [];
    showErrors(fields.length ? "422: the document has errors" : `422: ${body.detail}`, fields);
  } else {
    showErrors(`${response.status}: ${await problem(response)}`);
  }
});

loadExamples();
