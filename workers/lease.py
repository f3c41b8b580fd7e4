"""A claimed job's lease: the heartbeat thread that renews it, publishes the job's progress and
notices a cancel, the `Control` through which the training loop hears of it, and the two ways
the lease ends early (the job given back to the queue, or ended)."""

import contextvars
import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

from core.db import session_scope
from core.jobs import EpochRow, Lease, LeaseLost, finish, heartbeats, requeue
from core.settings import Settings
from workers.stopping import stop_requested

log = logging.getLogger(__name__)
# A stop is taken at the next batch boundary, where the position is checkpointed; a batch (or an
# evaluation) still running this long after it is cut short and resumes from the last checkpoint.
STOP_GRACE_SECONDS = 1.0


class Cancelled(Exception):
    pass


class Stopped(Exception):
    """The worker is shutting down: the job goes back to the queue, to resume elsewhere."""


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

    def watch(self, model: torch.nn.Module) -> None:
        """Check before every layer runs, so that one long batch (a full-batch epoch, LBFGS's
        line search) stops within a layer, not at its end."""
        for module in model.modules():
            if next(module.children(), None) is None:  # a leaf: where the work is
                module.register_forward_pre_hook(lambda *_: self.check())


class Heartbeat:
    """Renews leases every few seconds, publishes progress and notices cancel requests: one
    job's, or those of every job of a stack, in one transaction."""

    def __init__(self, settings: Settings, held: list[tuple[Lease, Control]]):
        self.settings = settings
        self.held = dict(held)  # lease -> its control; a job that ended is dropped
        self._lock = threading.Lock()
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

    def drop(self, lease: Lease) -> None:
        """Stop renewing this lease (its job has ended or gone back to the queue)."""
        with self._lock:
            self.held.pop(lease, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            with self._lock:
                held = list(self.held.items())
            if not held:
                continue
            memory = memory_in_use()
            beats = [
                (lease, {**c.progress, "memory_bytes": memory} if c.progress is not None else None)
                for lease, c in held
            ]
            try:
                with session_scope(self.settings.database_url) as session:
                    lost, cancelled = heartbeats(
                        session, beats, lease_seconds=self.settings.lease_seconds
                    )
            except Exception:  # noqa: BLE001 - a database blip; the lease has slack for it
                log.exception("heartbeat for job(s) %s failed", [h[0].job_id for h in held])
                continue
            controls = dict(held)
            for lease in lost:
                controls[lease].lost.set()
                self.drop(lease)
            for lease in cancelled:
                controls[lease].cancel.set()


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


def give_back(settings: Settings, lease: Lease) -> None:
    try:
        with session_scope(settings.database_url) as session:
            requeue(session, lease)
        log.info("job %s: worker stopping; the job is queued again", lease.job_id)
    except LeaseLost:
        log.warning("job %s: lease lost before it could be queued again", lease.job_id)
    except Exception:  # noqa: BLE001 - the lease runs out and the reaper requeues it
        log.exception("job %s: could not be queued again; the reaper will", lease.job_id)


def end(
    settings: Settings,
    lease: Lease,
    status: str,
    error: str | None = None,
    rows: Sequence[EpochRow] = (),
) -> None:
    """The job ends `status` with the rows of its ended epochs not yet written."""
    try:
        with session_scope(settings.database_url) as session:
            finish(session, lease, status, error=error, rows=rows)
    except LeaseLost:
        log.warning("job %s: lease lost before it could be marked %s", lease.job_id, status)
