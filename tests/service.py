"""Real processes for service tests: the API under uvicorn and Celery workers, on a backend.

Backends: `embedded` (SQLite and kombu's SQLite broker, what `make run` uses) and `postgres`
(this machine's PostgreSQL and Redis). Nothing is mocked: migrations run with the alembic CLI,
workers are `celery worker` processes, requests go over HTTP.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("ANNLAB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ANNLAB_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_and_redis_reason() -> str | None:
    """None when both answer, else why not."""
    import psycopg
    import redis

    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL at {PG_ADMIN_URL} does not answer: {exc}"
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


class PostgresDatabase:
    """A fresh database on the real server, dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"annlab_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        self.url = f"{base}/{self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Service:
    def __init__(self, backend: str, home: Path):
        self.backend, self.home = backend, home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ANNLAB_HOME": str(home),
            "ANNLAB_QUEUE": f"annlab-test-{uuid.uuid4().hex[:8]}",
            "ANNLAB_LEASE_SECONDS": "4",
            "ANNLAB_HEARTBEAT_SECONDS": "0.5",
            "ANNLAB_REAPER_SECONDS": "1",
            "ANNLAB_CHECKPOINT_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.database: PostgresDatabase | None = None
        if backend == "postgres":
            self.database = PostgresDatabase()
            self.env |= {"DATABASE_URL": self.database.url, "BROKER_URL": REDIS_URL}
        else:
            for name in ("DATABASE_URL", "BROKER_URL"):
                self.env.pop(name, None)
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.client = httpx.Client(base_url=self.url, timeout=30)

    # --- processes -------------------------------------------------------------------------

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.home / log_name, "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start_api(self) -> None:
        self.api = self._spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            "api.log",
        )
        self.wait_for(lambda: self._healthy(), 90, "the API to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, supervised: bool = False) -> subprocess.Popen:
        """A Celery worker process (under workers/supervise.py, as `make run` runs it, if
        `supervised`), once it says it is ready."""
        n = len(self.workers) + 1
        log_name = f"worker{n}.log"
        supervisor = [sys.executable, "-m", "workers.supervise"] if supervised else []
        worker = self._spawn(
            [
                *supervisor,
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--pool=solo",
                "--loglevel=info",
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"w{n}@%h",
            ],
            log_name,
        )
        self.workers.append(worker)
        self.wait_for(
            lambda: b" ready." in (self.home / log_name).read_bytes(), 90, f"worker {n} to be ready"
        )
        return worker

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL: no cleanup, no acknowledgement, the lease just stops being renewed."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is not None:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        self.client.close()
        if self.database is not None:
            self.database.drop()

    # --- helpers ---------------------------------------------------------------------------

    def logs(self) -> str:
        out = []
        for path in sorted(self.home.glob("*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def submit(self, document: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/jobs", json=document)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/jobs/{job_id}").json()

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
        return self.wait_for(
            lambda: (j := self.job(job_id))["status"] in statuses and j,
            timeout,
            f"job {job_id} to reach {statuses}",
        )

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        return self.client.get(f"/jobs/{job_id}/metrics").json()["history"]

    def kill_mid_run_and_resume(self, document: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Submit a job, kill -9 its worker after its third epoch, start another worker and
        wait for the job to succeed on its second attempt with every epoch once, the ones
        after the kill resumed from the checkpoint instead of starting over; the job."""
        epochs = document["train"]["epochs"]
        job = self.submit(document)
        self.wait_for(lambda: len(self.metrics(job["id"])) >= 3, timeout / 2, "three epochs")
        self.kill(self.workers[-1])
        killed_at = len(self.metrics(job["id"]))
        self.start_worker()

        done = self.wait_status(job["id"], {"succeeded", "failed"}, timeout=timeout)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        history = self.metrics(job["id"])
        assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
        resumed = [row["epoch"] for row in history if row["attempt"] == 2]
        assert resumed and resumed[0] >= killed_at >= 3
        return done


@contextmanager
def running(
    backend: str, home: Path, *, worker: bool = True, env: dict[str, str] | None = None
) -> Iterator[Service]:
    """A Service with its database migrated, its API and (unless `worker` is False) one worker
    started, and `env` added to their environment; everything stopped afterwards."""
    svc = Service(backend, home)
    svc.env |= env or {}
    try:
        svc.migrate()
        svc.start_api()
        if worker:
            svc.start_worker()
        yield svc
    finally:
        svc.stop()
