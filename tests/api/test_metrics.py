"""GET /metrics: Prometheus text that a scraper parses, with counters that move when a job
runs and when requests are answered."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from core.settings import get_settings
from tests.api.test_auth import make_key
from tests.conftest import api_client, migrate
from workers.runner import run_job


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    """What a local caller reads while no key exists (it is an admin, as for every route)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_job_counters_move_when_a_job_runs(client: TestClient) -> None:
    before = scrape(client)
    job = client.post("/jobs", json={"family": "mlp", "dataset": {"name": "digits"}}).json()
    queued = scrape(client)
    key = ("annlab_jobs", (("status", "queued"),))
    assert queued[key] == before.get(key, 0) + 1
    alone = get_settings().model_copy(update={"stack_max": 1})  # not with other tests' jobs
    assert run_job(job["id"], settings=alone, worker="metrics-test") == "succeeded"
    after = scrape(client)
    done = ("annlab_jobs", (("status", "succeeded"),))
    assert after[done] == before.get(done, 0) + 1
    assert after[key] == before.get(key, 0)
    assert after["annlab_epoch_seconds_mean", ()] > 0

    posted = (
        "annlab_http_requests_total",
        (("method", "POST"), ("route", "/jobs"), ("status", "202")),
    )
    assert after[posted] >= 1
    # One series per route template, not per job id.
    client.get(f"/jobs/{job['id']}")
    routes = {
        dict(labels).get("route")
        for name, labels in scrape(client)
        if name.startswith("annlab_http")
    }
    assert "/jobs/{job_id}" in routes and f"/jobs/{job['id']}" not in routes


def test_failures_are_counted_by_reason(client: TestClient) -> None:
    before = scrape(client)
    diverging = {
        "family": "mlp",
        "dataset": {"name": "function1d"},
        "train": {"optimizer": {"name": "sgd", "lr": 50.0}},
    }
    job = client.post("/jobs", json=diverging).json()
    assert run_job(job["id"], settings=get_settings(), worker="metrics-test") == "failed"
    key = ("annlab_jobs_failed", (("reason", "diverged"),))
    assert scrape(client)[key] == before.get(key, 0) + 1


def test_only_an_admin_or_the_metrics_key_reads_it(tmp_path: Path) -> None:
    """/metrics counts every owner's jobs: an owner's key is refused."""
    url = f"sqlite:///{tmp_path / 'annlab.db'}"
    migrate(url)
    scraper = "scraper-" + "s" * 32
    owner, admin = make_key(url, "alice"), make_key(url, "root", admin=True)
    with api_client(database_url=url, metrics_key=SecretStr(scraper)) as client:
        assert client.get("/metrics", headers=owner).status_code == 403
        assert client.get("/metrics").status_code == 401  # once a key exists, one is needed
        assert client.get("/metrics", headers={"X-API-Key": "nope" * 8}).status_code == 401
        assert client.get("/metrics", headers=admin).status_code == 200
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert scraped.status_code == 200 and "annlab_jobs" in scraped.text
