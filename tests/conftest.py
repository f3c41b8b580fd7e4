"""Shared fixtures. In-process code gets a throwaway ANNLAB_HOME before anything reads settings."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ["ANNLAB_HOME"] = tempfile.mkdtemp(prefix="annlab-tests-")
# One torch thread per process: the suite runs the test process, an API and workers side by side
# on small machines, where torch's threads would only fight each other (and the models are tiny).
os.environ.setdefault("OMP_NUM_THREADS", "1")
for name in ("DATABASE_URL", "BROKER_URL", "ANNLAB_DATABASE_URL", "ANNLAB_BROKER_URL"):
    os.environ.pop(name, None)

import pytest  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

from core.db import engine_for  # noqa: E402
from core.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def migrate(url: str) -> None:
    """Apply the Alembic migrations to `url`, as `alembic upgrade head` does."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


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
    from tests.service import PostgresDatabase, postgres_and_redis_reason

    if reason := postgres_and_redis_reason():
        if os.environ.get("ANNLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    database = PostgresDatabase()
    try:
        s = Settings(home=tmp_path, database_url=database.url, lease_seconds=5)
        migrate(s.database_url)
        yield s
    finally:
        engine_for(database.url).dispose()
        database.drop()
