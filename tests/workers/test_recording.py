"""Ended epochs' rows are written together with the checkpoint after them, at most
ANNLAB_RECORD_SECONDS apart: far fewer transactions for a job of many short epochs, and still
every epoch recorded once, through a stop and resume, a failure, and the job's end."""

import re
from collections.abc import Iterator

import pytest

from core import jobs
from core.db import session_scope
from core.jobs import latest_checkpoint
from core.settings import Settings
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
        made.append({w.lease.job_id: [epoch for _, epoch, _, _ in w.rows] for w in writes})
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
