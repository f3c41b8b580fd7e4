"""Stopping a worker mid-job (SIGTERM, as a deployment stops it) gives the job back: another
worker takes it up within seconds and it succeeds, every epoch recorded once; nothing fails."""

import os
import signal
import time
from pathlib import Path

import pytest

from core.db import Job, session_scope
from core.settings import Settings
from tests.service import Service, postgres_and_redis_reason, require, running

pytestmark = pytest.mark.service

JOB = {
    "family": "mlp",
    "dataset": {"name": "digits"},
    "model": {"hidden": [256, 256]},
    # About 0.07 s an epoch on a 2-core CPU: the stop comes at epoch 2, seconds before the end.
    "train": {"epochs": 80, "batch_size": 16},
}


def worker_of(svc: Service, job_id: str) -> str | None:
    """hostname:pid of the worker that holds (or last held) the job."""
    with session_scope(Settings(home=svc.home).database_url) as session:
        return session.get(Job, job_id).worker


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_a_worker_stopped_mid_job_gives_it_to_another(tmp_path: Path, signum: int) -> None:
    with running("embedded", tmp_path, worker=False) as svc:
        first, second = svc.start_worker(), svc.start_worker()
        job = svc.submit(JOB)
        svc.wait_for(lambda: len(svc.metrics(job["id"])) >= 2, 120, "two epochs")
        holder = worker_of(svc, job["id"])
        stopped = first if holder.endswith(f":{first.pid}") else second
        assert holder.endswith(f":{stopped.pid}"), holder
        at = time.monotonic()
        os.kill(stopped.pid, signum)
        taken = svc.wait_for(
            lambda: worker_of(svc, job["id"]) not in (None, holder) and svc.job(job["id"]),
            10,
            "another worker to take the job up",
        )
        taken_after = time.monotonic() - at
        stopped.wait(10)
        gone_after = time.monotonic() - at
        print(
            f"{signum!r}: taken up again after {taken_after:.1f} s, worker gone after "
            f"{gone_after:.1f} s"
        )
        assert stopped.returncode is not None and taken["status"] == "running"
        done = svc.wait_status(job["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1  # the stopped attempt is not counted
        epochs = [row["epoch"] for row in svc.metrics(job["id"])]
        assert epochs == list(range(JOB["train"]["epochs"] + 1))


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_an_idle_worker_ends_within_2s_of_sigterm(tmp_path: Path, backend: str) -> None:
    """An idle worker stops at once on either broker: on the embedded one Celery's loop
    waited up to 2 s for a message before it looked for a stop (about 3 s in all)."""
    if backend == "postgres":
        require(postgres_and_redis_reason())
    with running(backend, tmp_path) as svc:
        (worker,) = svc.workers
        time.sleep(1.0)  # well into its waits for a message
        at = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
        gone_after = time.monotonic() - at
        print(f"{backend}: gone after {gone_after:.2f} s")
        assert worker.returncode == 0 and gone_after < 2.0, gone_after
