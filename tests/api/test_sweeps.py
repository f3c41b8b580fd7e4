"""Sweeps over HTTP, their jobs run in-process as a worker runs them: the table equals the
jobs' own results, paired repeats start from the same weights, malformed sweeps are 4xx naming
the problem, successive halving stops poor cells, and the jobs are released a few at a time."""

import csv
import io
import math
import statistics
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.db import Job, session_scope
from core.settings import get_settings
from core.spec import DEFAULT_LR
from core.sweeps import release
from models.specs import parse_job_spec
from tests.conftest import api_client
from workers.dispatch import release_sweeps
from workers.runner import run_job

PNG = b"\x89PNG\r\n\x1a\n"
TINY = {
    "family": "mlp",
    "dataset": {"name": "digits", "max_train": 200},
    "model": {"hidden": [8]},
    "train": {"epochs": 2, "batch_size": 32},
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def create(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def run_all(client: TestClient, sweep: dict[str, Any]) -> dict[str, Any]:
    """Run every job of the sweep here, cell by cell, one at a time, as a worker with
    ANNLAB_STACK_MAX=1 would (tests/workers/test_stacked.py trains jobs as stacks)."""
    detail = client.get(f"/sweeps/{sweep['id']}").json()
    alone = get_settings().model_copy(update={"stack_max": 1})
    for cell in detail["cells"]:
        for job in cell["jobs"]:
            assert run_job(job["id"], settings=alone, worker="here") == "succeeded"
    return client.get(f"/sweeps/{sweep['id']}").json()


def test_a_grid_table_equals_the_means_and_stds_of_its_jobs(client: TestClient) -> None:
    sweep = create(
        client,
        {
            "base": TINY,
            "axes": {"model.hidden.0": [4, 8, 16], "train.optimizer.name": ["sgd", "adam"]},
            "repeats": 3,
        },
    )
    assert (sweep["n_cells"], sweep["repeats"], sweep["n_jobs"]) == (6, 3, 18)
    assert sweep["counts"]["queued"] == 18 and sweep["status"] == "queued"
    done = run_all(client, sweep)
    assert sweep["cells_done"] == 0
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 18
    assert done["cells_done"] == 6 and done["eta_seconds"] is None

    answer = client.get(f"/sweeps/{sweep['id']}/table").json()
    rows = answer["rows"]
    assert len(rows) == 6
    for row, cell in zip(rows, done["cells"], strict=True):
        assert row["model.hidden.0"] == cell["values"]["model.hidden.0"]
        jobs = [client.get(f"/jobs/{j['id']}").json() for j in cell["jobs"]]
        assert {j["spec"]["model"]["hidden"][0] for j in jobs} == {row["model.hidden.0"]}
        assert {j["spec"]["train"]["optimizer"]["name"] for j in jobs} == {
            row["train.optimizer.name"]
        }
        for figure in ("test_accuracy", "test_loss", "train_loss", "val_accuracy"):
            values = [j["result"][figure] for j in jobs]
            assert row[f"{figure}_mean"] == pytest.approx(statistics.fmean(values))
            assert row[f"{figure}_std"] == pytest.approx(statistics.stdev(values))
        seconds = []
        for job in jobs:
            history = client.get(f"/jobs/{job['id']}/metrics").json()["history"]
            seconds.append(sum(epoch["seconds"] for epoch in history))
        assert row["seconds_mean"] == pytest.approx(statistics.fmean(seconds))
        assert row["n_params"] == jobs[0]["n_params"]
        # An axis sets what the user's document says, and the defaults follow: each optimizer
        # gets its own default learning rate, not the one Adam's default filled in.
        name = row["train.optimizer.name"]
        assert {j["spec"]["train"]["optimizer"]["lr"] for j in jobs} == {DEFAULT_LR[name]}
        assert (row["succeeded"], row["repeats"]) == (3, 3)

    # The same table as CSV, by query or by Accept.
    for response in (
        client.get(f"/sweeps/{sweep['id']}/table", params={"format": "csv"}),
        client.get(f"/sweeps/{sweep['id']}/table", headers={"accept": "text/csv"}),
    ):
        assert response.headers["content-type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(response.text)))
        assert list(parsed[0]) == answer["columns"] and len(parsed) == 6
        for line, row in zip(parsed, rows, strict=True):
            assert float(line["test_accuracy_mean"]) == pytest.approx(row["test_accuracy_mean"])
            assert line["train.optimizer.name"] == row["train.optimizer.name"]

    for name, params in (("curves", {}), ("metric", {"metric": "test_accuracy"})):
        picture = client.get(f"/sweeps/{sweep['id']}/plots/{name}.png", params=params)
        assert picture.status_code == 200 and picture.content.startswith(PNG), picture.text
    bad = client.get(f"/sweeps/{sweep['id']}/plots/metric.png", params={"metric": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "metric"
    listed = client.get("/sweeps").json()
    assert sweep["id"] in [s["id"] for s in listed["items"]]


def initial_weights(client: TestClient, sweep: dict[str, Any]) -> dict[tuple[int, int], str]:
    detail = client.get(f"/sweeps/{sweep['id']}").json()
    hashes = {}
    for cell in detail["cells"]:
        for job in cell["jobs"]:
            provenance = client.get(f"/jobs/{job['id']}").json()["provenance"]
            hashes[cell["cell"], job["repeat"]] = provenance["initial_weights_sha256"]
    return hashes


def test_paired_repeats_start_every_cell_from_the_same_weights(client: TestClient) -> None:
    body = {
        "base": {**TINY, "train": {**TINY["train"], "epochs": 1}},
        "axes": {"train.optimizer.name": ["sgd", "adam", "rmsprop"]},
        "repeats": 2,
    }
    paired = create(client, body)
    run_all(client, paired)
    hashes = initial_weights(client, paired)
    for repeat in (0, 1):
        assert len({hashes[cell, repeat] for cell in range(3)}) == 1
    assert hashes[0, 0] != hashes[0, 1]

    unpaired = create(client, {**body, "paired": False})
    run_all(client, unpaired)
    hashes = initial_weights(client, unpaired)
    assert len(set(hashes.values())) == 6


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"axes": {"model.width": [1, 2]}}, "axes.model.width", "not a field"),
        ({"axes": {"model.hidden.3": [1, 2]}}, "axes.model.hidden.3", "not a field"),
        ({"axes": {"model.hidden.0": []}}, "axes.model.hidden.0", "at least 1"),
        (
            {"zip": [{"train.optimizer.name": ["sgd", "adam"], "train.optimizer.lr": [0.1]}]},
            "zip.0",
            "as many values",
        ),
        (
            {"axes": {"train.seed": list(range(500))}, "repeats": 3},
            "axes",
            "at most 1000",
        ),
        ({"axes": {"model.hidden.0": [8, 0]}}, "axes.model.hidden.0", "cell 1"),
        ({"axes": {"train.optimizer.name": ["adam", "bogus"]}}, "axes.train.optimizer.name", ""),
        ({"halving": {"metric": "val_nope"}, "repeats": 2}, "halving.metric", "reports"),
        ({}, "body", "nothing to sweep"),
        (
            {
                "random": {
                    "n": 3,
                    "ranges": {"train.optimizer.lr": {"low": 0, "high": 1, "log": True}},
                }
            },
            "random.ranges.train.optimizer.lr",
            "low > 0",
        ),
    ],
)
def test_malformed_sweeps_are_refused_naming_the_problem(
    client: TestClient, body: dict, field: str, message: str
) -> None:
    before = client.get("/jobs").json()["total"]
    response = client.post("/sweeps", json={"base": TINY, **body})
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["field"] == field and message in problem["message"], problem
    assert client.get("/jobs").json()["total"] == before  # nothing was queued


def test_a_bad_base_names_the_base_field(client: TestClient) -> None:
    response = client.post(
        "/sweeps",
        json={"base": {**TINY, "model": {"hidden": [-1]}}, "repeats": 2},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "base.model.hidden.0"


def test_random_search_draws_in_its_ranges(client: TestClient) -> None:
    sweep = create(
        client,
        {
            "base": TINY,
            "random": {
                "n": 8,
                "seed": 3,
                "ranges": {
                    "train.optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True},
                    "model.hidden.0": {"low": 4, "high": 64, "integer": True},
                    "train.optimizer.name": {"choices": ["sgd", "adam"]},
                },
            },
        },
    )
    cells = [c["values"] for c in client.get(f"/sweeps/{sweep['id']}").json()["cells"]]
    assert len(cells) == 8
    assert all(1e-4 <= c["train.optimizer.lr"] <= 1e-1 for c in cells)
    assert all(
        isinstance(c["model.hidden.0"], int) and 4 <= c["model.hidden.0"] <= 64 for c in cells
    )
    assert {c["train.optimizer.name"] for c in cells} <= {"sgd", "adam"}
    # Log-uniform: about as many draws per decade.
    decades = [math.floor(math.log10(c["train.optimizer.lr"])) for c in cells]
    assert len(set(decades)) >= 2
    client.post(f"/sweeps/{sweep['id']}/cancel")


def halving_sweep(client: TestClient, **model: Any) -> dict[str, Any]:
    """Three learning rates on digits under successive halving, one hopeful, two hopeless."""
    base = {
        **TINY,
        "dataset": {"name": "digits"},
        "model": {**TINY["model"], **model},
        "train": {"epochs": 4, "batch_size": 32, "optimizer": {"name": "sgd"}},
    }
    return create(
        client,
        {
            "base": base,
            "axes": {"train.optimizer.lr": [0.5, 1e-5, 2e-5]},
            "halving": {"metric": "val_accuracy", "min_epochs": 1, "reduction": 3},
        },
    )


def test_successive_halving_stops_the_poor_cells_early(client: TestClient) -> None:
    sweep = halving_sweep(client)
    done = run_all(client, sweep)  # in cell order, as a single worker would
    jobs = [client.get(f"/jobs/{c['jobs'][0]['id']}").json() for c in done["cells"]]
    epochs = [len(client.get(f"/jobs/{j['id']}/metrics").json()["history"]) for j in jobs]
    # Rungs at epochs 1 and 3. The first job is alone at each rung and goes on; each hopeless
    # one arrives at epoch 1 below the best third of what was reported there, and stops.
    assert epochs == [5, 2, 2]  # with epoch 0, the initial weights
    assert [j["result"].get("halved_at_epoch") for j in jobs] == [None, 1, 1]
    assert jobs[0]["result"]["val_accuracy"] > 0.8
    table = client.get(f"/sweeps/{sweep['id']}/table").json()
    assert [r["succeeded"] for r in table["rows"]] == [1, 1, 1]


def test_the_table_counts_each_cells_parameters_before_any_job_runs(client: TestClient) -> None:
    sweep = create(client, {"base": TINY, "axes": {"model.hidden.0": [4, 16]}, "repeats": 2})
    rows = client.get(f"/sweeps/{sweep['id']}/table").json()["rows"]
    assert [row["n_params"] for row in rows] == [65 * h + (h + 1) * 10 for h in (4, 16)]
    for cell in client.get(f"/sweeps/{sweep['id']}").json()["cells"]:
        assert {j["status"] for j in cell["jobs"]} == {"queued"}
    assert client.post(f"/sweeps/{sweep['id']}/cancel").status_code == 202


def test_cancel_ends_the_queued_jobs_and_the_sweep(client: TestClient) -> None:
    sweep = create(client, {"base": TINY, "repeats": 4})
    response = client.post(f"/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 4
    assert client.post(f"/sweeps/{sweep['id']}/cancel").status_code == 409
    assert client.get("/sweeps/nope").status_code == 404


def test_jobs_are_released_a_window_at_a_time_and_sweeps_take_turns() -> None:
    """core.sweeps.release, and the sends, against the real tables and the embedded broker: at
    most `window` of each sweep's jobs wait in the broker; a job taken up by a worker makes
    room for the next."""
    with api_client() as client:
        first = create(client, {"base": TINY, "repeats": 6})
        second = create(client, {"base": TINY, "repeats": 6})
    url = get_settings().database_url

    def waiting(sweep: dict) -> list[Job]:
        with session_scope(url) as session:
            return list(
                session.scalars(
                    select(Job).where(
                        Job.sweep_id == sweep["id"],
                        Job.status == "queued",
                        Job.dispatched_at.is_not(None),
                    )
                )
            )

    window = get_settings().sweep_window
    assert len(waiting(first)) == len(waiting(second)) == window  # released on creation
    with session_scope(url) as session:
        assert release(session, window) == []  # nothing more until one is taken up
    taken = waiting(first)[0]
    with session_scope(url) as session:
        session.get(Job, taken.id).status = "running"
    sent = release_sweeps(get_settings())
    assert len(sent) == 1 and len(waiting(first)) == window and len(waiting(second)) == window
    with api_client() as client:
        for sweep in (first, second):
            client.post(f"/sweeps/{sweep['id']}/cancel")


def test_successive_halving_in_a_stack_counts_the_siblings(client: TestClient) -> None:
    """The same sweep trained as one stack: every cell reaches epoch 1 together, so each judges
    against the others' figures of that epoch, not only against what is already stored; the
    two hopeless cells stop there as they do one after another."""
    sweep = halving_sweep(client, activation="tanh")  # a key no other test's jobs have
    cells = client.get(f"/sweeps/{sweep['id']}").json()["cells"]
    stacked = get_settings().model_copy(update={"stack_max": 32})
    assert run_job(cells[0]["jobs"][0]["id"], settings=stacked, worker="stack") == "succeeded"
    jobs = [client.get(f"/jobs/{c['jobs'][0]['id']}").json() for c in cells]
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert [j["result"].get("halved_at_epoch") for j in jobs] == [None, 1, 1]


def best_of(history: list[dict[str, Any]], metric: str, pick: Any) -> tuple[float, float]:
    """The mean over folds of each fold's best value over epochs >= 1 and its first epoch."""
    reached = []
    for fold in sorted({h.get("fold", 0) for h in history}):
        curve = [(h[metric], h["epoch"]) for h in history if h.get("fold", 0) == fold]
        value = pick(v for v, _ in curve if _ >= 1)
        reached.append((value, min(e for v, e in curve if v == value and e >= 1)))
    return statistics.fmean(v for v, _ in reached), statistics.fmean(e for _, e in reached)


def test_a_sweep_across_families_has_one_table_and_one_set_of_figures(
    client: TestClient,
) -> None:
    """MLP against LSTM over the lag window of a time series, each cross-validated: the table
    has both families' rows with their parameter counts and best-over-epochs columns."""
    base = {
        "family": "mlp",
        "dataset": {"name": "mackey_glass", "n_points": 200, "kfold": 2},
        "model": {"hidden": [4]},
        "train": {"epochs": 2, "batch_size": 32},
    }
    sweep = create(
        client,
        {
            "base": base,
            "zip": [{"family": ["mlp", "lstm"], "model": [{"hidden": [4]}, {"hidden": 4}]}],
            "axes": {"dataset.lag": [4, 8]},
        },
    )
    assert (sweep["family"], sweep["families"]) == ("mlp,lstm", ["mlp", "lstm"])
    for family, listed in (("lstm", True), ("mlp", True), ("ae", False)):
        ids = [s["id"] for s in client.get("/sweeps", params={"family": family}).json()["items"]]
        assert (sweep["id"] in ids) == listed, family
    done = run_all(client, sweep)
    assert done["status"] == "succeeded"

    answer = client.get(f"/sweeps/{sweep['id']}/table").json()
    rows = answer["rows"]
    assert [(r["dataset.lag"], r["family"]) for r in rows] == [
        (4, "mlp"),
        (4, "lstm"),
        (8, "mlp"),
        (8, "lstm"),
    ]
    # (lag + 1) * 4 + 5 for the MLP; the LSTM's 4 * 4 * (1 + 4 + 2) + 5 whatever the lag.
    assert [r["n_params"] for r in rows] == [25, 117, 41, 117]
    for row, cell in zip(rows, done["cells"], strict=True):
        (only,) = cell["jobs"]
        job = client.get(f"/jobs/{only['id']}").json()
        assert (job["family"], job["n_params"]) == (row["family"], row["n_params"])
        history = client.get(f"/jobs/{only['id']}/metrics").json()["history"]
        for metric, pick in (("val_loss", min), ("train_loss", min)):
            value, epoch = best_of(history, metric, pick)
            assert row[f"best_{metric}_mean"] == pytest.approx(value)
            assert row[f"best_{metric}_epoch_mean"] == pytest.approx(epoch)
            assert row[f"best_{metric}_std"] is None  # one run: no std
        assert row["val_loss_mean_mean"] == pytest.approx(job["result"]["val_loss_mean"])

    # In CSV a model section is JSON.
    csv_text = client.get(f"/sweeps/{sweep['id']}/table", params={"format": "csv"}).text
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert [line["model"] for line in parsed[:2]] == ['{"hidden":[4]}', '{"hidden":4}']
    assert list(parsed[0]) == answer["columns"]

    for name, params in (
        ("curves", {}),
        ("metric", {"axis": "family"}),
        ("metric", {"axis": "dataset.lag", "metric": "best_val_loss"}),
        ("metric", {"axis": "model"}),
    ):
        picture = client.get(f"/sweeps/{sweep['id']}/plots/{name}.png", params=params)
        assert picture.status_code == 200 and picture.content.startswith(PNG), picture.text
    bad = client.get(f"/sweeps/{sweep['id']}/plots/curves.png", params={"metric": "nope"})
    assert bad.status_code == 422 and "mlp, lstm report" in bad.json()["detail"][0]["message"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"axes": {"family": ["mlp", "lstm"]}}, "axes.family", 'zip "family" with "model"'),
        (
            {"zip": [{"family": ["mlp", "lstm"], "model": [{"hidden": [4]}, {"hidden": [4]}]}]},
            "zip.0.model",
            "cell 1",
        ),
        (
            {
                "zip": [{"family": ["mlp", "ae"], "model": [{"hidden": [4]}, {}]}],
                "halving": {"metric": "val_accuracy"},
            },
            "halving.metric",
            "ae does not report 'val_accuracy'",
        ),
    ],
)
def test_a_sweep_across_families_is_refused_naming_the_field(
    client: TestClient, body: dict, field: str, message: str
) -> None:
    response = client.post("/sweeps", json={"base": TINY, **body})
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["field"] == field and message in problem["message"], problem


def test_halving_across_families_takes_a_metric_each_reports(client: TestClient) -> None:
    sweep = create(
        client,
        {
            "base": TINY,
            "zip": [{"family": ["mlp", "lstm"], "model": [{"hidden": [4]}, {"hidden": 4}]}],
            "halving": {"metric": "val_accuracy"},
            "repeats": 2,
        },
    )
    with session_scope(get_settings().database_url) as session:
        jobs = session.scalars(select(Job).where(Job.sweep_id == sweep["id"])).all()
        keys = {job.family: job.stack_key for job in jobs}
        # Each cell's stack key is its own family's.
        for job in jobs:
            assert job.stack_key == parse_job_spec(job.spec).stack_key(job.owner_id)
    assert set(keys) == {"mlp", "lstm"} and keys["mlp"] != keys["lstm"]
    client.post(f"/sweeps/{sweep['id']}/cancel")
