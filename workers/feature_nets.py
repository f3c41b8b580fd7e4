"""Training a dataset's feature net ahead of the jobs that will score samples on it.

The API sends this task when it queues such a job and the net is neither stored nor being
trained; the worker that takes it trains the net under a lease (core/feature_nets.py), so a job
that reaches scoring meanwhile waits for it instead of training a second one. Tests call
`prepare` directly, without a broker.
"""

import logging
from typing import Any, Literal

from core import feature_nets
from core.db import session_scope
from core.settings import Settings
from core.spec import DatasetSpec
from workers.lease import Stopped
from workers.stopping import stop_requested

log = logging.getLogger(__name__)

Outcome = Literal["ready", "busy", "trained", "stopped", "failed"]


def prepare(
    dataset: dict[str, Any], owner: str | None, *, settings: Settings, worker: str
) -> Outcome:
    """Train the feature net of `dataset` (a job's dataset section) unless it is stored
    ("ready") or another worker holds a live lease on it ("busy"); "stopped" if this worker
    was told to stop meanwhile (the lease is released), "failed" on any error (logged: a job
    trains the net at need)."""
    from models import quality  # torch

    spec = DatasetSpec.model_validate(dataset)
    key = feature_nets.key_of(spec.name, owner)
    with session_scope(settings.database_url) as session:
        state = feature_nets.state(session, key)
    if state.status != "absent":
        return "ready" if state.status == "ready" else "busy"

    def heard(done: int, total: int | None) -> None:
        if stop_requested():
            raise Stopped()

    from models.loop import pick_device

    try:
        quality.feature_net(spec, settings, pick_device("auto"), owner, heard, worker=worker)
    except Stopped:
        return "stopped"
    except Exception:  # noqa: BLE001 - the first job to score samples trains it instead
        log.exception("could not train the feature net of %s", spec.name)
        return "failed"
    return "trained"
