"""The Python client (annlab.client): that it covers the OpenAPI document (a method per operation,
taking each of its parameters, sending requests its schemas accept), its errors, its retries
(idempotent ones repeated, the others not) and its paging, against the real app in process."""

import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from annlab.client import (
    APIError,
    Client,
    Conflict,
    NotFound,
    Unauthorized,
    Unreachable,
    ValidationError,
    describe_progress,
)
from api.main import app
from core import keys
from core.db import session_scope
from tests.conftest import ROOT, api_client, migrate
from tests.service import Service, free_port

DOC = app.openapi()
OPERATIONS = {
    op["operationId"]: (method.upper(), path, op)
    for path, item in DOC["paths"].items()
    for method, op in item.items()
}
# Bodies taken whole, as the JSON document a user writes (a job, a sweep); every other body's
# properties are keyword arguments.
WHOLE_DOCUMENT = {"create_job", "create_sweep", "architecture_summary"}
JOB = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}
ID = "0123456789abcdef0123456789abcdef"
IMAGE = [[0.0] * 8] * 8


def python_name(name: str) -> str:
    return name.lower().replace("-", "_")


def schema_of(reference: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in reference:
        return DOC["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]
    return reference


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_every_operation_has_a_method_taking_its_parameters(operation_id: str) -> None:
    _, _, operation = OPERATIONS[operation_id]
    method = getattr(Client, operation_id, None)
    assert callable(method), f"Client has no method {operation_id}"
    parameters = inspect.signature(method).parameters
    required: dict[str, bool] = {}
    for parameter in operation.get("parameters", []):
        required[python_name(parameter["name"])] = parameter.get("required", False)
    if body := operation.get("requestBody"):
        schema = schema_of(next(iter(body["content"].values()))["schema"])
        if operation_id in WHOLE_DOCUMENT:
            required["document"] = True
        else:
            for name in schema["properties"]:
                required[name] = name in schema.get("required", [])
    for name, needed in required.items():
        assert name in parameters, f"{operation_id} takes no {name!r}"
        has_default = parameters[name].default is not inspect.Parameter.empty
        # What the API requires has no default; path parameters with a usual value may.
        if needed and operation_id not in ("read_job_plot", "read_sweep_plot"):
            assert not has_default, f"{operation_id}: {name} is required by the API"
        if not needed:
            assert has_default, f"{operation_id}: {name} is optional in the API"


# One call per operation, every optional argument given, so each one's place is checked.
CALLS: dict[str, Callable[[Client], Any]] = {
    "create_job": lambda c: c.create_job(JOB),
    "list_jobs": lambda c: c.list_jobs(
        status="queued", family="mlp", dataset="digits", tag="a", q="x", limit=5, offset=10
    ),
    "update_job": lambda c: c.update_job(ID, name="adam", tags=["baseline"], note="Figure 2"),
    "compare_jobs": lambda c: c.compare_jobs([ID, ID[::-1]]),
    "read_job": lambda c: c.read_job(ID),
    "read_metrics": lambda c: c.read_metrics(ID),
    "read_job_plot": lambda c: c.read_job_plot(ID, "samples", n=4),
    "rerun_job": lambda c: c.rerun_job(ID),
    "cancel_job": lambda c: c.cancel_job(ID),
    "create_sweep": lambda c: c.create_sweep(
        {"base": JOB, "axes": {"model.hidden.0": [25, 50]}, "repeats": 2}
    ),
    "list_sweeps": lambda c: c.list_sweeps(family="lstm", limit=3, offset=1),
    "read_sweep": lambda c: c.read_sweep(ID),
    "cancel_sweep": lambda c: c.cancel_sweep(ID),
    "read_sweep_table": lambda c: c.read_sweep_table(ID, "latex", precision=4),
    "read_sweep_report": lambda c: c.read_sweep_report(ID, precision=2),
    "read_sweep_plot": lambda c: c.read_sweep_plot(
        ID, "curves", metric="val_loss", panel="model.hidden.0", scale="log"
    ),
    "list_models": lambda c: c.list_models(family="cnn", limit=2, offset=0),
    "read_model": lambda c: c.read_model(ID),
    "download_checkpoint": lambda c: c.download_checkpoint(ID),
    "predict": lambda c: c.predict(ID, [IMAGE], raw=True, attention=True),
    "forecast": lambda c: c.forecast(ID, 20, history=[0.1, 0.2, 0.3]),
    "reconstruct": lambda c: c.reconstruct(ID, [IMAGE], raw=False, mask=IMAGE, steps=5, seed=1),
    "encode": lambda c: c.encode(ID, [IMAGE], raw=True),
    "decode": lambda c: c.decode(ID, [[0.0, 1.0]], mean_of="train"),
    "sample": lambda c: c.sample(ID, 4, seed=3, steps=10, latents=[[0.0, 0.5]]),
    "interpolate": lambda c: c.interpolate(
        ID, start=[0.0, 1.0], end=[1.0, 0.0], inputs=[IMAGE, IMAGE], steps=5, seed=2, raw=True
    ),
    "score": lambda c: c.score(ID, [IMAGE], raw=True, seed=1),
    "recall": lambda c: c.recall(
        ID,
        [[1, -1, 1]],
        patterns=[0],
        noise=0.1,
        seed=1,
        mode="sync",
        max_iterations=10,
        trajectory=False,
    ),
    "attractors": lambda c: c.attractors(ID, mode="async", max_iterations=20, seed=0),
    "read_image": lambda c: c.read_image(ID, "filters", n=8, seed=1, steps=50, layer=2),
    "list_datasets": lambda c: c.list_datasets(),
    "upload_dataset": lambda c: c.upload_dataset(
        b"1\n2\n3\n", "wave", kind="regression", filename="wave.csv"
    ),
    "optimizer_trace": lambda c: c.optimizer_trace(
        optimizer={"name": "adam", "lr": 0.1}, function="abs", height=0.5, x0=2.0, steps=10
    ),
    "optimizer_trace_png": lambda c: c.optimizer_trace_png(
        optimizer={"name": "momentum", "lr": 1.0, "momentum": 0.9}, function="bump", steps=50
    ),
    "architecture_summary": lambda c: c.architecture_summary(JOB),
    "architecture_forward": lambda c: c.architecture_forward(
        [[1.0, 2.0, 3.0]], [{"type": "conv1d", "filters": 1, "kernel": 2}], seed=0
    ),
    "healthz": lambda c: c.healthz(),
    "read_metrics_text": lambda c: c.read_metrics_text(),
}


def validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for({**schema, "components": DOC["components"]})


def check_request(operation_id: str, request: httpx.Request) -> None:
    """The request is one its operation accepts: method, path, every query value and header,
    and the body against the operation's schema."""
    method, template, operation = OPERATIONS[operation_id]
    assert request.method == method, operation_id
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
    assert re.fullmatch(pattern, request.url.path), (operation_id, request.url.path, template)
    declared = {p["name"]: p for p in operation.get("parameters", [])}
    for name, value in request.url.params.multi_items():
        assert name in declared and declared[name]["in"] == "query", (operation_id, name)
        schema = declared[name]["schema"]
        if schema.get("type") == "array":
            schema = schema["items"]
        values: list[Any] = [value]
        try:  # a number or a boolean is text in a query
            values.append(json.loads(value))
        except ValueError:
            pass
        assert any(validator(schema).is_valid(v) for v in values), (operation_id, name, value)
    for name, parameter in declared.items():
        if parameter["in"] == "header":  # Idempotency-Key: sent on every creation
            assert name in request.headers, (operation_id, name)
    body = operation.get("requestBody")
    if body is None:
        assert not request.content, operation_id
        return
    content_type, media = next(iter(body["content"].items()))
    assert request.headers["content-type"].startswith(content_type), operation_id
    if content_type == "application/json":
        sent_body = json.loads(request.content)
        errors = [e.message for e in validator(media["schema"]).iter_errors(sent_body)]
        assert not errors, (operation_id, errors)
    else:
        schema = schema_of(media["schema"])
        sent = set(re.findall(rb'; name="([^"]+)"', request.content))
        assert {s.decode() for s in sent} == set(schema["properties"]), operation_id


def answer_for(operation_id: str) -> httpx.Response:
    _, _, operation = OPERATIONS[operation_id]
    status, response = next((c, r) for c, r in operation["responses"].items() if c[0] == "2")
    content = response.get("content", {"application/json": {}})
    if "application/json" in content and operation_id != "read_sweep_table":
        return httpx.Response(int(status), json={"items": [], "total": 0})
    return httpx.Response(int(status), content=b"a,b\n")


def test_every_operation_is_called_as_its_schema_says() -> None:
    assert set(CALLS) == set(OPERATIONS), "CALLS must hold one call per operation"
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        request.read()
        sent.append(request)
        return answer_for(current)

    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(record))
    client = Client("http://api.test", http=http)
    for current, call in CALLS.items():
        sent.clear()
        call(client)
        assert len(sent) == 1, current
        check_request(current, sent[0])


def test_the_contract_check_can_fail() -> None:
    """A request the schema refuses is caught: the check above is not vacuous."""
    request = httpx.Request(
        "POST", f"http://api.test/models/{ID}/sample", json={"n": 5000, "colour": "red"}
    )
    with pytest.raises(AssertionError):
        check_request("sample", request)
    with pytest.raises(AssertionError):
        check_request("read_job", httpx.Request("GET", f"http://api.test/jobs/{ID}?verbose=1"))


# --- against the real app in process --------------------------------------------------------


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'annlab.db'}"
    migrate(url)
    return url


@pytest.fixture
def http(url: str) -> Iterator[TestClient]:
    with api_client(database_url=url) as test_client:
        yield test_client


@pytest.fixture
def api(http: TestClient) -> Client:
    return Client(http=http, retry_wait=0.01)


def test_a_bad_document_raises_a_validation_error_naming_the_field(api: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        api.create_job({**JOB, "train": {"epochs": 0}})
    error = caught.value
    assert isinstance(error, APIError) and error.status_code == 422
    assert error.field == "train.epochs"
    assert [e["field"] for e in error.errors] == ["train.epochs"]
    assert str(error).startswith("422: train.epochs: ")
    with pytest.raises(ValidationError, match=r"^422: family: "):
        api.create_job({"family": "perceptron", "dataset": {"name": "digits"}})


def test_missing_and_ended_jobs_raise_not_found_and_conflict(api: Client) -> None:
    with pytest.raises(NotFound) as missing:
        api.read_job(ID)
    assert missing.value.status_code == 404 and missing.value.field is None
    assert str(missing.value) == f"404: no job {ID!r}"
    job = api.create_job(JOB)
    assert api.cancel_job(job["id"])["status"] == "cancelled"
    with pytest.raises(Conflict, match="already ended cancelled"):
        api.cancel_job(job["id"])
    assert api.wait(job["id"], progress=False)["status"] == "cancelled"


def test_wait_gives_up_after_its_timeout(api: Client) -> None:
    job = api.create_job(JOB)  # no worker runs here: it stays queued
    with pytest.raises(TimeoutError, match="still queued"):
        api.wait(job["id"], progress=False, poll=0.05, timeout=0.2)


def drop_first_answer(http: TestClient, path: str) -> list[httpx.Request]:
    """The first POST to `path` reaches the app, which answers, and then the connection
    drops before the answer arrives (what a client sees when a proxy or network fails)."""
    seen: list[httpx.Request] = []

    def on_request(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == path:
            seen.append(request)

    def on_response(response: httpx.Response) -> None:
        request = response.request
        if request.method == "POST" and request.url.path == path and len(seen) == 1:
            raise httpx.ReadError("connection reset by peer", request=request)

    http.event_hooks = {"request": [on_request], "response": [on_response]}
    return seen


def test_a_retried_submission_queues_one_job(api: Client, http: TestClient) -> None:
    before = api.list_jobs()["total"]
    seen = drop_first_answer(http, "/jobs")
    job = api.create_job(JOB)
    assert len(seen) == 2  # the first attempt's answer was lost, the retry got one
    after = api.list_jobs(limit=200)
    assert after["total"] == before + 1
    assert after["items"][0]["id"] == job["id"]
    keys_sent = [r.headers.get("Idempotency-Key") for r in seen]
    assert keys_sent[0] is not None and keys_sent[0] == keys_sent[1]
    # Another call is another submission: a new key, a new job.
    other = api.create_job(JOB)
    assert seen[2].headers["Idempotency-Key"] != keys_sent[0]
    assert other["id"] != job["id"] and api.list_jobs()["total"] == before + 2


def test_a_retried_sweep_queues_one_sweep(api: Client, http: TestClient) -> None:
    before = api.list_sweeps()["total"]
    seen = drop_first_answer(http, "/sweeps")
    sweep = api.create_sweep({"base": JOB, "axes": {"model.hidden.0": [8, 16]}})
    assert len(seen) == 2 and sweep["n_jobs"] == 2
    assert api.list_sweeps()["total"] == before + 1


def test_a_retried_rerun_queues_one_job(api: Client, http: TestClient) -> None:
    job = api.create_job(JOB)
    before = api.list_jobs()["total"]
    seen = drop_first_answer(http, f"/jobs/{job['id']}/rerun")
    rerun = api.rerun_job(job["id"])
    assert len(seen) == 2 and rerun["rerun_of"] == job["id"]
    assert seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]
    assert api.list_jobs()["total"] == before + 1  # the retry got the first one's job


def test_no_server_is_unreachable_after_the_retries() -> None:
    attempts: list[httpx.Request] = []
    base = f"http://127.0.0.1:{free_port()}"
    http = httpx.Client(base_url=base, event_hooks={"request": [attempts.append]})
    api = Client(base, http=http, retries=2, retry_wait=0.01)
    with pytest.raises(Unreachable):
        api.read_job(ID)
    assert len(attempts) == 3
    attempts.clear()
    with pytest.raises(Unreachable):  # never sent: even a rerun is tried again
        api.rerun_job(ID)
    assert len(attempts) == 3


def test_the_api_key_goes_with_every_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keyed.db'}"
    migrate(url)
    with session_scope(url) as session:
        key = keys.create(session, "alice")
    with api_client(database_url=url) as http:
        with pytest.raises(Unauthorized) as refused:
            Client(http=http, api_key="not-a-key").list_jobs()
        assert refused.value.status_code == 401
        with pytest.raises(Unauthorized):
            Client(http=http, api_key="").list_jobs()
        alice = Client(http=http, api_key=key)
        job = alice.create_job(JOB)
        assert job["owner_id"] == "alice" and alice.read_job(job["id"])["id"] == job["id"]


def test_the_environment_names_the_service_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANNLAB_URL", "http://annlab.example:9000/")
    monkeypatch.setenv("ANNLAB_API_KEY", "k" * 32)
    api = Client()
    assert api.base_url == "http://annlab.example:9000" and api.api_key == "k" * 32
    assert (api.http.base_url.host, api.http.base_url.port) == ("annlab.example", 9000)
    assert Client("http://other:1", api_key="x").api_key == "x"


def test_iter_jobs_walks_every_job_once_by_cursor(api: Client, http: TestClient) -> None:
    for _ in range(5):
        api.create_job({**JOB, "family": "mlp", "train": {"epochs": 2}})
    everything = api.list_jobs(limit=200)
    asked: list[httpx.Request] = []
    http.event_hooks["request"].append(asked.append)
    walked = [job["id"] for job in api.iter_jobs(page_size=2)]
    assert walked == [job["id"] for job in everything["items"]]
    assert len(walked) == everything["total"] >= 5
    # The first page has no cursor; each later one the page before's, and no count.
    assert "cursor" not in asked[0].url.params and "cursor" in asked[1].url.params
    assert {r.url.params["count"] for r in asked} == {"false"}
    queued = list(api.iter_jobs(status="queued", page_size=3))
    assert queued and {job["status"] for job in queued} == {"queued"}


def test_progress_says_epoch_step_loss_and_eta() -> None:
    running = {
        "status": "running",
        "progress": {"epoch": 2, "epochs": 3, "step": 40, "steps": 94, "eta_seconds": 75.4},
    }
    assert describe_progress(running, 0.41234) == "epoch 2/3, step 40/94, loss 0.4123, eta 1m15s"
    assert describe_progress({"status": "queued", "progress": {"epoch": 0}}) == "queued"


def test_the_client_and_cli_import_none_of_the_server() -> None:
    server = {"api", "core", "workers", "models", "torch", "sqlalchemy", "fastapi", "celery"}
    code = (
        "import sys, annlab.client, annlab.cli; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {server!r}))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert answer.stdout.strip() == "[]"


# --- against the real service -----------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.service
def test_the_readme_cnn_flow_through_the_client(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """Submit a small CNN on Fashion-MNIST, wait with the progress bar, fetch its metrics
    and picture, predict, download the weights: README's flow, with the Python client."""
    api = Client(service.url)
    datasets = {d["name"]: d for d in api.list_datasets()["items"]}
    if not datasets["fashion_mnist"]["available"]:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    job = api.create_job(
        {
            "family": "cnn",
            "dataset": {"name": "fashion_mnist", "max_train": 1000},
            "train": {"epochs": 2, "optimizer": {"name": "adam", "lr": 0.001}},
        }
    )
    assert job["status"] == "queued" and job["spec"]["train"]["batch_size"] > 0

    done = api.wait(job["id"], progress=True, poll=0.2, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    bar = capsys.readouterr().err
    assert f"cnn {job['id'][:8]}" in bar and "100%" in bar and "succeeded" in bar
    assert re.search(r"epoch [12]/2", bar), bar[-2000:]

    history = api.read_metrics(job["id"])["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert all(row["train_loss"] > 0 for row in history)
    # 1,000 training images, 6,000 to validate: validate_every "auto" validates the last epoch
    # (and epoch 0, the initial weights, always).
    assert ["val_accuracy" in row for row in history] == [True, False, True]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert api.read_job_plot(job["id"]).startswith(PNG)

    answer = api.predict(job["id"], [[[[0.0] * 28] * 28]] * 2)
    assert len(answer["outputs"]) == 2
    assert set(answer["class_names"]) <= set(datasets["fashion_mnist"]["classes"])
    assert all(abs(sum(p) - 1) < 1e-4 for p in answer["probabilities"])

    assert len(api.download_checkpoint(job["id"])) > done["n_params"] * 4
    assert job["id"] in {m["id"] for m in api.list_models(family="cnn", limit=200)["items"]}
    assert job["id"] in {j["id"] for j in api.iter_jobs(family="cnn")}
    with pytest.raises(ValidationError) as refused:
        api.predict(job["id"], [[[0.0] * 27] * 28])
    assert refused.value.field == "inputs"
