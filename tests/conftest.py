"""Shared fixtures. In-process code gets a throwaway ANNLAB_HOME before anything reads settings."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ["ANNLAB_HOME"] = tempfile.mkdtemp(prefix="annlab-tests-")
# One torch thread per process: the suite runs the test process, an API and workers side by side
# on small machines, where torch's threads would only fight each other (and the models are tiny).
os.environ.setdefault("OMP_NUM_THREADS", "1")
for name in ("DATABASE_URL", "BROKER_URL", "ANNLAB_DATABASE_URL", "ANNLAB_BROKER_URL"):
    os.environ.pop(name, None)
# In-process tests share a database, where one test's queued jobs would join another's stack:
# they train one job at a time. tests/workers/test_stacked.py trains stacks, and so do the
# service tests' workers (tests/service.py runs them with the default).
os.environ["ANNLAB_STACK_MAX"] = "1"

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import update  # noqa: E402

from core.db import Job, engine_for, migrate, session_scope, utcnow  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def expire_lease(settings: Settings, job_id: str) -> None:
    """What a dead worker leaves behind once its lease runs out."""
    with session_scope(settings.database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


@contextmanager
def api_client(**overrides: Any) -> Iterator[TestClient]:
    """The real app over the migrated test database, with these settings changed."""
    migrate(get_settings().database_url)
    from api.auth import Callers
    from api.main import app

    changed = get_settings().model_copy(update=overrides)
    app.dependency_overrides[get_settings] = lambda: changed
    app.state.callers = Callers()  # no caller found under another test's settings
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.dependency_overrides.pop(get_settings, None)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings over a fresh, migrated SQLite database, with short leases."""
    s = Settings(home=tmp_path, lease_seconds=5, heartbeat_seconds=0.5, checkpoint_seconds=60)
    s.ensure_dirs()
    migrate(s.database_url)
    return s


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Like `settings`, once on SQLite and once on a fresh database on the real PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("settings")
        return
    from tests.service import PostgresDatabase, postgres_and_redis_reason, require

    require(postgres_and_redis_reason())
    database = PostgresDatabase()
    try:
        s = Settings(home=tmp_path, database_url=database.url, lease_seconds=5)
        migrate(s.database_url)
        yield s
    finally:
        engine_for(database.url).dispose()
        database.drop()


@pytest.fixture(scope="session", params=["embedded", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The real API and a Celery worker as processes, on one backend; shared by the service
    test modules (a test that kills a process starts a new one before it ends)."""
    from tests.service import postgres_and_redis_reason, require, running

    if request.param == "postgres":
        require(postgres_and_redis_reason())
    with running(request.param, tmp_path_factory.mktemp(request.param)) as svc:
        yield svc
