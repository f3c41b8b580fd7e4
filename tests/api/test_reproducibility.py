"""Reproducibility: each job records the versions it ran with, a hash of its data and every
seed; a rerun queues the same document again, and the two compare side by side."""

import re
from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.conftest import api_client
from workers.runner import run_job

DOCUMENT = {
    "family": "mlp",
    "dataset": {"name": "digits"},
    "model": {"hidden": [16]},
    "train": {"epochs": 2, "seed": 4},
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def ran(client: TestClient, job: dict) -> dict:
    assert run_job(job["id"], settings=get_settings(), worker="here") == "succeeded"
    return client.get(f"/jobs/{job['id']}").json()


def submit(client: TestClient, document: dict) -> dict:
    response = client.post("/jobs", json=document)
    assert response.status_code == 202, response.text
    return response.json()


def test_a_job_records_versions_data_hash_and_seeds(client: TestClient) -> None:
    job = submit(client, DOCUMENT)
    assert job["provenance"] is None  # recorded when it runs
    done = ran(client, job)
    provenance = done["provenance"]
    assert provenance["torch"] == torch.__version__ and provenance["annlab"] == "0.1.0"
    assert re.fullmatch(r"3\.\d+\.\d+", provenance["python"])
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["dataset_sha256"])
    assert provenance["seeds"] == {"train": 4, "folds": [4], "split": 0, "sample_quality": 4}
    assert provenance["device"] == "cpu"

    # The same data gives the same hash; another split of it does not.
    same = ran(client, submit(client, {**DOCUMENT, "train": {"epochs": 1}}))
    other_split = ran(
        client, submit(client, {**DOCUMENT, "dataset": {"name": "digits", "split_seed": 1}})
    )
    assert same["provenance"]["dataset_sha256"] == provenance["dataset_sha256"]
    assert other_split["provenance"]["dataset_sha256"] != provenance["dataset_sha256"]


def test_a_rerun_reproduces_the_job_and_compares_side_by_side(client: TestClient) -> None:
    first = ran(client, submit(client, DOCUMENT))
    response = client.post(f"/jobs/{first['id']}/rerun")
    assert response.status_code == 202, response.text
    rerun = response.json()
    assert rerun["rerun_of"] == first["id"] and rerun["spec"] == first["spec"]
    assert rerun["status"] == "queued" and rerun["id"] != first["id"]
    rerun = ran(client, rerun)

    compared = client.get("/jobs/compare", params={"ids": [first["id"], rerun["id"]]}).json()
    assert [j["id"] for j in compared["jobs"]] == [first["id"], rerun["id"]]
    # Same document, same data, same seeds, same machine: the same numbers, to the bit.
    assert compared["differences"] == {}
    assert rerun["result"] == first["result"]

    def figures(job: dict) -> list[dict]:
        history = client.get(f"/jobs/{job['id']}/metrics").json()["history"]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    # Every epoch too, from epoch 0: the initial weights, before any step, in no time.
    assert figures(rerun) == figures(first)
    assert [row["epoch"] for row in figures(first)] == [0, 1, 2]
    assert client.get(f"/jobs/{first['id']}/metrics").json()["history"][0]["seconds"] == 0.0

    reseeded = ran(client, submit(client, {**DOCUMENT, "train": {"epochs": 2, "seed": 5}}))
    compared = client.get("/jobs/compare", params={"ids": [first["id"], reseeded["id"]]})
    differences = compared.json()["differences"]
    assert differences["provenance.seeds"][0]["train"] == 4
    assert differences["provenance.seeds"][1]["train"] == 5
    assert "result.test_loss" in differences


def test_compare_and_rerun_refuse_what_is_not_there(client: TestClient) -> None:
    one = submit(client, DOCUMENT)
    assert client.get("/jobs/compare", params={"ids": [one["id"]]}).status_code == 422
    missing = client.get("/jobs/compare", params={"ids": [one["id"], "nope"]})
    assert missing.status_code == 404 and missing.json()["detail"][0]["field"] == "ids"
    assert client.post("/jobs/nope/rerun").status_code == 404
