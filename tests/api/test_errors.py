"""No answer repeats more than a few hundred bytes of the request: a huge string where a field
name or a value goes comes back clipped, and the answer still names the field."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import api_client

HUGE = "x" * 2_000_000
SMALL = 4096  # bytes: the most any of these answers may take
BASE = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/jobs", {**BASE, "family": HUGE}, "family"),
        ("/jobs", {**BASE, "model": {HUGE: 1}}, "model.xxx"),
        ("/architectures/summary", {**BASE, "family": HUGE}, "family"),
        ("/sweeps", {"base": BASE, "axes": {HUGE: [1]}}, "axes.xxx"),
        ("/sweeps", {"base": BASE, "axes": {"model.hidden.0": [HUGE]}}, "axes.model.hidden.0"),
        ("/sweeps", {"base": {**BASE, "family": HUGE}, "repeats": 2}, "base.family"),
    ],
    ids=["family", "model-key", "summary-family", "axis-path", "axis-value", "sweep-base"],
)
def test_a_huge_string_is_not_echoed(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert len(response.content) < SMALL, len(response.content)
    (error,) = response.json()["detail"]
    assert error["field"].startswith(field), error
    assert "x" * 500 not in response.text


def test_the_union_tag_message_keeps_the_known_families(client: TestClient) -> None:
    (error,) = client.post("/jobs", json={**BASE, "family": HUGE}).json()["detail"]
    assert "characters left out" in error["message"] and "'mlp'" in error["message"]


def test_any_invalid_request_is_small(client: TestClient) -> None:
    """Many failing fields, each with a long key: a bounded list, each entry clipped."""
    response = client.post(
        "/jobs", json={**BASE, "model": {f"{k}{HUGE[:10_000]}": k for k in range(500)}}
    )
    assert response.status_code == 422
    assert len(response.content) < 16 * 1024, len(response.content)
    body = response.json()
    assert 1 <= len(body["detail"]) <= 20 and body["message"].endswith("more")
    for url in (f"/jobs/{HUGE[:10_000]}", f"/sweeps/{HUGE[:10_000]}", f"/models/{HUGE[:10_000]}"):
        assert len(client.get(url).content) < SMALL, url
