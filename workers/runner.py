"""Train one job: claim it, resume from its last checkpoint, record every epoch, finish it.

Plain functions over the database; the Celery task is a thin wrapper, and tests call
`run_job` directly without a broker.
"""

import dataclasses
import logging
import math
import random
import threading
import time
from typing import Any

import numpy as np
import torch

from core.catalog import DatasetUnavailable
from core.checkpoint import pack, pack_weights, unpack
from core.datasets import load_dataset
from core.db import Job, session_scope
from core.jobs import (
    Lease,
    LeaseLost,
    claim,
    finish,
    heartbeat,
    latest_checkpoint,
    record_epoch,
    save_checkpoint,
    set_model_facts,
)
from core.settings import Settings
from models.base import Trainer, n_params
from models.registry import get_family
from models.specs import parse_job_spec

log = logging.getLogger(__name__)


class Cancelled(Exception):
    pass


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

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost("lease lost")
        if self.cancel.is_set():
            raise Cancelled()


class Heartbeat:
    """Renews the lease every few seconds, publishes progress and notices cancel requests."""

    def __init__(self, settings: Settings, lease: Lease, control: Control):
        self.settings, self.lease, self.control = settings, lease, control
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="annlab-heartbeat", daemon=True)

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
                    cancelled = heartbeat(
                        session,
                        self.lease,
                        lease_seconds=self.settings.lease_seconds,
                        progress=self.control.progress,
                    )
                if cancelled:
                    self.control.cancel.set()
            except LeaseLost:
                self.control.lost.set()
                return
            except Exception:  # noqa: BLE001 - a database blip; the lease has slack for it
                log.exception("heartbeat for job %s failed", self.lease.job_id)


def describe(exc: BaseException) -> str:
    """The reason a failed job shows its user."""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {exc}".splitlines()[0]
    if isinstance(exc, (Diverged, DatasetUnavailable)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_job(job_id: str, *, settings: Settings, worker: str) -> str:
    """Run the job if it is ours to run; returns what happened (for logs and tests)."""
    with session_scope(settings.database_url) as session:
        lease = claim(
            session,
            job_id,
            worker=worker,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        )
        document = session.get(Job, job_id).spec if lease else None
    if lease is None:
        log.info("job %s is not ours to run (ended, cancelled or held by a live worker)", job_id)
        return "skipped"
    log.info("job %s: attempt %d on %s", job_id, lease.attempt, worker)
    control = Control()
    try:
        with Heartbeat(settings, lease, control):
            _train(lease, document, settings, control)
        return "succeeded"
    except LeaseLost:
        log.warning("job %s: lease lost; another worker owns it now", job_id)
        return "lost"
    except Cancelled:
        _end(settings, lease, "cancelled")
        return "cancelled"
    except Exception as exc:  # noqa: BLE001 - every failure ends the job with its reason
        if not isinstance(exc, (Diverged, DatasetUnavailable)):
            log.exception("job %s failed", job_id)
        _end(settings, lease, "failed", error=describe(exc))
        return "failed"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _end(settings: Settings, lease: Lease, status: str, error: str | None = None) -> None:
    try:
        with session_scope(settings.database_url) as session:
            finish(session, lease, status, error=error)
    except LeaseLost:
        log.warning("job %s: lease lost before it could be marked %s", lease.job_id, status)


class _Clock:
    """Progress and ETA over the part of the run this attempt does."""

    def __init__(self, epochs: int, start_fraction: float):
        self.epochs, self.start_fraction, self.t0 = epochs, start_fraction, time.monotonic()

    def progress(self, epoch: int, step: int, steps: int) -> dict[str, Any]:
        fraction = ((epoch - 1) + step / steps) / self.epochs
        done_here = fraction - self.start_fraction
        eta = (time.monotonic() - self.t0) / done_here * (1 - fraction) if done_here > 0 else None
        return {
            "epoch": epoch,
            "epochs": self.epochs,
            "step": step,
            "steps": steps,
            "percent": round(100 * fraction, 2),
            "eta_seconds": round(eta, 1) if eta is not None else None,
        }


def _refuse_non_finite(metrics: dict[str, float], where: str) -> None:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise Diverged(f"training diverged: {name} became {value} {where}")


def _checkpoint(trainer: Trainer, spec_doc: dict[str, Any], loop: dict[str, Any]) -> bytes:
    state = {
        "model": trainer.model.state_dict(),
        "trainer": trainer.state(),
        "rng": torch.get_rng_state(),
        "loop": loop,
    }
    return pack(state, {"spec": spec_doc})


def _train(lease: Lease, document: dict[str, Any], settings: Settings, control: Control) -> None:
    url, lease_seconds = settings.database_url, settings.lease_seconds
    spec = parse_job_spec(document)
    device = pick_device(spec.train.device)
    seed_everything(spec.train.seed)
    family = get_family(spec.family)
    splits = load_dataset(spec.dataset, settings, device)
    model = family.build(spec, splits.info).to(device)
    trainer = family.trainer(spec, model, splits, device)
    data_info = dataclasses.asdict(splits.info)
    with session_scope(url) as session:
        set_model_facts(
            session,
            lease,
            lease_seconds=lease_seconds,
            n_params=n_params(model),
            data_info=data_info,
        )
        stored = latest_checkpoint(session, lease.job_id)
        blob = stored.data if stored is not None else None

    loop: dict[str, Any] = {"epoch": 1, "batch": 0, "sums": {}, "seconds": 0.0, "last": {}}
    if blob is not None:
        state, meta = unpack(blob)
        if meta.get("spec") != document:
            raise RuntimeError("the stored checkpoint was made for a different job spec")
        model.load_state_dict(state["model"])
        trainer.load_state(state["trainer"])
        torch.set_rng_state(state["rng"])
        loop = state["loop"]
        log.info(
            "job %s: resuming at epoch %d, batch %d", lease.job_id, loop["epoch"], loop["batch"]
        )

    epochs = spec.train.epochs
    clock = _Clock(
        epochs, ((loop["epoch"] - 1) + loop["batch"] / trainer.n_batches(loop["epoch"])) / epochs
    )
    last_saved = time.monotonic()
    for epoch in range(loop["epoch"], epochs + 1):
        steps = trainer.n_batches(epoch)
        first_batch = loop["batch"] if epoch == loop["epoch"] else 0
        sums: dict[str, float] = dict(loop["sums"]) if first_batch else {}
        seconds = loop["seconds"] if first_batch else 0.0
        started = time.perf_counter()
        for batch in range(first_batch, steps):
            control.check()
            stats = trainer.train_batch(epoch, batch)
            if not math.isfinite(stats["loss"]):
                raise Diverged(
                    f"training diverged: the loss became {stats['loss']} "
                    f"at epoch {epoch}, batch {batch + 1}"
                )
            for name, value in stats.items():
                sums[name] = sums.get(name, 0.0) + value
            control.progress = clock.progress(epoch, batch + 1, steps)
            if time.monotonic() - last_saved > settings.checkpoint_seconds and batch + 1 < steps:
                here = {
                    "epoch": epoch,
                    "batch": batch + 1,
                    "sums": sums,
                    "seconds": seconds + time.perf_counter() - started,
                    "last": loop["last"],
                }
                with session_scope(url) as session:
                    save_checkpoint(
                        session,
                        lease,
                        lease_seconds=lease_seconds,
                        epoch=epoch,
                        step=batch + 1,
                        data=_checkpoint(trainer, document, here),
                        progress=control.progress,
                    )
                last_saved = time.monotonic()
        seconds += time.perf_counter() - started
        metrics = trainer.epoch_metrics(sums)
        if splits.val is not None:
            metrics |= {f"val_{k}": v for k, v in trainer.evaluate(splits.val).items()}
        _refuse_non_finite(metrics, f"at the end of epoch {epoch}")
        trainer.end_epoch(epoch, metrics)
        loop = {"epoch": epoch + 1, "batch": 0, "sums": {}, "seconds": 0.0, "last": metrics}
        control.check()
        with session_scope(url) as session:
            record_epoch(
                session,
                lease,
                lease_seconds=lease_seconds,
                epoch=epoch,
                seconds=seconds,
                values=metrics,
                checkpoint=_checkpoint(trainer, document, loop),
                progress=clock.progress(epoch, steps, steps),
            )
        last_saved = time.monotonic()

    test = {f"test_{k}": v for k, v in trainer.evaluate(splits.test).items()}
    _refuse_non_finite(test, "on the test set")
    result = {**loop["last"], **test}
    weights = pack_weights(model, {"spec": document, "data_info": data_info})
    done = {"epoch": epochs, "epochs": epochs, "percent": 100.0, "eta_seconds": 0.0}
    with session_scope(url) as session:
        finish(
            session,
            lease,
            "succeeded",
            result=result,
            final_checkpoint=weights,
            epoch=epochs,
            progress=done,
        )
