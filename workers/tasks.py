"""Thin Celery tasks: take a job id, hand it to the runner."""

from workers.celery_app import app, settings, worker_name
from workers.dispatch import RUN_JOB
from workers.runner import run_job


@app.task(name=RUN_JOB)
def run_job_task(job_id: str) -> str:
    return run_job(job_id, settings=settings, worker=worker_name())
