"""API keys and ownership, on a database of their own: keys made by the
admin command, required once one exists; another owner's jobs, sweeps and uploads are 404;
an admin sees everything; quotas answer 429 with Retry-After; production will not start
without a key."""

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import app
from core import keys
from core.db import ApiKey, session_scope
from core.settings import get_settings
from tests.conftest import ROOT, api_client, migrate
from workers.runner import run_job

DOCUMENT = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'annlab.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[TestClient]:
    # Every request looks its key up: these tests are about what a key may do, not how long
    # the API trusts a lookup (test_a_key_found_is_trusted_for_key_cache_seconds).
    with api_client(database_url=url, max_queued_jobs=3, key_cache_seconds=0) as client:
        yield client


def make_key(url: str, name: str, admin: bool = False) -> dict[str, str]:
    with session_scope(url) as session:
        return {"Authorization": f"Bearer {keys.create(session, name, admin=admin)}"}


def test_keys_are_needed_once_one_exists_and_stored_hashed(client: TestClient, url: str) -> None:
    # No key yet: this machine is served (anonymous); a remote peer is not.
    assert client.get("/jobs").status_code == 200
    remote = TestClient(app, client=("203.0.113.9", 4000))
    assert remote.get("/jobs").status_code == 401
    alice = make_key(url, "alice")
    refused = client.get("/jobs")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/jobs", headers=alice).status_code == 200
    token = alice["Authorization"].removeprefix("Bearer ")
    assert client.get("/jobs", headers={"X-API-Key": token}).status_code == 200
    assert client.get("/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # monitoring needs no key
    with session_scope(url) as session:
        stored = {row.key_sha256 for row in keys.active(session)}
    assert token not in stored and keys.digest(token) in stored


def test_another_owner_gets_404_and_an_admin_sees_all(client: TestClient, url: str) -> None:
    alice, bob = make_key(url, "alice2"), make_key(url, "bob")
    root = make_key(url, "root", admin=True)
    job = client.post("/jobs", json=DOCUMENT, headers=alice).json()
    assert job["owner_id"] == "alice2"
    for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/metrics"):
        assert client.get(path, headers=bob).status_code == 404
        assert client.get(path, headers=alice).status_code == 200
        assert client.get(path, headers=root).status_code == 200
    assert client.post(f"/jobs/{job['id']}/cancel", headers=bob).status_code == 404
    assert client.post(f"/jobs/{job['id']}/rerun", headers=bob).status_code == 404
    compare = {"ids": [job["id"], job["id"]]}
    assert client.get("/jobs/compare", params=compare, headers=bob).status_code == 404
    listed = {j["id"] for j in client.get("/jobs", headers=bob).json()["items"]}
    assert job["id"] not in listed
    assert job["id"] in {j["id"] for j in client.get("/jobs", headers=root).json()["items"]}

    sweep = client.post("/sweeps", json={"base": DOCUMENT, "repeats": 2}, headers=bob).json()
    assert client.get(f"/sweeps/{sweep['id']}", headers=alice).status_code == 404
    assert sweep["id"] not in {
        s["id"] for s in client.get("/sweeps", headers=alice).json()["items"]
    }
    assert client.post(f"/sweeps/{sweep['id']}/cancel", headers=root).status_code == 202

    # Uploads: alice's is hers; bob can neither see it nor train on it.
    buffer = io.BytesIO()
    np.savez(buffer, X=np.random.rand(40, 5), y=np.arange(40) % 2)
    made = client.post(
        "/datasets",
        files={"file": ("mine.npz", buffer.getvalue())},
        data={"name": "alices"},
        headers=alice,
    )
    assert made.status_code == 201, made.text

    def names(headers: dict[str, str]) -> set[str]:
        answer = client.get("/datasets", headers=headers).json()
        return {d["name"] for d in answer["items"]}

    assert "upload:alices" in names(alice) and "upload:alices" not in names(bob)
    on_it = {"family": "mlp", "dataset": {"name": "upload:alices"}}
    assert client.post("/jobs", json=on_it, headers=alice).status_code == 202
    refused = client.post("/jobs", json=on_it, headers=bob)
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "dataset.name"


def test_a_cached_model_answers_its_owner_and_admins_only(client: TestClient, url: str) -> None:
    """A model's first call caches it (owner included); later calls make no query, and still
    another owner gets 404."""
    alice, bob = make_key(url, "alice3"), make_key(url, "bob3")
    root = make_key(url, "root3", admin=True)
    job = client.post("/jobs", json=DOCUMENT, headers=alice).json()
    settings = get_settings().model_copy(update={"database_url": url})
    assert run_job(job["id"], settings=settings, worker="here") == "succeeded"
    predict = f"/models/{job['id']}/predict"
    body = {"inputs": [[0.5] * 64]}
    assert client.post(predict, json=body, headers=bob).status_code == 404  # before it is cached
    assert client.post(predict, json=body, headers=alice).status_code == 200
    assert job["id"] in client.app.state.models.cached()
    assert client.post(predict, json=body, headers=bob).status_code == 404  # once it is
    assert client.post(predict, json=body, headers=root).status_code == 200
    assert client.post(f"/models/{job['id']}/encode", json=body, headers=bob).status_code == 404
    missing = client.post(f"/models/{job['id']}/sample", json={}, headers=alice)
    assert missing.status_code == 404 and "mlp model has no 'sample'" in missing.text


def test_revoked_keys_stop_at_once_and_quotas_answer_429(client: TestClient, url: str) -> None:
    carol = make_key(url, "carol")
    for _ in range(3):
        assert client.post("/jobs", json=DOCUMENT, headers=carol).status_code == 202
    over = client.post("/jobs", json=DOCUMENT, headers=carol)
    assert over.status_code == 429 and over.headers["retry-after"] == "60"
    sweep = client.post("/sweeps", json={"base": DOCUMENT, "repeats": 2}, headers=carol)
    assert sweep.status_code == 429
    with session_scope(url) as session:
        assert keys.revoke(session, "carol")
    assert client.get("/jobs", headers=carol).status_code == 401


def test_a_key_found_is_trusted_for_key_cache_seconds(url: str) -> None:
    with api_client(database_url=url, key_cache_seconds=0.5) as client:
        dave = make_key(url, "dave")
        assert client.get("/jobs", headers=dave).status_code == 200
        with session_scope(url) as session:
            assert keys.revoke(session, "dave")
        assert client.get("/jobs", headers=dave).status_code == 200, "trusted for 0.5 s"
        time.sleep(0.6)
        assert client.get("/jobs", headers=dave).status_code == 401
        # An unknown key is not remembered: once made, it works at once.
        token = "annlab_made-after-it-was-refused-" + "x" * 20
        assert client.get("/jobs", headers={"X-API-Key": token}).status_code == 401
        with session_scope(url) as session:
            session.add(ApiKey(name="erin", key_sha256=keys.digest(token), admin=False))
        assert client.get("/jobs", headers={"X-API-Key": token}).status_code == 200


def test_the_admin_command_makes_lists_and_revokes_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate(url)
    env = {"ANNLAB_HOME": str(tmp_path), "DATABASE_URL": url, "PATH": "/usr/bin:/bin"}

    def annlab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "annlab.cli", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = annlab("key", "create", "dana", "--admin")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("annlab_") and "not shown again" in made.stderr
    assert annlab("key", "create", "dana").returncode == 2  # the name is taken
    listed = annlab("key", "list")
    assert "dana" in listed.stdout and "admin" in listed.stdout
    assert made.stdout.strip() not in listed.stdout
    assert annlab("key", "revoke", "dana").returncode == 0
    assert "dana" not in annlab("key", "list").stdout


def test_production_does_not_start_without_a_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    migrate(url)
    production = get_settings().model_copy(
        update={"database_url": url, "environment": "production"}
    )
    app.dependency_overrides[get_settings] = lambda: production
    try:
        with pytest.raises(RuntimeError, match="needs an API key"), TestClient(app):
            pass
        with_key = production.model_copy(update={"admin_key": SecretStr("x" * 32)})
        app.dependency_overrides[get_settings] = lambda: with_key
        with TestClient(app) as client:
            headers = {"Authorization": "Bearer " + "x" * 32}
            assert client.get("/jobs", headers=headers).status_code == 200
            assert client.get("/jobs").status_code == 401  # even from this machine
    finally:
        app.dependency_overrides.pop(get_settings, None)
