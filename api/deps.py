"""Typed dependencies: settings, a database session, the caller, and the job or model a path
names."""

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Caller
from api.serving import Loaded, ModelCache
from core.db import Job, sessionmaker_for
from core.settings import Settings, get_settings


def settings_of(app: Any) -> Settings:
    """The app's settings: get_settings(), or what a test put in its place through
    app.dependency_overrides (for the lifespan and middleware, which have no dependencies)."""
    return app.dependency_overrides.get(get_settings, get_settings)()


async def app_settings(request: Request) -> Settings:
    """settings_of the request's app; a coroutine, so FastAPI does not hand it to its
    threadpool."""
    return settings_of(request.app)


SettingsDep = Annotated[Settings, Depends(app_settings)]
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


# The two ways to present a key, as the OpenAPI document states them (Swagger UI's Authorize);
# api/auth.py reads the headers itself, so neither refuses a request here.
BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


async def key_schemes(
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    _key: Annotated[str | None, Security(API_KEY)],
) -> None:
    """Declares the key schemes on an operation; either one will do."""


async def get_caller(request: Request, settings: SettingsDep) -> Caller:
    """The owner the request's API key names (see api/auth.py); 401 without a valid one."""
    return await request.app.state.callers.identify(request, settings)


CallerDep = Annotated[Caller, Depends(get_caller)]


def found(job_id: str, job: Any, caller: Caller) -> None:
    """404 unless the job exists and the caller may see it (another owner's is a 404, as if it
    did not exist). `job` may be a row with the job's owner_id alone."""
    if job is None or not caller.sees(job.owner_id):
        raise HTTPException(404, f"no job {job_id!r}")


def trained(job_id: str, status: str) -> None:
    """409 unless the job succeeded, so its final weights are stored."""
    if status != "succeeded":
        raise HTTPException(409, f"job {job_id} is {status}; only succeeded jobs have a model")


def get_job(
    session: SessionDep, caller: CallerDep, job_id: Annotated[str, Path(max_length=64)]
) -> Job:
    """The job, if the caller may see it."""
    job = session.get(Job, job_id)
    found(job_id, job, caller)
    return job


JobDep = Annotated[Job, Depends(get_job)]


def get_trained_model(job: JobDep) -> Job:
    """A job whose model can be served."""
    trained(job.id, job.status)
    return job


ModelDep = Annotated[Job, Depends(get_trained_model)]


async def get_loaded(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    job_id: Annotated[str, Path(max_length=64)],
) -> Loaded:
    """What an inference verb needs: the job (as get_trained_model: one the caller sees,
    succeeded) and its model from the app's cache. A cached model needs no query: a succeeded
    job's owner and weights never change. Otherwise the job is read and its model loaded on
    the threadpool, with a read-only session that ends before the verb runs (a verb may run for
    seconds, or wait for its batch, and holds no connection meanwhile)."""
    models = request.app.state.models
    loaded = models.find(job_id)
    if loaded is None:
        loaded = await run_in_threadpool(load, models, settings, job_id, caller)
    found(job_id, loaded, caller)
    return loaded


def load(models: ModelCache, settings: Settings, job_id: str, caller: Caller) -> Loaded:
    with sessionmaker_for(settings.database_url, read_only=True)() as session:
        job = session.get(Job, job_id)
        found(job_id, job, caller)
        trained(job_id, job.status)
        return models.get(session, job)


LoadedDep = Annotated[Loaded, Depends(get_loaded)]
