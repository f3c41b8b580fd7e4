"""Typed dependencies: settings, a database session, the caller, and the job or model a path
names."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy.orm import Session

from api.auth import Caller, identify
from core.db import Job, sessionmaker_for
from core.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]
# The deepest page a list serves: within every database's integer range, so a larger offset
# is a 422, not a database error.
MAX_OFFSET = 10**9


def reads_only(request: Request) -> bool:
    """GET requests and the models' inference verbs (POST /models/{id}/<verb>) write nothing."""
    return request.method in ("GET", "HEAD") or request.url.path.startswith("/models/")


def get_session(request: Request, settings: SettingsDep) -> Iterator[Session]:
    """A session per request; handlers that write commit explicitly, the rest roll back. A
    request that only reads gets a read-only session (core.db.sessionmaker_for: on SQLite it
    takes no write lock, so concurrent readers do not queue one behind the other)."""
    with sessionmaker_for(settings.database_url, reads_only(request))() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_caller(request: Request, session: SessionDep, settings: SettingsDep) -> Caller:
    """The owner the request's API key names (see api/auth.py); 401 without a valid one."""
    return identify(request, session, settings)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_job(
    session: SessionDep, caller: CallerDep, job_id: Annotated[str, Path(max_length=64)]
) -> Job:
    """The job, if the caller may see it (another owner's is a 404, as if it did not exist)."""
    job = session.get(Job, job_id)
    if job is None or not caller.sees(job.owner_id):
        raise HTTPException(404, f"no job {job_id!r}")
    return job


JobDep = Annotated[Job, Depends(get_job)]


def get_trained_model(job: JobDep) -> Job:
    """A job whose model can be served: it succeeded, so its final weights are stored."""
    if job.status != "succeeded":
        raise HTTPException(409, f"job {job.id} is {job.status}; only succeeded jobs have a model")
    return job


ModelDep = Annotated[Job, Depends(get_trained_model)]
