"""Train one job: claim it, resume from its last checkpoint, record every epoch, finish it.

Plain functions over the database; the Celery task is a thin wrapper, and tests call
`run_job` directly without a broker.
"""

import contextvars
import dataclasses
import hashlib
import importlib.metadata
import logging
import math
import os
import platform
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

from core.catalog import CATALOG, DatasetInfo, DatasetUnavailable, resolve
from core.checkpoint import pack, pack_weights, unpack
from core.datasets import Splits, content_hash, fold_splits, load_dataset
from core.db import Job, Metric, Sweep, session_scope
from core.jobs import (
    Lease,
    LeaseLost,
    claim,
    finish,
    heartbeat,
    latest_checkpoint,
    record_epoch,
    requeue,
    save_checkpoint,
    set_model_facts,
)
from core.logs import job_context
from core.settings import Settings
from core.sweeps import Halving
from core.uploads import upload_infos
from models import admission, quality
from models.base import Trainer, n_params
from models.registry import get_family
from models.specs import parse_job_spec
from workers.stopping import stop_requested

log = logging.getLogger(__name__)
# A stop is taken at the next batch boundary, where the position is checkpointed; a batch (or an
# evaluation) still running this long after it is cut short and resumes from the last checkpoint.
STOP_GRACE_SECONDS = 1.0


class Cancelled(Exception):
    pass


class Stopped(Exception):
    """The worker is shutting down: the job goes back to the queue, to resume elsewhere."""


class Diverged(Exception):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the job asks for CUDA but this worker has no GPU")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@dataclasses.dataclass
class Control:
    """What the heartbeat thread tells the training loop, and the progress it publishes."""

    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    lost: threading.Event = dataclasses.field(default_factory=threading.Event)
    progress: dict[str, Any] | None = None

    def check(self, *, stop_after: float | None = STOP_GRACE_SECONDS) -> None:
        """Raise if the job must stop: lease lost, cancelled, or (unless `stop_after` is None)
        its worker asked to stop at least `stop_after` seconds ago."""
        if self.lost.is_set():
            raise LeaseLost("lease lost")
        if self.cancel.is_set():
            raise Cancelled()
        if stop_after is not None and stop_requested(for_seconds=stop_after):
            raise Stopped()


class Heartbeat:
    """Renews the lease every few seconds, publishes progress and notices cancel requests."""

    def __init__(self, settings: Settings, lease: Lease, control: Control):
        self.settings, self.lease, self.control = settings, lease, control
        self._stop = threading.Event()
        # Started in a copy of this context, so its log lines carry the job id too.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._loop,),
            name="annlab-heartbeat",
            daemon=True,
        )

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with session_scope(self.settings.database_url) as session:
                    progress = self.control.progress
                    if progress is not None:  # with the memory the run holds now
                        progress = {**progress, "memory_bytes": memory_in_use()}
                    cancelled = heartbeat(
                        session,
                        self.lease,
                        lease_seconds=self.settings.lease_seconds,
                        progress=progress,
                    )
                if cancelled:
                    self.control.cancel.set()
            except LeaseLost:
                self.control.lost.set()
                return
            except Exception:  # noqa: BLE001 - a database blip; the lease has slack for it
                log.exception("heartbeat for job %s failed", self.lease.job_id)


def memory_in_use() -> int:
    """This process's resident memory now (Linux), or the GPU memory its tensors hold, if
    more: published with the progress, so that the reaper can tell a worker killed for memory
    from a lost machine."""
    resident = 0
    try:
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    gpu = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    return max(resident, gpu)


def describe(exc: BaseException) -> str:
    """The reason a failed job shows its user."""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {exc}".splitlines()[0]
    if isinstance(exc, (Diverged, DatasetUnavailable)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_job(
    job_id: str,
    *,
    settings: Settings,
    worker: str,
    on_claimed: Callable[[], object] | None = None,
) -> str:
    """Run the job if it is ours to run; returns what happened (for logs and tests).
    `on_claimed` runs once the job is ours (the worker sends a sweep's next job then).
    "stopped": this worker is shutting down; the job is queued again, unsent."""
    with job_context(job_id):  # every line logged while it runs names the job
        if stop_requested():
            return "stopped"
        with session_scope(settings.database_url) as session:
            lease = claim(
                session,
                job_id,
                worker=worker,
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
                max_running=settings.max_running_jobs,
            )
            document = session.get(Job, job_id).spec if lease else None
        if lease is None:
            log.info("job %s is not ours to run (ended, cancelled or held by a worker)", job_id)
            return "skipped"
        log.info("job %s: attempt %d on %s", job_id, lease.attempt, worker)
        control = Control()
        try:
            if on_claimed is not None:
                on_claimed()
            with Heartbeat(settings, lease, control):
                _Run(lease, document, settings, control).run()
            return "succeeded"
        except LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now", job_id)
            return "lost"
        except Cancelled:
            _end(settings, lease, "cancelled")
            return "cancelled"
        except Stopped:
            _requeue(settings, lease)
            return "stopped"
        except BaseException as exc:
            if stop_requested():
                # The shutdown broke into the job (an exception raised by a signal handler):
                # it resumes elsewhere from its last checkpoint.
                log.warning("job %s: stopped by the worker's shutdown (%r)", job_id, exc)
                _requeue(settings, lease)
                if not isinstance(exc, Exception):
                    raise
                return "stopped"
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, (Diverged, DatasetUnavailable)):
                log.exception("job %s failed", job_id)
            _end(settings, lease, "failed", error=describe(exc))
            return "failed"
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _requeue(settings: Settings, lease: Lease) -> None:
    try:
        with session_scope(settings.database_url) as session:
            requeue(session, lease)
        log.info("job %s: worker stopping; the job is queued again", lease.job_id)
    except LeaseLost:
        log.warning("job %s: lease lost before it could be queued again", lease.job_id)
    except Exception:  # noqa: BLE001 - the lease runs out and the reaper requeues it
        log.exception("job %s: could not be queued again; the reaper will", lease.job_id)


def _end(settings: Settings, lease: Lease, status: str, error: str | None = None) -> None:
    try:
        with session_scope(settings.database_url) as session:
            finish(session, lease, status, error=error)
    except LeaseLost:
        log.warning("job %s: lease lost before it could be marked %s", lease.job_id, status)


class _Clock:
    """Progress and ETA over the part of the run this attempt does (all folds together)."""

    def __init__(self, *, folds: int, epochs: int):
        self.folds, self.epochs = folds, epochs
        self.start_fraction, self.t0 = 0.0, time.monotonic()

    def fraction(self, fold: int, epoch: int, step: int, steps: int) -> float:
        within = min(1.0, ((epoch - 1) + step / steps) / self.epochs)
        return (fold + within) / self.folds

    def progress(self, fold: int, epoch: int, step: int, steps: int) -> dict[str, Any]:
        fraction = self.fraction(fold, epoch, step, steps)
        done_here = fraction - self.start_fraction
        eta = (time.monotonic() - self.t0) / done_here * (1 - fraction) if done_here > 0 else None
        progress = {
            "epoch": epoch,
            "epochs": self.epochs,
            "step": step,
            "steps": steps,
            "percent": round(100 * fraction, 2),
            "eta_seconds": round(eta, 1) if eta is not None else None,
        }
        if self.folds > 1:
            progress |= {"fold": fold + 1, "folds": self.folds}
        return progress


@dataclasses.dataclass
class Position:
    """Where a run stands, stored in every checkpoint (JSON-able): resume starts here."""

    fold: int = 0
    epoch: int = 1
    batch: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # of the current epoch, so far
    last: dict[str, float] = dataclasses.field(default_factory=dict)  # last epoch's metrics
    best: float | None = None  # early stopping / fold selection: best monitored value
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_epoch: int | None = None
    halved_epoch: int | None = None  # a sweep's successive halving stopped it here
    folds: list[dict[str, float]] = dataclasses.field(default_factory=list)  # finished folds
    best_fold: int | None = None
    best_fold_score: float | None = None

    def next_fold(self, fold: int) -> "Position":
        return Position(
            fold=fold,
            folds=self.folds,
            best_fold=self.best_fold,
            best_fold_score=self.best_fold_score,
        )


def _better(direction: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    if direction == "max":
        return value > best + min_delta
    return value < best - min_delta


def _refuse_non_finite(metrics: dict[str, float], where: str) -> None:
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise Diverged(f"training diverged: {name} became {value} {where}")


def _read_sums(sums: dict[str, Any], where: str) -> dict[str, float]:
    """The epoch's running sums as floats (one wait for the device), refused if not finite."""
    floats = {name: float(value) for name, value in sums.items()}
    _refuse_non_finite(floats, where)
    return floats


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


def watch_cancel(model: torch.nn.Module, control: Control) -> None:
    """Check for a cancel (and a lost lease) before every layer runs, so that one long batch
    (a full-batch epoch, LBFGS's line search) stops within a layer, not at its end."""
    for module in model.modules():
        if next(module.children(), None) is None:  # a leaf: where the work is
            module.register_forward_pre_hook(lambda *_: control.check())


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of the weights (names, shapes and values), e.g. as they start."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(array.shape)}{array.dtype}".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights as they are now (for restore-best and the best fold)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mean_std(folds: list[dict[str, Any]]) -> dict[str, float]:
    """`name_mean` and `name_std` over the folds for every number they all report."""
    names = [n for n, v in folds[0].items() if isinstance(v, (int, float))]
    out: dict[str, float] = {}
    for name in names:
        values = np.array([f[name] for f in folds if name in f], dtype=float)
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


class _Run:
    """One attempt at a job: folds (one without cross-validation), epochs, batches."""

    def __init__(
        self, lease: Lease, document: dict[str, Any], settings: Settings, control: Control
    ):
        self.lease, self.document, self.settings, self.control = lease, document, settings, control
        self.spec = parse_job_spec(document)
        self.family = get_family(self.spec.family)
        self.device = pick_device(self.spec.train.device)
        self.folds = self.spec.dataset.kfold or 1
        self.stopping = self.spec.train.early_stopping
        self.monitor = self.stopping.monitor if self.stopping else None
        self.directions = self.spec.metrics()
        self.sweep_id: str | None = None
        self.halving: Halving | None = None
        self.rungs: set[int] = set()
        self.owner: str | None = None

    def session(self) -> Any:
        return session_scope(self.settings.database_url)

    def checkpoint(self, trainer: Trainer, position: Position, extra: dict[str, Any]) -> bytes:
        state = trainer_state(trainer) | {"loop": dataclasses.asdict(position), **extra}
        return pack(state, {"spec": self.document})

    def run(self) -> None:
        with self.session() as session:
            self.owner = session.get(Job, self.lease.job_id).owner_id  # whose upload it names
        # Again here, before anything is loaded: the budget may differ from the API's.
        info = resolve(self.spec.dataset, self.uploads())
        if info is not None:
            admission.check(self.spec, info, self.settings.worker_memory_bytes)
        data = load_dataset(self.spec.dataset, self.settings, self.device, self.owner)
        with self.session() as session:
            stored = latest_checkpoint(session, self.lease.job_id)
            blob = stored.data if stored is not None else None
            self.sweep_id = session.get(Job, self.lease.job_id).sweep_id
            sweep = session.get(Sweep, self.sweep_id) if self.sweep_id else None
            if sweep is not None and sweep.spec.get("halving"):
                self.halving = Halving.model_validate(sweep.spec["halving"])
                self.rungs = set(self.halving.rungs(self.spec.total_epochs()))
        saved: dict[str, Any] | None = None
        position = Position()
        if blob is not None:
            saved, meta = unpack(blob)
            if meta.get("spec") != self.document:
                raise RuntimeError("the stored checkpoint was made for a different job spec")
            position = Position(**saved["loop"])
            log.info(
                "job %s: resuming at fold %d, epoch %d, batch %d",
                self.lease.job_id,
                position.fold + 1,
                position.epoch,
                position.batch,
            )
        best_fold_model = saved.get("best_fold_model") if saved else None

        clock: _Clock | None = None
        for fold in range(position.fold, self.folds):
            splits = fold_splits(data, self.folds, fold) if self.folds > 1 else data
            seed_everything(self.spec.train.seed + fold)
            model = self.family.build(self.spec, splits.info).to(self.device)
            watch_cancel(model, self.control)
            trainer = self.family.trainer(self.spec, model, splits, self.device)
            if clock is None:  # the first fold this attempt runs
                clock = _Clock(folds=self.folds, epochs=self.spec.total_epochs())
                clock.start_fraction = clock.fraction(
                    position.fold, position.epoch, position.batch, trainer.n_batches(1)
                )
                with self.session() as session:
                    set_model_facts(
                        session,
                        self.lease,
                        n_params=n_params(model),
                        data_info=dataclasses.asdict(data.info),
                        provenance=self.provenance(data, model),
                        lease_seconds=self.settings.lease_seconds,
                    )
            best_model = None
            started = position.epoch > 1 or position.batch > 0
            if saved is not None and fold == position.fold and started:
                restore_trainer(trainer, saved)
                best_model = saved.get("best_model")
            else:
                position = position.next_fold(fold)
            saved = None

            fold_result, best_model = self.fit(
                trainer, splits, position, clock, best_model, best_fold_model
            )
            if best_model is not None and self.stopping and self.stopping.restore_best:
                model.load_state_dict(best_model)
            test = {f"test_{k}": v for k, v in trainer.evaluate(splits.test).items()}
            _refuse_non_finite(test, "on the test set")
            fold_result |= test | trainer.result() | self.sample_quality(trainer, splits)
            position.folds.append(fold_result)
            if self.folds > 1:
                score_name = self.monitor or self.spec.selection_metric()
                direction = self.directions[score_name]
                if _better(direction, fold_result[score_name], position.best_fold_score):
                    position.best_fold, position.best_fold_score = fold, fold_result[score_name]
                    best_fold_model = _snapshot(model)
                if fold + 1 < self.folds:  # the next fold starts from this checkpoint
                    after = position.next_fold(fold + 1)
                    blob = self.checkpoint(trainer, after, {"best_fold_model": best_fold_model})
                    with self.session() as session:
                        save_checkpoint(
                            session,
                            self.lease,
                            lease_seconds=self.settings.lease_seconds,
                            epoch=0,
                            step=0,
                            data=blob,
                            progress=self.control.progress,
                        )

        if self.folds > 1:
            result = _mean_std(position.folds) | {
                "folds": position.folds,
                "best_fold": position.best_fold + 1,
            }
            model.load_state_dict(best_fold_model)
        else:
            result = position.folds[0]
        weights = pack_weights(
            model, {"spec": self.document, "data_info": dataclasses.asdict(data.info)}
        )
        done = {"epoch": clock.epochs, "epochs": clock.epochs, "percent": 100.0, "eta_seconds": 0.0}
        done["memory_bytes"] = memory_in_use()
        with self.session() as session:
            finish(
                session,
                self.lease,
                "succeeded",
                result=result,
                final_checkpoint=weights,
                epoch=clock.epochs,
                progress=done,
            )

    def fit(
        self,
        trainer: Trainer,
        splits: Any,
        position: Position,
        clock: _Clock,
        best_model: dict[str, torch.Tensor] | None,
        best_fold_model: dict[str, torch.Tensor] | None,
    ) -> tuple[dict[str, float], dict[str, torch.Tensor] | None]:
        """Train one fold from `position` to its last epoch (or an early stop)."""
        settings, lease, fold = self.settings, self.lease, position.fold
        epochs = self.spec.total_epochs()
        monitor_from = self.spec.monitor_from()
        extra = {"best_fold_model": best_fold_model} if best_fold_model is not None else {}
        last_saved = time.monotonic()
        while position.epoch <= epochs and position.stopped_epoch is None:
            epoch = position.epoch
            trainer.begin_epoch(epoch)
            steps = trainer.n_batches(epoch)
            started = time.perf_counter()

            for batch in range(position.batch, steps):
                if stop_requested():
                    if batch > 0:  # at batch 0 the last epoch's checkpoint is this position
                        position.batch = batch
                        position.seconds += time.perf_counter() - started
                        self.save_position(trainer, position, extra | self._best(best_model))
                    raise Stopped()
                self.control.check()
                stats = trainer.train_batch(epoch, batch)
                # Sums the trainer left on the device are added there and read once per epoch
                # (and at mid-epoch checkpoints): reading them each batch would wait for the
                # GPU after every step. Floats are checked at once.
                _refuse_non_finite(stats, f"at epoch {epoch}, batch {batch + 1}")
                for name, value in stats.items():
                    position.sums[name] = position.sums.get(name, 0.0) + value
                self.control.progress = clock.progress(fold, epoch, batch + 1, steps)
                if (
                    time.monotonic() - last_saved > settings.checkpoint_seconds
                    and batch + 1 < steps
                ):
                    position.batch = batch + 1
                    position.seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save_position(trainer, position, extra | self._best(best_model))
                    last_saved = time.monotonic()
            position.sums = _read_sums(position.sums, f"in epoch {epoch}")
            seconds = position.seconds + time.perf_counter() - started
            metrics = trainer.epoch_metrics(position.sums)
            if splits.val is not None:
                metrics |= {f"val_{k}": v for k, v in trainer.evaluate(splits.val).items()}
            _refuse_non_finite(metrics, f"at the end of epoch {epoch}")
            trainer.end_epoch(epoch, metrics)
            if len(trainer.stages) > 1:
                metrics["stage"] = float(trainer.stage)
            if self.stopping is not None and monitor_from is not None and epoch >= monitor_from:
                if self.monitor not in metrics:
                    raise ValueError(
                        f"early_stopping monitors {self.monitor!r}, which this job "
                        f"does not report; it reports {sorted(metrics)}"
                    )
                value = metrics[self.monitor]
                direction = self.directions[self.monitor]
                if _better(direction, value, position.best, self.stopping.min_delta):
                    position.best, position.best_epoch, position.bad_epochs = value, epoch, 0
                    if self.stopping.restore_best:
                        best_model = _snapshot(trainer.model)
                else:
                    position.bad_epochs += 1
                    if position.bad_epochs >= self.stopping.patience:
                        position.stopped_epoch = epoch
            if position.stopped_epoch is None and epoch in self.rungs:
                if not self.promoted(position.fold, epoch, metrics):
                    position.stopped_epoch = position.halved_epoch = epoch
            position.epoch, position.batch, position.sums = epoch + 1, 0, {}
            position.seconds, position.last = 0.0, metrics
            artifacts = trainer.epoch_artifacts(epoch)
            self.control.check(stop_after=None)  # a stop waits for the epoch's record
            blob = self.checkpoint(trainer, position, extra | self._best(best_model))
            with self.session() as session:
                record_epoch(
                    session,
                    lease,
                    lease_seconds=settings.lease_seconds,
                    fold=fold,
                    epoch=epoch,
                    seconds=seconds,
                    values=metrics,
                    checkpoint=blob,
                    progress=clock.progress(fold, epoch, steps, steps)
                    | {"memory_bytes": memory_in_use()},
                    artifacts={k: pack({"tensor": v}) for k, v in artifacts.items()},
                )
            log.info(
                "job %s: epoch %d done in %.2f s",
                lease.job_id,
                epoch,
                seconds,
                extra={"fold": fold, "epoch": epoch, "seconds": seconds, "metrics": metrics},
            )
            last_saved = time.monotonic()
        result = dict(position.last)
        if self.stopping is not None:
            result |= {
                "best_epoch": position.best_epoch,
                "stopped_epoch": position.stopped_epoch or epochs,
            }
        if position.halved_epoch is not None:
            result["halved_at_epoch"] = position.halved_epoch
        return result, best_model

    def save_position(self, trainer: Trainer, position: Position, extra: dict[str, Any]) -> None:
        """A mid-epoch checkpoint: resume runs `position.batch` of `position.epoch` next."""
        where = f"by epoch {position.epoch}, batch {position.batch}"
        position.sums = _read_sums(position.sums, where)
        blob = self.checkpoint(trainer, position, extra)
        with self.session() as session:
            save_checkpoint(
                session,
                self.lease,
                lease_seconds=self.settings.lease_seconds,
                epoch=position.epoch,
                step=position.batch,
                data=blob,
                progress=self.control.progress,
            )

    def promoted(self, fold: int, epoch: int, metrics: dict[str, float]) -> bool:
        """Successive halving's rule at a rung, asynchronously (ASHA; as Ray Tune's
        AsyncHyperBand): go on if this job's value is within the best 1/reduction of the
        values its sweep's jobs reported at this epoch so far, this one's included."""
        assert self.halving is not None
        name = self.halving.metric
        if name not in metrics:
            return True
        with self.session() as session:
            reported = session.scalars(
                select(Metric.values)
                .join(Job, Job.id == Metric.job_id)
                .where(Job.sweep_id == self.sweep_id, Job.id != self.lease.job_id)
                .where(Metric.epoch == epoch, Metric.fold == fold)
            ).all()
        values = [v[name] for v in reported if name in v] + [metrics[name]]
        share = 100 / self.halving.reduction
        if self.directions[name] == "max":
            return metrics[name] >= np.percentile(values, 100 - share)
        return metrics[name] <= np.percentile(values, share)

    def uploads(self) -> dict[str, DatasetInfo] | None:
        """The facts of the upload the job trains on (None for a built-in dataset)."""
        if self.spec.dataset.name in CATALOG:
            return None
        with self.session() as session:
            return upload_infos(session, [self.spec.dataset.name], self.owner)

    def provenance(self, data: Splits, model: torch.nn.Module) -> dict[str, Any]:
        """What this run depended on besides its document: versions, where it ran, the
        content of its data, and every seed it drew from."""
        seed = self.spec.train.seed
        return {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "annlab": importlib.metadata.version("annlab"),
            "numpy": np.__version__,
            "device": str(self.device),
            "cuda": torch.version.cuda if self.device.type == "cuda" else None,
            "dataset_sha256": content_hash(data),
            "initial_weights_sha256": weights_hash(model),
            "seeds": {
                "train": seed,  # weights, batch order, noise (each fold: train + fold)
                "folds": [seed + fold for fold in range(self.folds)],
                "split": self.spec.dataset.split_seed,
                "sample_quality": seed,
            },
        }

    def sample_quality(self, trainer: Trainer, splits: Splits) -> dict[str, Any]:
        """For a generative family: how its samples compare with the test images."""
        if not quality.applies(splits.info):
            return {}
        generator = torch.Generator(self.device).manual_seed(self.spec.train.seed)
        samples = trainer.samples(quality.N_SAMPLES, generator)
        if samples is None:
            return {}
        net = quality.feature_net(self.spec.dataset, self.settings, self.device, self.owner)
        return quality.measure(net, samples, splits.test)

    def _best(self, best_model: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        return {"best_model": best_model} if best_model is not None else {}
