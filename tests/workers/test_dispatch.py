"""Sending jobs: only what the broker took is marked sent, and a refusal ends the round."""

import pytest

from core.db import Job, session_scope
from core.jobs import new_job
from core.settings import Settings
from workers import dispatch

SPEC = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}


def test_a_send_the_broker_refuses_leaves_that_job_and_the_rest_unsent(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(settings.database_url) as session:
        first, refused, after = (new_job(session, SPEC).id for _ in range(3))
    tried = []

    def send_job(job_id: str) -> None:
        tried.append(job_id)
        if job_id == refused:
            raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(dispatch, "send_job", send_job)
    assert dispatch.send_jobs(settings, [first, refused, after]) == [first]
    assert tried == [first, refused]
    with session_scope(settings.database_url) as session:
        sent = {job.id: job.dispatched_at is not None for job in session.query(Job)}
    assert sent == {first: True, refused: False, after: False}
