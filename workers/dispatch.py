"""Sending jobs' tasks to the broker, and releasing sweeps' jobs in turn.

A job counts as sent (its dispatched_at is set) only once the broker took its message; one
whose send failed stays unsent, and the reaper sends it again at its next round. A send to a
broker that is down fails within a second or so (see workers/celery_app.py), so a request that
queues a job answers at once, the job left to the reaper.
"""

import logging
from collections.abc import Iterable
from typing import Any

from core.db import session_scope, utcnow
from core.jobs import mark_sent
from core.settings import Settings
from core.sweeps import release
from workers.celery_app import app

log = logging.getLogger(__name__)
RUN_JOB = "annlab.run_job"
TRAIN_FEATURE_NET = "annlab.feature_net"


def send_job(job_id: str) -> None:
    app.send_task(RUN_JOB, args=[job_id])


def try_send_job(job_id: str) -> bool:
    """Send, or leave the job for the reaper to send again; the job is in SQL either way."""
    try:
        send_job(job_id)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure; the reaper re-sends later
        log.warning("could not send job %s to the broker (%s); the reaper will retry", job_id, exc)
        return False


def send_feature_net(dataset: dict[str, Any], owner: str | None) -> bool:
    """Ask a worker to train a dataset's feature net (workers/feature_nets.py); never raises:
    if the broker refuses, the first job that scores samples on it trains it."""
    try:
        app.send_task(TRAIN_FEATURE_NET, args=[dataset, owner])
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure; a job trains it at need
        log.warning("could not send the feature net of %s (%s)", dataset.get("name"), exc)
        return False


def send_jobs(settings: Settings, job_ids: Iterable[str]) -> list[str]:
    """Send the jobs in order, stopping at the first the broker refuses (the others would wait
    for it too), and mark those it took as sent; never raises. Returns the ids sent."""
    since, sent = utcnow(), []
    for job_id in job_ids:
        if not try_send_job(job_id):
            break
        sent.append(job_id)
    if sent:
        try:
            with session_scope(settings.database_url) as session:
                mark_sent(session, sent, since=since)
        except Exception:  # noqa: BLE001 - unmarked, they are sent again: a duplicate is a no-op
            log.exception("could not mark jobs %s as sent", sent)
    return sent


def release_sweeps(settings: Settings) -> list[str]:
    """Send each sweep's next jobs, up to settings.sweep_window waiting per sweep (see
    core/sweeps.py); never raises: a failure leaves them for the next call."""
    try:
        with session_scope(settings.database_url) as session:
            ids = release(session, settings.sweep_window)
    except Exception:  # noqa: BLE001 - the reaper calls again in a few seconds
        log.exception("could not release sweep jobs")
        return []
    return send_jobs(settings, ids)
