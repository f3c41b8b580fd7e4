"""The predict fast path (api/fastpath.py): on a database of its own, with API keys. Where it
answers, its answer is the route's byte for byte; where anything is off (a model not loaded
yet, another owner, an unknown or revoked key, a body the route refuses) it declines and the
route answers as it would without it; its calls are counted and logged under the route."""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.fastpath import FastPredict
from core import keys
from core.db import session_scope
from core.settings import get_settings
from tests.api.test_auth import make_key
from tests.conftest import api_client, migrate
from workers.runner import run_job

JSON, TEXT = {"content-type": "application/json"}, {"content-type": "text/plain"}
MLP = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}
METRICS_KEY = "scraper-" + "m" * 24


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('fastpath') / 'annlab.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[TestClient]:
    with api_client(database_url=url, key_cache_seconds=0) as client:
        yield client


def train(client: TestClient, url: str, headers: dict[str, str], document: dict) -> str:
    job = client.post("/jobs", json=document, headers=headers).json()
    settings = get_settings().model_copy(update={"database_url": url})
    assert run_job(job["id"], settings=settings, worker="here") == "succeeded"
    return job["id"]


@pytest.fixture(scope="module")
def owners(client: TestClient, url: str) -> dict[str, Any]:
    """Alice's digits MLP (not loaded yet) and autoencoder, and the keys of alice and bob."""
    alice, bob = make_key(url, "alice"), make_key(url, "bob")
    mlp = train(client, url, alice, MLP)
    ae = train(client, url, alice, {**MLP, "family": "ae"})
    return {"alice": alice, "bob": bob, "mlp": mlp, "ae": ae}


def fast_path(client: TestClient) -> FastPredict:
    layer = client.app.middleware_stack
    while not isinstance(layer, FastPredict):
        layer = layer.app
    return layer


@contextmanager
def routed(client: TestClient) -> Iterator[None]:
    """Every predict call through the FastAPI route (ANNLAB_FAST_PREDICT=false)."""
    overrides = client.app.dependency_overrides
    settings = overrides[get_settings]
    off = settings().model_copy(update={"fast_predict": False})
    overrides[get_settings] = lambda: off
    try:
        yield
    finally:
        overrides[get_settings] = settings


def post(client: TestClient, path: str, body: Any, headers: dict[str, str], **kw: Any) -> Any:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={**headers, **kw})
    return client.post(path, json=body, headers=headers)


def requests_counted(client: TestClient) -> float:
    """annlab_http_requests_total for predict calls answered 200, as /metrics says to a scraper
    with the metrics key."""
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert scraped.status_code == 200
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "annlab_http_requests_total" and labels == {
                "method": "POST",
                "route": "/models/{job_id}/predict",
                "status": "200",
            }:
                return sample.value
    return 0.0


def test_its_answers_are_the_routes_byte_for_byte(client: TestClient, owners: dict) -> None:
    fast, alice = fast_path(client), owners["alice"]
    predict = f"/models/{owners['mlp']}/predict"
    rng = np.random.default_rng(0)
    bodies: list[dict[str, Any]] = [
        {"inputs": rng.random((1 + k % 3, 8, 8)).round(4).tolist()} for k in range(4)
    ]
    bodies.append({"inputs": (rng.random((2, 64)) * 16).round(1).tolist(), "raw": True})
    bodies.append({"inputs": [[0, 1] * 32], "attention": False})  # flat, integers

    answered = fast.answered
    first = post(client, predict, bodies[0], alice)  # loads the model: the route's work
    assert first.status_code == 200 and fast.answered == answered
    for body in bodies:
        with routed(client):
            want = post(client, predict, body, alice)
        assert fast.answered == answered, "switched off, it answers nothing"
        got = post(client, predict, body, alice)
        assert fast.answered == answered + 1
        answered += 1
        assert got.status_code == want.status_code == 200
        assert got.content == want.content
        assert got.headers["content-type"] == want.headers["content-type"]
        assert len(got.json()["outputs"]) == len(body["inputs"])


def test_it_declines_what_the_route_must_answer(client: TestClient, owners: dict) -> None:
    fast, alice, bob = fast_path(client), owners["alice"], owners["bob"]
    predict = f"/models/{owners['mlp']}/predict"
    good = {"inputs": [[0.5] * 64]}
    assert post(client, predict, good, alice).status_code == 200  # cached from here on
    assert post(client, f"/models/{owners['ae']}/encode", good, alice).status_code == 200
    cases = [
        # (what, path, body, headers, extra headers, status, field named)
        ("another owner", predict, good, bob, {}, 404, None),
        ("an unknown key", predict, good, {"X-API-Key": "annlab_nope"}, {}, 401, None),
        ("no key", predict, good, {}, {}, 401, None),
        ("short inputs", predict, {"inputs": [[0.5] * 63]}, alice, {}, 422, "inputs"),
        ("strings", predict, {"inputs": [["x"] * 64]}, alice, {}, 422, "inputs"),
        ("too large", predict, {"inputs": [[2e6] * 64], "raw": True}, alice, {}, 422, "inputs"),
        ("no inputs", predict, {"inputs": []}, alice, {}, 422, "inputs"),
        ("attention", predict, {**good, "attention": True}, alice, {}, 422, "attention"),
        ("an unknown field", predict, {**good, "colour": 1}, alice, {}, 422, "colour"),
        ("not JSON", predict, b'{"inputs": [', alice, JSON, 422, "body"),
        ("text", predict, json.dumps(good).encode(), alice, TEXT, None, None),
        ("no predict", f"/models/{owners['ae']}/predict", good, alice, {}, 404, None),
        ("no such model", "/models/" + "0" * 32 + "/predict", good, alice, {}, 404, None),
    ]
    for what, path, body, headers, extra, status, field in cases:
        answered = fast.answered
        got = post(client, path, body, headers, **extra)
        assert fast.answered == answered, f"{what}: the route answers"
        with routed(client):
            want = post(client, path, body, headers, **extra)
        assert (got.status_code, got.json()) == (want.status_code, want.json()), what
        if status is not None:
            assert got.status_code == status, (what, got.text)
        if field is not None:
            assert got.json()["detail"][0]["field"] == field, (what, got.text)


def test_a_revoked_key_is_refused_on_the_fast_path(client: TestClient, url: str, owners: dict):
    carol = make_key(url, "carol")
    job_id = train(client, url, carol, {**MLP, "train": {"epochs": 1, "seed": 1}})
    predict, body = f"/models/{job_id}/predict", {"inputs": [[0.5] * 64]}
    fast = fast_path(client)
    assert post(client, predict, body, carol).status_code == 200  # loaded
    answered = fast.answered
    assert post(client, predict, body, carol).status_code == 200
    assert fast.answered == answered + 1
    with session_scope(url) as session:
        assert keys.revoke(session, "carol")
    refused = post(client, predict, body, carol)
    assert refused.status_code == 401 and fast.answered == answered + 1


def test_its_calls_are_counted_and_logged_under_the_route(
    url: str, owners: dict, capsys: pytest.CaptureFixture
) -> None:
    alice, job_id = owners["alice"], owners["mlp"]
    with api_client(
        database_url=url,
        key_cache_seconds=0,
        log_format="json",
        metrics_key=SecretStr(METRICS_KEY),
    ) as client:
        fast = fast_path(client)
        post(client, f"/models/{job_id}/predict", {"inputs": [[0.5] * 64]}, alice)
        before, answered = requests_counted(client), fast.answered
        for _ in range(3):
            post(client, f"/models/{job_id}/predict", {"inputs": [[0.5] * 64]}, alice)
        assert fast.answered == answered + 3
        assert requests_counted(client) == before + 3
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    logged = [
        line
        for line in lines
        if line["logger"] == "annlab.http" and line["route"] == "/models/{job_id}/predict"
    ]
    assert len(logged) >= 4 and all(line["job_id"] == job_id for line in logged)
    assert all(line["status"] == 200 and line["ms"] > 0 for line in logged)
    # uvicorn's access log says nothing that line does not (and is silenced).
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    logging.getLogger("uvicorn.access").info("GET / 200")
    assert "GET / 200" not in capsys.readouterr().err
