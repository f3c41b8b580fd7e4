"""Verb calls within the API's memory budget (ANNLAB_API_MEMORY): a call whose estimate is
over it is a 422 naming the field, on the fast path as on the route, and calls running at
once hold no more than the budget together."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.serving import ModelCache
from core.settings import get_settings
from tests.api.test_auth import make_key
from tests.api.test_fastpath import MLP, post, routed, train
from tests.conftest import api_client, migrate

BUDGET = 8 * 2**20


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('verb_memory') / 'annlab.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[TestClient]:
    with api_client(database_url=url, key_cache_seconds=0) as client:
        cache = client.app.state.models
        settings = get_settings().model_copy(update={"api_memory_bytes": BUDGET})
        client.app.state.models = ModelCache(settings)
        try:
            yield client
        finally:
            client.app.state.models = cache


@pytest.fixture(scope="module")
def models(client: TestClient, url: str) -> dict[str, Any]:
    key = make_key(url, "carol")
    return {
        "key": key,
        "mlp": train(client, url, key, MLP),
        "ae": train(client, url, key, {**MLP, "family": "ae"}),
    }


def images(n: int) -> list:
    return np.random.default_rng(0).random((n, 64)).round(3).tolist()


def test_a_call_over_the_budget_is_refused_naming_the_field(
    client: TestClient, models: dict
) -> None:
    key, predict = models["key"], f"/models/{models['mlp']}/predict"
    assert post(client, predict, {"inputs": images(4)}, key).status_code == 200  # loaded
    big = {"inputs": images(5000)}
    got = post(client, predict, big, key)  # the fast path declines; the route refuses
    with routed(client):
        want = post(client, predict, big, key)
    assert got.status_code == 422, got.text
    assert (got.status_code, got.content) == (want.status_code, want.content)
    problem = got.json()["detail"][0]
    assert problem["field"] == "inputs"
    assert "GiB" in problem["message"] and "ANNLAB_API_MEMORY" in problem["message"]
    encode = post(client, f"/models/{models['ae']}/encode", big, key)
    assert encode.status_code == 422 and encode.json()["detail"][0]["field"] == "inputs"
    sample = client.get(f"/models/{models['ae']}/images/reconstructions.png", headers=key)
    assert sample.status_code == 200


def test_concurrent_calls_hold_no_more_than_the_budget(client: TestClient, models: dict) -> None:
    key, predict = models["key"], f"/models/{models['mlp']}/predict"
    gate = client.app.state.models.gate
    body = {"inputs": images(500)}  # over max_batch: each call runs alone, on the threadpool
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(client, predict, body, key), range(16)))
    assert all(a.status_code == 200 for a in answers), answers[0].text
    assert 0 < gate.peak <= gate.capacity == BUDGET
    assert gate.held == 0
