"""Jobs: submit, list, inspect, follow, cancel."""

import base64
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import String, cast, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import plots
from api.auth import Caller
from api.deps import MAX_OFFSET, CallerDep, JobDep, SessionDep, SettingsDep
from api.errors import field_error
from api.idempotency import KeyHeader, earlier, remember, scoped
from api.routing import Route
from api.schemas import (
    PNG,
    JobComparison,
    JobPatch,
    JobPublic,
    JobsPublic,
    JobStatus,
    MetricsPublic,
    Problem,
    answers,
)
from core import feature_nets
from core.catalog import CATALOG, DatasetInfo, is_available, resolve
from core.db import FINISHED, Job, Metric, sessionmaker_for, utcnow
from core.jobs import artifacts_of, mark_sent, new_job, request_cancel
from core.settings import Settings
from core.spec import JobSpecBase
from core.uploads import upload_infos
from models.specs import JOB_EXAMPLES, JobSpec, parse_job_spec
from workers.dispatch import send_feature_net, try_send_job

log = logging.getLogger(__name__)

router = APIRouter(
    route_class=Route,
    prefix="/jobs",
    tags=["jobs"],
    responses={
        404: {"model": Problem, "description": "no such job"},
    },
)


def with_upload(spec: JobSpecBase, known: dict[str, DatasetInfo]) -> JobSpecBase:
    """Check a job on an uploaded dataset against the upload's facts (`known`: the caller's
    uploads of that name; none is a 422), and fill in its task."""
    name = spec.dataset.name
    if not known:
        raise field_error(
            422,
            "dataset.name",
            f"no uploaded dataset {name!r}; see GET /datasets",
            "dataset_unknown",
        )
    try:
        return parse_job_spec(spec.model_dump(mode="json"), uploads=known)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def visible_uploads(
    session: SessionDep, caller: Caller, names: list[str]
) -> dict[str, DatasetInfo]:
    """The caller's own uploads among `names` (an admin's too: a job uses its owner's)."""
    return upload_infos(session, names, caller.owner)


def admissible(
    spec: JobSpecBase, session: SessionDep, settings: SettingsDep, caller: Caller
) -> tuple[JobSpecBase, int]:
    """The job as it will run: its dataset here (a built-in one) or checked against the upload
    it names, and its training within a worker's memory budget; and its parameter count."""
    name = spec.dataset.name
    uploads = None if name in CATALOG else visible_uploads(session, caller, [name])
    spec = available(spec, settings, uploads)
    return spec, fits_in_memory(spec, resolve(spec.dataset, uploads), settings)


def fits_in_memory(spec: JobSpecBase, info: DatasetInfo, settings: SettingsDep) -> int:
    """The model's parameter count, once admission accepts the job (a 422 naming the field to
    make smaller if not)."""
    from models.admission import TooBig, check  # loads torch (the model is built on "meta")
    from models.registry import REGISTRY  # noqa: F401 - every family registered
    from models.summary import count_parameters

    try:
        check(spec, info, settings.worker_memory_bytes)
    except TooBig as exc:
        raise field_error(422, exc.field, str(exc), "too_big") from exc
    return count_parameters(spec, info)


def warm_up(settings: Settings) -> None:
    """Import torch and every family and check one job's memory, as the first POST /jobs
    would: the API runs this before it answers, so that the first job costs what the next do."""
    spec = parse_job_spec({"family": "mlp", "dataset": {"name": "digits"}})
    fits_in_memory(spec, CATALOG["digits"], settings)


def available(
    spec: JobSpecBase, settings: SettingsDep, uploads: dict[str, DatasetInfo] | None
) -> JobSpecBase:
    """A built-in dataset (uploads None) must be on this machine; an upload is checked
    against its facts."""
    if uploads is None:
        info = CATALOG[spec.dataset.name]
        if not is_available(info, settings):
            raise field_error(
                422,
                "dataset.name",
                f"dataset {info.name!r} is not available here: {info.how_to_get}",
                "dataset_unavailable",
            )
        return spec
    return with_upload(spec, uploads)


def within_quota(session: SessionDep, settings: SettingsDep, caller: Caller, new: int) -> None:
    """An owner may have ANNLAB_MAX_QUEUED_JOBS jobs waiting; beyond, a 429 to retry later."""
    waiting = session.scalar(
        select(func.count(Job.id)).where(Job.status == "queued", caller.mine(Job.owner_id))
    )
    if waiting + new > settings.max_queued_jobs:
        raise HTTPException(
            429,
            f"{waiting} of your jobs are waiting and this adds {new}; at most "
            f"{settings.max_queued_jobs} may wait at once. Retry when some have started",
            headers={"Retry-After": "60"},
        )


def train_feature_nets(
    settings: Settings, specs: Iterable[JobSpecBase], owner: str | None
) -> list[str]:
    """Send a worker to train the feature net of each built-in dataset these jobs will score
    samples on (models/quality.py) that is neither stored nor being trained, ahead of the
    jobs' need; returns those datasets' names. Never raises: a net not sent for is trained by
    the first job that needs it."""
    from models.admission import generates  # loads torch, as admission did already

    sent: list[str] = []
    try:
        wanted: dict[str, JobSpecBase] = {}
        for spec in specs:
            info = CATALOG.get(spec.dataset.name)
            if spec.dataset.name not in wanted and info is not None and generates(spec, info):
                wanted[spec.dataset.name] = spec
        keys = {feature_nets.key_of(name): name for name in wanted}
        with sessionmaker_for(settings.database_url, read_only=True)() as session:
            found = feature_nets.states(session, keys)
        for key, name in keys.items():
            dataset = wanted[name].dataset.model_dump(mode="json")
            if found[key].status == "absent" and send_feature_net(dataset, owner):
                sent.append(name)
    except Exception:  # noqa: BLE001 - the jobs are queued whatever happens here
        log.exception("could not send for the feature nets of queued jobs")
    return sent


def queue(
    session: SessionDep,
    settings: SettingsDep,
    caller: Caller,
    spec: JobSpecBase,
    n_params: int,
    rerun_of: str | None = None,
    idempotency: tuple[str, Any] | None = None,
) -> Job:
    """Commit the job (with its Idempotency-Key and request, if any), then send it and mark it
    sent; the reaper sends one whose send failed or never happened."""
    within_quota(session, settings, caller, 1)
    job = new_job(
        session,
        spec.model_dump(mode="json"),
        owner_id=caller.owner,
        rerun_of=rerun_of,
        n_params=n_params,
        stack_key=spec.stack_key(caller.owner),
    )
    if idempotency is not None:
        remember(session, "jobs", *idempotency, job.id)
    try:
        session.commit()
    except IntegrityError:  # the same key committed by a request racing this one: its job
        session.rollback()
        assert idempotency is not None
        return session.get(Job, earlier(session, "jobs", *idempotency))
    train_feature_nets(settings, [spec], caller.owner)
    since = utcnow()
    if try_send_job(job.id):
        mark_sent(session, [job.id], since=since)
        session.commit()
    return job


@router.post("", status_code=202, response_model=JobPublic, responses=answers(429))
def create_job(
    spec: Annotated[JobSpec, Body(openapi_examples=JOB_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: KeyHeader = None,
) -> Job:
    """Queue a training job; answers at once with the job (status `queued`). With an
    Idempotency-Key, a retry of the same request answers with the same job."""
    previous, idempotency = replayed(session, caller, idempotency_key, spec.model_dump(mode="json"))
    if previous is not None:
        return previous
    spec, n_params = admissible(spec, session, settings, caller)
    return queue(session, settings, caller, spec, n_params, idempotency=idempotency)


def replayed(
    session: Session, caller: Caller, idempotency_key: str | None, payload: Any
) -> tuple[Job | None, tuple[str, Any] | None]:
    """The job an earlier request with this Idempotency-Key and payload queued (None if
    none), and what `queue` stores with a new job (None without a key)."""
    key = scoped(caller, idempotency_key)
    if (previous := earlier(session, "jobs", key, payload)) is not None:
        return session.get(Job, previous), None
    return None, (key, payload) if key is not None else None


def encode_cursor(job: Job) -> str:
    """An opaque cursor for the jobs after `job` (newest first): its (created_at, id)."""
    key = json.dumps([job.created_at.isoformat(), job.id])
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor encode_cursor made; anything else is a 422 on `cursor`."""
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(job_id, str):
            raise ValueError("not a (created_at, id) pair")
        when = when.astimezone(UTC)
    except (ValueError, TypeError, OverflowError) as exc:
        raise field_error(
            422, "cursor", "not a cursor from this API: pass a page's next_cursor unchanged"
        ) from exc
    return when, job_id


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    status: JobStatus | None = None,
    family: Annotated[str | None, Query(max_length=32)] = None,
    dataset: Annotated[str | None, Query(max_length=200, description="its dataset's name")] = None,
    sweep: Annotated[str | None, Query(max_length=64, description="the sweep's id")] = None,
    tag: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$", description="a tag it has"),
    ] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="words in its name, id, tags or note"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="a page's next_cursor: the jobs after that page"),
    ] = None,
    count: Annotated[
        bool | None,
        Query(description="compute total (by default only for a request without a cursor)"),
    ] = None,
) -> JobsPublic:
    """Newest first, filtered by status, family, dataset, sweep, a tag, and words (`q`, any
    case) in the name, id, tags or note (the caller's own; an admin's: all).

    Two ways to page. `offset` skips that many jobs. `cursor` (keyset pagination) takes the
    `next_cursor` of the page before and answers the jobs after it: every page costs the same
    however deep, and jobs submitted meanwhile neither shift the pages nor show up twice.
    `next_cursor` is null on the last page.

    `total` counts every matching job, which at 100,000 jobs costs more than the page itself,
    so a walk by cursor does not pay it on every page: it is computed for a request without a
    cursor (a first page, an offset page), or when `count=true`; otherwise it is null."""
    query = caller.only_own(select(Job))
    if status is not None:
        query = query.where(Job.status == status)
    if family is not None:
        query = query.where(Job.family == family)
    if dataset is not None:
        query = query.where(Job.spec["dataset"]["name"].as_string() == dataset)
    if sweep is not None:
        query = query.where(Job.sweep_id == sweep)
    if tag is not None:  # its JSON text holds the tag in quotes (tags have no quote or escape)
        query = query.where(cast(Job.tags, String).contains(f'"{tag}"', autoescape=True))
    if q is not None:
        words = q.lower()  # LIKE's wildcards in it are taken literally (autoescape)
        query = query.where(
            or_(
                *(
                    func.lower(column).contains(words, autoescape=True)
                    for column in (Job.name, Job.id, cast(Job.tags, String), Job.note)
                )
            )
        )
    if count is None:
        count = cursor is None  # a walk by cursor counts on its first page only
    total = session.scalar(select(func.count()).select_from(query.subquery())) if count else None
    if cursor is not None:
        query = query.where(tuple_(Job.created_at, Job.id) < decode_cursor(cursor))
    newest_first = (Job.created_at.desc(), Job.id.desc())
    # The page's ids first, from an index alone (an offset skips index entries, not rows),
    # then their rows; one more than the page says whether there is a next one.
    ids = query.with_only_columns(Job.id).order_by(*newest_first).limit(limit + 1).offset(offset)
    jobs = session.scalars(select(Job).where(Job.id.in_(ids)).order_by(*newest_first)).all()
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return JobsPublic(
        items=[JobPublic.model_validate(j) for j in jobs[:limit]],
        total=total,
        limit=limit,
        offset=offset,
        next_cursor=next_cursor,
    )


@router.get("/compare", response_model=JobComparison)
def compare_jobs(
    session: SessionDep,
    caller: CallerDep,
    ids: Annotated[list[str], Query(min_length=2, max_length=20, description="job ids")],
) -> JobComparison:
    """Jobs side by side (a job and its reruns, say): each job, and every result figure and
    provenance entry whose values differ between them."""
    jobs = []
    for job_id in ids:
        job = session.get(Job, job_id[:64])
        if job is None or not caller.sees(job.owner_id):
            raise field_error(404, "ids", f"no job {job_id[:64]!r}", "not_found")
        jobs.append(job)
    differences: dict[str, list[Any]] = {}
    for section in ("result", "provenance"):
        values = [getattr(job, section) or {} for job in jobs]
        for key in sorted(set().union(*values)):
            column = [v.get(key) for v in values]
            if any(c != column[0] for c in column[1:]):
                differences[f"{section}.{key}"] = column
    public = [JobPublic.model_validate(job) for job in jobs]
    return JobComparison(jobs=public, differences=differences)


@router.patch("/{job_id}", response_model=JobPublic)
def update_job(job: JobDep, session: SessionDep, body: JobPatch) -> Job:
    """Set the job's name, tags and note (the fields given; any status; null clears the name
    or the note). Find jobs by tag with GET /jobs?tag=, by words in their name, tags, note or
    id with GET /jobs?q=."""
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes:
        job.name = changes["name"]
    if "tags" in changes:
        job.tags = list(dict.fromkeys(changes["tags"] or []))  # in order, once each
    if "note" in changes:
        job.note = changes["note"]
    session.commit()
    session.refresh(job)
    return job


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job: JobDep) -> Job:
    """A job: its document, status, progress (phase, epoch, ETA), result and provenance."""
    return job


def history(session: SessionDep, job: Job) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Metric).where(Metric.job_id == job.id).order_by(Metric.fold, Metric.epoch)
    )
    folded = bool(job.spec["dataset"].get("kfold"))
    return [
        {
            "epoch": m.epoch,
            **({"fold": m.fold} if folded else {}),
            "seconds": m.seconds,
            "attempt": m.attempt,
            **m.values,
        }
        for m in rows
    ]


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
def read_metrics(job: JobDep, session: SessionDep) -> MetricsPublic:
    """One entry per finished epoch (and fold, for cross-validation), in order; a gradient
    family's first is epoch 0, the initial weights evaluated before any step (seconds 0)."""
    return MetricsPublic(history=history(session, job))


PLOTS = ("learning_curves", "samples")


def samples_over_epochs(session: SessionDep, job: Job, n: int) -> list[tuple[str, np.ndarray]]:
    """One row per epoch that kept samples (GAN, VAE: the epochs the job names)."""
    from core.checkpoint import unpack  # loads torch, which the API loads only when needed

    rows = []
    for artifact in artifacts_of(session, job.id, "samples"):
        images = unpack(artifact.data)[0]["tensor"][:n].numpy()
        fold = f"fold {artifact.fold + 1}, " if job.spec["dataset"].get("kfold") else ""
        rows.append((f"{fold}epoch {artifact.epoch}", images))
    return rows


@router.get(
    "/{job_id}/plots/{name}.png",
    response_class=Response,
    responses=PNG | answers(409),
)
def read_job_plot(
    job: JobDep,
    session: SessionDep,
    name: str,
    n: Annotated[int, Query(ge=1, le=32, description="samples: how many per epoch")] = 12,
) -> Response:
    """Pictures of a job's record, drawn while it runs too: `learning_curves` (train and val
    metrics per epoch); `samples` (GAN, VAE: the same latent points decoded at each epoch the
    job keeps samples of, to watch training and spot collapse)."""
    if name not in PLOTS:
        raise HTTPException(404, f"no plot {name!r}; plots: {', '.join(PLOTS)}")
    title = f"{job.family} on {job.spec['dataset']['name']}"
    if name == "samples":
        rows = samples_over_epochs(session, job, n)
        if not rows:
            raise HTTPException(409, f"job {job.id} has kept no samples (yet)")
        return Response(plots.image_rows(rows, title), media_type="image/png")
    rows = history(session, job)
    if not rows:
        raise HTTPException(409, f"job {job.id} has no finished epoch yet")
    return Response(plots.learning_curves(rows, title), media_type="image/png")


@router.post(
    "/{job_id}/rerun", status_code=202, response_model=JobPublic, responses=answers(409, 429)
)
def rerun_job(
    job: JobDep,
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: KeyHeader = None,
) -> Job:
    """Queue the job's stored document again, as a new job that says which one it reruns;
    compare the two with GET /jobs/compare?ids=<this>&ids=<new>. With an Idempotency-Key, a
    retry answers with the same new job."""
    previous, idempotency = replayed(session, caller, idempotency_key, {"rerun_of": job.id})
    if previous is not None:
        return previous
    try:
        spec = parse_job_spec(job.spec, stored=True)
    except ValidationError as exc:  # a document stored by an older annlab
        raise HTTPException(409, f"job {job.id}'s document no longer validates: {exc}") from exc
    spec, n_params = admissible(spec, session, settings, caller)
    return queue(
        session, settings, caller, spec, n_params, rerun_of=job.id, idempotency=idempotency
    )


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=answers(409))
def cancel_job(job: JobDep, session: SessionDep) -> Job:
    """A queued job ends `cancelled` at once; a running one within a few seconds."""
    if job.status in FINISHED:
        raise HTTPException(409, f"job {job.id} already ended {job.status}")
    request_cancel(session, job.id)
    session.commit()
    session.refresh(job)
    return job
