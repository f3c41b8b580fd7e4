"""models/loop.py without a database: the loop, its callbacks, and what it imports."""

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import Trainer
from models.loop import (
    Callback,
    ClipGradNorm,
    EarlyStopping,
    EpochEnd,
    Halving,
    Position,
    Progress,
    callbacks_for,
    fit,
)
from models.registry import get_family

CPU = torch.device("cpu")


def stub_trainer(epochs: int = 10) -> Any:
    """What EarlyStopping and Halving read of a trainer: its model and its epochs."""
    return SimpleNamespace(
        model=nn.Linear(1, 1, bias=False), spec=SimpleNamespace(total_epochs=lambda: epochs)
    )


def run_epochs(callback: Callback, trainer: Any, values: list[float], name: str) -> Position:
    """Ends epochs 1, 2, ... with `name` = each value (the weight set to it) as the loop does;
    returns where the fold stands once it stops or the values run out."""
    position = Position()
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            trainer.model.weight.fill_(value)
        position.epoch, position.last = epoch + 1, {name: value}
        if callback.on_epoch_end(trainer, position, EpochEnd(epoch, {name: value}, 0.1)):
            position.stopped_epoch = epoch
            break
    return position


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best() -> None:
    stopping = EarlyStopping(monitor="val_loss", direction="min", patience=2, min_delta=0.05)
    trainer = stub_trainer()
    # 0.48 is better than 0.5, but not by more than min_delta: it does not count.
    position = run_epochs(stopping, trainer, [1.0, 0.5, 0.48, 0.7, 0.1], "val_loss")
    assert (position.stopped_epoch, position.best_epoch, position.best) == (4, 2, 0.5)
    result: dict[str, Any] = {}
    stopping.on_train_end(trainer, position, result)
    assert result == {"best_epoch": 2, "stopped_epoch": 4}
    assert trainer.model.weight.item() == 0.5  # the weights of epoch 2


def test_early_stopping_on_a_rising_metric_and_from_a_later_epoch() -> None:
    stopping = EarlyStopping(
        monitor="val_accuracy", direction="max", patience=1, restore_best=False, from_epoch=3
    )
    trainer = stub_trainer(epochs=6)
    position = run_epochs(stopping, trainer, [0.9, 0.1, 0.2, 0.3, 0.25, 0.4], "val_accuracy")
    assert (position.stopped_epoch, position.best_epoch) == (5, 4)  # epochs 1-2 not judged
    assert stopping.state_dict() == {}  # restore_best off: no snapshot is kept


def test_early_stopping_refuses_a_metric_the_job_does_not_report() -> None:
    stopping = EarlyStopping(monitor="val_loss", direction="min", patience=2)
    with pytest.raises(ValueError, match="train_loss"):
        stopping.on_epoch_end(stub_trainer(), Position(), EpochEnd(1, {"train_loss": 1.0}, 0.1))


def test_halving_stops_a_job_outside_the_best_third_at_a_rung() -> None:
    asked: list[tuple[int, int]] = []

    def peers(fold: int, epoch: int) -> list[float]:
        asked.append((fold, epoch))
        return [0.1, 0.2, 0.3, 0.4, 0.5]  # val_loss of the sweep's other jobs

    def halving() -> Halving:
        return Halving(metric="val_loss", direction="min", reduction=3, rungs=[1, 3], peers=peers)

    good = run_epochs(halving(), stub_trainer(), [0.15, 0.9, 0.15, 0.9], "val_loss")
    assert good.stopped_epoch is None and good.halved_epoch is None
    assert asked == [(0, 1), (0, 3)]  # only at the rungs
    poor = run_epochs(halving(), stub_trainer(), [0.15, 0.1, 0.35], "val_loss")
    assert (poor.stopped_epoch, poor.halved_epoch) == (3, 3)
    result: dict[str, Any] = {}
    halving().on_train_end(stub_trainer(), poor, result)
    assert result == {"halved_at_epoch": 3}


def test_halving_on_a_rising_metric_and_after_an_early_stop() -> None:
    def halving(peers: list[float]) -> Halving:
        return Halving(
            metric="val_accuracy", direction="max", reduction=2, rungs=[2], peers=lambda *_: peers
        )

    assert (
        run_epochs(halving([0.5, 0.6, 0.7]), stub_trainer(), [0, 0.55], "val_accuracy").halved_epoch
        == 2
    )
    assert (
        run_epochs(halving([0.5, 0.6, 0.7]), stub_trainer(), [0, 0.65], "val_accuracy").halved_epoch
        is None
    )
    stopped = Position(stopped_epoch=2)  # early stopping ended it first: it is not halved
    assert not halving([0.9]).on_epoch_end(
        stub_trainer(), stopped, EpochEnd(2, {"val_accuracy": 0}, 0)
    )
    assert stopped.halved_epoch is None


def mlp_trainer(settings: Settings, **train: Any) -> tuple[Trainer, Splits]:
    family = get_family("mlp")
    spec = family.spec.model_validate(
        {"family": "mlp", "dataset": {"name": "digits", "max_train": 256}, "train": train}
    )
    splits = load_dataset(spec.dataset, settings)
    torch.manual_seed(0)
    return family.trainer(spec, family.build(spec, splits.info), splits, CPU), splits


class GradNorms(Callback):
    """The total gradient norm each optimizer step sees (after the callbacks before it)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())


@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_clip_grad_norm_bounds_every_step(settings: Settings, optimizer: str) -> None:
    train = {"epochs": 2, "optimizer": {"name": optimizer, "lr": 5.0}, "batch_size": 32}
    unclipped = GradNorms()
    trainer, splits = mlp_trainer(settings, **train)
    fit(trainer, splits, callbacks=[*callbacks_for(trainer.spec), unclipped])
    assert max(unclipped.norms) > 1.0  # without a bound, the steps go past it

    clipped = GradNorms()
    trainer, splits = mlp_trainer(settings, **train, clip_grad_norm=0.25)
    callbacks = callbacks_for(trainer.spec)
    assert [type(c) for c in callbacks] == [ClipGradNorm]
    fit(trainer, splits, callbacks=[*callbacks, clipped])
    assert len(clipped.norms) >= 2 * trainer.n_batches(1)
    assert max(clipped.norms) <= 0.25 * (1 + 1e-5)


class StopAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
        return ended.epoch == self.epoch


def test_fit_stops_where_a_callback_says_and_resumes_mid_epoch(settings: Settings) -> None:
    trainer, splits = mlp_trainer(settings, epochs=5)
    position = Position()
    history = fit(trainer, splits, position, [StopAt(2)])
    assert len(history) == 3 and position.stopped_epoch == 2 and position.epoch == 3  # 0, 1, 2
    assert position.last == history[-1] and position.sums == {} and position.batch == 0

    # Resumed at batch 3 of epoch 3: the loop trains batches 3.. of it, then epochs 4 and 5.
    seen: list[tuple[int, int]] = []

    class Batches(Callback):
        def on_batch_start(self, trainer: Trainer, position: Position) -> None:
            seen.append((position.epoch, position.batch))

    trainer, splits = mlp_trainer(settings, epochs=5)
    history = fit(
        trainer, splits, Position(epoch=3, batch=3, sums={"loss": 0.0, "count": 1.0}), [Batches()]
    )
    steps = trainer.n_batches(1)
    assert len(history) == 3
    assert seen == [(3, b) for b in range(3, steps)] + [
        (e, b) for e in (4, 5) for b in range(steps)
    ]


def test_the_loop_imports_no_database() -> None:
    code = (
        "import sys, models.loop; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy' or m == 'core.db'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_validate_every_validates_on_its_epochs_and_the_last(settings: Settings) -> None:
    trainer, splits = mlp_trainer(settings, epochs=7, validate_every=3)
    history = fit(trainer, splits)
    validated = [epoch for epoch, row in enumerate(history) if "val_loss" in row]
    assert validated == [0, 3, 6, 7]  # epoch 0 evaluates the validation split too
    assert all("train_loss" in row for row in history)


def small_train_trainer(settings: Settings, **train: Any) -> tuple[Trainer, Splits]:
    """An MLP on digits with 2 training images per class (20) and the usual validation split."""
    family = get_family("mlp")
    document = {"family": "mlp", "dataset": {"name": "digits", "n_per_class": 2}, "train": train}
    spec = family.spec.model_validate(document)
    splits = load_dataset(spec.dataset, settings)
    torch.manual_seed(0)
    return family.trainer(spec, family.build(spec, splits.info), splits, CPU), splits


def test_auto_validation_costs_no_more_than_training(settings: Settings) -> None:
    trainer, splits = small_train_trainer(settings, epochs=9)
    assert trainer.spec.train.validate_every == "auto"
    every = -(-len(splits.val) // (3 * len(splits.train)))  # 180 / 60: every 3rd epoch
    assert every == 3
    history = fit(trainer, splits)  # epochs 0 (the initial weights, always validated) to 9
    validated = [epoch for epoch, row in enumerate(history) if "val_loss" in row]
    assert validated == [0, 3, 6, 9]
    # A validation pass no dearer than an epoch: every epoch, as before.
    trainer, splits = mlp_trainer(settings, epochs=3)
    assert all("val_loss" in row for row in fit(trainer, splits))


@pytest.mark.parametrize(
    "train",
    [
        {"early_stopping": {"monitor": "val_loss", "patience": 50}},
        {"schedule": {"name": "plateau"}},
    ],
)
def test_auto_validation_is_every_epoch_where_validated_epochs_are_judged(
    settings: Settings, train: dict[str, Any]
) -> None:
    trainer, splits = small_train_trainer(settings, epochs=4, **train)
    history = fit(trainer, splits, callbacks=callbacks_for(trainer.spec))
    assert all("val_loss" in row for row in history)


def test_early_stopping_with_validate_every_counts_validated_epochs_only(
    settings: Settings,
) -> None:
    # No change counts (min_delta): after the first validation (epoch 2, the best), patience 2
    # runs out at the second validated epoch after it, epoch 6, not at epoch 4. Epoch 0 is
    # validated but judged by no policy: counted, it would be the best and stop epoch 4.
    stopping = {"monitor": "val_loss", "patience": 2, "min_delta": 1e6}
    trainer, splits = mlp_trainer(settings, epochs=12, validate_every=2, early_stopping=stopping)
    position = Position()
    history = fit(trainer, splits, position, callbacks_for(trainer.spec))
    assert (position.best_epoch, position.stopped_epoch, len(history)) == (2, 6, 7)


def test_the_test_set_is_evaluated_once_per_fold(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import loop
    from models.supervised import SupervisedTrainer

    family = get_family("mlp")
    spec = family.spec.model_validate(
        {
            "family": "mlp",
            "dataset": {"name": "digits", "max_train": 200, "kfold": 3},
            "train": {"epochs": 3},
        }
    )
    data = load_dataset(spec.dataset, settings)
    sizes: list[int] = []
    evaluate = SupervisedTrainer.evaluate

    def counted(self: Trainer, split: Any) -> dict[str, float]:
        sizes.append(len(split))
        return evaluate(self, split)

    monkeypatch.setattr(SupervisedTrainer, "evaluate", counted)
    result, _ = loop.train(family, spec, data, CPU, callbacks=callbacks_for(spec))
    assert sizes.count(len(data.test)) == 3  # one test pass per fold, none per epoch
    # One validation pass per epoch of each fold, and a training and a validation pass at each
    # fold's epoch 0 (its own initial weights).
    assert len(sizes) == 3 * 3 + 3 + 3 * 2
    assert len(result["folds"]) == 3 and all("test_accuracy" in f for f in result["folds"])


# Each with what draws from the random streams while it trains (dropout, input noise, latent
# draws, Gibbs sampling) or holds state that an evaluation in the wrong mode would move
# (batch norm's running statistics).
INITIAL = {
    "mlp": {
        "family": "mlp",
        "model": {"hidden": [16], "dropout": 0.3, "batchnorm": True},
        "train": {"epochs": 2, "input_noise": 0.1},
    },
    "gan": {"family": "gan", "model": {"latent": 4, "hidden": [16]}, "train": {"epochs": 2}},
    "rbm": {"family": "rbm", "model": {"hidden": 16}, "train": {"epochs": 2}},
    "sae": {
        "family": "sae",
        "model": {"layers": [16], "pretrain_epochs": 1, "head_epochs": 1},
        "train": {"epochs": 1},
    },
}


@pytest.mark.parametrize("name", sorted(INITIAL))
def test_epoch_0_leaves_training_as_it_was(settings: Settings, name: str) -> None:
    """The same fold with and without epoch 0: the same weights and epochs 1.., to the bit."""
    family = get_family(name)
    document = INITIAL[name] | {"dataset": {"name": "digits", "max_train": 128}}
    document["train"] = document["train"] | {"batch_size": 32, "seed": 5}
    spec = family.spec.model_validate(document)
    splits = load_dataset(spec.dataset, settings)

    def trained(position: Position) -> tuple[Trainer, list[dict[str, float]]]:
        torch.manual_seed(5)
        trainer = family.trainer(spec, family.build(spec, splits.info), splits, CPU)
        return trainer, fit(trainer, splits, position)

    with_initial, history = trained(Position())
    without, later = trained(Position(initial=True))  # as if epoch 0 were recorded already
    assert len(history) == spec.total_epochs() + 1 and history[1:] == later
    expected, got = without.model.state_dict(), with_initial.model.state_dict()
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert history[0].keys() == history[1].keys()  # the figures the first epoch reports
    if len(spec.stages()) > 1:
        assert history[0]["stage"] == 0.0  # before the first stage (SAE: pretraining layer 1)


def test_epoch_0_is_reported_to_the_callbacks_and_counts_for_no_policy(
    settings: Settings,
) -> None:
    ends: list[EpochEnd] = []
    published: list[dict[str, Any]] = []

    class Ends(Callback):
        def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
            ends.append(ended)
            return False

    trainer, splits = mlp_trainer(
        settings,
        epochs=3,
        early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 1e6},
        schedule={"name": "plateau", "patience": 0},
    )
    progress = Progress(folds=1, epochs=3, publish=published.append)
    position = Position()
    fit(trainer, splits, position, [*callbacks_for(trainer.spec), progress, Ends()])
    assert [(e.epoch, e.seconds) for e in ends[:1]] == [(0, 0.0)] and ends[0].validated
    assert ends[0].metrics["lr"] == ends[1].metrics["lr"] == 1e-3  # no plateau step after it
    # Epoch 1 is the best, epoch 2 exhausts patience 1: epoch 0 is neither.
    assert (position.best_epoch, position.stopped_epoch, position.initial) == (1, 2, True)
    # While epoch 0 is evaluated the progress says no epoch is done, and no ETA yet.
    assert published[0] | {"phase_percent": 0.0} == {
        "epoch": 0,
        "epochs": 3,
        "step": 0,
        "steps": trainer.n_batches(1),
        "percent": 0.0,
        "phase": "evaluating",
        "phase_percent": 0.0,
        "eta_seconds": None,
    }
