"""Deployments of several processes on PostgreSQL and Redis: a broker outage, two workers with
homes of their own taking over each other's jobs, two APIs serving the same models."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sqlalchemy import select

from core.db import Job, engine_for, session_scope
from tests.service import PrivateRedis, Service, postgres_and_redis_reason, require, running

pytestmark = pytest.mark.service


@pytest.fixture(autouse=True)
def _postgres_and_redis() -> None:
    reason = postgres_and_redis_reason()
    if reason is None and shutil.which("redis-server") is None:
        reason = "redis-server is not installed"
    require(reason)


def log_of(svc: Service, name: str) -> str:
    return (svc.home / name).read_text(errors="replace")


def test_a_job_submitted_while_the_broker_is_down_starts_soon_after_it_returns(
    tmp_path: Path,
) -> None:
    """The API answers at once and keeps the job queued; the reaper's sends fail while the
    broker is down and count for nothing, so it sends again as soon as one goes through; the
    worker's consumer is back within seconds however long the outage (kombu's own waits between
    tries grow to 30 s: here it would have tried 12 s and 20 s after the broker went)."""
    broker = PrivateRedis(tmp_path)
    broker.start()
    try:
        with running("postgres", tmp_path, env={"BROKER_URL": broker.url}) as svc:
            warm = svc.submit(
                {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}
            )
            assert svc.wait_status(warm["id"], {"succeeded", "failed"})["status"] == "succeeded"
            broker.stop()
            stopped = time.monotonic()
            job = svc.submit(
                {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 2}}
            )
            answered = time.monotonic() - stopped
            assert job["status"] == "queued" and answered < 1.5, answered
            svc.wait_for(
                lambda: f"could not send job {job['id']}" in log_of(svc, "worker1.log"),
                30,
                "the reaper to try to send the job while the broker is down",
            )
            time.sleep(max(0.0, 15 - (time.monotonic() - stopped)))
            assert svc.job(job["id"])["status"] == "queued"

            broker.start()
            returned = time.monotonic()
            svc.wait_for(
                lambda: log_of(svc, "worker1.log").count("Connected to redis") == 2,
                60,
                "the worker to connect to the broker again",
            )
            reconnected = time.monotonic() - returned
            svc.wait_status(job["id"], {"running", "succeeded"}, timeout=60)
            seconds = time.monotonic() - returned
            print(
                f"broker back -> worker connected {reconnected:.1f} s, job running {seconds:.1f} s"
                f" (POST /jobs while it was down: {answered:.2f} s)"
            )
            assert reconnected < 3 and seconds < 10, svc.logs()
            done = svc.wait_status(job["id"], {"succeeded", "failed"})
            assert done["status"] == "succeeded", done["error"]
    finally:
        broker.stop()


def test_two_workers_and_two_apis_share_one_database_and_broker(tmp_path: Path) -> None:
    """Workers with homes of their own, as on two machines: the one running a job is killed
    (-9) and the other resumes the job from its checkpoint, every epoch recorded once; a second
    API, with its own home, lists and serves the model the first one does. Long enough (40
    epochs of about 0.1 s) to be still training when its fourth row shows: rows go in at most
    a second apart, the first at once."""
    epochs = 40
    with running("postgres", tmp_path / "api", worker=False) as svc:
        workers = [svc.start_worker(home=tmp_path / f"worker{n}") for n in (1, 2)]
        job = svc.submit(
            {
                "family": "mlp",
                "dataset": {"name": "digits"},
                "train": {"epochs": epochs, "batch_size": 8},
            }
        )
        svc.wait_for(lambda: len(svc.metrics(job["id"])) >= 4, 120, "three epochs")

        def runner() -> str:
            with session_scope(svc.database.url) as session:
                return session.scalar(select(Job.worker).where(Job.id == job["id"]))

        first = runner()
        (victim,) = [w for w in workers if first.endswith(f":{w.pid}")]
        (survivor,) = [w for w in workers if w is not victim]
        svc.kill(victim)
        killed = time.monotonic()
        killed_at = len(svc.metrics(job["id"]))
        svc.wait_for(
            lambda: (j := svc.job(job["id"]))["attempts"] == 2 and j["status"] != "queued",
            60,
            "the other worker to take the job up",
        )
        resumed_after = time.monotonic() - killed
        done = svc.wait_status(job["id"], {"succeeded", "failed"}, timeout=240)
        assert done["status"] == "succeeded", done["error"]
        assert runner().endswith(f":{survivor.pid}")
        history = svc.metrics(job["id"])
        assert [row["epoch"] for row in history] == list(range(epochs + 1))
        resumed = [row["epoch"] for row in history if row["attempt"] == 2]
        assert resumed and resumed[0] >= killed_at >= 4
        print(f"killed worker -> job running on the other: {resumed_after:.1f} s")

        other = svc.start_another_api(tmp_path / "api2")
        images = (load_digits().data[:20] / 16.0).tolist()
        answers = []
        for client in (svc.client, other):
            assert job["id"] in {m["id"] for m in client.get("/models").json()["items"]}
            answer = client.post(f"/models/{job['id']}/predict", json={"inputs": images})
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
        assert answers[0]["outputs"] == answers[1]["outputs"]
        np.testing.assert_allclose(
            answers[0]["probabilities"], answers[1]["probabilities"], atol=1e-6
        )
        engine_for(svc.database.url).dispose()
