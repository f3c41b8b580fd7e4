"""Celery app, thin tasks, and the runner that trains a job."""
