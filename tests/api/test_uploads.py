"""Uploaded datasets: validation of .npz and CSV files, and jobs that train on them."""

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.conftest import api_client
from workers.runner import run_job

LIMIT = 200_000


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client(max_upload_bytes=LIMIT) as client:
        yield client


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(client: TestClient, name: str, content: bytes, filename: str = "data.npz", **form):
    return client.post(
        "/datasets", data={"name": name, **form}, files={"file": (filename, content)}
    )


def problem(response, status: int = 422) -> str:
    assert response.status_code == status, response.text
    (error,) = response.json()["detail"]
    return f"{error['field']}: {error['message']}"


def blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 5-D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) + 4.0 * np.eye(3, 5)[y]
    return x.astype(np.float32), y


def test_an_uploaded_npz_is_listed_and_trains(client: TestClient) -> None:
    x, y = blobs()
    response = upload(client, "blobs", npz(X=x, y=y))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "upload:blobs" and body["kind"] == "classification"
    assert body["input_shape"] == [5] and body["n_classes"] == 3
    names = {d["name"] for d in client.get("/datasets").json()["items"]}
    assert "upload:blobs" in names

    job = client.post(
        "/jobs",
        json={"family": "mlp", "dataset": {"name": "upload:blobs"}, "train": {"epochs": 10}},
    )
    assert job.status_code == 202, job.text
    assert job.json()["spec"]["task"] == "classification"
    job_id = job.json()["id"]
    assert run_job(job_id, settings=get_settings(), worker="test") == "succeeded"
    result = client.get(f"/jobs/{job_id}").json()["result"]
    assert result["test_accuracy"] > 0.9


def test_jobs_are_checked_against_the_uploaded_shape(client: TestClient) -> None:
    x, y = blobs(seed=1)
    assert upload(client, "vectors", npz(X=x, y=y)).status_code == 201
    cnn = client.post("/jobs", json={"family": "cnn", "dataset": {"name": "upload:vectors"}})
    assert "a CNN needs image inputs" in problem(cnn)
    regression = client.post(
        "/jobs", json={"family": "mlp", "task": "regression", "dataset": {"name": "upload:vectors"}}
    )
    assert problem(regression).startswith("task:")
    missing = client.post("/jobs", json={"family": "mlp", "dataset": {"name": "upload:nope"}})
    assert problem(missing).startswith("dataset.name: no uploaded dataset")


def test_images_and_channels_last_become_channels_first(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    body = upload(client, "grey", npz(X=grey, y=np.arange(20) % 2)).json()
    assert body["input_shape"] == [1, 8, 8]
    colour = rng.integers(0, 256, size=(20, 6, 6, 3), dtype=np.uint8)
    body = upload(client, "colour", npz(X=colour, y=np.arange(20) % 2)).json()
    assert body["input_shape"] == [3, 6, 6]


def test_a_csv_series_uploads_and_forecasts(client: TestClient) -> None:
    t = np.arange(600)
    csv = "value\n" + "\n".join(f"{v:.6f}" for v in np.sin(t / 8.0))
    response = upload(client, "wave", csv.encode(), filename="wave.csv")
    assert response.status_code == 201, response.text
    assert response.json()["sequence"] is True
    job = client.post(
        "/jobs",
        json={
            "family": "mlp",
            "dataset": {"name": "upload:wave", "lag": 16},
            "train": {"epochs": 30},
        },
    )
    assert job.status_code == 202, job.text
    assert job.json()["spec"]["task"] == "regression"
    job_id = job.json()["id"]
    assert run_job(job_id, settings=get_settings(), worker="test") == "succeeded"
    answer = client.post(f"/models/{job_id}/forecast", json={"steps": 5})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["forecast"]) == 5


@pytest.mark.parametrize(
    ("filename", "content", "fragment"),
    [
        ("x.npz", b"not a zip at all", "not a valid .npz"),
        ("x.npz", npz(X=np.zeros((20, 3))), "needs arrays X and y"),
        ("x.npz", npz(X=np.zeros((20, 3)), y=np.zeros(19, dtype=int)), "y must be (n,)"),
        ("x.npz", npz(X=np.full((20, 3), np.nan), y=np.zeros(20, dtype=int)), "NaN"),
        ("x.npz", npz(X=np.zeros((20, 3)), y=np.full(20, np.inf)), "NaN or infinite"),
        ("x.npz", npz(X=np.zeros(20), y=np.zeros(20, dtype=int)), "X must be (n, d)"),
        ("x.npz", npz(X=np.zeros((5, 3)), y=np.zeros(5, dtype=int)), "10.."),
        ("x.npz", npz(X=np.array([["a"]] * 20), y=np.zeros(20, dtype=int)), "numeric"),
        ("x.npz", npz(X=np.zeros((20, 3)), y=-np.ones(20, dtype=int)), "labels must be in"),
        ("x.csv", b"1,2\n3,4\n", "one column"),
        ("x.csv", b"v\n1\n2\nthree\n", "line 4 is not a number"),
        ("x.csv", b"\n".join(b"1" for _ in range(10)), "50.."),
        ("x.txt", b"1\n2\n", "upload a .npz"),
    ],
)
def test_malformed_uploads_are_refused_naming_the_problem(
    client: TestClient, filename: str, content: bytes, fragment: str
) -> None:
    assert fragment in problem(upload(client, "bad", content, filename=filename))


def test_pickled_object_arrays_are_refused() -> None:
    from core.uploads import UploadError, parse_npz

    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([{"a": 1}] * 20, dtype=object), y=np.zeros(20, dtype=int))
    with pytest.raises(UploadError, match="only numeric arrays"):
        parse_npz(buffer.getvalue(), "evil", None)


def test_too_large_and_duplicate_and_badly_named_uploads(client: TestClient) -> None:
    big = npz(X=np.zeros((LIMIT // 8, 2)), y=np.zeros(LIMIT // 8, dtype=int))
    assert "larger than" in problem(upload(client, "big", big), status=413)
    x, y = blobs(seed=2)
    assert upload(client, "twice", npz(X=x, y=y)).status_code == 201
    assert "exists already" in problem(upload(client, "twice", npz(X=x, y=y)), status=409)
    response = upload(client, "Bad Name!", npz(X=x, y=y))
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "name"
