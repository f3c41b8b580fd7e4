"""A worker's shutdown gives its job back: checkpointed where it stands, queued again with the
attempt not counted, and resumed to the same numbers, every epoch recorded once."""

from collections.abc import Iterator

import pytest

from core.db import Checkpoint, session_scope
from core.jobs import latest_checkpoint
from core.settings import Settings
from models.supervised import SupervisedTrainer
from tests.workers.test_runner import load, submit
from workers import stopping
from workers.runner import run_job

DOCUMENT = {
    "family": "mlp",
    "dataset": {"name": "digits"},
    "model": {"hidden": [32], "dropout": 0.2},
    "train": {"epochs": 3},
}


@pytest.fixture(autouse=True)
def no_stop_left() -> Iterator[None]:
    stopping.clear()
    yield
    stopping.clear()


def test_a_stop_mid_epoch_requeues_the_job_where_it_stands(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = submit(settings, DOCUMENT)
    assert run_job(reference, settings=settings, worker="ref") == "succeeded"

    job_id = submit(settings, DOCUMENT)
    real_step, steps = SupervisedTrainer.train_batch, []

    def stop_in_epoch_two(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        steps.append((epoch, index))
        if (epoch, index) == (2, 4):
            stopping.request_stop()  # what the worker's SIGTERM does
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", stop_in_epoch_two)
    assert run_job(job_id, settings=settings, worker="stopped") == "stopped"
    assert steps[-1] == (2, 4)  # the batch running then finished, no other began
    job, rows = load(settings, job_id)
    assert (job.status, job.attempts, job.lease_token, job.dispatched_at) == (
        "queued",
        0,
        None,
        None,
    )
    assert job.error is None and [r.epoch for r in rows] == [0, 1]
    with session_scope(settings.database_url) as session:
        saved: Checkpoint = latest_checkpoint(session, job_id)
        assert (saved.epoch, saved.step) == (2, 5)

    stopping.clear()  # the worker restarted
    steps.clear()
    assert run_job(job_id, settings=settings, worker="again") == "succeeded"
    assert steps[0] == (2, 5)
    ref_job, ref_rows = load(settings, reference)
    job, rows = load(settings, job_id)
    assert job.status == "succeeded" and job.attempts == 1
    assert [r.epoch for r in rows] == [0, 1, 2, 3]
    for ref, got in zip(ref_rows, rows, strict=True):
        assert got.values == pytest.approx(ref.values, rel=1e-5)
    assert job.result == pytest.approx(ref_job.result, rel=1e-5)


def test_an_error_raised_into_the_job_by_the_shutdown_does_not_fail_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold shutdown of the solo pool raised NotImplementedError inside the running job."""
    real_step = SupervisedTrainer.train_batch

    def cold_shutdown(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        if (epoch, index) == (2, 3):
            stopping.request_stop()
            raise NotImplementedError("solo TaskPool does not implement kill_job")
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", cold_shutdown)
    job_id = submit(settings, DOCUMENT)
    assert run_job(job_id, settings=settings, worker="w") == "stopped"
    job, rows = load(settings, job_id)
    assert (job.status, job.attempts, job.error) == ("queued", 0, None)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", real_step)
    stopping.clear()
    assert run_job(job_id, settings=settings, worker="w2") == "succeeded"
    assert [r.epoch for r in load(settings, job_id)[1]] == [0, 1, 2, 3]


def test_a_stopping_worker_takes_no_new_job(settings: Settings) -> None:
    job_id = submit(settings, DOCUMENT)
    stopping.request_stop()
    assert run_job(job_id, settings=settings, worker="w") == "stopped"
    job, _ = load(settings, job_id)
    assert job.status == "queued" and job.attempts == 0
