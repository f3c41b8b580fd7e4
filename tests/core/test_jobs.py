"""The lease state machine, on migrated SQLite and on the real PostgreSQL."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from core.db import Checkpoint, Job, Metric, session_scope, utcnow
from core.jobs import (
    EpochRow,
    EpochWrite,
    LeaseLost,
    Success,
    claim,
    finish,
    heartbeat,
    heartbeats,
    mark_sent,
    new_job,
    reap,
    record_epochs,
    record_rows,
    request_cancel,
    succeed,
)
from core.settings import Settings
from tests.conftest import expire_lease

SPEC = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 3}}


def make_job(db_settings: Settings) -> str:
    with session_scope(db_settings.database_url) as session:
        return new_job(session, SPEC).id


def take(db_settings: Settings, job_id: str, worker: str = "w", max_attempts: int = 3):
    with session_scope(db_settings.database_url) as session:
        return claim(session, job_id, worker=worker, lease_seconds=30, max_attempts=max_attempts)


def job_row(db_settings: Settings, job_id: str) -> Job:
    with session_scope(db_settings.database_url) as session:
        return session.get(Job, job_id)


def test_a_job_is_claimed_once(db_settings: Settings) -> None:
    job_id = make_job(db_settings)
    lease = take(db_settings, job_id, "a")
    assert lease is not None and lease.attempt == 1
    assert take(db_settings, job_id, "b") is None
    row = job_row(db_settings, job_id)
    assert row.status == "running" and row.worker == "a" and row.started_at is not None


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_locked_out(
    db_settings: Settings,
) -> None:
    job_id = make_job(db_settings)
    old = take(db_settings, job_id, "a")
    expire_lease(db_settings, job_id)
    new = take(db_settings, job_id, "b")
    assert new is not None and new.attempt == 2 and new.token != old.token
    with session_scope(db_settings.database_url) as session, pytest.raises(LeaseLost):
        heartbeat(session, old, lease_seconds=30)
    with session_scope(db_settings.database_url) as session:
        assert heartbeat(session, new, lease_seconds=30) is False


def test_epoch_rows_are_unique_per_job_and_epoch(db_settings: Settings) -> None:
    job_id = make_job(db_settings)
    lease = take(db_settings, job_id)
    rows = [EpochRow(fold=0, epoch=1, seconds=0.1, values={"train_loss": 1.0})]
    kwargs = dict(lease_seconds=30, rows=rows, checkpoint=b"x", epoch=1, step=0, progress={})
    with session_scope(db_settings.database_url) as session:
        record_rows(session, lease, **kwargs)
    with pytest.raises(IntegrityError), session_scope(db_settings.database_url) as session:
        record_rows(session, lease, **kwargs)
    with session_scope(db_settings.database_url) as session:
        assert session.query(Metric).filter_by(job_id=job_id).count() == 1


def test_a_finished_job_cannot_be_claimed_or_written(db_settings: Settings) -> None:
    job_id = make_job(db_settings)
    lease = take(db_settings, job_id)
    with session_scope(db_settings.database_url) as session:
        finish(session, lease, "succeeded", result={"test_accuracy": 1.0})
    assert take(db_settings, job_id) is None
    with session_scope(db_settings.database_url) as session, pytest.raises(LeaseLost):
        heartbeat(session, lease, lease_seconds=30)
    row = job_row(db_settings, job_id)
    assert row.status == "succeeded" and row.lease_token is None and row.finished_at


def test_a_stacks_writes_go_to_the_jobs_it_still_holds(db_settings: Settings) -> None:
    """A stack's renewals, rows, checkpoints and successes are written for all its jobs at once
    (one statement of each kind); a job whose lease another worker took over is left as that
    worker has it, and its lease comes back as lost."""
    ids = [make_job(db_settings) for _ in range(3)]
    leases = [take(db_settings, job_id, "stack") for job_id in ids]
    expire_lease(db_settings, ids[2])
    other = take(db_settings, ids[2], "other")
    with session_scope(db_settings.database_url) as session:
        request_cancel(session, ids[1])

    def write(epoch: int) -> list:
        rows = [EpochRow(fold=0, epoch=epoch, seconds=0.1, values={"train_loss": 1.0 / epoch})]
        writes = [
            EpochWrite(lease, rows, f"{lease.job_id}:{epoch}".encode(), epoch, 0, {"epoch": epoch})
            for lease in leases
        ]
        with session_scope(db_settings.database_url) as session:
            return record_epochs(session, writes, lease_seconds=30)

    assert write(1) == [leases[2]]
    assert write(2) == [leases[2]]  # the checkpoints written at epoch 1 are replaced
    with session_scope(db_settings.database_url) as session:
        lost, cancelled = heartbeats(
            session, [(lease, {"epoch": 2}) for lease in leases], lease_seconds=30
        )
        assert (lost, cancelled) == ([leases[2]], [leases[1]])
        stored = {
            c.job_id: (c.epoch, c.data) for c in session.query(Checkpoint).filter_by(kind="latest")
        }
        assert stored == {j: (2, f"{j}:2".encode()) for j in ids[:2]}
        assert session.query(Metric).filter_by(job_id=ids[0]).count() == 2
        assert session.query(Metric).filter_by(job_id=ids[2]).count() == 0
    ends = [
        Success(lease, {"test_loss": 0.5}, b"weights", 3, {"percent": 100.0}) for lease in leases
    ]
    with session_scope(db_settings.database_url) as session:
        assert succeed(session, ends) == [leases[2]]
    for job_id in ids[:2]:
        row = job_row(db_settings, job_id)
        assert row.status == "succeeded" and row.lease_token is None and row.finished_at
        assert row.result == {"test_loss": 0.5} and row.progress == {"percent": 100.0}
    row = job_row(db_settings, ids[2])
    assert row.status == "running" and row.worker == "other" and row.lease_token == other.token
    with session_scope(db_settings.database_url) as session:
        finals = session.query(Checkpoint).filter_by(kind="final").all()
        assert sorted(c.job_id for c in finals) == sorted(ids[:2])


def test_cancel_ends_a_queued_job_and_flags_a_running_one(db_settings: Settings) -> None:
    queued, running = make_job(db_settings), make_job(db_settings)
    lease = take(db_settings, running)
    with session_scope(db_settings.database_url) as session:
        request_cancel(session, queued)
        request_cancel(session, running)
    assert job_row(db_settings, queued).status == "cancelled"
    assert take(db_settings, queued) is None
    assert job_row(db_settings, running).status == "running"
    with session_scope(db_settings.database_url) as session:
        assert heartbeat(session, lease, lease_seconds=30) is True


def test_reaper_requeues_lost_jobs_and_ends_hopeless_ones(db_settings: Settings) -> None:
    lost, cancelled, exhausted, live = (make_job(db_settings) for _ in range(4))
    for job_id in (lost, cancelled, exhausted, live):
        take(db_settings, job_id)
    with session_scope(db_settings.database_url) as session:
        request_cancel(session, cancelled)
        session.execute(update(Job).where(Job.id == exhausted).values(attempts=3))
    for job_id in (lost, cancelled, exhausted):
        expire_lease(db_settings, job_id)
    with session_scope(db_settings.database_url) as session:
        resend = reap(session, max_attempts=3, redispatch_seconds=600)
    assert resend == [lost]
    assert job_row(db_settings, lost).status == "queued"
    assert job_row(db_settings, cancelled).status == "cancelled"
    failed = job_row(db_settings, exhausted)
    assert failed.status == "failed" and "lost 3 times" in failed.error
    assert job_row(db_settings, live).status == "running"
    assert take(db_settings, lost).attempt == 2


def test_reaper_resends_queued_jobs_whose_message_may_be_lost(db_settings: Settings) -> None:
    job_id = make_job(db_settings)
    with session_scope(db_settings.database_url) as session:
        mark_sent(session, [job_id], since=utcnow())
    with session_scope(db_settings.database_url) as session:
        assert reap(session, max_attempts=3, redispatch_seconds=600) == []
        later = utcnow() + timedelta(seconds=601)
        assert reap(session, max_attempts=3, redispatch_seconds=600, now=later) == [job_id]
        mark_sent(session, [job_id], since=later)
        assert reap(session, max_attempts=3, redispatch_seconds=600, now=later) == []


def test_a_job_committed_but_never_sent_is_sent_within_seconds(db_settings: Settings) -> None:
    """The API committed the job and died before sending it: the reaper sends it after
    `unsent_seconds`, not after the 600 s it waits for a message the broker may have lost."""
    unsent, sent = make_job(db_settings), make_job(db_settings)
    with session_scope(db_settings.database_url) as session:
        mark_sent(session, [sent], since=utcnow())
    soon = utcnow() + timedelta(seconds=4)
    with session_scope(db_settings.database_url) as session:
        assert reap(session, max_attempts=3, redispatch_seconds=600, now=utcnow()) == []
        assert reap(session, max_attempts=3, redispatch_seconds=600, now=soon) == [unsent]


def test_the_reaper_counts_a_job_sent_only_once_the_broker_took_it(
    db_settings: Settings,
) -> None:
    """reap returns the jobs to send without marking them sent: a send that fails (the broker
    is down) leaves the job for the next round, not for the 600 s wait of a sent job. A job a
    worker lost is requeued unsent too."""
    unsent, lost = make_job(db_settings), make_job(db_settings)
    take(db_settings, lost)
    expire_lease(db_settings, lost)
    soon = utcnow() + timedelta(seconds=4)
    for _ in range(3):  # every round while the broker is down
        with session_scope(db_settings.database_url) as session:
            resend = reap(session, max_attempts=3, redispatch_seconds=600, now=soon)
        assert sorted(resend) == sorted([lost, unsent])
        assert job_row(db_settings, unsent).dispatched_at is None
        assert job_row(db_settings, lost).dispatched_at is None
    with session_scope(db_settings.database_url) as session:
        mark_sent(session, [unsent, lost], since=utcnow())
    with session_scope(db_settings.database_url) as session:
        assert reap(session, max_attempts=3, redispatch_seconds=600, now=soon) == []


def test_a_job_is_marked_sent_only_while_nothing_else_changed_it(db_settings: Settings) -> None:
    """A worker may take the message before its sender marks it sent: a job it took up stays
    as it is, and one it left queued (its owner at the running quota, which unsends it) stays
    unsent, so that the reaper sends it again within seconds."""
    taken, refused, plain = (make_job(db_settings) for _ in range(3))
    since = utcnow()
    take(db_settings, taken)
    with session_scope(db_settings.database_url) as session:
        session.execute(update(Job).where(Job.id == refused).values(dispatched_at=None))
        mark_sent(session, [taken, refused, plain], since=since)
    assert job_row(db_settings, plain).dispatched_at == since
    assert job_row(db_settings, taken).dispatched_at is None
    assert job_row(db_settings, taken).status == "running"
    assert job_row(db_settings, refused).dispatched_at is None


def test_a_worker_lost_near_its_memory_limit_is_not_retried(db_settings: Settings) -> None:
    """Its last heartbeat said the job held 95% of the budget: an out-of-memory kill, most
    likely, which another worker would suffer too. A job lost while small is retried."""
    big, small = make_job(db_settings), make_job(db_settings)
    limit = 4 * 2**30
    for job_id, held in ((big, int(0.95 * limit)), (small, 2**28)):
        take(db_settings, job_id)
        with session_scope(db_settings.database_url) as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(progress={"memory_bytes": held})
            )
        expire_lease(db_settings, job_id)
    with session_scope(db_settings.database_url) as session:
        resend = reap(session, max_attempts=3, redispatch_seconds=600, memory_limit=limit)
    assert resend == [small]
    failed = job_row(db_settings, big)
    assert failed.status == "failed" and "killed for memory" in failed.error
    assert job_row(db_settings, small).status == "queued"


def test_a_stack_lost_near_the_memory_limit_goes_back_to_train_alone(
    db_settings: Settings,
) -> None:
    """The memory its heartbeat reported was its stack's: the job is retried, alone."""
    job_id = make_job(db_settings)
    limit = 4 * 2**30
    take(db_settings, job_id)
    with session_scope(db_settings.database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(stack_key="k", progress={"memory_bytes": int(0.95 * limit), "stack_jobs": 4})
        )
    expire_lease(db_settings, job_id)
    with session_scope(db_settings.database_url) as session:
        resend = reap(session, max_attempts=3, redispatch_seconds=600, memory_limit=limit)
    assert resend == [job_id]
    job = job_row(db_settings, job_id)
    assert job.status == "queued" and job.stack_key is None and job.error is None


def test_an_owner_at_the_running_quota_waits(db_settings: Settings) -> None:
    """A worker does not take a third job of an owner who has two running: the job goes back
    to unsent, and the reaper sends it again a few seconds later."""
    first, second, third = (make_job(db_settings) for _ in range(3))
    with session_scope(db_settings.database_url) as session:
        session.execute(update(Job).values(owner_id="alice", dispatched_at=utcnow()))

    def claim_it(job_id: str) -> object:
        with session_scope(db_settings.database_url) as session:
            return claim(
                session, job_id, worker="w", lease_seconds=30, max_attempts=3, max_running=2
            )

    assert claim_it(first) and claim_it(second)
    assert claim_it(third) is None
    waiting = job_row(db_settings, third)
    assert waiting.status == "queued" and waiting.dispatched_at is None
    later = utcnow() + timedelta(seconds=11)
    with session_scope(db_settings.database_url) as session:
        assert reap(session, max_attempts=3, redispatch_seconds=600, now=later) == [third]


def test_racing_claims_have_one_winner(db_settings: Settings) -> None:
    job_ids = [make_job(db_settings) for _ in range(5)]
    for job_id in job_ids:
        leases: list = []
        barrier = threading.Barrier(4)

        def race(name: str, job_id: str = job_id, leases: list = leases, barrier=barrier) -> None:
            barrier.wait()
            leases.append(take(db_settings, job_id, name))

        threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [lease for lease in leases if lease is not None]
        assert len(winners) == 1
        assert job_row(db_settings, job_id).lease_token == winners[0].token
