"""Ended epochs' rows are written together with the checkpoint after them, at most
ANNLAB_RECORD_SECONDS apart: far fewer transactions for a job of many short epochs, and still
every epoch recorded once, through a stop and resume, a failure, and the job's end."""

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core import jobs
from core.db import session_scope
from core.jobs import latest_checkpoint, request_cancel
from core.settings import Settings
from models import loop, stack
from models.supervised import SupervisedTrainer
from tests.workers.test_runner import load, submit
from workers import stopping
from workers.runner import run_job

DOCUMENT = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 6}}


@pytest.fixture(autouse=True)
def no_stop_left() -> Iterator[None]:
    stopping.clear()
    yield
    stopping.clear()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The epochs of the rows each record transaction wrote."""
    made: list[list[int]] = []
    real = jobs.record_rows

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003
        made.append([row.epoch for row in kwargs["rows"]])
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "record_rows", counted)
    return made


@pytest.mark.parametrize(
    ("record_seconds", "transactions"),
    [(3600.0, [[0], [1, 2, 3, 4, 5, 6]]), (0.0, [[e] for e in range(7)])],
)
def test_rows_go_in_together_and_each_once(
    settings: Settings, writes: list[list[int]], record_seconds: float, transactions: list
) -> None:
    """The first row at once (epoch 0, the initial weights), the rest with the fold's end."""
    held = settings.model_copy(update={"record_seconds": record_seconds})
    job_id = submit(held, DOCUMENT, stack=False)
    assert run_job(job_id, settings=held, worker="w") == "succeeded"
    job, rows = load(held, job_id)
    assert [r.epoch for r in rows] == list(range(7))  # epoch 0 to 6, once each
    assert writes == transactions
    with session_scope(held.database_url) as session:
        assert latest_checkpoint(session, job_id).epoch == 6


def test_a_stop_writes_the_rows_held_back_and_the_job_resumes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, writes: list[list[int]]
) -> None:
    held = settings.model_copy(update={"record_seconds": 3600.0})
    job_id = submit(held, DOCUMENT, stack=False)
    real_step = SupervisedTrainer.train_batch

    def stop_in_epoch_three(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        if (epoch, index) == (3, 2):
            stopping.request_stop()
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", stop_in_epoch_three)
    assert run_job(job_id, settings=held, worker="stopped") == "stopped"
    _, rows = load(held, job_id)
    assert [r.epoch for r in rows] == [0, 1, 2] and writes == [[0], [1, 2]]
    with session_scope(held.database_url) as session:
        saved = latest_checkpoint(session, job_id)
        assert (saved.epoch, saved.step) == (3, 3)  # the rows and where it stopped, together

    stopping.clear()
    monkeypatch.setattr(SupervisedTrainer, "train_batch", real_step)
    assert run_job(job_id, settings=held, worker="again") == "succeeded"
    _, rows = load(held, job_id)
    assert [r.epoch for r in rows] == list(range(7))


def test_a_job_that_fails_keeps_the_rows_of_the_epochs_before(settings: Settings) -> None:
    held = settings.model_copy(update={"record_seconds": 3600.0})
    document = {
        "family": "mlp",
        "dataset": {"name": "function1d"},
        "train": {"epochs": 50, "optimizer": {"name": "sgd", "lr": 50.0}},
    }
    job_id = submit(held, document, stack=False)
    assert run_job(job_id, settings=held, worker="w") == "failed"
    job, rows = load(held, job_id)
    where = re.search(r"(?:at epoch|end of epoch|by epoch) (\d+)", job.error)
    assert where is not None, job.error
    failed_in = int(where.group(1))
    assert failed_in >= 1 and [r.epoch for r in rows] == list(range(failed_in))


def test_a_stack_writes_its_members_rows_together(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.workers.test_stacked import regression, rows_of, stacking
    from tests.workers.test_stacked import submit as submit_stack

    made: list[dict[str, list[int]]] = []
    real = jobs.record_epochs

    def counted(session, writes, **kwargs):  # noqa: ANN001, ANN003
        made.append({w.lease.job_id: [row.epoch for row in w.rows] for w in writes})
        return real(session, writes, **kwargs)

    monkeypatch.setattr(jobs, "record_epochs", counted)
    held = stacking(settings).model_copy(update={"record_seconds": 3600.0})
    ids = submit_stack(held, *[regression(seed, 1e-2) for seed in (1, 2, 3)])
    assert run_job(ids[0], settings=held, worker="w") == "succeeded"
    for job_id in ids:
        assert [e for _, e, _ in rows_of(held, job_id)] == list(range(6))  # epochs 0-5, once
    # Epoch 0 of all three at once; the rest of each with its finish.
    assert made[0] == {job_id: [0] for job_id in ids}
    assert sorted(sum((list(write.items()) for write in made[1:]), [])) == sorted(
        (job_id, [1, 2, 3, 4, 5]) for job_id in ids
    )


def test_a_checkpoint_is_built_only_when_it_is_written(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, writes: list[list[int]]
) -> None:
    """Epochs whose rows are held back build no checkpoint: one per write."""
    built: list[int] = []
    real = loop.checkpoint_state

    def counted(trainer, position, callbacks):  # noqa: ANN001, ANN202
        built.append(position.epoch)
        return real(trainer, position, callbacks)

    monkeypatch.setattr(loop, "checkpoint_state", counted)
    held = settings.model_copy(update={"record_seconds": 3600.0})
    job_id = submit(held, DOCUMENT, stack=False)
    assert run_job(job_id, settings=held, worker="w") == "succeeded"
    assert writes == [[0], [1, 2, 3, 4, 5, 6]]
    assert built == [1, 7]  # after epoch 0 and after epoch 6: where a resumed run goes on


def test_a_stack_builds_checkpoints_only_when_it_writes_them(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.workers.test_stacked import regression, stacking
    from tests.workers.test_stacked import submit as submit_stack

    built: list[str] = []
    real = stack.job_state

    def counted(of: stack.Stack, job: stack.StackJob) -> dict:
        built.append(job.id)
        return real(of, job)

    monkeypatch.setattr(stack, "job_state", counted)
    held = stacking(settings).model_copy(update={"record_seconds": 3600.0})
    ids = submit_stack(held, *[regression(seed, 1e-2) for seed in (1, 2, 3)])
    assert run_job(ids[0], settings=held, worker="w") == "succeeded"
    assert sorted(built) == sorted(ids * 2)  # epoch 0's write and the last epoch's


@pytest.mark.parametrize("how", ["diverges", "cancelled"])
def test_a_stack_member_that_ends_writes_its_held_rows_with_its_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Its rows of the epochs it ended, each once, in the transaction that ends it; the
    others go on."""
    from tests.workers.test_stacked import job_of, regression, rows_of, stacking
    from tests.workers.test_stacked import submit as submit_stack

    held = stacking(settings).model_copy(update={"record_seconds": 3600.0})
    documents = [regression(seed, 1e-2, optimizer="sgd", epochs=30) for seed in (1, 2, 3)]
    if how == "diverges":
        documents[1] = regression(2, 50.0, optimizer="sgd", epochs=30)
    ids = submit_stack(held, *documents)
    real, steps = stack.Stack.step, []

    def step(self: stack.Stack, batches: Any) -> dict:
        steps.append(len(self.trainers))
        if how == "cancelled" and len(steps) == 6 * 4 + 1:  # epoch 5's first batch
            with session_scope(held.database_url) as session:
                request_cancel(session, ids[1])
            time.sleep(4 * held.heartbeat_seconds)
        return real(self, batches)

    monkeypatch.setattr(stack.Stack, "step", step)
    assert run_job(ids[0], settings=held, worker="w") == "succeeded"
    ended = job_of(held, ids[1])
    epochs = [epoch for _, epoch, _ in rows_of(held, ids[1])]
    if how == "diverges":
        assert ended.status == "failed" and "diverged" in ended.error
        where = re.search(r"(?:in epoch|at epoch|end of epoch) (\d+)", ended.error)
        assert where is not None, ended.error
        assert int(where.group(1)) >= 2 and epochs == list(range(int(where.group(1))))
    else:
        assert ended.status == "cancelled" and epochs[0] == 0 and len(epochs) >= 5
        assert epochs == list(range(len(epochs)))
    for job_id in (ids[0], ids[2]):
        assert [e for _, e, _ in rows_of(held, job_id)] == list(range(31))
