"""Job state transitions in SQL. The database is the truth about who runs what.

A worker owns a job while it holds the job's lease (a random token and an expiry). Every write a
worker makes is guarded by that token, so a worker that lost its lease (stalled past the expiry,
or the job was taken up again elsewhere) can no longer change the job: its write raises LeaseLost.
Claiming is one conditional UPDATE, atomic on PostgreSQL (row lock) and SQLite (BEGIN IMMEDIATE).
"""

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from core.db import Artifact, Checkpoint, Job, Metric, utcnow


class LeaseLost(Exception):
    """This worker no longer owns the job; it must stop without writing anything more."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    token: str
    attempt: int


def new_job(
    session: Session,
    spec: dict[str, Any],
    *,
    owner_id: str | None = None,
    rerun_of: str | None = None,
    sweep: tuple[str, int, int] | None = None,
    n_params: int | None = None,
    stack_key: str | None = None,
) -> Job:
    """A queued job, not sent yet: the caller commits, sends it and then calls mark_sent (a job
    whose sender died in between is sent by the reaper within seconds). A sweep's job (sweep
    id, cell, repeat) waits for core.sweeps.release instead. `n_params`: its model's count, as
    admission found it; `stack_key`: which jobs it may train with as one stack."""
    sweep_id, cell, repeat = sweep or (None, None, None)
    job = Job(
        id=uuid.uuid4().hex,
        family=spec["family"],
        status="queued",
        spec=spec,
        owner_id=owner_id,
        rerun_of=rerun_of,
        sweep_id=sweep_id,
        sweep_cell=cell,
        sweep_repeat=repeat,
        n_params=n_params,
        stack_key=stack_key,
        progress={"epoch": 0, "epochs": spec.get("train", {}).get("epochs"), "percent": 0.0},
        dispatched_at=None,
    )
    session.add(job)
    session.flush()
    return job


def mark_sent(session: Session, job_ids: Iterable[str], *, since: datetime) -> None:
    """Record that the broker took these jobs' messages, sent from `since` on (read before the
    first send). A job a worker took up meanwhile is left alone, and so is one it left queued
    (claim's quota check unsends it, which moves its updated_at past `since`)."""
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.status == "queued", Job.updated_at <= since)
        .values(dispatched_at=since)
    )


def claim(
    session: Session,
    job_id: str,
    *,
    worker: str,
    lease_seconds: float,
    max_attempts: int,
    max_running: int | None = None,
) -> Lease | None:
    """Take the job if it is queued, or running under an expired lease; None if not ours to run.

    A queued job whose owner already has `max_running` jobs running is not taken: it is marked
    unsent, so that it is sent again a few seconds later (by the reaper; a sweep's job by the
    sweep's release), and the worker takes the next message meanwhile."""
    now = utcnow()
    if max_running is not None and _owner_at_quota(session, job_id, max_running):
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(dispatched_at=None)  # updated_at: the reaper's clock for it
        )
        return None
    token = uuid.uuid4().hex
    claimable = or_(
        Job.status == "queued",
        and_(Job.status == "running", Job.lease_expires_at < now),
    )
    taken = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .where(Job.attempts < max_attempts)
        .values(
            status="running",
            lease_token=token,
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            error=None,
            started_at=func.coalesce(Job.started_at, now),  # its first attempt's start
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        return None
    attempts = session.scalar(select(Job.attempts).where(Job.id == job_id))
    return Lease(job_id=job_id, token=token, attempt=attempts)


def claim_stack(
    session: Session,
    job_id: str,
    *,
    worker: str,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    max_running: int | None = None,
) -> list[Lease]:
    """Take up to `limit` jobs with the stack key of job `job_id` (which this worker holds),
    oldest first, to train with it as one stack: each taken as claim takes one (queued, or
    running under an expired lease)."""
    key = session.scalar(select(Job.stack_key).where(Job.id == job_id))
    if key is None or limit <= 0:
        return []
    claimable = or_(
        Job.status == "queued",
        and_(Job.status == "running", Job.lease_expires_at < utcnow()),
    )
    candidates = session.scalars(
        select(Job.id)
        .where(Job.stack_key == key, claimable, Job.id != job_id)
        .where(Job.cancel_requested.is_(False))
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    leases = []
    for candidate in candidates:
        lease = claim(
            session,
            candidate,
            worker=worker,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            max_running=max_running,
        )
        if lease is not None:
            leases.append(lease)
    return leases


def unstack(session: Session, job_ids: list[str]) -> None:
    """These jobs train alone from now on."""
    session.execute(update(Job).where(Job.id.in_(job_ids)).values(stack_key=None))


def _owner_at_quota(session: Session, job_id: str, max_running: int) -> bool:
    owner = session.scalar(select(Job.owner_id).where(Job.id == job_id, Job.status == "queued"))
    if owner is None:  # a job of the anonymous local user, or not a queued one
        return False
    running = session.scalar(
        select(func.count(Job.id)).where(Job.owner_id == owner, Job.status == "running")
    )
    return running >= max_running


def _guarded(session: Session, lease: Lease, lease_seconds: float, **values: Any) -> None:
    """Renew the lease and write `values`; raise LeaseLost if the job is no longer ours."""
    renewed = session.execute(
        update(Job)
        .where(Job.id == lease.job_id, Job.lease_token == lease.token, Job.status == "running")
        .values({"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds), **values})
        # No loaded Job is kept in step: the caller's session holds none it reads again.
        .execution_options(synchronize_session=False)
    ).rowcount
    if not renewed:
        raise LeaseLost(lease.job_id)


def _renew_all(
    session: Session, leases: list[tuple[Lease, dict[str, Any] | None]], lease_seconds: float
) -> dict[str, tuple[str | None, bool]]:
    """Renew each lease (and write its progress, where given) with one executemany per kind;
    returns each of these jobs still running as (its lease token, whether a cancel was asked
    for). A job whose token is not its lease's was not renewed: its lease is lost."""
    table = Job.__table__
    renewed = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    for with_progress in (True, False):
        chosen = [(lease, p) for lease, p in leases if (p is not None) == with_progress]
        if not chosen:
            continue
        values = renewed | ({"progress": bindparam("b_progress")} if with_progress else {})
        session.execute(
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                table.c.lease_token == bindparam("b_token"),
                table.c.status == "running",
            )
            .values(values),
            [
                {"b_id": lease.job_id, "b_token": lease.token}
                | ({"b_progress": p} if with_progress else {})
                for lease, p in chosen
            ],
        )
    # The rows renewed above are locked until the commit: their tokens read back as ours.
    found = session.execute(
        select(table.c.id, table.c.lease_token, table.c.cancel_requested).where(
            table.c.id.in_([lease.job_id for lease, _ in leases]), table.c.status == "running"
        )
    )
    return {job_id: (token, bool(cancel)) for job_id, token, cancel in found}


def heartbeats(
    session: Session, beats: list[tuple[Lease, dict[str, Any] | None]], *, lease_seconds: float
) -> tuple[list[Lease], list[Lease]]:
    """heartbeat for many jobs (a stack's) at once: the leases lost, and those whose jobs
    were asked to cancel."""
    found = _renew_all(session, beats, lease_seconds)
    lost, cancelled = [], []
    for lease, _ in beats:
        token, cancel = found.get(lease.job_id, (None, False))
        if token != lease.token:
            lost.append(lease)
        elif cancel:
            cancelled.append(lease)
    return lost, cancelled


def heartbeat(
    session: Session, lease: Lease, *, lease_seconds: float, progress: dict[str, Any] | None = None
) -> bool:
    """Renew the lease (and publish progress); returns whether a cancel was asked for."""
    lost, cancelled = heartbeats(session, [(lease, progress)], lease_seconds=lease_seconds)
    if lost:
        raise LeaseLost(lease.job_id)
    return bool(cancelled)


def set_model_facts(
    session: Session,
    lease: Lease,
    *,
    lease_seconds: float,
    n_params: int,
    data_info: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    _guarded(
        session,
        lease,
        lease_seconds,
        n_params=n_params,
        data_info=data_info,
        provenance=provenance,
    )


def _put_checkpoints(
    session: Session, kind: str, written: list[tuple[str, int, int, bytes]]
) -> None:
    """Each job's checkpoint of this kind, (job id, epoch, step, data), in place of the one it
    had: one executemany for those replaced, one for those new."""
    if not written:
        return
    table = Checkpoint.__table__
    present = set(
        session.scalars(
            select(table.c.job_id).where(
                table.c.job_id.in_([job_id for job_id, *_ in written]), table.c.kind == kind
            )
        )
    )
    now = utcnow()
    rows = [
        {"b_job": job_id, "epoch": epoch, "step": step, "data": data, "created_at": now}
        for job_id, epoch, step, data in written
    ]
    changed = [row for row in rows if row["b_job"] in present]
    if changed:
        session.execute(
            update(table)
            .where(table.c.job_id == bindparam("b_job"), table.c.kind == kind)
            .values(
                epoch=bindparam("epoch"),
                step=bindparam("step"),
                data=bindparam("data"),
                created_at=bindparam("created_at"),
            ),
            changed,
        )
    added = [
        {"job_id": row["b_job"], "kind": kind} | {k: v for k, v in row.items() if k != "b_job"}
        for row in rows
        if row["b_job"] not in present
    ]
    if added:
        session.execute(insert(table), added)


@dataclass
class EpochRow:
    """An ended epoch's metric row and artifacts, as a job records them."""

    fold: int
    epoch: int
    seconds: float
    values: dict[str, float]
    artifacts: dict[str, bytes] = field(default_factory=dict)


METRIC_COLUMNS = ("job_id", "fold", "epoch", "seconds", "attempt", "values", "created_at")


@functools.cache
def _metric_insert(dialect: Dialect) -> tuple[str, tuple[str, ...] | None, Any]:
    """The metrics table's INSERT in the dialect's own parameter style, the order of its
    parameters (None: by name), and the bind processor of its time column."""
    table = Metric.__table__
    columns = list(METRIC_COLUMNS)
    compiled = insert(table).compile(dialect=dialect, column_keys=columns, for_executemany=True)
    order = compiled.positiontup
    as_time = table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    order = tuple(order) if order is not None else None
    return str(compiled), order, as_time or (lambda v: v)


def _bound(fields: tuple, order: tuple[str, ...] | None) -> tuple | dict[str, Any]:
    """A row's parameters (in METRIC_COLUMNS' order) as the statement takes them."""
    named = dict(zip(METRIC_COLUMNS, fields, strict=True))
    return named if order is None else tuple(named[name] for name in order)


def _add_rows(session: Session, written: Iterable[tuple[Lease, Iterable[EpochRow]]]) -> None:
    """Jobs' rows and their artifacts, each kind in one executemany. A stack writes thousands
    of metric rows at once: their parameters go to the driver as the column types bind them,
    without Core's processing of each row."""
    now = utcnow()
    metrics, artifacts = [], []
    connection = session.connection()
    sql, order, as_time = _metric_insert(connection.dialect)
    created = as_time(now)
    for lease, rows in written:
        for row in rows:
            fields = (lease.job_id, row.fold, row.epoch, row.seconds, lease.attempt)
            # JSON text by orjson: the values are finite numbers (refused otherwise before any
            # row is written).
            fields += (orjson.dumps(row.values).decode(), created)
            metrics.append(fields if order == METRIC_COLUMNS else _bound(fields, order))
            at = {"job_id": lease.job_id, "fold": row.fold, "epoch": row.epoch, "created_at": now}
            artifacts += [at | {"name": name, "data": data} for name, data in row.artifacts.items()]
    if metrics:
        connection.exec_driver_sql(sql, metrics)
    if artifacts:
        session.execute(insert(Artifact.__table__), artifacts)


def record_rows(
    session: Session,
    lease: Lease,
    *,
    lease_seconds: float,
    rows: list[EpochRow],
    checkpoint: bytes,
    epoch: int,
    step: int,
    progress: dict[str, Any],
) -> None:
    """Epochs' metric rows, their artifacts and the checkpoint that follows them (`latest`, at
    (epoch, step)), in one transaction: all or none, so a resumed run records each epoch
    once."""
    _guarded(session, lease, lease_seconds, progress=progress)
    _add_rows(session, [(lease, rows)])
    _put_checkpoints(session, "latest", [(lease.job_id, epoch, step, checkpoint)])


@dataclass
class EpochWrite:
    """One job's share of a stack's write: its rows, the checkpoint after them (at (epoch,
    step)) and its progress."""

    lease: Lease
    rows: list[EpochRow]
    checkpoint: bytes
    epoch: int
    step: int
    progress: dict[str, Any]


def record_epochs(
    session: Session, writes: list[EpochWrite], *, lease_seconds: float
) -> list[Lease]:
    """record_rows for every job of a stack, in the caller's one transaction; returns the
    leases that were lost (those jobs' rows are left out). Each kind of statement goes once,
    with every job's parameters (executemany)."""
    if not writes:
        return []
    found = _renew_all(session, [(w.lease, w.progress) for w in writes], lease_seconds)
    ours = {
        w.lease.job_id for w in writes if found.get(w.lease.job_id, (None,))[0] == w.lease.token
    }
    kept = [w for w in writes if w.lease.job_id in ours]
    lost = [w.lease for w in writes if w.lease.job_id not in ours]
    _add_rows(session, [(w.lease, w.rows) for w in kept])
    _put_checkpoints(
        session, "latest", [(w.lease.job_id, w.epoch, w.step, w.checkpoint) for w in kept]
    )
    return lost


def artifacts_of(session: Session, job_id: str, name: str) -> list[Artifact]:
    """A job's artifacts called `name`, by fold and epoch."""
    query = select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
    return list(session.scalars(query.order_by(Artifact.fold, Artifact.epoch)))


def latest_checkpoint(session: Session, job_id: str, kind: str = "latest") -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.kind == kind)
    )


def finish(
    session: Session,
    lease: Lease,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    final_checkpoint: bytes | None = None,
    epoch: int = 0,
    progress: dict[str, Any] | None = None,
    rows: Iterable[EpochRow] = (),
) -> None:
    """End the job as succeeded, failed or cancelled (guarded by the lease), with the rows of
    its ended epochs not yet written: a job that ends does not resume, so they need no
    checkpoint after them, and in this one transaction no resumed run repeats them."""
    values: dict[str, Any] = {
        "status": status,
        "finished_at": utcnow(),
        "lease_token": None,
        "lease_expires_at": None,
        "result": result,
        "error": error,
    }
    if progress is not None:
        values["progress"] = progress
    _guarded(session, lease, 0.0, **values)
    _add_rows(session, [(lease, rows)])
    if final_checkpoint is not None:
        _put_checkpoints(session, "final", [(lease.job_id, epoch, 0, final_checkpoint)])


@dataclass
class Success:
    """A job that succeeded: its result, the weights it serves (after `epoch`) and its last
    progress."""

    lease: Lease
    result: dict[str, Any]
    final_checkpoint: bytes
    epoch: int
    progress: dict[str, Any]


def succeed(session: Session, ends: list[Success]) -> list[Lease]:
    """finish(..., "succeeded") for every job of `ends` (a stack's that end at one epoch), in
    the caller's transaction, one statement of each kind for all; returns the leases that were
    lost (those jobs are left as they stand)."""
    table = Job.__table__
    ids = [e.lease.job_id for e in ends]
    # Locked until the commit (PostgreSQL; SQLite's writer holds the database): still ours.
    held = dict(
        session.execute(
            select(table.c.id, table.c.lease_token)
            .where(table.c.id.in_(ids), table.c.status == "running")
            .with_for_update()
        ).all()
    )
    kept = [e for e in ends if held.get(e.lease.job_id) == e.lease.token]
    if kept:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.lease_token == bindparam("b_token"))
            .values(
                status="succeeded",
                finished_at=utcnow(),
                lease_token=None,
                lease_expires_at=None,
                result=bindparam("b_result"),
                error=None,
                progress=bindparam("b_progress"),
            ),
            [
                {
                    "b_id": e.lease.job_id,
                    "b_token": e.lease.token,
                    "b_result": e.result,
                    "b_progress": e.progress,
                }
                for e in kept
            ],
        )
        _put_checkpoints(
            session, "final", [(e.lease.job_id, e.epoch, 0, e.final_checkpoint) for e in kept]
        )
    ours = {e.lease.job_id for e in kept}
    return [e.lease for e in ends if e.lease.job_id not in ours]


def requeue(session: Session, lease: Lease) -> None:
    """Give the job back: queued, unsent, its lease released and this attempt not counted (its
    worker was stopped, the job did not fail). It resumes from its latest checkpoint; a cancel
    asked for meanwhile ends it instead."""
    _guarded(
        session,
        lease,
        0.0,
        status="queued",
        lease_token=None,
        lease_expires_at=None,
        worker=None,
        attempts=Job.attempts - 1,
        dispatched_at=None,
    )
    session.execute(
        update(Job)
        .where(Job.id == lease.job_id, Job.status == "queued", Job.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=utcnow())
    )


def request_cancel(session: Session, job_id: str) -> None:
    """A queued job is cancelled at once; a running one is flagged and its worker stops it."""
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", finished_at=utcnow())
    )


def reap(
    session: Session,
    *,
    max_attempts: int,
    redispatch_seconds: float,
    unsent_seconds: float = 3.0,
    memory_limit: int | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Take back jobs whose worker vanished; return the ids whose task must be sent (again),
    oldest first. The caller commits, sends them and marks those the broker took (mark_sent):
    a send that fails leaves its job unsent, so it comes back here at the next call.

    A running job whose lease expired goes back to the queue, unsent (or ends: cancelled if a
    cancel was asked for, failed once it has used up its attempts). A job not marked sent for
    `unsent_seconds` (its sender died, or the broker refused it) is sent; a queued job sent
    `redispatch_seconds` ago and still not taken up is sent again, in case the broker lost its
    message. A job whose worker was lost while it held 90% or more of `memory_limit` (its last
    heartbeat says) was most likely killed for memory: it fails, and is not retried on another
    worker to take that one down too; one that trained in a stack (its progress says
    `stack_jobs`) goes back to the queue to train alone.
    """
    now = now or utcnow()
    expired = session.scalars(
        select(Job)
        .where(Job.status == "running", Job.lease_expires_at < now)
        .order_by(Job.created_at)
        .with_for_update(skip_locked=True)
    ).all()
    requeued = []
    for job in expired:
        job.lease_token, job.lease_expires_at = None, None
        held = (job.progress or {}).get("memory_bytes") or 0
        near_limit = memory_limit is not None and held >= 0.9 * memory_limit
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", now
        elif near_limit and (job.progress or {}).get("stack_jobs", 1) > 1:
            # The memory was its stack's: the job goes back to the queue to train alone.
            job.status, job.dispatched_at, job.stack_key = "queued", None, None
            requeued.append(job.id)
        elif near_limit:
            job.status, job.finished_at = "failed", now
            job.error = (
                f"the worker running this job was lost while the job held {held / 2**30:.1f} "
                f"GiB, near the {memory_limit / 2**30:.1f} GiB a worker has "
                "(ANNLAB_WORKER_MEMORY_BYTES): most likely killed for memory, so it is not "
                "retried on another worker; make the batch or the model smaller"
            )
        elif job.attempts >= max_attempts:
            job.status, job.finished_at = "failed", now
            job.error = (
                f"the worker running this job was lost {job.attempts} times "
                "(killed, out of memory, or its machine went away)"
            )
        else:
            job.status, job.dispatched_at = "queued", None
            requeued.append(job.id)
    stale = session.scalars(
        select(Job.id)
        .where(
            Job.status == "queued",
            Job.dispatched_at < now - timedelta(seconds=redispatch_seconds),
        )
        .order_by(Job.created_at)
    ).all()
    unsent = session.scalars(
        select(Job.id)
        .where(
            Job.status == "queued",
            Job.dispatched_at.is_(None),
            Job.sweep_id.is_(None),  # a sweep's jobs wait for core.sweeps.release
            Job.updated_at < now - timedelta(seconds=unsent_seconds),
        )
        .order_by(Job.created_at)
    ).all()
    return list(dict.fromkeys([*requeued, *stale, *unsent]))
