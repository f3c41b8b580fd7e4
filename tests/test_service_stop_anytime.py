"""SIGTERM or SIGINT at 20 random moments, from start-up to mid-job: to `make run`'s process
group (as Ctrl-C does) or to a lone worker. After each, every process it started is gone within
10 s; at the end no job has failed, and each recorded every epoch once."""

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Job, Metric, session_scope
from core.jobs import new_job
from core.settings import Settings
from models.specs import parse_job_spec
from tests.service import ROOT, free_port

pytestmark = pytest.mark.service

SEED = 20261203
ROUNDS = 20
GONE_SECONDS = 10.0
JOB = {
    "family": "mlp",
    "dataset": {"name": "digits"},
    "model": {"hidden": [512, 512]},
    "train": {"epochs": 30, "batch_size": 8},  # longer than 10 s: a stop must not wait for it
}


def processes_with(marker: bytes) -> list[int]:
    """Pids whose environment holds `marker`: every process one round started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def jobs(settings: Settings) -> list[Job]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Job)))


def running_on(settings: Settings, pids: list[int]) -> bool:
    """Whether one of `pids` is running a job now."""
    held = [j.worker for j in jobs(settings) if j.status == "running" and j.worker]
    return any(w.rsplit(":", 1)[-1] == str(pid) for w in held for pid in pids)


def ensure_a_job(settings: Settings) -> None:
    """A queued job, unsent: the next worker's reaper sends it."""
    if any(j.status in ("queued", "running") for j in jobs(settings)):
        return
    spec = parse_job_spec(JOB).model_dump(mode="json")
    with session_scope(settings.database_url) as session:
        new_job(session, spec)


def test_every_process_ends_within_10s_of_a_signal_at_any_moment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    env = {
        **os.environ,
        "ANNLAB_HOME": str(home),
        "ANNLAB_REAPER_SECONDS": "0.5",
        "ANNLAB_UNSENT_SECONDS": "0.5",
        "ANNLAB_LEASE_SECONDS": "4",
        "ANNLAB_HEARTBEAT_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "BROKER_URL", "ANNLAB_DATABASE_URL", "ANNLAB_BROKER_URL"):
        env.pop(name, None)
    home.mkdir()
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    rng = random.Random(SEED)
    targets = ["make run"] * (ROUNDS // 2) + ["worker"] * (ROUNDS // 2)
    rng.shuffle(targets)
    worker = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"]
    worker += ["--pool=solo", "--without-mingle", "--without-gossip", "--loglevel=info"]
    print(f"seed {SEED}")
    gone_after: list[float] = []
    for n, target in enumerate(targets):
        ensure_a_job(settings)
        signum = rng.choice([signal.SIGTERM, signal.SIGTERM, signal.SIGINT])
        # Some moments fall in start-up, the others while this round's worker runs a job.
        mid_job = rng.random() < 0.4
        moment = rng.uniform(0.0, 1.5 if mid_job else 4.0)
        marker = f"ANNLAB_TEST_ROUND={uuid.uuid4().hex}"
        round_env = dict(env, ANNLAB_TEST_ROUND=marker.split("=", 1)[1])
        if target == "make run":
            command = ["make", "--no-print-directory", "-o", ".venv/bin/.installed", "run"]
            command += [f"PORT={free_port()}", "HOST=127.0.0.1", f"ANNLAB_HOME={home}"]
        else:
            command = worker
        with open(home / f"round{n:02d}.log", "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=round_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        if mid_job:
            deadline = started + 60
            while time.monotonic() < deadline and not running_on(
                settings, processes_with(marker.encode())
            ):
                time.sleep(0.1)
        time.sleep(moment)
        at = time.monotonic()
        if target == "make run":
            os.killpg(process.pid, signum)  # the whole foreground group, as Ctrl-C
        else:
            os.kill(process.pid, signum)
        while processes_with(marker.encode()) and time.monotonic() - at < 30:
            time.sleep(0.05)
        gone_after.append(time.monotonic() - at)
        left = processes_with(marker.encode())
        when = f"{moment:.2f} s into a job" if mid_job else f"{moment:.2f} s after start"
        print(
            f"round {n:2d}: {signum.name} to {target} at {at - started:.2f} s "
            f"({when}): all gone after {gone_after[-1]:.2f} s"
        )
        for pid in left:  # what must not happen; do not leave it behind
            os.kill(pid, signal.SIGKILL)
        process.wait(5)
        assert not left, (home / f"round{n:02d}.log").read_text(errors="replace")[-3000:]
        assert gone_after[-1] < GONE_SECONDS

    print(f"max seconds from the signal to every process gone: {max(gone_after):.2f}")
    # No job failed: each one is done or waits to resume, with every epoch it recorded once
    # (tests/test_service_stopping.py has another worker finish a stopped job).
    everything = jobs(settings)
    assert {j.status for j in everything} <= {"queued", "succeeded"}, [
        (j.id, j.status, j.error) for j in everything
    ]
    with session_scope(settings.database_url) as session:
        for job in everything:
            epochs = session.scalars(
                select(Metric.epoch).where(Metric.job_id == job.id).order_by(Metric.epoch)
            ).all()
            assert list(epochs) == list(range(len(epochs))), job.id  # from epoch 0
    print(f"{len(everything)} jobs, none failed, every epoch recorded once")
    requeued = sum(
        (home / f"round{n:02d}.log").read_text(errors="replace").count("queued again")
        for n in range(ROUNDS)
    )
    print(f"jobs given back by a stopping worker: {requeued}")
    assert requeued > 0
