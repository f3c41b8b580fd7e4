"""The one training callback that writes: checkpoints and metric rows of a job trained alone."""

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from core import jobs
from core.checkpoint import pack
from core.datasets import Splits
from models import loop
from models.base import Trainer, n_params
from models.loop import Callback, EpochEnd, Position
from workers.lease import Stopped, memory_in_use
from workers.stopping import stop_requested

if TYPE_CHECKING:
    from workers.runner import _Run

log = logging.getLogger(__name__)


class Recorder(Callback):
    """The one callback that writes: mid-epoch checkpoints (every `checkpoint_seconds`, and
    when the worker stops), each epoch's metric row with its checkpoint, the checkpoint
    between folds; it also checks for a cancel or a lost lease before every batch."""

    def __init__(self, run: "_Run", data: Splits, callbacks: list[Callback]):
        self.run, self.data, self.callbacks = run, data, callbacks
        self.facts_set = False
        self.last_saved = time.monotonic()

    def checkpoint(self, trainer: Trainer, position: Position) -> bytes:
        state = loop.checkpoint_state(trainer, position, self.callbacks)
        return pack(state, {"spec": self.run.document})

    def save(self, trainer: Trainer, position: Position, *, epoch: int, step: int) -> None:
        """A checkpoint from which a resumed run goes on at `position`."""
        position.read_sums()
        blob = self.checkpoint(trainer, position)
        with self.run.session() as session:
            jobs.save_checkpoint(
                session,
                self.run.lease,
                lease_seconds=self.run.settings.lease_seconds,
                epoch=epoch,
                step=step,
                data=blob,
                progress=self.run.control.progress,
            )
        self.last_saved = time.monotonic()

    def on_fold_start(self, trainer: Trainer, position: Position) -> None:
        self.run.control.watch(trainer.model)
        if self.facts_set:
            return
        self.facts_set = True  # the first fold this attempt runs: the model's initial weights
        with self.run.session() as session:
            jobs.set_model_facts(
                session,
                self.run.lease,
                n_params=n_params(trainer.model),
                data_info=dataclasses.asdict(self.data.info),
                provenance=self.run.provenance(self.data, trainer.model),
                lease_seconds=self.run.settings.lease_seconds,
            )

    def on_batch_start(self, trainer: Trainer, position: Position) -> None:
        if stop_requested():
            if position.batch > 0:  # at batch 0 the last epoch's checkpoint is this position
                self.save(trainer, position, epoch=position.epoch, step=position.batch)
            raise Stopped()
        self.run.control.check()

    def on_batch_end(self, trainer: Trainer, position: Position, steps: int) -> None:
        due = time.monotonic() - self.last_saved > self.run.settings.checkpoint_seconds
        if due and position.batch < steps:
            self.save(trainer, position, epoch=position.epoch, step=position.batch)

    def on_epoch_end(self, trainer: Trainer, position: Position, ended: EpochEnd) -> bool:
        run, fold = self.run, position.fold
        artifacts = trainer.epoch_artifacts(ended.epoch)
        run.control.check(stop_after=None)  # a stop waits for the epoch's record
        blob = self.checkpoint(trainer, position)
        with run.session() as session:
            jobs.record_epoch(
                session,
                run.lease,
                lease_seconds=run.settings.lease_seconds,
                fold=fold,
                epoch=ended.epoch,
                seconds=ended.seconds,
                values=ended.metrics,
                checkpoint=blob,
                progress=(run.control.progress or {}) | {"memory_bytes": memory_in_use()},
                artifacts={k: pack({"tensor": v}) for k, v in artifacts.items()},
            )
        done = f"job {run.lease.job_id}: epoch {ended.epoch} done in {ended.seconds:.2f} s"
        log.info(done, extra={"fold": fold, **dataclasses.asdict(ended)})
        self.last_saved = time.monotonic()
        return False

    def on_fold_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        if position.fold + 1 < self.run.folds:  # the next fold starts from this checkpoint
            self.save(trainer, position.next_fold(position.fold + 1), epoch=0, step=0)
