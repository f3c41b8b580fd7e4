"""Serving: the dynamic batcher gives each caller its own rows, a bad request fails alone,
concurrent predict calls batched over HTTP answer what the unbatched path answers, and the
model cache keeps at most model_cache_size models, evicting the least recently used."""

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from api.metrics import BATCH_INPUTS
from api.serving import FORWARD, Batcher, Closed, ModelCache
from core.db import Job, session_scope, sessionmaker_for
from core.settings import get_settings
from tests.conftest import api_client
from workers.runner import run_job


def concurrently(calls: list[Any]) -> list[Any]:
    """Run each call on its own thread, all released at once; their results (or exceptions)."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(k: int) -> None:
        start.wait()
        try:
            results[k] = calls[k]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


class Recording:
    """A row-wise forward (2x + 1) that records the batch sizes it sees and refuses a batch
    holding a negative number."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return 2 * x + 1


def gathered(batcher: Batcher, inputs: list[torch.Tensor]) -> list[Any]:
    """Each input submitted by its own coroutine, all at once; their outputs (or exceptions)."""

    async def run() -> list[Any]:
        return await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)

    return asyncio.run(run())


def test_the_batcher_answers_each_caller_with_its_own_rows_in_few_passes() -> None:
    forward = Recording()
    batcher = Batcher(forward, window=0.2, max_batch=8)
    inputs = [torch.full((1 + k % 3, 4), float(k)) for k in range(12)]  # 1, 2 or 3 rows each
    outputs = gathered(batcher, inputs)
    for x, y in zip(inputs, outputs, strict=True):
        assert torch.equal(y, 2 * x + 1)
    assert batcher.calls == 12 and batcher.batches == len(forward.sizes) < 12
    assert max(forward.sizes) <= 8, "a call's rows count toward the maximum"
    assert sum(forward.sizes) == sum(len(x) for x in inputs)
    batcher.close()


def test_a_call_larger_than_the_maximum_runs_alone() -> None:
    forward = Recording()
    batcher = Batcher(forward, window=0.05, max_batch=4)
    big, small = torch.ones(10, 2), torch.ones(1, 2)
    outputs = gathered(batcher, [big, small])
    assert torch.equal(outputs[0], 2 * big + 1) and torch.equal(outputs[1], 2 * small + 1)
    assert 10 in forward.sizes and max(forward.sizes) == 10
    batcher.close()


def test_a_call_that_breaks_the_batch_fails_alone() -> None:
    forward = Recording()
    batcher = Batcher(forward, window=0.2, max_batch=64)
    inputs = [torch.ones(2, 3) * k for k in range(6)] + [-torch.ones(1, 3)]
    outputs = gathered(batcher, inputs)
    assert isinstance(outputs[-1], ValueError)
    for x, y in zip(inputs[:-1], outputs[:-1], strict=True):
        assert torch.equal(y, 2 * x + 1)


class Slow(Recording):
    """Recording, each pass taking `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return super().__call__(x)


def test_calls_queued_during_a_pass_wait_a_window_for_the_callers_it_answers() -> None:
    """A caller answered by a pass that calls again at once joins the call that queued during
    that pass (else callers in a row split into batches that take turns)."""
    forward = Slow(0.6)
    batcher = Batcher(forward, window=0.2, max_batch=64)

    async def run() -> list[torch.Tensor]:
        first = asyncio.ensure_future(batcher.submit(torch.ones(1, 1)))
        await asyncio.sleep(0.3)  # the first pass runs from 0.2 s to 0.8 s
        queued = asyncio.ensure_future(batcher.submit(torch.full((1, 1), 2.0)))
        await first
        again = await batcher.submit(torch.full((1, 1), 3.0))  # its caller, at once
        return [await queued, again]

    assert [y.item() for y in asyncio.run(run())] == [5.0, 7.0]
    assert forward.sizes == [1, 2], "the queued call waited for the caller the pass answered"
    batcher.close()


def test_a_caller_calling_alone_in_a_row_does_not_wait_for_the_window() -> None:
    forward = Recording()
    batcher = Batcher(forward, window=0.5, max_batch=64)

    async def run() -> tuple[float, float]:
        started = time.monotonic()
        await batcher.submit(torch.ones(1, 1))  # a new model waits for company once
        first = time.monotonic() - started
        started = time.monotonic()
        for k in range(5):
            assert (await batcher.submit(torch.full((1, 1), float(k)))).item() == 2 * k + 1
        return first, time.monotonic() - started

    first, rest = asyncio.run(run())
    assert first >= 0.45 and rest < 0.5, (first, rest)
    assert forward.sizes == [1] * 6
    batcher.close()


def test_the_callers_a_pass_answered_end_the_window_once_they_are_back() -> None:
    forward = Recording()
    batcher = Batcher(forward, window=0.6, max_batch=64)
    three = [torch.full((1, 1), float(k)) for k in range(3)]

    async def run() -> float:
        await asyncio.gather(*(batcher.submit(x) for x in three))  # a new model: the window
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(x) for x in three))  # the same callers again
        return time.monotonic() - started

    again = asyncio.run(run())
    assert forward.sizes == [3, 3] and again < 0.4, (forward.sizes, again)
    batcher.close()


def test_a_caller_that_goes_away_leaves_the_others_their_answers() -> None:
    batcher = Batcher(Recording(), window=0.2, max_batch=64)

    async def run() -> list[Any]:
        leaving = asyncio.ensure_future(batcher.submit(torch.ones(1, 1)))
        staying = [asyncio.ensure_future(batcher.submit(torch.ones(1, 1) * k)) for k in range(3)]
        await asyncio.sleep(0.05)  # all wait in the queue for the window
        leaving.cancel()  # as Starlette does when the client disconnects
        return await asyncio.gather(*staying)

    for k, y in enumerate(asyncio.run(run())):
        assert torch.equal(y, torch.full((1, 1), 2.0 * k + 1))
    assert batcher.calls == 4 and batcher.batches == 1
    batcher.close()


def test_a_closed_batcher_answers_what_it_holds_and_refuses_new_calls() -> None:
    batcher = Batcher(Recording(), window=0.5, max_batch=64)

    async def run() -> torch.Tensor:
        waiting = asyncio.ensure_future(batcher.submit(torch.ones(1, 1)))
        await asyncio.sleep(0.05)  # it waits in the queue for the window
        batcher.close()
        answer = await asyncio.wait_for(waiting, 5)
        with pytest.raises(Closed):
            await batcher.submit(torch.ones(1, 1))
        return answer

    assert torch.equal(asyncio.run(run()), torch.full((1, 1), 3.0))


def test_every_models_passes_run_on_the_one_forward_thread() -> None:
    """Two models' batchers hand their passes to FORWARD: one thread, whose OpenMP team
    alone stays in the process (api/serving.py)."""
    seen: list[str] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(threading.current_thread().name)
        return x + 1

    first = Batcher(forward, window=0.01, max_batch=8)
    second = Batcher(forward, window=0.01, max_batch=8)

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(b.submit(torch.ones(1, 2)) for b in (first, second, first, second))
        )

    assert all(torch.equal(y, torch.full((1, 2), 2.0)) for y in asyncio.run(run()))
    assert len(seen) >= 2 and set(seen) == {seen[0]}
    assert seen[0].startswith("annlab-forward")
    assert FORWARD.submit(lambda: threading.current_thread().name).result() == seen[0]
    first.close()
    second.close()


# Over HTTP, against models trained here (digits, one epoch each).

DIGITS_MLP = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


@pytest.fixture(scope="module")
def trained(client: TestClient) -> list[str]:
    """Three succeeded jobs (digits MLPs, seeds 0, 1, 2)."""
    ids = []
    for seed in range(3):
        document = {**DIGITS_MLP, "train": {"epochs": 1, "seed": seed}}
        job = client.post("/jobs", json=document).json()
        assert run_job(job["id"], settings=get_settings(), worker="here") == "succeeded"
        ids.append(job["id"])
    return ids


@pytest.fixture
def batching(client: TestClient) -> Iterator[ModelCache]:
    """The app's model cache swapped for one that batches calls within 200 ms."""
    app = client.app
    before = app.state.models
    settings = get_settings().model_copy(update={"batch_window_ms": 200.0, "max_batch": 16})
    app.state.models = ModelCache(settings)
    try:
        yield app.state.models
    finally:
        app.state.models = before


def test_concurrent_batched_predictions_equal_the_unbatched_ones(
    client: TestClient, trained: list[str], batching: ModelCache
) -> None:
    job_id = trained[0]
    rng = np.random.default_rng(0)
    bodies: list[dict[str, Any]] = [
        {"inputs": rng.random((1 + k % 4, 8, 8)).round(4).tolist()} for k in range(10)
    ]
    bodies[3]["raw"] = True  # raw pixel values (0..16), scaled by the model
    bodies[3]["inputs"] = (np.array(bodies[3]["inputs"]) * 16).round(2).tolist()
    bodies.append({"inputs": [[0.5] * 63]})  # one value short
    bodies.append({"inputs": [["x"] * 64]})  # not numbers
    bodies.append({"inputs": [[0.5] * 64], "attention": True})  # an MLP has no attention maps

    passes_before = BATCH_INPUTS.collect()[0].samples
    unbatched = ModelCache(get_settings().model_copy(update={"batch_window_ms": 0}))
    expected = []
    for body in bodies[:10]:
        client.app.state.models = unbatched
        expected.append(client.post(f"/models/{job_id}/predict", json=body).json())
    client.app.state.models = batching

    answers = concurrently(
        [lambda b=b: client.post(f"/models/{job_id}/predict", json=b) for b in bodies]
    )
    for answer, want in zip(answers[:10], expected, strict=True):
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert got["outputs"] == want["outputs"] and got["class_names"] == want["class_names"]
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    for answer, fragment in zip(
        answers[10:], ["each input must hold 64", "must be numbers", "no attention"], strict=True
    ):
        assert answer.status_code == 422, answer.text
        error = answer.json()["detail"][0]
        assert fragment in error["message"]
    assert [answers[10].json()["detail"][0]["field"], answers[12].json()["detail"][0]["field"]] == [
        "inputs",
        "attention",
    ]
    batcher = batching.batcher(job_id)
    assert batcher is not None and batcher.calls == 10
    assert batcher.batches < 10, "concurrent calls share forward passes"
    # /metrics' histogram of inputs per pass saw each of them.
    before = {sample.name: sample.value for sample in passes_before}
    after = {sample.name: sample.value for sample in BATCH_INPUTS.collect()[0].samples}
    count, total = "annlab_predict_batch_inputs_count", "annlab_predict_batch_inputs_sum"
    assert after[count] - before[count] == batcher.batches
    assert after[total] - before[total] == sum(len(b["inputs"]) for b in bodies[:10])


def test_the_cache_keeps_at_most_its_size_and_evicts_the_least_recently_used(
    client: TestClient, trained: list[str]
) -> None:
    a, b, c = trained
    settings = get_settings().model_copy(update={"model_cache_size": 2, "batch_window_ms": 1.0})
    cache = ModelCache(settings)
    with session_scope(settings.database_url) as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(trained)))}
        first_a = cache.get(session, jobs[a])
        cache.get(session, jobs[b])
        assert cache.get(session, jobs[a]) is first_a, "a hit is the same loaded model"
        assert cache.cached() == [b, a]
        evicted = cache.batcher(b)
        cache.get(session, jobs[c])  # b is the least recently used
        assert cache.cached() == [a, c]
        assert cache.batcher(b) is None
        with pytest.raises(Closed):
            asyncio.run(evicted.submit(torch.zeros(1, 1, 8, 8)))
        assert cache.get(session, jobs[a]) is first_a  # now c is the least recently used
        assert cache.get(session, jobs[b]) is not None and cache.cached() == [a, b]


def test_a_batched_model_loads_on_the_forward_thread_and_an_unbatched_one_where_called(
    client: TestClient, trained: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.serving

    loaded_on: list[str] = []
    load_model = api.serving.load_model

    def recording(*args: Any) -> Any:
        loaded_on.append(threading.current_thread().name)
        return load_model(*args)

    monkeypatch.setattr(api.serving, "load_model", recording)
    for window in (1.0, 0.0):
        cache = ModelCache(get_settings().model_copy(update={"batch_window_ms": window}))
        with session_scope(get_settings().database_url) as session:
            cache.get(session, session.get(Job, trained[0]))
    assert loaded_on[0].startswith("annlab-forward")
    assert loaded_on[1] == threading.current_thread().name


def test_a_read_only_session_does_not_hold_up_a_writer(client: TestClient) -> None:
    """On SQLite an ordinary transaction takes the write lock at BEGIN; a read-only one (GET
    requests, the model verbs) must not, or readers queue behind each other and workers'
    writes wait for every open request."""
    url = get_settings().database_url
    with sessionmaker_for(url, read_only=True)() as reader:
        reader.execute(text("SELECT count(*) FROM jobs"))  # a transaction is open
        wrote = threading.Event()

        def write() -> None:
            with session_scope(url) as session:
                session.execute(text("UPDATE jobs SET attempts = attempts WHERE 1 = 0"))
            wrote.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert wrote.wait(5), "the writer waited for a reader"
