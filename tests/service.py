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
import pytest

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


def require(reason: str | None) -> None:
    """Where `reason` says a service is missing: the test fails under ANNLAB_REQUIRE_SERVICES=1
    (`.ci/run`, where the services must run), else it is skipped."""
    if reason is None:
        return
    if os.environ.get("ANNLAB_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


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


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start again at will (the
    machine's Redis is never touched). It keeps nothing on disk: a restart empties it, as a
    broker that lost its data would be."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.home / "redis.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not self.answers():
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.05)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.process = None


class Service:
    def __init__(self, backend: str, home: Path):
        self.backend, self.home = backend, home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "ANNLAB_STACK_MAX"},
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
        self.others: list[subprocess.Popen] = []  # more API processes
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.clients = [self.client]

    # --- processes -------------------------------------------------------------------------

    def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.home / log_name, "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env or self.env,
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

    @staticmethod
    def _uvicorn(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    def start_api(self, wait: bool = True) -> None:
        """The API process; unless not `wait`, once it answers (else `wait_for_api`)."""
        self.api = self._spawn(self._uvicorn(self.port), "api.log")
        if wait:
            self.wait_for_api()

    def wait_for_api(self) -> None:
        self.wait_for(lambda: self._healthy(self.client), 90, "the API to answer /healthz")

    def start_another_api(self, home: Path) -> httpx.Client:
        """One more API process, on its own port with its own ANNLAB_HOME (as on another
        machine), on the same database and broker; a client for it."""
        port = free_port()
        env = self.env | {"ANNLAB_HOME": str(home)}
        self.others.append(self._spawn(self._uvicorn(port), f"api-{port}.log", env))
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.clients.append(client)
        self.wait_for(lambda: self._healthy(client), 90, f"the API on port {port}")
        return client

    @staticmethod
    def _healthy(client: httpx.Client) -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, supervised: bool = False, home: Path | None = None) -> subprocess.Popen:
        """A Celery worker process (under workers/supervise.py, as `make run` runs it, if
        `supervised`; with its own ANNLAB_HOME if `home`), once it says it is ready."""
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
            self.env | {"ANNLAB_HOME": str(home)} if home else None,
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
        processes = [*self.workers, *self.others, self.api]
        for process in processes:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            if process is not None:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        for client in self.clients:
            client.close()
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
        self.wait_for(lambda: len(self.metrics(job["id"])) >= 4, timeout / 2, "three epochs")
        self.kill(self.workers[-1])
        killed_at = len(self.metrics(job["id"]))  # the rows of epochs 0 .. killed_at - 1
        self.start_worker()

        done = self.wait_status(job["id"], {"succeeded", "failed"}, timeout=timeout)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        history = self.metrics(job["id"])
        assert [row["epoch"] for row in history] == list(range(epochs + 1))
        resumed = [row["epoch"] for row in history if row["attempt"] == 2]
        assert resumed and resumed[0] >= killed_at >= 4
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
        svc.start_api(wait=False)  # the API and the worker start side by side
        if worker:
            svc.start_worker()
        svc.wait_for_api()
        yield svc
    finally:
        svc.stop()
