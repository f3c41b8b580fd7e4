"""Sending a job's task to the broker, with retries for a broker that blinks, and releasing
sweeps' jobs in turn."""

import logging

from tenacity import retry, stop_after_attempt, wait_exponential

from core.db import session_scope
from core.settings import Settings
from core.sweeps import release
from workers.celery_app import app

log = logging.getLogger(__name__)
RUN_JOB = "annlab.run_job"


@retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
def send_job(job_id: str) -> None:
    app.send_task(RUN_JOB, args=[job_id])


def try_send_job(job_id: str) -> bool:
    """Send, or leave the job queued for the reaper to send again; the job is in SQL either way."""
    try:
        send_job(job_id)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the reaper re-sends later
        log.exception("could not send job %s to the broker; the reaper will retry", job_id)
        return False


def release_sweeps(settings: Settings) -> list[str]:
    """Send each sweep's next jobs, up to settings.sweep_window waiting per sweep (see
    core/sweeps.py); never raises: a failure leaves them for the next call."""
    try:
        with session_scope(settings.database_url) as session:
            ids = release(session, settings.sweep_window)
    except Exception:  # noqa: BLE001 - the reaper calls again in a few seconds
        log.exception("could not release sweep jobs")
        return []
    for job_id in ids:
        try_send_job(job_id)
    return ids
