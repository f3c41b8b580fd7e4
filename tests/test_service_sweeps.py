"""Sweeps on real worker processes: a job submitted behind a 30-job sweep starts long before
the sweep's last job, and two sweeps' jobs take turns."""

from typing import Any

import pytest

from tests.service import Service

pytestmark = pytest.mark.service

TINY = {
    "family": "mlp",
    "dataset": {"name": "digits", "max_train": 64},
    "model": {"hidden": [4]},
    "train": {"epochs": 1},
}
WINDOW = 2  # the default ANNLAB_SWEEP_WINDOW the service runs with
# Jobs that train alone (dropout: no stack key): jobs that stack start together, so the order
# the window gives is the order of the jobs that train alone.
ALONE = {**TINY, "model": {**TINY["model"], "dropout": 0.1}}


def sweep_jobs(service: Service, sweep: dict[str, Any]) -> list[dict[str, Any]]:
    detail = service.client.get(f"/sweeps/{sweep['id']}").json()
    return [service.job(j["id"]) for cell in detail["cells"] for j in cell["jobs"]]


def create(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    response = service.client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def cancel_and_wait(service: Service, *sweeps: dict[str, Any]) -> None:
    for sweep in sweeps:
        service.client.post(f"/sweeps/{sweep['id']}/cancel")
    for sweep in sweeps:
        service.wait_for(
            lambda s=sweep: (
                service.client.get(f"/sweeps/{s['id']}").json()["status"]
                in ("cancelled", "succeeded")
            ),
            60,
            "the sweep to end",
        )


def test_a_job_behind_a_30_job_sweep_starts_before_the_sweep_ends(service: Service) -> None:
    sweep = create(service, {"base": ALONE, "axes": {"model.hidden.0": list(range(1, 31))}})
    single = service.submit(ALONE)
    done = service.wait_status(single["id"], {"succeeded", "failed"}, timeout=120)
    assert done["status"] == "succeeded", done["error"]
    jobs = sweep_jobs(service, sweep)
    ahead = [j for j in jobs if j["started_at"] and j["started_at"] < done["started_at"]]
    # Ahead of it: the sweep's jobs waiting in the broker when it was sent (WINDOW), and the
    # one the worker had just taken up (which released one more).
    assert len(ahead) <= WINDOW + 2, [j["started_at"] for j in ahead]
    assert len(jobs) == 30 and len(ahead) < len(jobs)
    cancel_and_wait(service, sweep)


def test_two_sweeps_take_turns(service: Service) -> None:
    first = create(service, {"base": ALONE, "repeats": 10})
    second = create(service, {"base": ALONE, "repeats": 10})

    def started() -> list[tuple[str, str]]:
        pairs = [(j["started_at"], "first") for j in sweep_jobs(service, first) if j["started_at"]]
        pairs += [
            (j["started_at"], "second") for j in sweep_jobs(service, second) if j["started_at"]
        ]
        return sorted(pairs)

    service.wait_for(lambda: len(started()) >= 8, 120, "eight jobs to start")
    order = [name for _, name in started()[:8]]
    # The second sweep, created after all ten of the first were queued, does not wait for them.
    assert order.count("second") >= 3, order
    assert order.count("first") >= 3, order
    cancel_and_wait(service, first, second)


def test_a_stack_killed_mid_run_resumes_every_member(service: Service) -> None:
    """A sweep's four repeats train as one stack; kill -9 its worker after the third epoch and
    the next worker resumes all four from their last epoch: every epoch once per job, none
    started over, all on their second attempt."""
    epochs = 30
    sweep = create(
        service,
        {
            "base": {
                "family": "mlp",
                "dataset": {"name": "digits"},
                "model": {"hidden": [64]},
                "train": {"epochs": epochs, "batch_size": 8},
            },
            "axes": {"train.optimizer.lr": [0.001]},
            "repeats": 4,
        },
    )
    ids = [job["id"] for job in sweep_jobs(service, sweep)]
    service.wait_for(
        lambda: all(len(service.metrics(i)) >= 4 for i in ids), 120, "three epochs of each"
    )
    service.kill(service.workers[-1])
    killed_at = min(len(service.metrics(i)) for i in ids)  # the rows of epochs 0 .. killed_at - 1
    service.start_worker()
    for job_id in ids:
        done = service.wait_status(job_id, {"succeeded", "failed"}, timeout=240)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2 and done["provenance"]["stack_jobs"] == 4
        history = service.metrics(job_id)
        assert [row["epoch"] for row in history] == list(range(epochs + 1))
        resumed = [row["epoch"] for row in history if row["attempt"] == 2]
        assert resumed and resumed[0] >= killed_at >= 4
