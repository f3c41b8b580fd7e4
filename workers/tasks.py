"""Thin Celery tasks: take a job id, hand it to the runner; or a dataset, to train its feature
net ahead of the jobs that need it."""

from typing import Any

from workers import feature_nets
from workers.celery_app import app, settings, worker_name
from workers.dispatch import RUN_JOB, TRAIN_FEATURE_NET, release_sweeps, send_feature_net, send_jobs
from workers.runner import run_job


@app.task(name=RUN_JOB)
def run_job_task(job_id: str) -> str:
    """Run the job. A sweep's next jobs are sent when this one is taken up and when it ends,
    so that a few of each sweep's jobs wait in the broker, never all of them. A job given back
    because this worker is stopping is sent again at once, for another worker (or this one
    restarted); if the broker does not take it, the reaper sends it."""

    def release() -> None:
        release_sweeps(settings)

    outcome = run_job(job_id, settings=settings, worker=worker_name(), on_claimed=release)
    if outcome == "stopped":
        send_jobs(settings, [job_id])
        return outcome
    release()
    return outcome


@app.task(name=TRAIN_FEATURE_NET)
def feature_net_task(dataset: dict[str, Any], owner: str | None = None) -> str:
    """Train the dataset's feature net unless it is stored or being trained. One given up
    because this worker is stopping is sent again, for another worker."""
    outcome = feature_nets.prepare(dataset, owner, settings=settings, worker=worker_name())
    if outcome == "stopped":
        send_feature_net(dataset, owner)
    return outcome
