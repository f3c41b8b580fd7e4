"""The training loop: a fold's epochs and batches (`fit`), a job's folds (`train`), and the
callbacks that carry the policies around them (early stopping, successive halving, the best
fold, gradient clipping, progress). No database here: the worker adds one recorder callback
that writes every checkpoint and metric row.

A fold of a gradient family starts with epoch 0: its initial weights evaluated before any step
(`initial_metrics`), reported to the callbacks as an epoch that ended in 0 seconds. It trains
nothing, so the policies that count epochs (patience, plateaus, halving rungs, the best epoch)
pass it by, and the random streams are left as they were: every later epoch is what it would
be without it.
"""

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from core.datasets import Splits, fold_splits
from core.spec import Direction, JobSpecBase
from models.base import Family, Trainer

log = logging.getLogger(__name__)


class Diverged(Exception):
    """A loss or a metric became NaN or infinite."""


@dataclasses.dataclass
class Position:
    """Where a run stands, stored in every checkpoint (JSON-able): resume starts here."""

    fold: int = 0
    epoch: int = 1
    batch: int = 0  # the next batch of `epoch` to train
    initial: bool = False  # epoch 0 (the initial weights) is evaluated and reported
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # of the current epoch, so far
    last: dict[str, float] = dataclasses.field(default_factory=dict)  # last epoch's metrics
    best: float | None = None  # early stopping: best monitored value
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_epoch: int | None = None
    halved_epoch: int | None = None  # a sweep's successive halving stopped it here
    folds: list[dict[str, float]] = dataclasses.field(default_factory=list)  # finished folds
    best_fold: int | None = None
    best_fold_score: float | None = None

    @property
    def started(self) -> bool:
        """Whether the fold has begun: epoch 0 reported or a batch trained."""
        return self.initial or self.epoch > 1 or self.batch > 0

    def next_fold(self, fold: int) -> "Position":
        return Position(
            fold=fold,
            folds=self.folds,
            best_fold=self.best_fold,
            best_fold_score=self.best_fold_score,
        )

    def read_sums(self, where: str | None = None) -> None:
        """The epoch's running sums as floats (one wait for the device), refused if not
        finite."""
        self.sums = {name: float(value) for name, value in self.sums.items()}
        refuse_non_finite(self.sums, where or f"by epoch {self.epoch}, batch {self.batch}")


@dataclasses.dataclass
class EpochEnd:
    """An epoch that has just ended."""

    epoch: int  # 0: the initial weights, evaluated before any step
    metrics: dict[str, float]
    seconds: float  # its wall time (its batches'; 0 for epoch 0, which trains none)
    validated: bool = True  # whether it was a validation epoch (train.validate_every)


class Callback:
    """Hooks the loop calls, in the order of its list (a recorder goes last); each does nothing
    unless overridden. `state_dict` goes into every checkpoint; `load_state_dict` gets the
    checkpoint back when a run resumes."""

    def on_fold_start(self, trainer: Trainer, position: Position) -> None:
        """A fold's trainer is built, its model at its initial weights (a resumed run restores
        the checkpoint after this)."""

    def on_initial_start(self, trainer: Trainer, position: Position) -> None:
        """The initial weights are evaluated next (epoch 0)."""

    def on_batch_start(self, trainer: Trainer, position: Position) -> None:
        """Batch `position.batch` of `position.epoch` runs next; `position.seconds` is now."""

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
        """The gradients are computed and `optimizer` steps next."""

    def on_batch_end(self, trainer: Trainer, position: Position, steps: int) -> None:
        """A batch is trained; `position.batch` is the next of the epoch's `steps`."""

    def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
        """An epoch ended; `position` already stands at the next one. True stops the fold
        (after epoch 0, whose answer is ignored: `ended.epoch` is 0 for the initial weights)."""
        return False

    def on_train_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        """The fold's epochs are done; `result` (its last epoch's metrics) is what the fold
        reports, before its test set is evaluated."""

    def on_fold_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        """The fold is done and its `result` (test metrics included) is in `position.folds`."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        pass


def fit(
    trainer: Trainer,
    splits: Splits,
    position: Position | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    until: int | None = None,
) -> list[dict[str, float]]:
    """Train one fold from `position` (the start by default) through epoch `until` (the last
    by default) or an early stop; returns the metrics of each epoch it ran, epoch 0 first if
    the fold starts here and its family records it."""
    position = position or Position()
    until = trainer.spec.total_epochs() if until is None else until
    trainer.callbacks = callbacks
    every = validation_interval(trainer, splits, callbacks)
    history = []
    if not position.started and trainer.spec.has_initial_epoch():
        for callback in callbacks:
            callback.on_initial_start(trainer, position)
        metrics = initial_metrics(trainer, splits)
        history.append(metrics)
        position.initial = True
        ended = EpochEnd(0, metrics, 0.0, splits.val is not None)
        for callback in callbacks:
            callback.on_epoch_end(trainer, position, ended)
    while position.epoch <= until and position.stopped_epoch is None:
        epoch = position.epoch
        trainer.begin_epoch(epoch)
        steps = trainer.n_batches(epoch)
        started = time.perf_counter() - position.seconds
        for batch in range(position.batch, steps):
            position.batch, position.seconds = batch, time.perf_counter() - started
            for callback in callbacks:
                callback.on_batch_start(trainer, position)
            stats = trainer.train_batch(epoch, batch)
            # Sums the trainer left on the device are added there and read once per epoch
            # (and at mid-epoch checkpoints): reading them each batch would wait for the GPU
            # after every step. Floats are checked at once.
            refuse_non_finite(stats, f"at epoch {epoch}, batch {batch + 1}")
            for name, value in stats.items():
                position.sums[name] = position.sums.get(name, 0.0) + value
            position.batch, position.seconds = batch + 1, time.perf_counter() - started
            for callback in callbacks:
                callback.on_batch_end(trainer, position, steps)
        position.read_sums(f"in epoch {epoch}")
        seconds = time.perf_counter() - started
        metrics = trainer.epoch_metrics(position.sums)
        validated = validates(trainer.spec, epoch, every)
        if splits.val is not None and validated:
            metrics |= {f"val_{k}": v for k, v in trainer.evaluate(splits.val).items()}
        refuse_non_finite(metrics, f"at the end of epoch {epoch}")
        trainer.validated = validated
        trainer.end_epoch(epoch, metrics)
        if len(trainer.stages) > 1:
            metrics["stage"] = float(trainer.stage)
        history.append(metrics)
        position.epoch, position.batch, position.sums = epoch + 1, 0, {}
        position.seconds, position.last = 0.0, metrics
        ended = EpochEnd(epoch, metrics, seconds, validated)
        for callback in callbacks:
            if callback.on_epoch_end(trainer, position, ended):
                position.stopped_epoch = position.stopped_epoch or epoch
    return history


def initial_metrics(trainer: Trainer, splits: Splits) -> dict[str, float]:
    """Epoch 0's figures: the model at its initial weights, before any step, evaluated on the
    training split (`Trainer.initial_metrics`) and the validation split, with the learning
    rates and the stage epoch 1 starts with. The random streams are left as they were."""
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        metrics = trainer.initial_metrics()
        if splits.val is not None:
            metrics |= {f"val_{k}": v for k, v in trainer.evaluate(splits.val).items()}
    refuse_non_finite(metrics, "at the initial weights (epoch 0)")
    metrics |= trainer.learning_rates()
    if len(trainer.stages) > 1:
        metrics["stage"] = float(trainer.stage)
    return metrics


def validation_interval(
    trainer: Trainer, splits: Splits, callbacks: Sequence[Callback] = ()
) -> int:
    """Every how many epochs a fold evaluates its validation split. For `validate_every`
    "auto": every epoch, unless a pass over the validation split costs more than a training
    epoch (counted as one forward pass per validation example against three per training
    example); then every k-th epoch, the smallest k for which it does not. Where early
    stopping, a plateau schedule or successive halving judges validated epochs, every epoch."""
    every = trainer.spec.train.validate_every
    if every != "auto":
        return every
    if splits.val is None:
        return 1
    judged = any(isinstance(c, EarlyStopping | Halving) for c in callbacks) or any(
        isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)
        for s in trainer.schedulers.values()
    )
    if judged:
        return 1
    return max(1, math.ceil(len(splits.val) / (3 * max(1, len(splits.train)))))


def validates(spec: JobSpecBase, epoch: int, every: int) -> bool:
    """Whether `epoch` evaluates the validation split: every `every`-th and the last."""
    return epoch % every == 0 or epoch == spec.total_epochs()


def train(
    family: Family,
    spec: JobSpecBase,
    data: Splits,
    device: torch.device,
    saved: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train every fold of a job (one without cross-validation), from the start or from
    where `saved` (a checkpoint's state, see checkpoint_state) stands; returns the job's
    result and the model it serves."""
    position = Position(**saved["loop"]) if saved is not None else Position()
    if saved is not None:
        log.info(
            "resuming at fold %d, epoch %d, batch %d",
            position.fold + 1,
            position.epoch,
            position.batch,
        )
    folds = spec.dataset.kfold or 1
    for fold in range(position.fold, folds):
        splits = fold_splits(data, folds, fold) if folds > 1 else data
        seed_everything(spec.train.seed + fold)
        model = family.build(spec, splits.info).to(device)
        trainer = family.trainer(spec, model, splits, device)
        resume = saved is not None and fold == position.fold and position.started
        if not resume:
            position = position.next_fold(fold)
        for callback in callbacks:
            callback.on_fold_start(trainer, position)
        if saved is not None:
            for callback in callbacks:
                callback.load_state_dict(saved)
            if resume:
                restore_trainer(trainer, saved)
            saved = None
        fit(trainer, splits, position, callbacks)
        result: dict[str, Any] = dict(position.last)
        for callback in callbacks:
            callback.on_train_end(trainer, position, result)
        test = {f"test_{k}": v for k, v in trainer.evaluate(splits.test).items()}
        refuse_non_finite(test, "on the test set")
        result |= test | trainer.result()
        position.folds.append(result)
        for callback in callbacks:
            callback.on_fold_end(trainer, position, result)
    if folds == 1:
        return position.folds[0], model
    assert position.best_fold is not None
    summary = mean_std(position.folds) | {
        "folds": position.folds,
        "best_fold": position.best_fold + 1,
    }
    return summary, model


# --- callbacks ------------------------------------------------------------------------------


class EarlyStopping(Callback):
    """Stops a fold once `monitor` has not improved by more than `min_delta` for `patience`
    epochs (counting from epoch `from_epoch`); with `restore_best`, the fold ends with the
    weights of its best epoch."""

    def __init__(
        self,
        *,
        monitor: str,
        direction: Direction,
        patience: int,
        min_delta: float = 0.0,
        restore_best: bool = True,
        from_epoch: int = 1,
    ):
        self.monitor, self.direction, self.patience = monitor, direction, patience
        self.min_delta, self.restore_best, self.from_epoch = min_delta, restore_best, from_epoch
        self.best_model: dict[str, torch.Tensor] | None = None

    def on_fold_start(self, trainer: Trainer, position: Position) -> None:
        self.best_model = None

    def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
        epoch, metrics = ended.epoch, ended.metrics
        if epoch == 0 or epoch < self.from_epoch or not ended.validated:
            return False
        if self.monitor not in metrics:
            raise ValueError(
                f"early_stopping monitors {self.monitor!r}, which this job does not report; "
                f"it reports {sorted(metrics)}"
            )
        value = metrics[self.monitor]
        if better(self.direction, value, position.best, self.min_delta):
            position.best, position.best_epoch, position.bad_epochs = value, epoch, 0
            if self.restore_best:
                self.best_model = snapshot(trainer.model)
            return False
        position.bad_epochs += 1
        return position.bad_epochs >= self.patience

    def on_train_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        if self.best_model is not None:
            trainer.model.load_state_dict(self.best_model)
            self.best_model = None
        result["best_epoch"] = position.best_epoch
        result["stopped_epoch"] = position.stopped_epoch or trainer.spec.total_epochs()

    def state_dict(self) -> dict[str, Any]:
        return {"best_model": self.best_model} if self.best_model is not None else {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.best_model = saved.get("best_model")


# (fold, epoch) -> the values of the halving metric that the sweep's other jobs reported there
Peers = Callable[[int, int], list[float]]


class Halving(Callback):
    """Asynchronous successive halving (ASHA, Li et al. 2020; as Ray Tune's AsyncHyperBand):
    at each epoch in `rungs`, the job goes on only if its `metric` is within the best
    1/`reduction` of the values its sweep's jobs reported at that epoch so far, its own
    included; `peers` gives the others'."""

    def __init__(
        self,
        *,
        metric: str,
        direction: Direction,
        reduction: int,
        rungs: Sequence[int],
        peers: Peers,
    ):
        self.metric, self.direction, self.reduction = metric, direction, reduction
        self.rungs, self.peers = set(rungs), peers

    def promoted(self, fold: int, epoch: int, value: float) -> bool:
        values = [*self.peers(fold, epoch), value]
        share = 100 / self.reduction
        if self.direction == "max":
            return bool(value >= np.percentile(values, 100 - share))
        return bool(value <= np.percentile(values, share))

    def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
        if position.stopped_epoch is not None or ended.epoch not in self.rungs:
            return False
        if not ended.validated:  # a rung between validations judges nothing
            return False
        value = ended.metrics.get(self.metric)
        if value is None or self.promoted(position.fold, ended.epoch, value):
            return False
        position.halved_epoch = ended.epoch
        return True

    def on_train_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        if position.halved_epoch is not None:
            result["halved_at_epoch"] = position.halved_epoch


class BestFold(Callback):
    """Cross-validation: remembers the weights of the fold whose `metric` is best, and puts
    them in the model once the last fold ends."""

    def __init__(self, *, metric: str, direction: Direction, folds: int):
        self.metric, self.direction, self.folds = metric, direction, folds
        self.best_model: dict[str, torch.Tensor] | None = None

    def on_fold_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        if better(self.direction, result[self.metric], position.best_fold_score):
            position.best_fold, position.best_fold_score = position.fold, result[self.metric]
            self.best_model = snapshot(trainer.model)
        if position.fold + 1 == self.folds:
            assert self.best_model is not None
            trainer.model.load_state_dict(self.best_model)

    def state_dict(self) -> dict[str, Any]:
        return {"best_fold_model": self.best_model} if self.best_model is not None else {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.best_model = saved.get("best_fold_model")


class ClipGradNorm(Callback):
    """Scales each optimizer's gradients down to a total 2-norm of at most `max_norm`."""

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)


class Progress(Callback):
    """Publishes where the run stands after every batch and at each change of phase: the
    phase (training, evaluating, scoring samples; the worker adds loading and saving) and how
    far it is (`phase_percent`), the epoch, step and percent of training, and an ETA over what
    this attempt has left: the epochs at the rate measured so far, their validation, the next
    folds' epoch 0 and the test set's evaluation at the rate the last one took, and the running
    phase at its own measured rate. Epoch 0 is published as epoch 0 (no epoch done), and its
    time is not counted as training."""

    def __init__(self, *, folds: int, epochs: int, publish: Callable[[dict[str, Any]], None]):
        self.folds, self.epochs, self.publish = folds, epochs, publish
        self.start_fraction: float | None = None
        self.t0 = time.monotonic()
        self.fraction_done = 0.0
        self.fold, self.epoch = 0, 1
        self.training: dict[str, Any] = {}  # epoch, step, percent... of the last batch
        self.aside = 0.0  # seconds of this attempt spent besides training batches
        self.mark: float | None = None  # when the evaluation or scoring running now began
        self.val_seconds: float | None = None  # the last epoch's validation
        self.initial_seconds = 0.0  # the last fold's epoch 0
        self.test_seconds: float | None = None  # the last fold's test set (or an estimate)
        self.scoring_seconds: float | None = None  # the last fold's sample scoring
        self.test_ratio = 1.0  # test examples per validation example
        self.phase_name, self.phase_start = "training", time.monotonic()

    def fraction(self, fold: int, epoch: int, step: int, steps: int) -> float:
        within = min(1.0, ((epoch - 1) + step / steps) / self.epochs)
        return (fold + within) / self.folds

    def seconds_left(self, phase_left: float | None = 0.0) -> float | None:
        """The ETA: None until a rate has been measured for what is left."""
        done_here = self.fraction_done - (self.start_fraction or 0.0)
        if phase_left is None or (done_here <= 0 and self.fraction_done < 1):
            return None
        left = phase_left
        if self.fraction_done < 1:  # training left, at this attempt's rate
            training = time.monotonic() - self.t0 - self.aside
            left += training / done_here * (1 - self.fraction_done)
        folds_left = self.folds - self.fold - 1  # after this one
        this_fold = {"training": 2, "scoring samples": 1}.get(self.phase_name, 0)
        if self.val_seconds is not None:
            evals = folds_left * self.epochs + (self.epochs - self.epoch + 1) * (this_fold == 2)
            left += evals * self.val_seconds
        test = self.test_seconds
        if test is None and self.val_seconds is not None:
            test = self.val_seconds * self.test_ratio
        left += (test or 0.0) * (folds_left + (this_fold > 0))
        left += self.initial_seconds * folds_left
        left += (self.scoring_seconds or 0.0) * (folds_left + (this_fold == 2))
        return math.ceil(max(left, 0.0) * 10) / 10  # up: 0 only when nothing is left

    def phase(
        self, name: str, done: int = 0, total: int | None = None, left: float | None = 0.0
    ) -> None:
        """Publish phase `name` with `done` of its `total` steps (its clock restarts when
        `done` is 0); without steps, `left` is its estimated seconds left (None: unknown)."""
        now = time.monotonic()
        if name != self.phase_name or done == 0:
            self.phase_name, self.phase_start = name, now
        phase_left = left
        if total:
            elapsed = now - self.phase_start
            phase_left = elapsed / done * (total - done) if done > 0 else None
        progress = self.training | {
            "phase": name,
            "phase_percent": round(100 * done / total, 2) if total else 0.0,
            "eta_seconds": self.seconds_left(phase_left),
        }
        if total:
            progress |= {"phase_step": done, "phase_steps": total}
        self.publish(progress)

    def on_fold_start(self, trainer: Trainer, position: Position) -> None:
        self.fold, self.phase_name = position.fold, "training"
        if self.start_fraction is None:  # the first fold this attempt runs
            self.t0 = time.monotonic()
            self.start_fraction = self.fraction(
                position.fold, position.epoch, position.batch, trainer.n_batches(1)
            )
            self.fraction_done = self.start_fraction
        val, test = trainer.splits.val, trainer.splits.test
        if val is not None and len(val) > 0:
            self.test_ratio = len(test) / len(val)

    def on_initial_start(self, trainer: Trainer, position: Position) -> None:
        self.training = {
            "epoch": 0,
            "epochs": self.epochs,
            "step": 0,
            "steps": trainer.n_batches(1),
            "percent": round(100 * self.fraction_done, 2),
        }
        if self.folds > 1:
            self.training |= {"fold": position.fold + 1, "folds": self.folds}
        self.phase("evaluating")
        self.mark = time.monotonic()

    def on_batch_end(self, trainer: Trainer, position: Position, steps: int) -> None:
        self.fraction_done = self.fraction(position.fold, position.epoch, position.batch, steps)
        self.epoch = position.epoch
        self.training = {
            "epoch": position.epoch,
            "epochs": self.epochs,
            "step": position.batch,
            "steps": steps,
            "percent": round(100 * self.fraction_done, 2),
        }
        if self.folds > 1:
            self.training |= {"fold": position.fold + 1, "folds": self.folds}
        if position.batch == steps and trainer.splits.val is not None:
            self.phase("evaluating")
            self.mark = time.monotonic()
        else:
            self.phase("training", position.batch, steps)

    def _measured(self) -> float:
        seconds = time.monotonic() - (self.mark or time.monotonic())
        self.aside, self.mark = self.aside + seconds, None
        return seconds

    def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
        if ended.epoch == 0:
            self.initial_seconds = self._measured()
        elif self.mark is not None:
            self.val_seconds = self._measured()
        self.epoch, self.phase_name = position.epoch, "training"
        return False

    def on_train_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        # The callbacks before this one have scored samples, if the family draws them.
        if self.mark is not None:
            self.scoring_seconds = self._measured()
        self.phase("evaluating")
        self.mark = time.monotonic()

    def on_fold_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        self.test_seconds = self._measured()

    def scoring(self, done: int, total: int | None) -> None:
        """Sample scoring's progress (models/quality.py): `done` of `total` steps."""
        if self.mark is None:
            self.mark = time.monotonic()
        self.phase("scoring samples", done, total, left=self.scoring_seconds)


def callbacks_for(spec: JobSpecBase) -> list[Callback]:
    """The callbacks a job's document asks for."""
    callbacks: list[Callback] = []
    directions = spec.metrics()
    if spec.train.clip_grad_norm is not None:
        callbacks.append(ClipGradNorm(spec.train.clip_grad_norm))
    stopping, monitor_from = spec.train.early_stopping, spec.monitor_from()
    if stopping is not None:
        callbacks.append(
            EarlyStopping(
                monitor=stopping.monitor,
                direction=directions[stopping.monitor],
                patience=stopping.patience,
                min_delta=stopping.min_delta,
                restore_best=stopping.restore_best,
                # No stage monitored: it judges no epoch.
                from_epoch=monitor_from or spec.total_epochs() + 1,
            )
        )
    if (spec.dataset.kfold or 1) > 1:
        metric = stopping.monitor if stopping else spec.selection_metric()
        callbacks.append(
            BestFold(metric=metric, direction=directions[metric], folds=spec.dataset.kfold)
        )
    return callbacks


# --- helpers --------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if torch.accelerator.is_available():
        torch.manual_seed(seed)
    else:  # the CPU's alone: torch.manual_seed queues a seed, and a stack trace, per device kind
        torch.default_generator.manual_seed(seed)


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the job asks for CUDA but this worker has no GPU")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def better(direction: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    if direction == "max":
        return value > best + min_delta
    return value < best - min_delta


def refuse_non_finite(metrics: dict[str, Any], where: str) -> None:
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise Diverged(f"training diverged: {name} became {value} {where}")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights as they are now."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def mean_std(folds: list[dict[str, Any]]) -> dict[str, float]:
    """`name_mean` and `name_std` over the folds for every number they all report."""
    names = [n for n, v in folds[0].items() if isinstance(v, (int, float))]
    out: dict[str, float] = {}
    for name in names:
        values = np.array([f[name] for f in folds if name in f], dtype=float)
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """What a resumed run needs of a trainer, alike for every family: weights, the stage,
    every named optimizer and schedule, the family's own state, and the random streams."""
    state = {
        "model": trainer.model.state_dict(),
        "stage": trainer.stage,
        "optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in trainer.schedulers.items()},
        "trainer": trainer.state(),
        "rng": torch.get_rng_state(),
    }
    if trainer.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(trainer.device)
    return state


def restore_trainer(trainer: Trainer, saved: dict[str, Any]) -> None:
    """The inverse of trainer_state. The stage comes before the optimizers: their saved state
    belongs to the stage the checkpoint was taken in."""
    trainer.model.load_state_dict(saved["model"])
    trainer.enter(saved["stage"])
    for name, optimizer in trainer.optimizers.items():
        optimizer.load_state_dict(saved["optimizers"][name])
    for name, scheduler in trainer.schedulers.items():
        scheduler.load_state_dict(saved["schedulers"][name])
    trainer.load_state(saved["trainer"])
    torch.set_rng_state(saved["rng"])
    if "cuda_rng" in saved and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], trainer.device)


def checkpoint_state(
    trainer: Trainer, position: Position, callbacks: Sequence[Callback]
) -> dict[str, Any]:
    """Everything a checkpoint holds: the trainer's state, the position, the callbacks'."""
    state = trainer_state(trainer) | {"loop": dataclasses.asdict(position)}
    for callback in callbacks:
        state |= callback.state_dict()
    return state
