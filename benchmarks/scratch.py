"""A scratch annlab home for the benchmarks that train in their own process: a fresh SQLite
database with the migrations applied, and job documents queued in it for
workers.runner.run_job to train as a worker would."""

import tempfile
from pathlib import Path
from typing import Any

from core.db import migrate, session_scope
from core.jobs import new_job
from core.settings import Settings
from models.specs import parse_job_spec


def scratch_settings(home: str | None = None, **overrides: Any) -> Settings:
    """Settings over a new home (a temporary directory unless given), its database migrated."""
    home = home or tempfile.mkdtemp(prefix="annlab-bench-")
    settings = Settings(home=Path(home), **overrides)
    settings.ensure_dirs()
    migrate(settings.database_url)
    return settings


def queue(settings: Settings, document: dict[str, Any]) -> tuple[str, Any]:
    """The id of a new queued job for `document`, with its stack key as the API sets it, and
    its parsed spec."""
    spec = parse_job_spec(document)
    with session_scope(settings.database_url) as session:
        job = new_job(session, spec.model_dump(mode="json"), stack_key=spec.stack_key())
        return job.id, spec
