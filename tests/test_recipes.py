"""The course recipes under docs/recipes/: every document, scaled and full-scale, is accepted by
the real API, the recipe page names each of them, and the small ones run end to end here.

A recipe file is one of three kinds, told by its keys: `base` (a POST /sweeps body), `family`
(a POST /jobs body), or `method`, `path` and `body` (one request; a path with `{id}` calls the
model that the recipe named in `after` trains)."""

import copy
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from models.configs import verbs
from models.registry import SPECS
from tests.conftest import ROOT, api_client
from workers.runner import run_job

RECIPES = ROOT / "docs" / "recipes"
SCALED = sorted(RECIPES.glob("*.json"))
FULL = sorted((RECIPES / "full").glob("*.json"))
# The request model each verb's route validates its body with.
VERB_BODIES = {
    "decode": verbs.DecodeRequest,
    "recall": verbs.RecallRequest,
    "attractors": verbs.AttractorsRequest,
    "reconstruct": verbs.ReconstructRequest,
    "sample": verbs.SampleRequest,
    "forecast": verbs.ForecastRequest,
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def kind(document: dict[str, Any]) -> str:
    if "base" in document:
        return "sweep"
    if "family" in document:
        return "job"
    assert set(document) <= {"method", "path", "body", "after"}, sorted(document)
    assert document["method"] == "POST" and document["path"].startswith("/")
    return "request"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Full-scale recipes name mnist and cifar10, which torchvision downloads where allowed: with
    # downloads allowed they count as present, and no job here is ever run to fetch them.
    with api_client(allow_download=True, max_queued_jobs=100_000) as client:
        yield client


def accepted(client: TestClient, document: dict[str, Any]) -> dict[str, Any]:
    """Post a sweep or job recipe (202: it validated), then cancel what it queued."""
    if kind(document) == "sweep":
        response = client.post("/sweeps", json=document)
        assert response.status_code == 202, response.text
        sweep = response.json()
        assert sweep["n_jobs"] == sweep["n_cells"] * sweep["repeats"]
        assert client.post(f"/sweeps/{sweep['id']}/cancel").status_code == 202
        return sweep
    response = client.post("/jobs", json=document)
    assert response.status_code == 202, response.text
    job = response.json()
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 202
    return job


def lighter(path: Path, document: dict[str, Any]) -> dict[str, Any]:
    """The full time-series grid at its shortest lag only. Accepting an LSTM cell costs its
    memory estimate (about 0.4 s on this CPU), and the full grid has 25 of them; the scaled
    recipe, posted whole, has the longest lag (100) with the widest LSTM (100), and the full
    grid's other lags lie between."""
    if path.parent.name != "full" or path.name != "timeseries-lag-neurons.json":
        return document
    lags = document["axes"]["dataset.lag"]
    assert lags == [10, 30, 50, 75, 100]
    scaled = load(RECIPES / path.name)
    assert max(scaled["axes"]["dataset.lag"]) == max(lags)
    assert (
        max(m["hidden"] for m in scaled["zip"][0]["model"] if isinstance(m["hidden"], int)) == 100
    )
    return copy.deepcopy(document) | {"axes": {"dataset.lag": [min(lags)]}}


@pytest.mark.parametrize("path", SCALED + FULL, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_is_accepted(client: TestClient, path: Path) -> None:
    document = load(path)
    if kind(document) != "request":
        posted = lighter(path, document)
        answer = accepted(client, posted)
        if kind(document) == "sweep":  # the whole grid within the limit on a sweep's jobs
            cells = answer["n_cells"]
            if posted is not document:
                cells *= len(document["axes"]["dataset.lag"])
            assert cells * answer["repeats"] <= get_settings().max_sweep_jobs
        return
    after = document.get("after")
    if "{id}" not in document["path"]:
        assert after is None
        response = client.post(document["path"], json=document["body"])
        assert response.status_code == 200, response.text
        return
    # A verb on the model another recipe trains: that recipe exists, its family offers the
    # verb, and the body is what the verb's route accepts.
    assert after and (path.parent / after).is_file(), after
    trained = load(path.parent / after)
    family = (trained.get("base") or trained)["family"]
    verb = document["path"].rsplit("/", 1)[1]
    assert document["path"] == f"/models/{{id}}/{verb}" and verb in SPECS[family].verbs
    VERB_BODIES[verb].model_validate(document["body"])


def test_the_recipe_page_names_every_recipe_and_full_ones_scale_a_scaled_one() -> None:
    page = (RECIPES / "index.md").read_text()
    for path in SCALED:
        assert f"`{path.name}`" in page, path
    for path in FULL:
        scaled = RECIPES / path.name
        if scaled.is_file():  # its row says "(full)" or names the file
            assert kind(load(scaled)) == kind(load(path)), path.name
            assert re.search(rf"`{re.escape(path.name)}` \((full|full: `full/{path.name}`)", page)
        else:
            assert f"`full/{path.name}`" in page, path
    nav = (ROOT / "mkdocs.yml").read_text()
    assert "recipes/index.md" in nav


def run_sweep(client: TestClient, document: dict[str, Any]) -> dict[str, Any]:
    """Post the sweep, run each of its jobs here as a worker would, and return its table."""
    response = client.post("/sweeps", json=document)
    assert response.status_code == 202, response.text
    sweep = response.json()
    alone = get_settings().model_copy(update={"stack_max": 1})
    for cell in client.get(f"/sweeps/{sweep['id']}").json()["cells"]:
        for job in cell["jobs"]:
            assert run_job(job["id"], settings=alone, worker="here") == "succeeded"
    return client.get(f"/sweeps/{sweep['id']}/table").json()


def test_the_regression_optimizers_recipe_gives_its_table(client: TestClient) -> None:
    """At a tiny scale (fewer points, epochs, noise levels and widths), every optimizer's row
    with train and test MSE and training time."""
    document = copy.deepcopy(load(RECIPES / "regression-optimizers.json"))
    document["base"]["dataset"].update(n_train=40, n_test=40)
    document["base"]["train"] = {"epochs": 3}
    optimizers = document["axes"]["train.optimizer.name"]
    document["axes"].update({"dataset.noise": [0, 0.5], "model.hidden.0": [10]})
    answer = run_sweep(client, document)
    rows = answer["rows"]
    assert len(rows) == 2 * len(optimizers)
    assert {(r["dataset.noise"], r["train.optimizer.name"]) for r in rows} == {
        (noise, name) for noise in (0, 0.5) for name in optimizers
    }
    for column in ("train_mse_mean", "test_mse_mean", "seconds_mean", "n_params"):
        assert column in answer["columns"]
        assert all(math.isfinite(r[column]) for r in rows), column
    assert {r["n_params"] for r in rows} == {31}  # 1-10-1
    assert all(r["succeeded"] == 1 for r in rows)


def trained(client: TestClient, name: str) -> str:
    response = client.post("/jobs", json=load(RECIPES / name))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert run_job(job_id, settings=get_settings(), worker="here") == "succeeded"
    return job_id


def call(client: TestClient, name: str, job_id: str) -> dict[str, Any]:
    request = load(RECIPES / name)
    response = client.post(request["path"].replace("{id}", job_id), json=request["body"])
    assert response.status_code == 200, response.text
    return response.json()


def test_the_two_neuron_hopfield_recipes(client: TestClient) -> None:
    """W = [[0, 1], [1, 0]] at gain 5: two stable points near (1, 1) and (-1, -1), a saddle at
    the origin; a recall from (0.3, -0.7) settles in one of them."""
    job_id = trained(client, "hopfield-2-neurons.json")
    answer = call(client, "hopfield-2-neurons-attractors.json", job_id)
    points = answer["attractors"]
    stable = [p for p in points if p["stability"] == "stable"]
    assert len(stable) == 2
    assert sorted(round(p["state"][0]) for p in stable) == [-1, 1]
    assert all(p["state"][0] == pytest.approx(p["state"][1]) for p in stable)
    saddles = [p for p in points if p["stability"] == "saddle"]
    assert [[round(v, 6) for v in p["state"]] for p in saddles] == [[0.0, 0.0]]
    recalled = call(client, "hopfield-2-neurons-recall.json", job_id)
    for recall in recalled["results"]:
        end = recall["final"]
        assert abs(abs(end[0]) - 1) < 0.05 and end[0] == pytest.approx(end[1], abs=1e-3)


def test_the_three_neuron_hopfield_recipe(client: TestClient) -> None:
    job_id = trained(client, "hopfield-3-neurons.json")
    answer = call(client, "hopfield-3-neurons-attractors.json", job_id)
    assert answer["n_neurons"] == 3
    stable = [p for p in answer["attractors"] if p["stability"] == "stable"]
    assert stable and all(len(p["state"]) == 3 for p in stable)


def test_the_forward_and_summary_recipes_give_the_numbers_worked_by_hand(
    client: TestClient,
) -> None:
    forward = call(client, "forward-conv.json", "")
    outputs = [layer["output"] for layer in forward["layers"]]
    # out[i][j] = x[i][j] - x[i+1][j+1] + 0.5, then ReLU, a 2x2 max pool at stride 1, a dense.
    assert outputs[0] == [[[0.5, -0.5, -1.5], [-0.5, 1.5, 2.5], [2.5, -0.5, -2.5]]]
    assert outputs[1] == [[[0.5, 0.0, 0.0], [0.0, 1.5, 2.5], [2.5, 0.0, 0.0]]]
    assert outputs[2] == [[[1.5, 2.5], [2.5, 2.5]]]
    assert outputs[4] == [1.5 - 2.5 + 0.5 * 2.5 + 2 * 2.5]

    summary = call(client, "summary-conv-stack.json", "")
    convs = [x for x in summary["layers"] if x["type"] in ("Conv2d", "MaxPool2d")]
    assert [x["output_shape"] for x in convs] == [
        [8, 24, 24],
        [8, 12, 12],
        [16, 12, 12],
        [16, 6, 6],
        [32, 3, 3],
    ]
    assert [x["receptive_field"] for x in convs] == [[5, 5], [6, 6], [10, 10], [12, 12], [20, 20]]
    assert [x["jump"] for x in convs] == [[1, 1], [2, 2], [2, 2], [4, 4], [8, 8]]
    # and the output layer: 10 units on the 32 x 3 x 3 features.
    assert summary["n_params"] == 208 + 1168 + 4640 + (32 * 9 + 1) * 10


@pytest.mark.parametrize("function", ["relu", "sigmoid", "abs", "bump"])
def test_the_adam_trace_recipes_take_a_first_step_of_lr(client: TestClient, function: str) -> None:
    """Adam's first step is lr * m_hat / sqrt(v_hat) = lr * sign(g): 0.1 downhill."""
    request = load(RECIPES / f"trace-adam-{function}.json")
    trace = call(client, f"trace-adam-{function}.json", "")
    first = trace["steps"][0]
    assert len(trace["steps"]) == request["body"]["steps"]
    assert first["m_hat"] == pytest.approx(first["g"]) and first["g"] > 0
    assert first["x"] == pytest.approx(request["body"]["x0"] - 0.1)
