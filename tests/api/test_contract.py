"""A property-based contract test over the OpenAPI document (schemathesis): requests built from
every operation's schema, valid and not. A request the schema refuses gets a 4xx; one it
accepts is not refused for anything the schema could have said (only by a rule across fields or
against what is stored, which answers a 422 of its own type); no answer is a server error, and
every answer has a documented status, content type and shape."""

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

import models.registry  # noqa: F401 - torch loaded once here, not within a request's timeout
from api.main import app
from core.settings import get_settings
from tests.conftest import migrate

migrate(get_settings().database_url)
# A job document is the union of every family's: the coverage phase (every boundary the schema
# states, ~10,000 requests per operation that takes one) runs on every other operation, and
# those that take a job document (a sweep's base is one) are fuzzed instead.
JOB_DOCUMENTS = ["POST /jobs", "POST /architectures/summary", "POST /sweeps"]
edges = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(name=JOB_DOCUMENTS)
documents = schemathesis.openapi.from_asgi("/openapi.json", app).include(name=JOB_DOCUMENTS)
documents.config.phases.coverage.enabled = False

# The 422 types a schema-valid request may still get: rules across fields or against what is
# stored (a validator's value_error, a dataset not here, a job over the memory budget, a sweep
# cell that fails, an upload's contents).
SEMANTIC = {
    "value_error",
    "dataset_unknown",
    "dataset_unavailable",
    "too_big",
    "sweep_invalid",
    "upload_invalid",
}


def valid_data_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """positive_data_acceptance, where a 422 whose every field failed a SEMANTIC rule is an
    answer too."""
    if response.status_code == 422 and case.meta and case.meta.generation.mode.is_positive:
        if all(e["type"] in SEMANTIC for e in response.json()["detail"]):
            return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    valid_data_accepted,
]
SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def call(case: schemathesis.Case) -> None:
    if case.headers and "Idempotency-Key" in case.headers:  # a key is for one request
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    case.call_and_validate(checks=CHECKS)


@edges.parametrize()
@settings(max_examples=4, **SETTINGS)
def test_every_operation_keeps_its_documented_contract(case: schemathesis.Case) -> None:
    call(case)


@documents.parametrize()
@settings(max_examples=40, **SETTINGS)
def test_job_documents_keep_their_documented_contract(case: schemathesis.Case) -> None:
    call(case)


def body_schema(path: str, media: str = "application/json") -> Any:
    document = app.openapi()
    operation = document["paths"][path]["post"]
    schema = operation["requestBody"]["content"][media]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis's own validator


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/jobs", {"dataset": {"name": ""}, "family": "ae"}),
        ("/architectures/summary", {"dataset": {"name": ""}, "family": "ae"}),
        (
            "/jobs",
            {
                "family": "mlp",
                "dataset": {"name": "digits"},
                "train": {"optimizer": {"betas": [1e300, 0.9]}},
            },
        ),
        ("/optimizers/trace", {"optimizer": {"betas": [1e300, 1e300]}}),
        ("/optimizers/trace", {"optimizer": {"name": "lbfgs"}}),
        ("/sweeps", {"base": {}}),
        ("/sweeps", {"base": {"family": "mlp", "dataset": {"name": "digits"}}}),
        (
            "/sweeps",
            {
                "base": {"family": "mlp", "dataset": {"name": "digits"}},
                "axes": {"no such/path": [1]},
            },
        ),
    ],
)
def test_the_document_refuses_what_the_api_refuses(path: str, body: dict[str, Any]) -> None:
    assert not body_schema(path).is_valid(body)


def test_the_document_refuses_an_empty_upload() -> None:
    form = {"file": "", "name": "empty"}
    assert not body_schema("/datasets", "multipart/form-data").is_valid(form)
    assert body_schema("/datasets", "multipart/form-data").is_valid({**form, "file": "x"})
