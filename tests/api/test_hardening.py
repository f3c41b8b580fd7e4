"""Regressions for the faults found when the service was attacked as a clumsy user would:
each of these was reproduced on the API before its fix."""

import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings, get_settings, sqlite_path
from tests.conftest import ROOT, api_client
from workers.runner import run_job


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client(max_request_bytes=200_000) as client:
        yield client


def fields(response) -> list[str]:  # noqa: ANN001
    return [e["field"] for e in response.json()["detail"]]


@pytest.mark.parametrize("path", ["/jobs", "/models", "/sweeps"])
def test_an_offset_past_any_integer_is_a_422_not_a_500(client: TestClient, path: str) -> None:
    response = client.get(path, params={"offset": 9223372036854775808})
    assert response.status_code == 422 and fields(response) == ["offset"]
    assert client.get(path, params={"offset": 10**9}).status_code == 200


def test_a_huge_dataset_name_is_refused_without_being_echoed(client: TestClient) -> None:
    name = "x" * 150_000
    response = client.post("/jobs", json={"family": "mlp", "dataset": {"name": name}})
    assert response.status_code == 422 and fields(response) == ["dataset.name"]
    assert len(response.content) < 2000


def test_a_body_over_the_limit_is_a_413_before_it_is_read(client: TestClient) -> None:
    document = {"family": "mlp", "dataset": {"name": "digits"}, "pad": "x" * 300_000}
    declared = client.post("/jobs", json=document)
    assert declared.status_code == 413 and fields(declared) == ["body"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"family": "mlp", "dataset": {"name": "digits"}, "pad": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}'

    streamed = client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413

    def small() -> Iterator[bytes]:  # under the limit: read here, then replayed to the route
        yield b'{"family": "mlp", '
        yield b'"dataset": {"name": "digits"}}'

    within = client.post("/jobs", content=small(), headers={"content-type": "application/json"})
    assert within.status_code == 202 and within.json()["spec"]["dataset"]["name"] == "digits"


@pytest.fixture(scope="module")
def model(client: TestClient) -> str:
    job = client.post(
        "/jobs",
        json={"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}},
    ).json()
    assert run_job(job["id"], settings=get_settings(), worker="here") == "succeeded"
    return job["id"]


@pytest.mark.parametrize(
    "inputs",
    [[[True] * 64], [[1e30] * 64], [["1"] * 64], [[None] * 64], [[0.5] * 63 + [-2e6]]],
)
def test_booleans_strings_and_absurd_numbers_are_not_pixels(
    client: TestClient, model: str, inputs: list
) -> None:
    response = client.post(f"/models/{model}/predict", json={"inputs": inputs})
    assert response.status_code == 422 and fields(response) == ["inputs"], response.text
    assert client.post(f"/models/{model}/predict", json={"inputs": [[0.5] * 64]}).status_code == 200


def test_a_forecast_is_bounded(client: TestClient) -> None:
    response = client.post("/models/whatever/forecast", json={"steps": 2001})
    assert response.status_code in (404, 422)
    from models.configs.verbs import ForecastRequest

    with pytest.raises(ValueError, match="2000"):
        ForecastRequest(steps=2001)


def test_files_under_annlab_home_are_private(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    for folder in (settings.home, settings.data_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for url in (settings.database_url, settings.broker_url):
        path = sqlite_path(url)
        assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_openapi_document_lists_the_answers_each_operation_gives(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["HTTPBearer"].items()
    assert schemes["APIKeyHeader"]["in"] == "header"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    paths = document["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            where = (method, path)
            answers = set(operation["responses"])
            parameters = operation.get("parameters", [])
            body = "requestBody" in operation
            assert operation.get("description"), where
            if path != "/healthz":
                assert "401" in answers, where
                assert operation["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}], where
            assert ("413" in answers) == body, where
            assert ("422" in answers) == (body or bool(parameters)), where
            named = any(p["in"] == "path" or p["name"] == "ids" for p in parameters)
            assert ("404" in answers) == named, where
            quota = where in {
                ("post", "/jobs"),
                ("post", "/sweeps"),
                ("post", "/jobs/{job_id}/rerun"),
            }
            assert ("429" in answers) == quota, where
    assert "409" in paths["/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "409" in paths["/sweeps/{sweep_id}/cancel"]["post"]["responses"]
    assert "409" in paths["/datasets"]["post"]["responses"]
    assert "409" in paths["/models/{job_id}/predict"]["post"]["responses"]
    assert "409" not in paths["/jobs"]["post"]["responses"]
    assert "409" not in paths["/datasets"]["get"]["responses"]
    assert "409" not in paths["/jobs/{job_id}"]["get"]["responses"]
    assert "503" in paths["/healthz"]["get"]["responses"]
    assert {"401", "403"} <= set(paths["/metrics"]["get"]["responses"])


BROKER_GONE = """
import json, os
from tests.conftest import api_client
from core.settings import get_settings, sqlite_path
with api_client() as client:
    before = client.get("/healthz")
    path = sqlite_path(get_settings().broker_url)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    os.mkdir(path)  # the broker's file is gone and cannot be made again
    after = client.get("/healthz")
    print(json.dumps([before.status_code, after.status_code, after.json()]))
"""


def test_healthz_sends_a_message_through_the_broker(tmp_path: Path) -> None:
    """A broker that cannot store a message is not ok (connecting to it still works)."""
    env = {**os.environ, "ANNLAB_HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", BROKER_GONE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    before, after, body = json.loads(run.stdout.strip().splitlines()[-1])
    assert (before, after) == (200, 503)
    assert body["database"] == "ok" and body["broker"].startswith("error:")


def test_a_retried_submission_with_an_idempotency_key_makes_one_job(client: TestClient) -> None:
    document = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 3}}
    before = client.get("/jobs").json()["total"]
    headers = {"Idempotency-Key": "retry-me-1"}
    first = client.post("/jobs", json=document, headers=headers)
    again = client.post("/jobs", json=document, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert client.get("/jobs").json()["total"] == before + 1
    other = client.post("/jobs", json={**document, "train": {"epochs": 4}}, headers=headers)
    assert other.status_code == 422 and fields(other) == ["Idempotency-Key"]
    # Without a key every POST is a new job.
    assert client.post("/jobs", json=document).json()["id"] != first.json()["id"]

    sweep = {"base": document, "repeats": 2}
    one = client.post("/sweeps", json=sweep, headers={"Idempotency-Key": "sweep-1"}).json()
    two = client.post("/sweeps", json=sweep, headers={"Idempotency-Key": "sweep-1"}).json()
    assert one["id"] == two["id"] and two["n_jobs"] == 2
    client.post(f"/sweeps/{one['id']}/cancel")


def zip_bomb(rows: int) -> bytes:
    """An .npz whose X.npy declares and holds rows x 784 float64 zeros: megabytes of zip,
    rows x 6 KB once decompressed."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": (rows, 784)}
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(784 * 8 * 1000)
            for _ in range(rows // 1000):
                member.write(zeros)
        with archive.open("y.npy", "w") as member:
            np.save(member, np.zeros(rows, dtype=np.int64))
    return out.getvalue()


def test_a_zip_bomb_is_refused_by_what_it_declares() -> None:
    bomb = zip_bomb(20_000)  # 125 MB of zeros in about 0.2 MB
    assert len(bomb) < 2_000_000
    with api_client(max_upload_uncompressed_bytes=50_000_000) as client:
        response = client.post(
            "/datasets", files={"file": ("bomb.npz", bomb)}, data={"name": "bomb"}
        )
        assert response.status_code == 413 and fields(response) == ["file"], response.text
        assert "once decompressed" in response.json()["detail"][0]["message"]
        assert client.get("/datasets").json()  # and the API is still here


def test_an_upload_over_the_limit_is_refused_before_it_is_read() -> None:
    with api_client(max_upload_bytes=100_000) as client:
        response = client.post(
            "/datasets", files={"file": ("big.npz", bytes(3_000_000))}, data={"name": "big"}
        )
        assert response.status_code == 413 and fields(response) == ["body"]


BIG_BATCH = {
    "family": "mlp",
    "dataset": {"name": "fashion_mnist"},
    "model": {"hidden": [16384, 2000]},
    "train": {"epochs": 1, "batch_size": 65536},
}
LONG_WINDOWS = {
    "family": "mlp",
    "dataset": {"name": "mackey_glass", "n_points": 10**6, "lag": 1000},
}


@pytest.mark.parametrize(
    ("document", "field"),
    [(BIG_BATCH, "train.batch_size"), (LONG_WINDOWS, "dataset.n_points")],
)
def test_a_job_too_big_for_a_worker_is_refused_at_submission(
    client: TestClient, document: dict, field: str
) -> None:
    """Both took a worker to several GB before: a 9 GB batch of activations, a 4 GB window
    matrix (twice, loaded and split)."""
    before = client.get("/jobs").json()["total"]
    response = client.post("/jobs", json=document)
    if response.status_code == 422 and fields(response) == ["dataset.name"]:
        pytest.skip("Fashion-MNIST is not on this machine")
    assert response.status_code == 422 and fields(response) == [field], response.text
    assert "GiB" in response.json()["detail"][0]["message"]
    assert client.get("/jobs").json()["total"] == before
    # A sweep's cell too: refused naming its axis (a batch is at most the training set).
    wide = {"family": "mlp", "dataset": {"name": "fashion_mnist"}, "model": {"hidden": [8192]}}
    sweep = client.post("/sweeps", json={"base": wide, "axes": {"train.batch_size": [64, 65536]}})
    assert sweep.status_code == 422 and fields(sweep) == ["axes.train.batch_size"], sweep.text


def test_the_worker_checks_the_budget_again_before_loading(client: TestClient) -> None:
    job = client.post("/jobs", json={"family": "mlp", "dataset": {"name": "digits"}}).json()
    small = get_settings().model_copy(update={"worker_memory_bytes": 1024**2})
    assert run_job(job["id"], settings=small, worker="small") == "failed"
    failed = client.get(f"/jobs/{job['id']}").json()
    assert "GiB" in failed["error"] and "ANNLAB_WORKER_MEMORY" in failed["error"]


def test_cors_is_closed(client: TestClient) -> None:
    """No CORS headers: a page on another origin cannot read the API's answers."""
    preflight = client.options(
        "/jobs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/jobs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_operation_ids_are_readable_and_every_family_has_an_example(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert {"create_job", "list_jobs", "sample", "create_sweep", "read_sweep_table"} <= set(ids)
    examples = document["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    from models.specs import FAMILY_NAMES, parse_job_spec

    assert set(examples) == set(FAMILY_NAMES)
    for example in examples.values():
        parse_job_spec(example["value"])  # each is a job the API takes
