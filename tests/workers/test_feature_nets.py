"""Feature nets trained ahead of need: the API sends the task when it queues a job that will
score samples, GET /datasets shows the training, and one worker at a time trains a net under a
lease that another takes over once it expires. The task runs in-process, without a broker."""

import threading
from datetime import timedelta
from typing import Any

import pytest
import torch
from sqlalchemy import func, select, update

from core import feature_nets
from core.db import FeatureNet, FeatureNetTraining, session_scope, utcnow
from core.settings import Settings
from core.spec import DatasetSpec
from models import quality
from tests.conftest import api_client
from workers import dispatch
from workers.feature_nets import prepare

CPU = torch.device("cpu")
DIGITS_KEY = f"digits/{quality.RECIPE}"
GAN = {
    "family": "gan",
    "dataset": {"name": "digits", "max_train": 200},
    "model": {"latent": 8},
    "train": {"epochs": 1, "batch_size": 50},
}


@pytest.fixture(autouse=True)
def few_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality, "STEPS", 40)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    """The tasks sent to the broker, which takes none of them."""
    tasks: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(dispatch.app, "send_task", lambda name, args: tasks.append((name, args)))
    return tasks


def feature_net_tasks(tasks: list[tuple[str, list[Any]]]) -> list[list[Any]]:
    return [args for name, args in tasks if name == dispatch.TRAIN_FEATURE_NET]


def digits_feature_net(client: Any) -> dict[str, Any]:
    response = client.get("/datasets")
    assert response.status_code == 200, response.text
    return {d["name"]: d for d in response.json()["items"]}["digits"]["feature_net"]


def trainings(settings: Settings) -> list[FeatureNetTraining]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(FeatureNetTraining)))


def test_a_gan_job_sends_its_feature_net_which_datasets_show_training_then_ready(
    settings: Settings, sent: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = settings.model_copy(update={"heartbeat_seconds": 1e-6})  # progress at every step
    with api_client(database_url=settings.database_url) as client:
        assert digits_feature_net(client) == {
            "status": "absent",
            "step": None,
            "steps": None,
            "percent": None,
            "test_accuracy": None,
        }
        assert (
            client.post("/jobs", json={"family": "mlp", "dataset": {"name": "digits"}}).status_code
            == 202
        )
        assert feature_net_tasks(sent) == []  # an MLP scores no samples

        assert client.post("/jobs", json=GAN).status_code == 202
        [[dataset, owner]] = feature_net_tasks(sent)
        assert dataset["name"] == "digits"

        seen: list[dict[str, Any]] = []
        step = quality._Lease.step

        def looked_at(lease: quality._Lease, done: int, total: int | None) -> None:
            step(lease, done, total)
            if done == 10:
                seen.append(digits_feature_net(client))

        monkeypatch.setattr(quality._Lease, "step", looked_at)
        assert prepare(dataset, owner, settings=fast, worker="fw") == "trained"
        assert seen == [
            {"status": "training", "step": 10, "steps": 40, "percent": 25.0, "test_accuracy": None}
        ]
        ready = digits_feature_net(client)
        assert ready["status"] == "ready" and ready["percent"] == 100.0
        assert 0.0 < ready["test_accuracy"] <= 1.0
        [row] = trainings(settings)
        assert (row.status, row.step, row.steps, row.worker) == ("ready", 40, 40, "fw")

        assert client.post("/jobs", json=GAN).status_code == 202
        assert len(feature_net_tasks(sent)) == 1  # it is stored: nothing more to train
        assert prepare(dataset, owner, settings=fast, worker="fw") == "ready"


def test_a_sweep_sends_its_feature_net_once(settings: Settings, sent: list) -> None:
    sweep = {"base": GAN, "axes": {"model.latent": [4, 8]}, "repeats": 2}
    with api_client(database_url=settings.database_url) as client:
        response = client.post("/sweeps", json=sweep)
        assert response.status_code == 202, response.text
    assert [args[0]["name"] for args in feature_net_tasks(sent)] == ["digits"]


def test_a_refusing_broker_does_not_fail_the_post(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(name: str, args: list[Any]) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(dispatch.app, "send_task", refuse)
    with api_client(database_url=settings.database_url) as client:
        assert client.post("/jobs", json=GAN).status_code == 202


def test_a_second_worker_waits_for_the_training_one_and_uses_its_net(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[str] = []
    real_train = quality.train_feature_net

    def counted(*args: Any, **kwargs: Any) -> Any:
        trained.append(threading.current_thread().name)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(quality, "train_feature_net", counted)
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05})
    spec = DatasetSpec(name="digits")
    at_step_5, go_on = threading.Event(), threading.Event()

    def first_report(done: int, total: int | None) -> None:
        if done == 5:
            at_step_5.set()
            assert go_on.wait(30)

    nets: dict[str, quality.FeatureClassifier] = {}

    def first() -> None:
        nets["first"] = quality.feature_net(spec, fast, CPU, None, first_report, worker="w1")

    one = threading.Thread(target=first, name="w1")
    one.start()
    assert at_step_5.wait(60)
    # A task for the same net finds it in training and leaves it to that worker.
    assert prepare({"name": "digits"}, None, settings=fast, worker="w2") == "busy"

    waited: list[tuple[int, int | None]] = []
    two = threading.Thread(
        target=lambda: nets.__setitem__(
            "second",
            quality.feature_net(
                spec, fast, CPU, None, lambda d, t: waited.append((d, t)), worker="w2"
            ),
        ),
        name="w2",
    )
    two.start()
    for _ in range(600):
        if waited or not two.is_alive():
            break
        two.join(0.05)
    with session_scope(settings.database_url) as session:
        written = feature_nets.state(session, DIGITS_KEY)
    go_on.set()
    one.join(60)
    two.join(60)
    # The second heard the first's progress as it stood (written at most at step 5).
    assert written.status == "training" and written.step <= 5
    assert waited[0] == (written.step, 40)
    assert trained == ["w1"]
    first_state, second_state = nets["first"].state_dict(), nets["second"].state_dict()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    [row] = trainings(settings)
    assert (row.status, row.worker) == ("ready", "w1")


def test_an_expired_lease_is_taken_over(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        token = feature_nets.claim(
            session, DIGITS_KEY, worker="dead", steps=40, lease_seconds=settings.lease_seconds
        )
        assert token is not None
    with session_scope(settings.database_url) as session:
        assert feature_nets.renew(
            session, DIGITS_KEY, token, step=12, steps=40, lease_seconds=settings.lease_seconds
        )
        # While the lease is live nobody else may train it.
        assert (
            feature_nets.claim(session, DIGITS_KEY, worker="w2", steps=40, lease_seconds=5) is None
        )
        assert feature_nets.state(session, DIGITS_KEY) == feature_nets.State("training", 12, 40)
    with session_scope(settings.database_url) as session:  # the worker died: its lease runs out
        session.execute(
            update(FeatureNetTraining).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        assert feature_nets.state(session, DIGITS_KEY).status == "absent"

    quality.feature_net(DatasetSpec(name="digits"), settings, CPU, worker="w2")
    [row] = trainings(settings)
    assert (row.status, row.step, row.worker, row.lease_token) == ("ready", 40, "w2", None)
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(FeatureNet)) == 1
        # The dead worker's lease is not its own any more.
        assert not feature_nets.renew(
            session, DIGITS_KEY, token, step=13, steps=40, lease_seconds=5
        )


def test_a_training_that_fails_releases_its_lease(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cancelled(done: int, total: int | None) -> None:
        if done == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        quality.feature_net(DatasetSpec(name="digits"), settings, CPU, None, cancelled)
    assert trainings(settings) == []  # the next worker trains it at once


def test_a_job_at_scoring_shows_the_training_workers_progress_then_takes_over_its_lease(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker holds the lease at step 17 and dies: the job's scoring progress shows
    17 of 40 while the lease lives, then the job trains the net itself."""
    from tests.workers.test_runner import submit
    from workers.runner import _Run, run_job

    with session_scope(settings.database_url) as session:
        token = feature_nets.claim(
            session, DIGITS_KEY, worker="dead", steps=40, lease_seconds=settings.lease_seconds
        )
        assert feature_nets.renew(
            session, DIGITS_KEY, token, step=17, steps=40, lease_seconds=settings.lease_seconds
        )
    published: list[dict[str, Any]] = []
    real_publish = _Run.publish

    def recorded(self: _Run, progress: dict[str, Any]) -> None:
        published.append(dict(progress))
        real_publish(self, progress)

    monkeypatch.setattr(_Run, "publish", recorded)
    assert run_job(submit(settings, GAN), settings=settings, worker="w") == "succeeded"
    steps = [p["phase_step"] for p in published if p.get("phase_steps") == 40]
    waited = steps[: steps.index(0)]
    assert waited and set(waited) == {17}  # the dead worker's step, until its lease ran out
    assert steps[len(waited) :] == list(range(41))  # then its own steps
    [row] = trainings(settings)
    assert row.status == "ready" and row.worker != "dead"
