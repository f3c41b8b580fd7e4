"""Thin Celery tasks: take a job id, hand it to the runner."""

from workers.celery_app import app, settings, worker_name
from workers.dispatch import RUN_JOB, release_sweeps
from workers.runner import run_job


@app.task(name=RUN_JOB)
def run_job_task(job_id: str) -> str:
    """Run the job. A sweep's next jobs are sent when this one is taken up and when it ends,
    so that a few of each sweep's jobs wait in the broker, never all of them."""

    def release() -> None:
        release_sweeps(settings)

    outcome = run_job(job_id, settings=settings, worker=worker_name(), on_claimed=release)
    release()
    return outcome
