"""Jobs trained as one stack (workers/stacked.py over models/stack.py), run by run_job on a
migrated database, SQLite and PostgreSQL: the worker is sent one job and takes the queued
jobs of its stack key with it."""

import time
from typing import Any

import pytest
import torch
from sqlalchemy import select

from core.db import Job, Metric, session_scope
from core.jobs import new_job, request_cancel
from core.settings import Settings
from models import stack
from models.specs import parse_job_spec
from models.supervised import SupervisedTrainer
from tests.conftest import expire_lease
from workers.runner import run_job

# A stacked member's matrix products run as one batched product over the stack instead of one
# product per model: the same sums in another float32 order, a few ulps apart (1e-7
# relative). Over these few epochs that drift stays near 1e-6 (measured: 2e-7 to 2e-6); a
# stack that mixed members' data, learning rates or steps would be off by orders more.
# On CUDA the batched and the single products take different cuBLAS kernels, further apart:
# up to 5.8e-4 seen on an H200 over these epochs.
REL = 1e-4 if not torch.cuda.is_available() else 2e-3


def stacking(settings: Settings) -> Settings:
    """The settings with stacks on (the suite's in-process default trains jobs alone)."""
    return settings.model_copy(update={"stack_max": 32})


def regression(seed: int, lr: float, **train: Any) -> dict[str, Any]:
    return {
        "family": "mlp",
        "dataset": {"name": "function1d", "noise": train.pop("noise", 0.0)},
        "model": {"hidden": [16, 16], "activation": "tanh"},
        "train": {"epochs": 5, "batch_size": 32, "seed": seed, **train}
        | {"optimizer": {"name": train.pop("optimizer", "adam"), "lr": lr}},
    }


def submit(settings: Settings, *documents: dict[str, Any]) -> list[str]:
    ids = []
    with session_scope(settings.database_url) as session:
        for document in documents:
            spec = parse_job_spec(document)
            ids.append(
                new_job(session, spec.model_dump(mode="json"), stack_key=spec.stack_key()).id
            )
    return ids


def rows_of(settings: Settings, job_id: str) -> list[tuple[int, int, dict[str, float]]]:
    with session_scope(settings.database_url) as session:
        rows = session.scalars(
            select(Metric).where(Metric.job_id == job_id).order_by(Metric.fold, Metric.epoch)
        ).all()
        return [(r.fold, r.epoch, r.values) for r in rows]


def job_of(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def alone(settings: Settings, *documents: dict[str, Any]) -> list[str]:
    """The same jobs, each trained by itself."""
    solo = settings.model_copy(update={"stack_max": 1})
    ids = submit(settings, *documents)
    for job_id in ids:
        assert run_job(job_id, settings=solo, worker="alone") == "succeeded"
    return ids


def assert_same_training(settings: Settings, got: str, want: str) -> None:
    rows, expected = rows_of(settings, got), rows_of(settings, want)
    assert [r[:2] for r in rows] == [r[:2] for r in expected]
    for (_, _, values), (_, _, reference) in zip(rows, expected, strict=True):
        assert values.keys() == reference.keys()
        assert values == pytest.approx(reference, rel=REL, abs=1e-7)
    result, reference = job_of(settings, got).result, job_of(settings, want).result
    folds, reference_folds = result.pop("folds", []), reference.pop("folds", [])
    assert result == pytest.approx(reference, rel=REL, abs=1e-7)
    for fold, reference_fold in zip(folds, reference_folds, strict=True):
        assert fold == pytest.approx(reference_fold, rel=REL, abs=1e-7)


def count_steps(monkeypatch: pytest.MonkeyPatch, method: str = "step") -> list[int]:
    """The number of members in each stacked step (`Stack.step`, or LBFGS's `lbfgs_step`)."""
    sizes: list[int] = []
    real = getattr(stack.Stack, method)

    def step(self: stack.Stack, batches: Any) -> dict:
        sizes.append(len(self.trainers))
        return real(self, batches)

    monkeypatch.setattr(stack.Stack, method, step)
    return sizes


def train_both_ways(
    settings: Settings, documents: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[str], list[int]]:
    """The jobs trained alone, then again as one stack sent its first job: the stacked ids,
    the ids trained alone, and the members of each stacked step."""
    reference = alone(settings, *documents)
    sizes = count_steps(monkeypatch)
    ids = submit(settings, *documents)
    assert run_job(ids[0], settings=stacking(settings), worker="w") == "succeeded"
    return ids, reference, sizes


def test_stacked_jobs_equal_the_same_jobs_trained_alone(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members differ in seed, learning rate, weight decay, L1, target noise, input noise and
    early stopping (one stops at epoch 2 and serves its best weights); each trains as it
    would alone."""
    documents = [
        regression(1, 1e-2),
        regression(2, 3e-3, noise=0.2, weight_decay=1e-3),
        regression(3, 1e-2, input_noise=0.1, l1=1e-4),
        regression(
            4,
            2e-2,
            early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 10.0},
        ),
    ]
    ids, reference, sizes = train_both_ways(db_settings, documents, monkeypatch)
    assert max(sizes) == 4 and min(sizes) == 3  # the early stopper left after epoch 2
    for got, want in zip(ids, reference, strict=True):
        job = job_of(db_settings, got)
        assert job.status == "succeeded" and job.worker == "w" and job.attempts == 1
        assert job.n_params == job_of(db_settings, want).n_params
        assert_same_training(db_settings, got, want)
        # Epoch 0 is each member evaluated on its own model before the stack is built: the
        # row it has alone, to the bit.
        initial, expected = rows_of(db_settings, got)[0], rows_of(db_settings, want)[0]
        assert initial[1] == 0 and initial == expected
    assert job_of(db_settings, ids[3]).result["stopped_epoch"] == 2
    # Sent later, the partners' own messages find them ended.
    assert run_job(ids[1], settings=db_settings, worker="w2") == "skipped"


def test_folds_of_stacked_jobs_train_at_once(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 3-fold jobs: six members; each fold as it trains alone, the same best fold."""
    documents = [
        {
            "family": "mlp",
            "dataset": {"name": "mackey_glass", "lag": 10, "kfold": 3, "n_points": 400},
            "model": {"hidden": [8]},
            "train": {"epochs": 3, "seed": seed},
        }
        for seed in (0, 7)
    ]
    ids, reference, sizes = train_both_ways(db_settings, documents, monkeypatch)
    assert set(sizes) == {6}
    for got, want in zip(ids, reference, strict=True):
        assert_same_training(db_settings, got, want)
        assert (
            job_of(db_settings, got).result["best_fold"]
            == (job_of(db_settings, want).result["best_fold"])
        )


def test_a_diverging_member_fails_alone(db_settings: Settings) -> None:
    documents = [regression(1, 0.05, optimizer="sgd"), regression(2, 50.0, optimizer="sgd")]
    documents.append(regression(3, 0.1, optimizer="sgd"))
    reference = alone(db_settings, documents[0], documents[2])
    ids = submit(db_settings, *documents)
    assert run_job(ids[0], settings=stacking(db_settings), worker="w") == "succeeded"
    failed = job_of(db_settings, ids[1])
    assert failed.status == "failed" and "training diverged" in failed.error
    assert_same_training(db_settings, ids[0], reference[0])
    assert_same_training(db_settings, ids[2], reference[1])


def test_a_cancelled_member_ends_and_the_others_go_on(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = [regression(seed, 1e-2) for seed in (1, 2, 3)]
    reference = alone(db_settings, documents[0], documents[2])
    ids = submit(db_settings, *documents)
    real, steps = stack.Stack.step, []

    def step(self: stack.Stack, batches: Any) -> dict:
        steps.append(len(self.trainers))
        if len(steps) == 10:  # epoch 2: a cancel, heard by the heartbeat (every 0.5 s)
            with session_scope(db_settings.database_url) as session:
                request_cancel(session, ids[1])
            time.sleep(4 * db_settings.heartbeat_seconds)
        return real(self, batches)

    monkeypatch.setattr(stack.Stack, "step", step)
    assert run_job(ids[0], settings=stacking(db_settings), worker="w") == "succeeded"
    cancelled = job_of(db_settings, ids[1])
    assert cancelled.status == "cancelled"
    assert [epoch for _, epoch, _ in rows_of(db_settings, ids[1])] == [0, 1]
    assert steps[9] == 3 and steps[-1] == 2
    assert_same_training(db_settings, ids[0], reference[0])
    assert_same_training(db_settings, ids[2], reference[1])


class Crash(BaseException):
    """Stands in for SIGKILL: nothing in the runner catches it."""


@pytest.mark.parametrize(("killed_at", "held"), [(1, False), (2 * 6 + 3, False), (2 * 6 + 3, True)])
def test_a_stack_killed_mid_epoch_resumes_every_member(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch, killed_at: int, held: bool
) -> None:
    """Checkpoints every batch, killed at the first step (the last checkpoint is epoch 0's) or
    in epoch 3; another worker resumes all three from the same batch: every epoch's row once
    per job, the numbers of an unbroken run. `held`: no checkpoint mid-epoch and rows held
    back: the rows of epochs 1 and 2 die with the worker, which trains them again from epoch
    0's checkpoint."""
    documents = [regression(seed, 1e-2, noise=0.1, input_noise=0.05) for seed in (1, 2, 3)]
    reference = alone(db_settings, *documents)
    ids = submit(db_settings, *documents)
    every = {"checkpoint_seconds": 3600.0, "record_seconds": 3600.0} if held else {}
    settings = db_settings.model_copy(update={"checkpoint_seconds": 1e-9} | every)
    real, steps = stack.Stack.step, []

    def crash(self: stack.Stack, batches: list) -> dict:
        steps.append(len(self.trainers))
        if len(steps) == killed_at:  # 6 batches an epoch: 2 * 6 + 3 is batch 4 of epoch 3
            raise Crash()
        return real(self, batches)

    monkeypatch.setattr(stack.Stack, "step", crash)
    with pytest.raises(Crash):
        run_job(ids[0], settings=stacking(settings), worker="doomed")
    # What the reaper reads of a lost worker: the memory it reported was a stack's.
    assert {job_of(settings, job_id).progress["stack_jobs"] for job_id in ids} == {3}
    if held:
        assert all([e for _, e, _ in rows_of(settings, job_id)] == [0] for job_id in ids)
    monkeypatch.setattr(stack.Stack, "step", real)
    for job_id in ids:
        expire_lease(settings, job_id)
    assert run_job(ids[1], settings=stacking(settings), worker="rescuer") == "succeeded"
    resumed = [job_of(settings, job_id).status for job_id in ids]
    assert resumed == ["succeeded"] * 3
    for got, want in zip(ids, reference, strict=True):
        assert [(f, e) for f, e, _ in rows_of(settings, got)] == [(0, e) for e in range(6)]
        assert job_of(settings, got).attempts == 2
        assert_same_training(settings, got, want)


def test_members_of_other_widths_stack_padded_and_exact(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hidden sizes differ: each member is zero-padded to the widest, its padding masked; with
    sigmoid, whose value at 0 is not 0, a padded unit's outgoing gradient is not zero."""
    documents = [regression(seed, 1e-2) for seed in (1, 2, 3)]
    for document, hidden in zip(documents, ([4, 16], [16, 8], [10, 3]), strict=True):
        document["model"] = {"hidden": hidden, "activation": "sigmoid"}
    ids, reference, sizes = train_both_ways(settings, documents, monkeypatch)
    assert set(sizes) == {3}
    for got, want in zip(ids, reference, strict=True):
        assert job_of(settings, got).n_params == job_of(settings, want).n_params
        assert_same_training(settings, got, want)


def test_lstms_stack_through_their_unrolled_form(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vmap has no rule for the fused LSTM op; a stack runs the same equations step by step."""
    documents = [
        {
            "family": "lstm",
            "dataset": {"name": "mackey_glass", "lag": 8, "n_points": 300},
            "model": {"hidden": 6, "layers": 2, "bidirectional": True},
            "train": {"epochs": 2, "seed": seed, "optimizer": {"name": "adam", "lr": lr}},
        }
        for seed, lr in ((1, 1e-2), (2, 3e-3))
    ]
    ids, reference, sizes = train_both_ways(settings, documents, monkeypatch)
    assert set(sizes) == {2}
    for got, want in zip(ids, reference, strict=True):
        assert_same_training(settings, got, want)


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"name": "adam", "amsgrad": True, "eps": 0.0},
        {"name": "rmsprop", "centered": True, "momentum": 0.5},
    ],
    ids=["adam-amsgrad-eps0", "rmsprop-centered"],
)
def test_every_hyperparameter_stacks_exactly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, hyperparameters: dict[str, Any]
) -> None:
    """Their updates are elementwise and lr times a term without lr, so a member's own lr
    and weight decay scale and add as alone."""
    documents = [
        regression(seed, lr, weight_decay=wd) for seed, lr, wd in ((1, 1e-2, 0.0), (2, 3e-3, 1e-3))
    ]
    for document in documents:
        document["train"]["optimizer"] |= hyperparameters
    ids, reference, sizes = train_both_ways(settings, documents, monkeypatch)
    assert set(sizes) == {2}
    for got, want in zip(ids, reference, strict=True):
        assert_same_training(settings, got, want)


def test_a_stack_validates_its_members_in_one_pass(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every epoch's validation of the members is one stacked pass, not one per member: a
    member's own evaluate runs only for its epoch 0 (before the stack) and its test set; the
    figures are those of the jobs alone, within the stack's tolerance."""
    from models.supervised import SupervisedTrainer

    documents = [regression(seed, 1e-2, noise=noise) for seed, noise in ((1, 0.0), (2, 0.3))]
    documents.append(regression(3, 1e-2) | {"model": {"hidden": [8, 16], "activation": "tanh"}})
    reference = alone(settings, *documents)
    calls: list[int] = []
    real = SupervisedTrainer.evaluate

    def evaluate(self: SupervisedTrainer, split: Any) -> dict[str, float]:
        calls.append(len(split))
        return real(self, split)

    monkeypatch.setattr(SupervisedTrainer, "evaluate", evaluate)
    ids = submit(settings, *documents)
    assert run_job(ids[0], settings=stacking(settings), worker="w") == "succeeded"
    # Each member's epoch 0 (its training and validation splits) and its test set: 3 calls.
    assert len(calls) == 3 * len(documents)
    for got, want in zip(ids, reference, strict=True):
        assert_same_training(settings, got, want)
        assert "val_nmse" in rows_of(settings, got)[-1][2]


@pytest.mark.parametrize("hidden", [[16], [16, 16]])
def test_lbfgs_members_step_as_one_and_equal_their_runs_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, hidden: list[int]
) -> None:
    """LBFGS's line search turns a last-bit difference into another run (a 1e-7 change of one
    target moved a run's fourth epoch by 30%). Its members step as one (models/lbfgs.py), each
    with its own loss, weight decay, L1 and input noise, and have the very numbers they have
    alone, to the bit. An MLP 1-16-1 (each layer of one input or output) evaluates every
    member in one stacked pass; an MLP 1-16-16-1, whose middle layer is a batched product,
    evaluates each member on its own trainer."""
    documents = [
        regression(seed, 1.0, optimizer="lbfgs", noise=noise, **train)
        for seed, noise, train in (
            (1, 0.0, {}),
            (2, 0.1, {"weight_decay": 1e-3}),
            (3, 0.3, {"l1": 1e-4, "input_noise": 0.05}),
        )
    ]
    for document in documents:
        document["model"]["hidden"] = hidden
    reference = alone(settings, *documents)
    sizes = count_steps(monkeypatch, "lbfgs_step")
    apart: list[int] = []  # members whose loss was evaluated on their own model
    real_loss = SupervisedTrainer.batch_loss
    monkeypatch.setattr(
        SupervisedTrainer, "batch_loss", lambda t, batch: apart.append(1) or real_loss(t, batch)
    )
    ids = submit(settings, *documents)
    assert run_job(ids[0], settings=stacking(settings), worker="w") == "succeeded"
    assert sizes == [3] * 5  # one full-batch step an epoch, all three at once
    if len(hidden) == 1:
        assert not apart  # one stacked pass for every evaluation (the stack has one thread)
    else:
        assert len(apart) >= 3 * 5  # each member, every evaluation of every step
    for got, want in zip(ids, reference, strict=True):
        assert job_of(settings, got).provenance["stack_jobs"] == 3
        assert [r[2] for r in rows_of(settings, got)] == [r[2] for r in rows_of(settings, want)]
        assert job_of(settings, got).result == job_of(settings, want).result


@pytest.mark.parametrize("resumed_by", ["a stack", "each alone"])
def test_killed_lbfgs_members_resume_to_the_bit(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch, resumed_by: str
) -> None:
    """A member's checkpoint holds its LBFGS state as the job alone saves it (torch's keys):
    killed in epoch 3, the members resume, as a stack or each alone, to the very numbers of
    the jobs trained alone without a break."""
    documents = [
        regression(seed, 1.0, optimizer="lbfgs", noise=noise)
        for seed, noise in ((1, 0.0), (2, 0.1), (3, 0.3))
    ]
    reference = alone(db_settings, *documents)
    ids = submit(db_settings, *documents)
    settings = db_settings.model_copy(update={"record_seconds": 0.0})
    real, steps = stack.Stack.lbfgs_step, []

    def crash(self: stack.Stack, batches: list) -> dict:
        steps.append(len(self.trainers))
        if len(steps) == 3:
            raise Crash()
        return real(self, batches)

    monkeypatch.setattr(stack.Stack, "lbfgs_step", crash)
    with pytest.raises(Crash):
        run_job(ids[0], settings=stacking(settings), worker="doomed")
    monkeypatch.setattr(stack.Stack, "lbfgs_step", real)
    for job_id in ids:
        assert [e for _, e, _ in rows_of(settings, job_id)] == [0, 1, 2]
        expire_lease(settings, job_id)
    if resumed_by == "a stack":
        assert run_job(ids[1], settings=stacking(settings), worker="rescuer") == "succeeded"
    else:
        for job_id in ids:
            assert run_job(job_id, settings=settings, worker="rescuer") == "succeeded"
    for got, want in zip(ids, reference, strict=True):
        assert job_of(settings, got).attempts == 2
        assert [r[2] for r in rows_of(settings, got)] == [r[2] for r in rows_of(settings, want)]
        assert job_of(settings, got).result == job_of(settings, want).result


def test_a_stack_that_breaks_gives_its_jobs_back_to_train_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the stack itself, not of one member, fails no job: each goes back to the
    queue without its key and then trains alone."""
    ids = submit(settings, *(regression(seed, 1e-2) for seed in (1, 2)))

    def broken(self: stack.Stack, batches: list) -> dict:
        raise RuntimeError("no batching rule for this op")

    monkeypatch.setattr(stack.Stack, "step", broken)
    assert run_job(ids[0], settings=stacking(settings), worker="w") == "stopped"
    for job_id in ids:
        job = job_of(settings, job_id)
        assert job.status == "queued" and job.stack_key is None and job.attempts == 0
    monkeypatch.undo()
    assert run_job(ids[1], settings=stacking(settings), worker="w") == "succeeded"
    assert job_of(settings, ids[1]).provenance.get("stack_jobs") is None


def test_folds_trained_at_once_resume_so_with_stacking_off(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3-fold job's checkpoint holds each fold's state; a worker with ANNLAB_STACK_MAX=1
    still resumes it with its folds at once, to the same numbers."""
    document = {
        "family": "mlp",
        "dataset": {"name": "mackey_glass", "lag": 10, "kfold": 3, "n_points": 400},
        "model": {"hidden": [8]},
        "train": {"epochs": 3, "batch_size": 32},
    }
    (reference,) = alone(settings, document)
    (job_id,) = submit(settings, document)
    real, steps = stack.Stack.step, []

    def crash(self: stack.Stack, batches: list) -> dict:
        steps.append(len(self.trainers))
        if len(steps) == 12:  # 8 batches an epoch: in epoch 2
            raise Crash()
        return real(self, batches)

    monkeypatch.setattr(stack.Stack, "step", crash)
    every_batch = {"checkpoint_seconds": 1e-9}
    with pytest.raises(Crash):
        run_job(job_id, settings=stacking(settings).model_copy(update=every_batch), worker="w")
    monkeypatch.setattr(stack.Stack, "step", real)
    expire_lease(settings, job_id)
    assert run_job(job_id, settings=settings, worker="alone") == "succeeded"
    assert set(steps[:11]) == {3}
    assert_same_training(settings, job_id, reference)


def test_a_stack_takes_no_more_jobs_than_a_worker_holds(settings: Settings) -> None:
    """Members with one dataset section share its tensors; the stack stops growing where its
    members' estimates (models/admission.py) would pass ANNLAB_WORKER_MEMORY: the job that
    does not fit goes back to the queue."""
    from core.catalog import resolve
    from models.admission import estimate

    documents = [regression(seed, 1e-2) for seed in (1, 2, 3)]
    spec = parse_job_spec(documents[0])
    parts = estimate(spec, resolve(spec.dataset, None))
    budget = parts["total"] + int(1.5 * (parts["total"] - parts["dataset"]))
    ids = submit(settings, *documents)
    small = stacking(settings).model_copy(update={"worker_memory_bytes": budget})
    assert run_job(ids[0], settings=small, worker="w") == "succeeded"
    statuses = [job_of(settings, job_id).status for job_id in ids]
    assert statuses == ["succeeded", "succeeded", "queued"]
    assert job_of(settings, ids[0]).provenance["stack_jobs"] == 2
