"""Train one job: claim it, resume from its last checkpoint, record every epoch, finish it.

Plain functions over the database; the Celery task is a thin wrapper, and tests call
`run_job` directly without a broker. The loop itself is models/loop.py's; the runner adds the
one callback that writes checkpoints and metric rows (workers/recorder.py).
"""

import dataclasses
import functools
import importlib.metadata
import logging
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

from core import jobs, sweeps
from core.catalog import CATALOG, DatasetUnavailable, resolve
from core.checkpoint import pack_weights, unpack, weights_hash
from core.datasets import Splits, content_hash, load_dataset
from core.db import Checkpoint, Job, Sweep, session_scope
from core.jobs import Lease, LeaseLost
from core.logs import job_context
from core.settings import Settings
from core.uploads import upload_infos
from models import admission, loop, quality
from models.loop import Callback, Diverged
from models.registry import get_family
from models.specs import parse_job_spec
from workers.lease import Cancelled, Control, Heartbeat, Stopped, end, give_back, memory_in_use
from workers.recorder import Recorder
from workers.stopping import stop_requested
from workers.threads import job_threads

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """The reason a failed job shows its user."""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {exc}".splitlines()[0]
    if isinstance(exc, (Diverged, DatasetUnavailable)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@functools.cache
def annlab_version() -> str | None:
    """The installed package's version; None when the code runs from a tree never installed."""
    try:
        return importlib.metadata.version("annlab")
    except importlib.metadata.PackageNotFoundError:
        return None


def warm_up() -> None:
    """Estimate one small job's memory, as a worker's first job does: its first pass on the
    meta device imports torch's compiler stack (about a second), which a worker pays before
    it says it is ready rather than inside its first job. A failure here is only logged: the
    first job would meet it again and fail with its reason."""
    try:
        spec = parse_job_spec({"family": "mlp", "dataset": {"name": "digits"}})
        admission.estimate(spec, CATALOG["digits"])
    except Exception:  # noqa: BLE001 - the worker starts anyway
        log.exception("warming up failed")


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
            lease = jobs.claim(
                session,
                job_id,
                worker=worker,
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
                max_running=settings.max_running_jobs,
            )
            job = session.get(Job, job_id) if lease else None
            document, key = (job.spec, job.stack_key) if job is not None else (None, None)
        if lease is None:
            log.info("job %s is not ours to run (ended, cancelled or held by a worker)", job_id)
            return "skipped"
        log.info("job %s: attempt %d on %s", job_id, lease.attempt, worker)
        control = Control()
        run: _Run | None = None
        try:
            if on_claimed is not None:
                on_claimed()
            if key is not None:
                from workers import stacked  # it builds on this module

                # With stacking off, a job whose folds trained at once still resumes so.
                if settings.stack_max > 1 or stacked.has_stacked_checkpoint(settings, job_id):
                    outcome = stacked.run_stack(lease, document, settings, worker)
                    if outcome is not None:
                        return outcome
            with Heartbeat(settings, [(lease, control)]):
                run = _Run(lease, document, settings, control)
                run.run()
            return "succeeded"
        except LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now", job_id)
            return "lost"
        except Cancelled:  # it keeps the epochs that ended
            end(settings, lease, "cancelled", rows=run.held() if run is not None else [])
            return "cancelled"
        except Stopped:
            give_back(settings, lease)
            return "stopped"
        except BaseException as exc:
            if stop_requested():
                # The shutdown broke into the job (an exception raised by a signal handler):
                # it resumes elsewhere from its last checkpoint.
                log.warning("job %s: stopped by the worker's shutdown (%r)", job_id, exc)
                give_back(settings, lease)
                if not isinstance(exc, Exception):
                    raise
                return "stopped"
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, (Diverged, DatasetUnavailable)):
                log.exception("job %s failed", job_id)
            rows = run.held() if run is not None else []
            end(settings, lease, "failed", error=describe(exc), rows=rows)
            return "failed"
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


@dataclasses.dataclass
class Stored:
    """What an attempt reads of its job before it trains."""

    document: dict[str, Any]
    owner: str | None
    sweep_id: str | None
    progress: dict[str, Any]  # where a resumed job stood
    checkpoint: bytes | None  # its latest
    halving: dict[str, Any] | None  # its sweep's successive halving
    uploads: dict[str, Any] | None  # the owner's upload it names (None: a built-in dataset)


def read_stored(session: Any, job_ids: list[str]) -> dict[str, Stored]:
    """Each job's Stored, in a few queries however many jobs there are."""
    found = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))
    checkpoints = dict(
        session.execute(
            select(Checkpoint.job_id, Checkpoint.data).where(
                Checkpoint.job_id.in_(job_ids), Checkpoint.kind == "latest"
            )
        ).all()
    )
    sweep_ids = {job.sweep_id for job in found if job.sweep_id}
    halving = {
        sweep.id: sweep.spec.get("halving")
        for sweep in session.scalars(select(Sweep).where(Sweep.id.in_(sweep_ids)))
    }
    stored = {}
    for job in found:
        name = job.spec["dataset"]["name"]
        uploads = None if name in CATALOG else upload_infos(session, [name], job.owner_id)
        stored[job.id] = Stored(
            document=job.spec,
            owner=job.owner_id,
            sweep_id=job.sweep_id,
            progress=dict(job.progress or {}),
            checkpoint=checkpoints.get(job.id),
            halving=halving.get(job.sweep_id) if job.sweep_id else None,
            uploads=uploads,
        )
    return stored


class _Run:
    """One attempt at a job: its data, its checkpoint, the loop, the finish."""

    def __init__(
        self, lease: Lease, document: dict[str, Any], settings: Settings, control: Control
    ):
        self.lease, self.document, self.settings, self.control = lease, document, settings, control
        self.spec = parse_job_spec(document, stored=True)
        self.family = get_family(self.spec.family)
        self.device = loop.pick_device(self.spec.train.device)
        self.folds = self.spec.dataset.kfold or 1
        self.owner: str | None = None
        self.sweep_id: str | None = None
        self.halving_config: sweeps.Halving | None = None  # its sweep's, once prepared
        self.recorder: Recorder | None = None  # once it trains

    def held(self) -> list[jobs.EpochRow]:
        """The rows of ended epochs not written yet: a cancelled or failed job's end writes
        them."""
        return self.recorder.held() if self.recorder is not None else []

    def session(self) -> Any:
        return session_scope(self.settings.database_url)

    def prepare(
        self,
        shared: dict[tuple[str, str | None], Splits] | None = None,
        stored: Stored | None = None,
    ) -> tuple[Splits, dict[str, Any] | None, Callable[[], list[Callback]]]:
        """Load the job's data and its checkpoint; what makes the callbacks its document asks
        for (a fold's own, where folds train at once). `shared`: splits already loaded for the
        jobs it trains with, by dataset section and owner (no job changes its splits).
        `stored`: what was read of the job already (read_stored)."""
        if stored is None:
            with self.session() as session:
                stored = read_stored(session, [self.lease.job_id])[self.lease.job_id]
        self.owner, sweep_id = stored.owner, stored.sweep_id  # whose upload it names
        self.sweep_id = sweep_id
        # Again here, before anything is loaded: the budget may differ from the API's.
        info = resolve(self.spec.dataset, stored.uploads)
        if info is not None:
            admission.check(self.spec, info, self.settings.worker_memory_bytes)
        shown = stored.progress
        self.publish(shown | {"phase": "loading", "phase_percent": 0.0, "eta_seconds": None})
        section = (self.spec.dataset.model_dump_json(), self.owner)
        data = shared.get(section) if shared is not None else None
        if data is None:
            data = load_dataset(self.spec.dataset, self.settings, self.device, self.owner)
            if shared is not None:
                shared[section] = data
        blob, halving = stored.checkpoint, stored.halving
        saved, meta = unpack(blob) if blob is not None else (None, {"spec": self.document})
        if meta.get("spec") != self.document:
            raise RuntimeError("the stored checkpoint was made for a different job spec")
        config = sweeps.Halving.model_validate(halving) if halving else None
        self.halving_config = config

        def callbacks() -> list[Callback]:
            made = loop.callbacks_for(self.spec)
            if config is not None and sweep_id is not None:
                made.append(self.halving(config, sweep_id))
            return made

        return data, saved, callbacks

    def run(self) -> None:
        data, saved, make_callbacks = self.prepare()
        callbacks = make_callbacks()
        progress = loop.Progress(
            folds=self.folds, epochs=self.spec.total_epochs(), publish=self.publish
        )

        def scoring(done: int, total: int | None) -> None:
            progress.scoring(done, total)
            self.control.check()  # a cancel or a stop is heard while a feature net trains

        callbacks.append(quality.SampleQuality(self.settings, self.owner, scoring))
        callbacks.append(progress)
        self.recorder = Recorder(self, data, callbacks)
        callbacks.append(self.recorder)
        with job_threads(self.spec, data.info, self.settings, self.device):
            result, model = loop.train(self.family, self.spec, data, self.device, saved, callbacks)
        self.finish(progress, data, result, model)

    def finish(
        self,
        progress: loop.Progress,
        data: Splits,
        result: dict[str, Any],
        model: torch.nn.Module,
    ) -> None:
        """The job succeeded: its result and the weights it serves."""
        with self.session() as session:
            if jobs.succeed(session, [self.success(progress, data, result, model)]):
                raise LeaseLost(self.lease.job_id)

    def success(
        self,
        progress: loop.Progress,
        data: Splits,
        result: dict[str, Any],
        model: torch.nn.Module,
    ) -> jobs.Success:
        """What the job's success writes: its result, its weights, its last progress."""
        progress.phase("saving")
        weights = pack_weights(
            model, {"spec": self.document, "data_info": dataclasses.asdict(data.info)}
        )
        epochs = self.spec.total_epochs()
        done = {"epoch": epochs, "epochs": epochs, "percent": 100.0, "eta_seconds": 0.0}
        done |= {"phase": "saving", "phase_percent": 100.0, "memory_bytes": memory_in_use()}
        return jobs.Success(self.lease, result, weights, epochs, done)

    def publish(self, progress: dict[str, Any]) -> None:
        self.control.progress = progress  # the heartbeat sends it

    def halving(self, config: sweeps.Halving, sweep_id: str) -> loop.Halving:
        """Successive halving against what the sweep's other jobs reported at a rung."""

        def peers(fold: int, epoch: int) -> list[float]:
            with self.session() as session:
                rows = sweeps.reported(session, sweep_id, fold, epoch, besides=self.lease.job_id)
            return [row[config.metric] for row in rows if config.metric in row]

        return loop.Halving(
            metric=config.metric,
            direction=self.spec.metrics()[config.metric],
            reduction=config.reduction,
            rungs=config.rungs(self.spec.total_epochs()),
            peers=peers,
        )

    def provenance(self, data: Splits, model: torch.nn.Module) -> dict[str, Any]:
        """What this run depended on besides its document: versions, where it ran, the
        content of its data, and every seed it drew from."""
        seed = self.spec.train.seed
        return {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "annlab": annlab_version(),
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
