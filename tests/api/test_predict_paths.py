"""One predict path: the family's predict verb answers every call, whichever way it comes in
(the route with batching off, the route through the batcher, the fast path), and the three
answer the same request with the same bytes, for every family with predict."""

import inspect
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import models.registry  # noqa: F401 - every family registered
from api.routes.models import verbs
from api.serving import ModelCache
from core.settings import get_settings
from models.base import REGISTRY
from models.supervised import Predict
from tests.api.test_fastpath import fast_path, routed
from tests.conftest import api_client
from workers.runner import run_job

# Small enough to train in a second on digits; a family not named here trains its defaults.
TINY: dict[str, dict[str, Any]] = {
    "mlp": {"model": {"hidden": [16]}},
    "cnn": {"model": {"conv": [{"filters": 4}], "dense": [16]}},
    "lstm": {"model": {"hidden": 8}},
    "vit": {"model": {"patch": 4, "dim": 8, "depth": 1, "heads": 2, "mlp_dim": 8}},
    "sae": {"model": {"layers": [16], "pretrain_epochs": 1, "head_epochs": 1}},
}
PREDICTING = sorted(name for name, family in REGISTRY.items() if "predict" in family.verbs)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def train(client: TestClient, family: str) -> str:
    document = {
        "family": family,
        "dataset": {"name": "digits", "max_train": 200},
        "train": {"epochs": 1},
        **TINY.get(family, {}),
    }
    job = client.post("/jobs", json=document)
    assert job.status_code == 202, job.text
    assert run_job(job.json()["id"], settings=get_settings(), worker="here") == "succeeded"
    return job.json()["id"]


def bodies() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {"inputs": rng.random((3, 8, 8)).round(4).tolist()},
        {"inputs": (rng.random((2, 64)) * 16).round(1).tolist(), "raw": True},
        {"inputs": rng.random((1, 64)).round(4).tolist(), "attention": True},  # ViT's maps
        {"inputs": [[0.5] * 63]},  # one value short: the same 422 every way
    ]


@pytest.fixture
def caches(client: TestClient) -> Iterator[tuple[ModelCache, ModelCache]]:
    """A model cache that batches no calls, and one that batches calls within 5 ms."""
    settings = get_settings()
    unbatched = ModelCache(settings.model_copy(update={"batch_window_ms": 0}))
    batched = ModelCache(settings.model_copy(update={"batch_window_ms": 5.0}))
    yield unbatched, batched
    for job_id in batched.cached():
        batched.batcher(job_id).close()


def three_ways(
    client: TestClient, caches: tuple[ModelCache, ModelCache], job_id: str, body: dict
) -> list[Any]:
    """The answers to `body` by the route unbatched, the route batched, and the fast path."""
    app, url = client.app, f"/models/{job_id}/predict"
    before, (unbatched, batched) = app.state.models, caches
    try:
        app.state.models = unbatched
        with routed(client):
            alone = client.post(url, json=body)
        app.state.models = batched
        with routed(client):
            routed_batched = client.post(url, json=body)
        fast = fast_path(client)
        answered = fast.answered
        calls = batched.batcher(job_id).calls
        fastest = client.post(url, json=body)  # the model is in the cache: the fast path's
        if alone.status_code == 200:
            assert fast.answered == answered + 1, "the fast path answered"
            if not body.get("attention"):
                assert batched.batcher(job_id).calls == calls + 1, "the fast path batched"
    finally:
        app.state.models = before
    return [alone, routed_batched, fastest]


@pytest.mark.parametrize("family", PREDICTING)
def test_every_way_in_gives_the_same_bytes(
    client: TestClient, caches: tuple[ModelCache, ModelCache], family: str
) -> None:
    job_id = train(client, family)
    calls = 0
    for body, status in zip(bodies(), [200, 200, None, 422], strict=True):
        alone, batched, fast = three_ways(client, caches, job_id, body)
        assert alone.content == batched.content == fast.content, body
        assert alone.status_code == batched.status_code == fast.status_code
        assert status in (None, alone.status_code), alone.text
        calls += status == 200
    assert caches[1].batcher(job_id).calls == 2 * calls, "the route batched its calls"


class Marked(Predict):
    """A classifier's predict whose class names say that this verb made them."""

    def answer(self, served: Any, rows: Any) -> dict[str, Any]:
        answer = super().answer(served, rows)
        answer["class_names"] = [f"{name} (marked)" for name in answer["class_names"]]
        return answer


def test_the_familys_verb_answers_every_way_in(
    client: TestClient, caches: tuple[ModelCache, ModelCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = train(client, "mlp")
    mlp = REGISTRY["mlp"]
    monkeypatch.setitem(REGISTRY, "mlp", replace(mlp, verbs={**mlp.verbs, "predict": Marked()}))
    for answer in three_ways(client, caches, job_id, bodies()[0]):
        assert answer.status_code == 200, answer.text
        assert all(name.endswith("(marked)") for name in answer.json()["class_names"])


def test_a_batchable_verbs_route_is_a_coroutine() -> None:
    """A synchronous route would run on the threadpool, never reaching the batcher."""
    endpoints = {route.path: route.endpoint for route in verbs.routes}
    batchable = {verb for family in REGISTRY.values() for verb in family.batchable}
    assert "predict" in batchable
    for verb in batchable:
        assert inspect.iscoroutinefunction(endpoints[f"/models/{{job_id}}/{verb}"]), verb
