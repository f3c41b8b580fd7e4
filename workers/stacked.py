"""Train a claimed job together with the queued jobs of its stack key, as one stack.

The worker was sent one job; it takes up to ANNLAB_STACK_MAX - 1 queued jobs with the same
key (core.jobs.claim_stack) and trains them all with models/stack.py. Each job keeps what a
job trained alone has: its lease (one heartbeat renews them all), its progress, its metric
rows and checkpoints (every job's written in one transaction at each epoch's end, so a worker
killed at any moment leaves every member at the same place), its cancel and its own failure.
A job that cannot join (its data or its checkpoint stands elsewhere) goes back to the queue.
"""

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from core import jobs
from core.checkpoint import pack, read_metadata
from core.datasets import Splits
from core.db import session_scope
from core.jobs import Lease, LeaseLost
from core.logs import job_context
from core.settings import Settings
from models import admission, loop, stack
from models.base import n_params
from models.loop import Diverged, Position
from workers.lease import Cancelled, Control, Heartbeat, Stopped, end, give_back, memory_in_use
from workers.recorder import EpochLines
from workers.runner import _Run, describe, read_stored
from workers.stopping import stop_requested
from workers.threads import job_threads

log = logging.getLogger(__name__)


def has_stacked_checkpoint(settings: Settings, job_id: str) -> bool:
    """Whether the job's latest checkpoint holds folds trained at once (it resumes so)."""
    with session_scope(settings.database_url) as session:
        stored = jobs.latest_checkpoint(session, job_id)
        blob = stored.data if stored is not None else None
    return blob is not None and '"folds_state"' in read_metadata(blob).get("state", "")


@dataclasses.dataclass
class _Held:
    """A job's rows not written yet, and what builds the checkpoint after `epoch`, the last."""

    rows: list[jobs.EpochRow]
    state: Callable[[], dict[str, Any]]
    epoch: int


@dataclasses.dataclass(eq=False)
class _Entry:
    """A claimed job of the stack."""

    lease: Lease
    control: Control
    run: _Run | None = None
    job: stack.StackJob | None = None
    outcome: str | None = None


def run_stack(
    lease: Lease, document: dict[str, Any], settings: Settings, worker: str
) -> str | None:
    """Train the job `lease` holds with the queued jobs of its stack key; returns what happened
    to that job ("succeeded", "failed", "cancelled", "lost", "stopped"), or None if it must
    train alone (its folds differ in batches per epoch, or it resumes a checkpoint of folds
    trained one after another): its partners are then back in the queue."""
    entries = [_Entry(lease, Control())]
    if settings.stack_max > 1:
        with session_scope(settings.database_url) as session:
            partners = jobs.claim_stack(
                session,
                lease.job_id,
                worker=worker,
                limit=settings.stack_max - 1,
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
                max_running=settings.max_running_jobs,
            )
        entries += [_Entry(p, Control()) for p in partners]
        if partners:
            log.info("job %s: trains in a stack of %d", lease.job_id, len(entries))
    with Heartbeat(settings, [(e.lease, e.control) for e in entries]) as heartbeat:
        stacked = _Stacked(entries, settings, heartbeat)
        live = stacked.prepare()
        if live is None:
            return None
        if live:
            stacked.run(live)
    return entries[0].outcome or "succeeded"


class _Stacked(stack.Hooks):
    def __init__(self, entries: list[_Entry], settings: Settings, heartbeat: Heartbeat):
        self.entries, self.settings, self.heartbeat = entries, settings, heartbeat
        self.by_job: dict[stack.StackJob, _Entry] = {}
        # (job, fold, epoch) -> the figures of the epoch ending now
        self.figures: dict[tuple[stack.StackJob, int, int], dict[str, float]] = {}
        self.last_saved = time.monotonic()
        # Rows not yet written, with what builds the checkpoint after the last of them, by job:
        # written together at most `record_seconds` apart (as workers/recorder.py does for
        # one job); the checkpoint is built only then.
        self.pending: dict[stack.StackJob, _Held] = {}
        self.facts: dict[stack.StackJob, dict[str, Any]] = {}  # set_model_facts's, by job
        self.recorded = False
        self.lines = EpochLines()

    def session(self) -> Any:
        return session_scope(self.settings.database_url)

    def run(self, live: list[_Entry]) -> None:
        first = live[0]
        assert first.run is not None and first.job is not None
        try:
            with job_threads(first.run.spec, first.job.data.info, self.settings, first.run.device):
                stack.train([e.job for e in live if e.job is not None], first.run.device, self)
        except Stopped:
            for entry in self.live():
                self.leave(entry, "stopped")
        except BaseException as exc:
            if stop_requested():
                # The shutdown broke into the stack (an exception raised by a signal handler):
                # its jobs resume elsewhere from their last checkpoints.
                log.warning("stack of %d stopped by the worker's shutdown (%r)", len(live), exc)
                for entry in self.live():
                    self.leave(entry, "stopped")
                if not isinstance(exc, Exception):
                    raise
                return
            if not isinstance(exc, Exception):
                raise
            # Not one member's failure (those leave the stack alone): its jobs go back to
            # the queue to train alone, where a job that fails again fails with its reason.
            log.exception("a stack of %d jobs failed; they will train alone", len(live))
            left = self.live()
            with self.session() as session:
                jobs.unstack(session, [e.lease.job_id for e in left])
            for entry in left:
                self.leave(entry, "stopped")

    def live(self) -> list[_Entry]:
        return [e for e in self.entries if e.outcome is None]

    def leave(self, entry: _Entry, outcome: str, error: BaseException | None = None) -> None:
        """The job leaves the stack: ended (with the rows of its epochs not yet written), or
        back in the queue ("stopped", where the stack stops at an epoch's start or a mid-epoch
        checkpoint has written its rows; otherwise it resumes from its last checkpoint and
        trains those epochs again)."""
        held = self.pending.pop(entry.job, None) if entry.job is not None else None
        entry.outcome = outcome
        self.heartbeat.drop(entry.lease)
        with job_context(entry.lease.job_id):
            if outcome == "stopped":
                give_back(self.settings, entry.lease)
            elif outcome in ("failed", "cancelled"):
                error_text = describe(error) if error else None
                rows = held.rows if held is not None else []
                end(self.settings, entry.lease, outcome, error=error_text, rows=rows)

    # --- who joins ------------------------------------------------------------------------

    def prepare(self) -> list[_Entry] | None:
        """Each job's data and checkpoint; those that cannot train with the first go back to
        the queue. None: the first must train alone (and every other went back)."""
        joined: list[_Entry] = []
        shape: tuple[Any, ...] | None = None
        shared: dict[tuple[str, str | None], Splits] = {}  # one copy of each dataset section
        held = 0  # bytes the stack's members will hold, by models/admission.py
        with self.session() as session:
            stored = read_stored(session, [e.lease.job_id for e in self.entries])
        for entry in self.entries:
            with job_context(entry.lease.job_id):
                try:
                    found = stored[entry.lease.job_id]
                    run = _StackedRun(
                        entry.lease, found.document, self.settings, entry.control, self.siblings
                    )
                    loaded = len(shared)
                    data, saved, callbacks = run.prepare(shared, found)
                except Exception as exc:  # noqa: BLE001 - this job fails, the others go on
                    if stop_requested():
                        self.leave(entry, "stopped")
                    elif isinstance(exc, LeaseLost):
                        self.leave(entry, "lost")
                    else:
                        if not isinstance(exc, Diverged):
                            log.exception("job %s failed", entry.lease.job_id)
                        self.leave(entry, "failed", exc)
                    continue
            entry.run = run
            batches = stack.n_batches_of(run.spec, data)
            sequential = saved is not None and run.folds > 1 and "folds_state" not in saved
            if len(batches) > 1 or sequential:  # its folds train one after another
                if entry is self.entries[0]:
                    for other in self.entries[1:]:
                        if other.outcome is None:
                            self.leave(other, "stopped")
                    return None
                self.leave(entry, "stopped")
                continue
            fits = (
                run.device,
                data.info.input_shape,
                data.info.n_classes,
                data.info.target_dim,
                batches,
                _stands_at(saved),
            )
            parts = admission.estimate(run.spec, data.info)
            needs = parts["total"] - (parts["dataset"] if len(shared) == loaded else 0)
            over = joined and held + needs > self.settings.worker_memory_bytes
            if shape is not None and fits != shape or over:
                self.leave(entry, "stopped")  # another worker takes it up
                continue
            shape, held = fits, held + needs
            entry.job = stack.StackJob(
                id=entry.lease.job_id,
                spec=run.spec,
                family=run.family,
                data=data,
                saved=saved,
                callbacks=lambda make=callbacks: _per_fold(make()),
                progress=loop.Progress(
                    folds=1, epochs=run.spec.total_epochs(), publish=self.publisher(run)
                ),
            )
            self.by_job[entry.job] = entry
            joined.append(entry)
        return joined

    def publisher(self, run: _Run) -> Any:
        """The job's progress, with the size of its stack (the memory its heartbeat reports
        is the stack's: core.jobs.reap reads both)."""

        def publish(progress: dict[str, Any]) -> None:
            run.publish(progress | {"stack_jobs": len(self.by_job)})

        return publish

    def siblings(self, job_id: str, sweep_id: str, fold: int, epoch: int) -> list[dict]:
        """The figures of this epoch of the stack's other jobs of the sweep."""
        found = []
        for (other, other_fold, at), metrics in self.figures.items():
            run = self.by_job[other].run
            same_sweep = run is not None and run.sweep_id == sweep_id
            if other.id != job_id and (other_fold, at) == (fold, epoch) and same_sweep:
                found.append(metrics)
        return found

    # --- models/stack.py's hooks ----------------------------------------------------------

    def epoch_ended(
        self, epoch: int, figures: list[tuple[stack.StackJob, int, dict[str, float]]]
    ) -> None:
        self.figures = {(job, fold, epoch): metrics for job, fold, metrics in figures}

    def started(self, job: stack.StackJob, model: torch.nn.Module) -> None:
        run = self.by_job[job].run
        assert run is not None
        # Taken now, at the initial weights; written with every job's in `built`.
        self.facts[job] = {
            "n_params": n_params(model),
            "data_info": dataclasses.asdict(job.data.info),
            # How many jobs this attempt trained as one stack (itself included).
            "provenance": run.provenance(job.data, model) | {"stack_jobs": len(self.by_job)},
        }

    def built(self) -> None:
        """Every job's model facts, in one transaction; a job whose lease was lost leaves the
        stack at the next batch."""
        facts, self.facts = self.facts, {}
        if not facts:
            return
        with self.session() as session:
            for job, values in facts.items():
                entry = self.by_job[job]
                try:
                    jobs.set_model_facts(
                        session, entry.lease, lease_seconds=self.settings.lease_seconds, **values
                    )
                except LeaseLost:
                    entry.control.lost.set()

    def gone(self, job: stack.StackJob) -> bool:
        entry = self.by_job[job]
        try:
            entry.control.check(stop_after=None)
        except Cancelled:
            self.leave(entry, "cancelled")
            return True
        except LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now", job.id)
            self.pending.pop(job, None)  # its rows are another worker's to write
            entry.outcome = "lost"
            self.heartbeat.drop(entry.lease)
            return True
        return False

    def stopping(self) -> bool:
        return stop_requested()

    def stop(self) -> None:
        self.flush()  # at an epoch's start the rows' checkpoint is where the jobs stand
        raise Stopped()

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_saved > self.settings.checkpoint_seconds

    def save(self, states: list[tuple[stack.StackJob, dict[str, Any], int, int]]) -> None:
        """Mid-epoch checkpoints, each with its job's rows held back, in one transaction."""
        memory = memory_in_use()
        writes = []
        for job, state, epoch, step in states:
            held = self.pending.pop(job, None)
            rows = held.rows if held is not None else []
            writes.append(self._write(job, rows, state, epoch, step, memory))
        self._commit(writes)

    def _write(
        self,
        job: stack.StackJob,
        rows: list[jobs.EpochRow],
        state: dict[str, Any],
        epoch: int,
        step: int,
        memory: int | None,
    ) -> jobs.EpochWrite:
        entry = self.by_job[job]
        assert entry.run is not None
        blob = pack(state, {"spec": entry.run.document})
        progress = (entry.control.progress or {}) | {"memory_bytes": memory}
        return jobs.EpochWrite(entry.lease, rows, blob, epoch, step, progress)

    def record(self, records: list[stack.EpochRecord]) -> None:
        for record in records:
            rows = [jobs.EpochRow(f, e.epoch, e.seconds, e.metrics) for f, e in record.rows]
            held = self.pending.get(record.job)
            rows = (held.rows if held is not None else []) + rows
            self.pending[record.job] = _Held(rows, record.state, record.rows[-1][1].epoch)
        # Successive halving reads its peers' rows at its rungs: a sweep's stack writes each.
        halving = any(e.run is not None and e.run.halving_config for e in self.entries)
        # The first rows of an attempt go at once: the jobs' progress then says they stack.
        due = time.monotonic() - self.last_saved >= self.settings.record_seconds
        if due or halving or self.settings.record_seconds == 0 or not self.recorded:
            self.recorded = True
            self.flush()
        else:  # a job that ends now leaves the stack: what builds its checkpoint goes too
            self.flush([r.job for r in records if r.ends])
        for record in records:
            self.lines.ended(record.job.id, record.rows, last=record.ends)

    def flush(self, only: list[stack.StackJob] | None = None) -> None:
        """The rows held back (every job's, or `only` these), each job's with the checkpoint
        after them, in one transaction. Called only where the stack stands after the last
        ended epoch: at an epoch's end or before the next one's first batch."""
        chosen = [job for job in self.pending if only is None or job in only]
        if not chosen:
            return
        memory = memory_in_use()
        writes = []
        for job in chosen:
            held = self.pending.pop(job)
            writes.append(self._write(job, held.rows, held.state(), held.epoch, 0, memory))
        self._commit(writes)

    def _commit(self, writes: list[jobs.EpochWrite]) -> None:
        if not writes:
            return
        with self.session() as session:
            lost = jobs.record_epochs(session, writes, lease_seconds=self.settings.lease_seconds)
        for lease in lost:  # the job leaves the stack at the next batch
            next(e for e in self.entries if e.lease == lease).control.lost.set()
        self.last_saved = time.monotonic()

    def finish(self, done: list[tuple[stack.StackJob, dict[str, Any], torch.nn.Module]]) -> None:
        """The jobs succeeded (their rows went with their last epoch, EpochRecord.ends): their
        results and weights, in one transaction."""
        ends = {}
        for job, result, model in done:
            run = self.by_job[job].run
            assert run is not None
            ends[job] = run.success(job.progress, job.data, result, model)
        with self.session() as session:
            lost = set(jobs.succeed(session, list(ends.values())))
        for job, success in ends.items():
            entry = self.by_job[job]
            entry.outcome = "lost" if success.lease in lost else "succeeded"
            if success.lease in lost:
                log.warning("job %s: lease lost before it could finish", job.id)
            self.heartbeat.drop(entry.lease)

    def fail(self, job: stack.StackJob, error: BaseException) -> None:
        with job_context(job.id):
            self.leave(self.by_job[job], "failed", error)


class _StackedRun(_Run):
    """A job of a stack: its successive halving also counts its siblings' figures of the same
    epoch, which reach the database only after every member has judged."""

    def __init__(
        self,
        lease: Lease,
        document: dict[str, Any],
        settings: Settings,
        control: Control,
        siblings: Callable[[str, str, int, int], list[dict]],
    ):
        super().__init__(lease, document, settings, control)
        self.siblings = siblings

    def halving(self, config: Any, sweep_id: str) -> loop.Halving:
        halving = super().halving(config, sweep_id)
        stored = halving.peers

        def peers(fold: int, epoch: int) -> list[float]:
            now = self.siblings(self.lease.job_id, sweep_id, fold, epoch)
            return stored(fold, epoch) + [m[config.metric] for m in now if config.metric in m]

        halving.peers = peers
        return halving


def _per_fold(callbacks: list[loop.Callback]) -> list[loop.Callback]:
    """A fold's own callbacks: the best fold is chosen once every fold has ended."""
    return [c for c in callbacks if not isinstance(c, loop.BestFold)]


def _stands_at(saved: dict[str, Any] | None) -> tuple[int, int] | None:
    """The epoch and batch a checkpoint resumes at (its first fold still training); a job
    without one starts at epoch 1, batch 0, as one saved after its epoch 0 resumes."""
    if saved is None:
        return 1, 0
    states = saved.get("folds_state", [saved])
    for state in states:
        if "result" not in state:
            position = Position(**state["loop"])
            return position.epoch, position.batch
    return None
