"""Who trains a dataset's feature net (models/quality.py), and how far it is.

A worker that trains one holds a lease on its row in feature_net_trainings: it renews the lease
and writes its step as it trains, and another worker waits for it meanwhile; a lease that ran
out (its worker was killed) is taken over. The finished net goes to feature_nets in the same
transaction that marks the row `ready`. Torch-free: the API reads the states for GET /datasets.
"""

import dataclasses
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Literal

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.catalog import CATALOG, DatasetInfo
from core.db import FeatureNet, FeatureNetTraining, utcnow

RECIPE = "cnn32-64-128/v1"  # part of the stored key: a new recipe trains new nets


def applies(info: DatasetInfo) -> bool:
    """Quality is measured for labelled image datasets (the classifier needs the labels)."""
    return info.kind == "classification" and len(info.input_shape) == 3 and bool(info.n_classes)


def key_of(name: str, owner: str | None = None) -> str:
    """The stored key of a dataset's feature net. Uploads are per owner: two owners'
    `upload:x` are two datasets."""
    if owner is not None and name not in CATALOG:
        return f"{name}/{owner}/{RECIPE}"
    return f"{name}/{RECIPE}"


@dataclasses.dataclass(frozen=True)
class State:
    """A feature net: absent (stored nowhere, nobody training it), training (under a live
    lease, `step` of `steps` done) or ready (stored, with its test accuracy)."""

    status: Literal["absent", "training", "ready"]
    step: int | None = None
    steps: int | None = None
    test_accuracy: float | None = None

    @property
    def percent(self) -> float | None:
        if self.status == "ready":
            return 100.0
        if self.step is None or not self.steps:
            return None
        return round(100.0 * self.step / self.steps, 1)


def stored(session: Session, key: str) -> bool:
    return session.scalar(select(FeatureNet.key).where(FeatureNet.key == key)) is not None


def claim(
    session: Session, key: str, *, worker: str, steps: int, lease_seconds: float
) -> str | None:
    """A lease token if this worker is to train the key's net now: none is stored and nobody
    trains it, or the one training it let its lease expire. None if it is stored or another
    worker holds a live lease on it."""
    if stored(session, key):
        return None
    now = utcnow()
    token = uuid.uuid4().hex
    lease = {
        "status": "training",
        "step": 0,
        "steps": steps,
        "worker": worker,
        "lease_token": token,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "started_at": now,
    }
    # A `ready` row without its net (deleted by hand) is trained again too.
    claimable = or_(
        FeatureNetTraining.status == "ready",
        and_(
            FeatureNetTraining.status == "training",
            FeatureNetTraining.lease_expires_at < now,
        ),
    )
    taken = session.execute(
        update(FeatureNetTraining)
        .where(FeatureNetTraining.key == key, claimable)
        .values(**lease, updated_at=now)
    ).rowcount
    if taken:
        return token
    if session.get(FeatureNetTraining, key) is not None:
        return None
    try:
        with session.begin_nested():
            session.add(FeatureNetTraining(key=key, **lease))
    except IntegrityError:  # another worker's claim, a moment earlier
        return None
    return token


def renew(
    session: Session, key: str, token: str, *, step: int, steps: int, lease_seconds: float
) -> bool:
    """Write how far the training is and extend its lease; False if the lease is not this
    token's any more (it expired and another worker took it over, or the net is stored)."""
    now = utcnow()
    return bool(
        session.execute(
            update(FeatureNetTraining)
            .where(
                FeatureNetTraining.key == key,
                FeatureNetTraining.lease_token == token,
                FeatureNetTraining.status == "training",
            )
            .values(
                step=step,
                steps=steps,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        ).rowcount
    )


def store(session: Session, key: str, *, info: dict, data: bytes) -> None:
    """Keep the trained net and mark its training ready (IntegrityError: one is stored)."""
    session.add(FeatureNet(key=key, info=info, data=data))
    session.flush()
    now = utcnow()
    session.execute(
        update(FeatureNetTraining)
        .where(FeatureNetTraining.key == key)
        .values(
            status="ready",
            step=FeatureNetTraining.steps,
            lease_token=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )


def release(session: Session, key: str, token: str) -> None:
    """Give up a training that did not finish (an error, a cancel, a stop): the next worker
    that needs the net trains it at once instead of waiting for the lease to expire."""
    session.execute(
        delete(FeatureNetTraining).where(
            FeatureNetTraining.key == key,
            FeatureNetTraining.lease_token == token,
            FeatureNetTraining.status == "training",
        )
    )


def states(session: Session, keys: Iterable[str]) -> dict[str, State]:
    """Each key's state (absent where nothing is stored and no lease is live)."""
    keys = list(keys)
    found = {key: State("absent") for key in keys}
    now = utcnow()
    training = select(FeatureNetTraining).where(
        FeatureNetTraining.key.in_(keys),
        FeatureNetTraining.status == "training",
        FeatureNetTraining.lease_expires_at >= now,
    )
    for row in session.scalars(training):
        found[row.key] = State("training", step=row.step, steps=row.steps)
    for key, info in session.execute(
        select(FeatureNet.key, FeatureNet.info).where(FeatureNet.key.in_(keys))
    ):
        found[key] = State("ready", test_accuracy=info.get("test_accuracy"))
    return found


def state(session: Session, key: str) -> State:
    return states(session, [key])[key]
