"""The one training callback that writes: checkpoints and metric rows of a job trained alone."""

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core import jobs
from core.checkpoint import pack
from core.datasets import Splits
from core.logs import job_context
from models import loop
from models.base import Trainer, n_params
from models.loop import Callback, EpochEnd, Position
from workers.lease import Stopped, memory_in_use
from workers.stopping import stop_requested

if TYPE_CHECKING:
    from workers.runner import _Run

log = logging.getLogger(__name__)

# A job's "epoch done" log lines at most this far apart (a small model's epochs take
# milliseconds: a line each cost more than the epoch), its first of an attempt always.
EPOCH_LINE_SECONDS = 1.0


class EpochLines:
    """The "epoch done" log lines of a worker's jobs: each job's first of the attempt, then at
    most one every EPOCH_LINE_SECONDS, and the last epoch of a fold."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.unsaid: dict[str, Sequence[tuple[int, EpochEnd]]] = {}

    def ended(self, job_id: str, rows: Sequence[tuple[int, EpochEnd]], last: bool = False) -> None:
        """The job's epoch ended (a row per fold that trained in it); `last`: a fold's end."""
        now = time.monotonic()
        if not last and now - self.last.get(job_id, -EPOCH_LINE_SECONDS) < EPOCH_LINE_SECONDS:
            self.unsaid[job_id] = rows
            return
        self.last[job_id] = now
        self.unsaid.pop(job_id, None)
        self._log(job_id, rows)

    def fold_ended(self, job_id: str) -> None:
        """A fold ended: its last epoch's line, unless it was logged."""
        rows = self.unsaid.pop(job_id, None)
        if rows:
            self._log(job_id, rows)

    def _log(self, job_id: str, rows: Sequence[tuple[int, EpochEnd]]) -> None:
        with job_context(job_id):
            for fold, ended in rows:
                done = f"job {job_id}: epoch {ended.epoch} done in {ended.seconds:.2f} s"
                log.info(done, extra={"fold": fold, **vars(ended)})


class Recorder(Callback):
    """The one callback that writes: ended epochs' metric rows with the checkpoint after them
    (together, at most `record_seconds` apart, in one transaction), mid-epoch checkpoints
    (every `checkpoint_seconds`, and when the worker stops, with the rows not yet written),
    the checkpoint between folds; it also checks for a cancel or a lost lease before every
    batch. Rows held back are written before the fold ends or the job stops (`flush`); a job
    that ends cancelled or failed writes them with its end (`held`)."""

    def __init__(self, run: "_Run", data: Splits, callbacks: list[Callback]):
        self.run, self.data, self.callbacks = run, data, callbacks
        self.facts_set = False
        self.last_saved = time.monotonic()
        self.pending: list[jobs.EpochRow] = []
        self.recorded = False
        self.lines = EpochLines()
        # Where the checkpoint after the pending rows is taken from, when they are written:
        # the trainer and its position, which stand there until the next batch, and the last
        # ended epoch. The checkpoint is built only then, not at every epoch's end.
        self.after: tuple[Trainer, Position, int] | None = None
        # Successive halving reads its peers' rows at its rungs: a sweep's job writes each.
        self.every_epoch = run.settings.record_seconds == 0 or run.halving_config is not None

    def checkpoint(self, trainer: Trainer, position: Position) -> bytes:
        state = loop.checkpoint_state(trainer, position, self.callbacks)
        return pack(state, {"spec": self.run.document})

    def write(self, blob: bytes, *, epoch: int, step: int) -> None:
        """The pending rows and `blob` (a checkpoint at (epoch, step)), in one transaction."""
        progress = (self.run.control.progress or {}) | {"memory_bytes": memory_in_use()}
        with self.run.session() as session:
            jobs.record_rows(
                session,
                self.run.lease,
                lease_seconds=self.run.settings.lease_seconds,
                rows=self.pending,
                checkpoint=blob,
                epoch=epoch,
                step=step,
                progress=progress,
            )
        self.pending = []
        self.last_saved = time.monotonic()

    def save(self, trainer: Trainer, position: Position, *, epoch: int, step: int) -> None:
        """A checkpoint from which a resumed run goes on at `position`, with the rows before it."""
        position.read_sums()
        self.write(self.checkpoint(trainer, position), epoch=epoch, step=step)

    def flush(self) -> None:
        """The rows held back, with the checkpoint after the last of them. Called only where
        the trainer still stands after that epoch: at its end, before the next one's first
        batch, at the fold's end."""
        if self.pending and self.after is not None:
            trainer, position, epoch = self.after
            self.write(self.checkpoint(trainer, position), epoch=epoch, step=0)

    def held(self) -> list[jobs.EpochRow]:
        """The rows not written yet, for the job's end to write (jobs.finish)."""
        rows, self.pending = self.pending, []
        return rows

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
            if position.batch > 0:
                self.save(trainer, position, epoch=position.epoch, step=position.batch)
            else:  # at batch 0 the last epoch's checkpoint is this position
                self.flush()
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
        self.pending.append(
            jobs.EpochRow(
                fold,
                ended.epoch,
                ended.seconds,
                ended.metrics,
                {k: pack({"tensor": v}) for k, v in artifacts.items()},
            )
        )
        self.after = (trainer, position, ended.epoch)
        # The first rows of an attempt go at once, later ones at most record_seconds apart.
        due = time.monotonic() - self.last_saved >= run.settings.record_seconds
        if due or self.every_epoch or not self.recorded:
            self.recorded = True
            self.flush()
        self.lines.ended(run.lease.job_id, [(fold, ended)])
        return False

    def on_fold_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        self.lines.fold_ended(self.run.lease.job_id)
        if position.fold + 1 < self.run.folds:  # the next fold starts from this checkpoint
            self.save(trainer, position.next_fold(position.fold + 1), epoch=0, step=0)
        else:
            self.flush()
