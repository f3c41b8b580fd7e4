"""The runner as a plain function over a migrated database: no broker involved."""

import pytest
import torch
from sqlalchemy import select

from core.db import Checkpoint, Job, Metric, session_scope
from core.jobs import new_job
from core.settings import Settings
from models.specs import parse_job_spec
from models.supervised import SupervisedTrainer
from tests.conftest import expire_lease
from workers.runner import run_job


def submit(settings: Settings, document: dict, *, stack: bool = True) -> str:
    """A queued job, as the API stores it: with its stack key, so that a job of a family that
    stacks takes the stacked path (workers/stacked.py), alone or with others. stack=False: it
    trains alone (workers/runner.py's own loop), as with ANNLAB_STACK_MAX=1."""
    spec = parse_job_spec(document)
    key = spec.stack_key() if stack else None
    with session_scope(settings.database_url) as session:
        return new_job(session, spec.model_dump(mode="json"), stack_key=key).id


def load(settings: Settings, job_id: str) -> tuple[Job, list[Metric]]:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        rows = session.scalars(
            select(Metric).where(Metric.job_id == job_id).order_by(Metric.epoch)
        ).all()
        return job, list(rows)


DIGITS = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 5}}


def test_a_job_runs_to_success_and_a_second_delivery_does_nothing(settings: Settings) -> None:
    job_id = submit(settings, DIGITS)
    assert run_job(job_id, settings=settings, worker="w1") == "succeeded"
    # Each epoch's progress says how much memory the run held (the reaper reads it).
    assert load(settings, job_id)[0].progress["memory_bytes"] > 10 * 2**20
    assert run_job(job_id, settings=settings, worker="w2") == "skipped"
    job, rows = load(settings, job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.worker == "w1"
    assert [r.epoch for r in rows] == [0, 1, 2, 3, 4, 5]  # 0: the initial weights
    assert job.result["test_accuracy"] > 0.85
    assert job.data_info["input_shape"] == [1, 8, 8] and job.n_params > 0
    with session_scope(settings.database_url) as session:
        kinds = set(session.scalars(select(Checkpoint.kind).where(Checkpoint.job_id == job_id)))
    assert kinds == {"latest", "final"}


def test_a_job_trains_on_the_mnist_subset_offline(settings: Settings) -> None:
    subset = {"name": "mnist_5k", "n_per_class": 50}
    document = {"family": "mlp", "dataset": subset, "train": {"epochs": 3, "batch_size": 32}}
    job_id = submit(settings, document)
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    job, rows = load(settings, job_id)
    assert [r.epoch for r in rows] == [0, 1, 2, 3]
    assert job.data_info["name"] == "mnist_5k" and job.data_info["input_shape"] == [1, 28, 28]
    assert job.result["test_accuracy"] > 0.7  # 500 training images; chance is 0.1


SMALL = {
    "mlp": {"dataset": {"name": "digits", "max_train": 300}, "model": {"hidden": [16]}},
    "cnn": {
        "dataset": {"name": "digits", "max_train": 300},
        "model": {"conv": [{"filters": 4, "pool": "max", "batchnorm": True}], "dense": [16]},
    },
    "lstm": {
        "dataset": {"name": "mackey_glass", "lag": 8, "n_points": 300},
        "model": {"hidden": 8},
    },
    "ae": {"dataset": {"name": "digits", "max_train": 300}, "model": {"hidden": [16], "latent": 4}},
}


@pytest.mark.parametrize("family", sorted(SMALL))
def test_epoch_0_is_the_initial_model_evaluated(settings: Settings, family: str) -> None:
    """The first row is the model built from the job's seed, before any step, evaluated on the
    training and validation splits: the figures a trained epoch reports, in 0 seconds."""
    from torch.nn import functional as F

    from core.datasets import load_dataset
    from models.loop import seed_everything
    from models.registry import get_family

    document = {"family": family, **SMALL[family], "train": {"epochs": 1, "seed": 3}}
    job_id = submit(settings, document, stack=False)
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    _, rows = load(settings, job_id)
    assert [(r.epoch, r.attempt, r.seconds) for r in rows[:1]] == [(0, 1, 0.0)]
    assert [r.epoch for r in rows] == [0, 1] and rows[0].values.keys() == rows[1].values.keys()

    spec = parse_job_spec(document)
    splits = load_dataset(spec.dataset, settings)
    seed_everything(3)
    model = get_family(family).build(spec, splits.info).eval()

    def loss(x: torch.Tensor, y: torch.Tensor) -> float:
        if family == "ae":
            return F.mse_loss(model.reconstruct(x)[1], x).item()
        if spec.task == "classification":
            return F.cross_entropy(model(x), y).item()
        return F.mse_loss(model(x), y).item()

    with torch.no_grad():
        train, val = loss(splits.train.x, splits.train.y), loss(splits.val.x, splits.val.y)
    assert rows[0].values["train_loss"] == pytest.approx(train, rel=1e-5)
    assert rows[0].values["val_loss"] == pytest.approx(val, rel=1e-5)


def test_divergence_fails_the_job_with_the_reason(settings: Settings) -> None:
    job_id = submit(
        settings,
        {
            "family": "mlp",
            "dataset": {"name": "function1d"},
            "train": {"optimizer": {"name": "sgd", "lr": 50.0}},
        },
    )
    assert run_job(job_id, settings=settings, worker="w") == "failed"
    job, _ = load(settings, job_id)
    assert job.status == "failed" and job.error.startswith("training diverged")


def test_a_missing_dataset_fails_with_how_to_get_it(settings: Settings) -> None:
    job_id = submit(settings, {"family": "mlp", "dataset": {"name": "mnist"}})
    assert run_job(job_id, settings=settings, worker="w") == "failed"
    job, _ = load(settings, job_id)
    assert "not available here" in job.error and "ANNLAB_ALLOW_DOWNLOAD" in job.error


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_fails_clearly(settings: Settings) -> None:
    job_id = submit(settings, {**DIGITS, "train": {"device": "cuda"}})
    assert run_job(job_id, settings=settings, worker="w") == "failed"
    assert "no GPU" in load(settings, job_id)[0].error


class Crash(BaseException):
    """Stands in for SIGKILL: nothing in the runner catches it."""


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {
        "family": "mlp",
        "dataset": {"name": "digits"},
        "model": {"hidden": [32], "dropout": 0.2},
        "train": {"epochs": 3},
    }
    reference = submit(settings, document)
    assert run_job(reference, settings=settings, worker="ref") == "succeeded"

    resumed = submit(settings, document)
    settings = settings.model_copy(update={"checkpoint_seconds": 1e-9})  # checkpoint every batch
    real_step, calls = SupervisedTrainer.train_batch, []

    def crash_in_epoch_two(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        calls.append((epoch, index))
        if (epoch, index) == (2, 7):
            raise Crash()
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", crash_in_epoch_two)
    with pytest.raises(Crash):
        run_job(resumed, settings=settings, worker="doomed")
    steps_after_crash: list[tuple[int, int]] = []

    def counted(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        steps_after_crash.append((epoch, index))
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", counted)
    expire_lease(settings, resumed)
    assert run_job(resumed, settings=settings, worker="rescuer") == "succeeded"

    ref_job, ref_rows = load(settings, reference)
    job, rows = load(settings, resumed)
    assert job.attempts == 2
    # It went on from the mid-epoch checkpoint: batch 7 of epoch 2, not the epoch's start.
    assert steps_after_crash[0] == (2, 7)
    per_epoch = sum(1 for epoch, _ in calls if epoch == 1)
    assert len(steps_after_crash) == (per_epoch - 7) + per_epoch
    assert [(r.epoch, r.attempt) for r in rows] == [(0, 1), (1, 1), (2, 2), (3, 2)]
    # Same batches, same dropout masks, same optimizer state: the same numbers.
    for ref, got in zip(ref_rows, rows, strict=True):
        assert got.values == pytest.approx(ref.values, rel=1e-5)
    assert job.result == pytest.approx(ref_job.result, rel=1e-5)


def test_early_stopping_stops_and_serves_the_best_epoch(settings: Settings) -> None:
    job_id = submit(
        settings,
        {
            "family": "mlp",
            "dataset": {"name": "function1d", "noise": 0.5, "n_train": 60},
            "model": {"hidden": [256, 256]},
            "train": {
                "epochs": 300,
                "batch_size": 8,
                "optimizer": {"name": "adam", "lr": 0.01},
                "early_stopping": {"patience": 5},
            },
        },
    )
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    job, rows = load(settings, job_id)
    stopped, best = job.result["stopped_epoch"], job.result["best_epoch"]
    assert len(rows) == stopped + 1 and stopped < 300 and stopped == best + 5
    trained = [r for r in rows if r.epoch > 0]  # epoch 0 is no candidate
    assert min(r.values["val_loss"] for r in trained) == rows[best].values["val_loss"]


def test_schedules_change_the_learning_rate(settings: Settings) -> None:
    job_id = submit(
        settings,
        {
            "family": "mlp",
            "dataset": {"name": "digits"},
            "train": {
                "epochs": 4,
                "optimizer": {"name": "sgd", "lr": 0.1},
                "schedule": {"name": "step", "step_size": 2, "gamma": 0.5},
            },
        },
    )
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    _, rows = load(settings, job_id)
    assert [r.values["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_kfold_reports_mean_and_std_over_ordered_folds(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {
        "family": "mlp",
        "dataset": {"name": "mackey_glass", "lag": 10, "kfold": 3},
        "model": {"hidden": [16]},
        "train": {"epochs": 2},
    }
    job_id = submit(settings, document, stack=False)  # folds one after another
    # Die at the start of the second fold, then let another worker finish the job.
    real_step = SupervisedTrainer.train_batch
    folds_started: list[int] = []

    def die_in_fold_two(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        if epoch == 1 and index == 0:
            folds_started.append(len(self.splits.val))
            if len(folds_started) == 2:
                raise Crash()
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", die_in_fold_two)
    with pytest.raises(Crash):
        run_job(job_id, settings=settings, worker="doomed")
    monkeypatch.setattr(SupervisedTrainer, "train_batch", real_step)
    expire_lease(settings, job_id)
    assert run_job(job_id, settings=settings, worker="rescuer") == "succeeded"

    job, rows = load(settings, job_id)
    # Each fold starts from its own initial weights: an epoch 0 each, recorded once. The first
    # fold's rows went in with the checkpoint the second fold starts from; the second fold's
    # epoch 0 was still held back (rows are written at most ANNLAB_RECORD_SECONDS apart) when
    # the worker died, so the rescuer trained and recorded it again from that checkpoint.
    assert sorted((r.fold, r.epoch) for r in rows) == [(f, e) for f in range(3) for e in (0, 1, 2)]
    attempts = [r.attempt for r in sorted(rows, key=lambda r: (r.fold, r.epoch))]
    assert attempts == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    folds = job.result["folds"]
    assert len(folds) == 3 and job.result["best_fold"] in (1, 2, 3)
    test_mse = [f["test_mse"] for f in folds]
    assert job.result["test_mse_mean"] == pytest.approx(sum(test_mse) / 3)
    assert job.result["test_mse_std"] > 0
    assert "test_nmse_mean" in job.result


def test_early_stopping_waits_for_the_stacked_autoencoders_fine_tuning(settings: Settings) -> None:
    job_id = submit(
        settings,
        {
            "family": "sae",
            "dataset": {"name": "digits"},
            "model": {"layers": [64], "pretrain_epochs": 3, "head_epochs": 3},
            "train": {"epochs": 40, "early_stopping": {"patience": 1, "min_delta": 10.0}},
        },
    )
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    job, rows = load(settings, job_id)
    # Epochs 1-6 pretrain and train the head; a huge min_delta stops at the second judged epoch.
    assert job.result["stopped_epoch"] == 8 and [r.epoch for r in rows] == list(range(9))
    assert job.result["best_epoch"] == 7
    assert job.result["test_accuracy"] > job.result["test_accuracy_before_finetune"]


def test_a_gan_killed_mid_epoch_resumes_both_optimizers_to_the_same_result(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.db import Artifact
    from models.registry import get_family

    document = {
        "family": "gan",
        "dataset": {"name": "digits", "max_train": 400},
        "model": {"latent": 8, "sample_epochs": [1, 2, 3]},
        "train": {"epochs": 3, "batch_size": 32},
    }
    reference = submit(settings, document)
    assert run_job(reference, settings=settings, worker="ref") == "succeeded"

    resumed = submit(settings, document)
    settings = settings.model_copy(update={"checkpoint_seconds": 1e-9})  # checkpoint every batch
    trainer_class = get_family("gan").trainer
    real_step = trainer_class.train_batch

    def crash_in_epoch_two(self: object, epoch: int, index: int) -> dict:
        if (epoch, index) == (2, 5):
            raise Crash()
        return real_step(self, epoch, index)

    monkeypatch.setattr(trainer_class, "train_batch", crash_in_epoch_two)
    with pytest.raises(Crash):
        run_job(resumed, settings=settings, worker="doomed")
    monkeypatch.setattr(trainer_class, "train_batch", real_step)
    expire_lease(settings, resumed)
    assert run_job(resumed, settings=settings, worker="rescuer") == "succeeded"

    ref_job, ref_rows = load(settings, reference)
    job, rows = load(settings, resumed)
    assert [(r.epoch, r.attempt) for r in rows] == [(0, 1), (1, 1), (2, 2), (3, 2)]
    # The generator's and the discriminator's Adam moments came back with the weights: a run
    # that lost either one's state would not reproduce these numbers.
    for ref, got in zip(ref_rows, rows, strict=True):
        assert got.values == pytest.approx(ref.values, rel=1e-5)
    quality = ("frechet_distance", "frechet_distance_noise", "sample_class_entropy")
    assert [job.result[k] for k in quality] == pytest.approx([ref_job.result[k] for k in quality])
    with session_scope(settings.database_url) as session:
        kept = session.scalars(
            select(Artifact.epoch).where(Artifact.job_id == resumed).order_by(Artifact.epoch)
        ).all()
    assert kept == [1, 2, 3]  # one sample grid per named epoch, none twice


@pytest.mark.parametrize("family", ["gan", "vae", "rbm"])
def test_generative_samples_beat_noise_by_the_frechet_distance(
    settings: Settings, family: str
) -> None:
    epochs = {"gan": 30, "vae": 20, "rbm": 15}[family]
    job_id = submit(
        settings, {"family": family, "dataset": {"name": "digits"}, "train": {"epochs": epochs}}
    )
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    result = load(settings, job_id)[0].result
    assert result["frechet_distance"] < 0.3 * result["frechet_distance_noise"], result


def test_a_cancel_stops_a_long_batch_inside_it(settings: Settings, monkeypatch) -> None:  # noqa: ANN001
    """A full-batch epoch is one batch: the cancel is seen before the next layer runs, not
    when the batch ends."""
    import workers.runner as runner

    controls: list = []

    class Recorded(runner.Control):
        def __init__(self) -> None:
            super().__init__()
            controls.append(self)

    monkeypatch.setattr(runner, "Control", Recorded)
    real_step = SupervisedTrainer.train_batch
    raised_inside: list[str] = []

    def cancelled_during(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        controls[-1].cancel.set()  # as the heartbeat does when a cancel is asked for
        try:
            return real_step(self, epoch, index)
        except runner.Cancelled:
            raised_inside.append("train_batch")
            raise

    monkeypatch.setattr(SupervisedTrainer, "train_batch", cancelled_during)
    job_id = submit(  # alone: a stack hears a cancel between batches
        settings,
        {
            "family": "mlp",
            "dataset": {"name": "digits"},
            "train": {"epochs": 1, "optimizer": {"name": "gd", "lr": 0.1}},
        },
        stack=False,
    )
    assert run_job(job_id, settings=settings, worker="w") == "cancelled"
    assert raised_inside == ["train_batch"]
    job, rows = load(settings, job_id)
    assert job.status == "cancelled" and [r.epoch for r in rows] == [0]


def small_gan(*, epochs: int) -> dict:
    """A GAN on 200 digits, 4 batches an epoch: its sample quality trains a feature net."""
    return {
        "family": "gan",
        "dataset": {"name": "digits", "max_train": 200},
        "model": {"latent": 8},
        "train": {"epochs": epochs, "batch_size": 50},
    }


def test_a_generative_job_publishes_its_phases_and_an_eta_for_scoring(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a fresh database the GAN's dataset has no feature net: scoring trains one, and the
    progress says so, step by step, with time left, instead of 100% and 0 s."""
    from models import quality
    from workers.runner import _Run

    monkeypatch.setattr(quality, "STEPS", 40)
    published: list[dict] = []
    real_publish = _Run.publish

    def recorded(self: _Run, progress: dict) -> None:
        published.append(dict(progress))
        real_publish(self, progress)

    monkeypatch.setattr(_Run, "publish", recorded)
    job_id = submit(settings, small_gan(epochs=2))
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"

    phases = [p["phase"] for p in published]
    assert phases[0] == "loading" and phases[-1] == "saving"
    order = [phase for i, phase in enumerate(phases) if i == 0 or phases[i - 1] != phase]
    assert order == [
        "loading",
        "evaluating",  # epoch 0: the initial weights
        *["training", "evaluating"] * 2,  # each epoch, then its validation
        "scoring samples",
        "evaluating",  # the test set
        "saving",
    ]
    initial = published[phases.index("evaluating")]
    assert (initial["epoch"], initial["percent"], initial["eta_seconds"]) == (0, 0.0, None)
    training = [p for p in published if p["phase"] == "training"]
    # 4 batches an epoch: the 4th ends in the epoch's evaluation
    assert [p["phase_percent"] for p in training] == [25.0, 50.0, 75.0] * 2
    assert [p["percent"] for p in training] == [12.5, 25.0, 37.5, 62.5, 75.0, 87.5]
    scoring = [p for p in published if p["phase"] == "scoring samples"]
    steps = [p.get("phase_step") for p in scoring if p.get("phase_steps") == 40]
    assert steps == list(range(41))
    percents = [p["phase_percent"] for p in scoring]
    assert percents == sorted(percents) and percents[-1] == 100.0
    # While feature-net steps are left, the ETA counts them at their measured rate.
    assert all(p["eta_seconds"] > 0 for p in scoring if 0 < p.get("phase_step", 0) < 40)
    assert all(p["percent"] == 100.0 for p in scoring)  # training is done; scoring is not
    job = load(settings, job_id)[0]
    assert job.progress["phase"] == "saving" and job.progress["phase_percent"] == 100.0


def test_a_cancel_is_heard_while_the_feature_net_trains(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import quality
    from workers.runner import _Run

    monkeypatch.setattr(quality, "STEPS", 40)
    steps: list[int] = []
    real_publish = _Run.publish

    def cancel_at_step_5(self: _Run, progress: dict) -> None:
        if progress.get("phase_steps") == 40:
            steps.append(progress["phase_step"])
            if progress["phase_step"] == 5:
                self.control.cancel.set()  # as the heartbeat does on a cancel request
        real_publish(self, progress)

    monkeypatch.setattr(_Run, "publish", cancel_at_step_5)
    document = small_gan(epochs=1)
    job_id = submit(settings, document)
    assert run_job(job_id, settings=settings, worker="w") == "cancelled"
    assert steps == [0, 1, 2, 3, 4, 5]
    assert load(settings, job_id)[0].status == "cancelled"


def test_provenance_names_no_version_when_the_package_is_not_installed(monkeypatch):
    """Code run from a source tree that was never installed still trains: the version is None."""
    import importlib.metadata

    from workers import runner

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    assert runner.annlab_version() is not None
    monkeypatch.setattr(importlib.metadata, "version", missing)
    runner.annlab_version.cache_clear()  # a process reads it once
    try:
        assert runner.annlab_version() is None
    finally:
        runner.annlab_version.cache_clear()
