"""The tools that need no worker: an optimizer traced on a 1-D function, and a model's
architecture summed up (shapes, parameters, receptive fields, memory)."""

import math
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.catalog import resolve
from models.base import get_family, n_params
from models.registry import REGISTRY  # noqa: F401 - every family registered
from models.specs import parse_job_spec
from tests.conftest import api_client
from tests.models.test_families import EXAMPLES

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def trace(client: TestClient, **body: object) -> dict:
    response = client.post("/optimizers/trace", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_adam_matches_the_first_three_steps_worked_by_hand(client: TestClient) -> None:
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 1e-8
    answer = trace(
        client, optimizer={"name": "adam", "lr": lr}, function="quadratic", x0=1.0, steps=3
    )
    # By hand, f(x) = x^2: g = 2x; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    # m_hat = m / (1 - b1^t); v_hat = v / (1 - b2^t); x -= lr m_hat / (sqrt(v_hat) + eps).
    x, m, v = 1.0, 0.0, 0.0
    for t, step in enumerate(answer["steps"], start=1):
        g = 2 * x
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        x = x - lr * m_hat / (math.sqrt(v_hat) + eps)
        expected = {"step": t, "g": g, "m": m, "v": v, "m_hat": m_hat, "v_hat": v_hat, "x": x}
        for key, value in expected.items():
            assert step[key] == pytest.approx(value, rel=1e-9), (t, key)
        assert step["f"] == pytest.approx(x * x, rel=1e-9)
    # The first step of Adam moves by lr whatever the gradient's size: 1 -> 0.9.
    assert answer["steps"][0]["x"] == pytest.approx(0.9, abs=1e-8)


def test_each_optimizer_reports_its_own_state(client: TestClient) -> None:
    momentum = trace(client, optimizer={"name": "momentum", "lr": 0.1}, x0=1.0, steps=2)
    first, second = momentum["steps"]
    assert first["m"] == pytest.approx(2.0) and second["m"] == pytest.approx(0.9 * 2 + 1.6)
    assert first["v"] is None and first["m_hat"] is None
    gd = trace(client, optimizer={"name": "gd", "lr": 0.25}, x0=1.0, steps=1)["steps"][0]
    assert gd["x"] == pytest.approx(0.5) and gd["m"] is None
    rms = trace(client, optimizer={"name": "rmsprop", "lr": 0.01, "rho": 0.9}, steps=1)
    assert rms["steps"][0]["v"] == pytest.approx(0.1 * 2.0**2)
    adadelta = trace(client, optimizer={"name": "adadelta"}, steps=1)["steps"][0]
    assert adadelta["v"] is not None and adadelta["u"] is not None


def test_relu_is_flat_left_of_zero_and_the_bump_has_two_minima(client: TestClient) -> None:
    stuck = trace(client, optimizer={"name": "gd", "lr": 0.5}, function="relu", x0=-1.0, steps=5)
    assert all(s["g"] == 0.0 and s["x"] == -1.0 for s in stuck["steps"])
    # From x = 4.5 plain gradient descent settles in the second minimum (height 0.7); heavy
    # momentum carries x through it and over the ridge into the global minimum at 0.
    bump = {"function": "bump", "height": 0.7, "x0": 4.5, "steps": 500}
    trapped = trace(client, optimizer={"name": "gd", "lr": 0.5}, **bump)["steps"][-1]
    assert trapped["x"] == pytest.approx(3.0, abs=0.05) and trapped["f"] == pytest.approx(
        0.7, abs=1e-3
    )
    heavy = {"name": "momentum", "lr": 1.0, "momentum": 0.95}
    escaped = trace(client, optimizer=heavy, **bump)["steps"][-1]
    assert abs(escaped["x"]) < 0.05 and escaped["f"] < 0.01


def test_the_path_is_drawn_and_bad_requests_name_the_field(client: TestClient) -> None:
    body = {"optimizer": {"name": "nesterov", "lr": 0.05}, "function": "abs", "steps": 40}
    picture = client.post("/optimizers/trace.png", json=body)
    assert picture.status_code == 200 and picture.content.startswith(PNG)
    for bad, field in [
        ({"optimizer": {"name": "lbfgs"}}, "optimizer.name"),
        ({"function": "cosine"}, "function"),
        ({"steps": 0}, "steps"),
        ({"steps": 10**6}, "steps"),
        ({"x0": float("1e9")}, "x0"),
        ({"height": 2.0}, "height"),
        ({"function": {"expression": "x.__class__"}}, "function.expression"),
        ({"function": {"expression": "y"}}, "function.expression"),
        ({"function": {"formula": "x"}}, "function.expression"),
        ({"optimizer": {"name": "adam", "eps": -1}}, "optimizer.eps"),
        ({"optimizer": {"name": "gd", "betas": [0.5, 0.9]}}, "optimizer.betas"),
        ({"optimizer": {"name": "rmsprop", "amsgrad": True}}, "optimizer.amsgrad"),
    ]:
        response = client.post("/optimizers/trace", json=bad)
        assert response.status_code == 422, bad
        assert field in [e["field"] for e in response.json()["detail"]], response.json()
    diverged = client.post(
        "/optimizers/trace", json={"optimizer": {"name": "gd", "lr": 50}, "steps": 2000}
    )
    assert diverged.status_code == 422 and "finite" in diverged.text

    outside = client.post(
        "/optimizers/trace", json={"function": {"expression": "log(x)"}, "x0": -1}
    )
    assert outside.status_code == 422 and "outside the function's domain" in outside.text


def test_a_written_function_steps_along_its_own_derivative(client: TestClient) -> None:
    """The exercise's bump written out: the trace's g is the analytic f'(x) at every step."""
    bump = "1 - exp(-x**2) - 0.5*exp(-(x-3)**2)"

    def slope(x: float) -> float:
        return 2 * x * math.exp(-(x**2)) + (x - 3) * math.exp(-((x - 3) ** 2))

    answer = trace(
        client, optimizer={"name": "gd", "lr": 0.5}, function={"expression": bump}, x0=4.5, steps=30
    )
    assert answer["function"] == {"expression": bump}
    xs = [4.5] + [s["x"] for s in answer["steps"]]
    for x, step in zip(xs, answer["steps"], strict=False):
        assert step["g"] == pytest.approx(slope(x), rel=1e-12, abs=1e-15)
        assert step["x"] == pytest.approx(x - 0.5 * step["g"], rel=1e-12)
    # The same as the built-in bump of height 0.5.
    named = trace(client, optimizer={"name": "gd", "lr": 0.5}, function="bump", x0=4.5, steps=30)
    assert [s["x"] for s in named["steps"]] == pytest.approx(xs[1:], rel=1e-12)


def test_adam_with_eps_0_and_every_hyperparameter_traces(client: TestClient) -> None:
    """eps 0: the first step is lr * sign(g) exactly; where g has always been 0 (relu left of
    0), x stays put instead of becoming 0/0. amsgrad divides by the largest v."""
    first = trace(
        client, optimizer={"name": "adam", "lr": 0.1, "eps": 0}, function="abs", x0=2.0, steps=1
    )["steps"][0]
    assert first["x"] == pytest.approx(1.9, rel=1e-15)
    assert first["m_hat"] == pytest.approx(1.0) and first["v_hat"] == pytest.approx(1.0)
    flat = trace(client, optimizer={"name": "adam", "eps": 0}, function="relu", x0=-1.0, steps=3)
    assert all(s["x"] == -1.0 and s["m_hat"] == 0.0 and s["v_hat"] == 0.0 for s in flat["steps"])
    ams = trace(
        client,
        optimizer={"name": "adam", "lr": 0.1, "amsgrad": True, "betas": [0.9, 0.5]},
        function={"expression": "x**2"},
        x0=1.0,
        steps=20,
    )["steps"]
    assert all(s["v_max"] >= s["v"] for s in ams) and ams[-1]["v_max"] > ams[-1]["v"]
    centered = trace(
        client,
        optimizer={"name": "rmsprop", "centered": True, "eps": 0},
        function={"expression": "x**2"},
        x0=1.0,
        steps=1,
    )["steps"][0]
    assert centered["g_avg"] == pytest.approx(0.1 * 2.0)  # (1 - rho) g, rho 0.9
    dampened = trace(
        client,
        optimizer={"name": "momentum", "lr": 0.1, "dampening": 0.5},
        function="quadratic",
        x0=1.0,
        steps=2,
    )["steps"]
    assert dampened[1]["m"] == pytest.approx(0.9 * 2.0 + 0.5 * 1.6)  # the first is g itself


# --- architectures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_summary_counts_what_pytorch_counts_for_every_family(
    client: TestClient, name: str
) -> None:
    response = client.post("/architectures/summary", json=EXAMPLES[name])
    assert response.status_code == 200, response.text
    summary = response.json()
    spec = parse_job_spec(EXAMPLES[name])
    built = get_family(name).build(spec, resolve(spec.dataset))
    assert summary["n_params"] == n_params(built)
    assert sum(layer["n_params"] for layer in summary["layers"]) == summary["n_params"]
    memory = summary["training_memory_bytes"]
    assert memory["parameters"] == 4 * summary["n_params"]
    assert memory["total"] == sum(v for k, v in memory.items() if k != "total")


def test_receptive_fields_match_a_stack_worked_by_hand(client: TestClient) -> None:
    document = {
        "family": "cnn",
        "dataset": {"name": "fashion_mnist"},
        "model": {
            "conv": [
                {"filters": 8, "kernel": 5, "stride": 2, "padding": 2, "pool": "max"},
                {"filters": 16, "kernel": 3, "padding": "same"},
            ],
            "dense": [32],
        },
        "train": {"batch_size": 10, "optimizer": {"name": "adam"}},
    }
    summary = client.post("/architectures/summary", json=document).json()
    stack = [row for row in summary["layers"] if row["receptive_field"] is not None]
    # conv 5/2: rf 5, jump 2, 28 -> (28 + 4 - 5) // 2 + 1 = 14; max pool 2/2: rf 5 + 1 * 2 = 7,
    # jump 4, 14 -> 7; conv 3/1: rf 7 + 2 * 4 = 15, jump 4, 7 -> 7.
    assert [(r["type"], r["receptive_field"], r["jump"]) for r in stack] == [
        ("Conv2d", 5, 2),
        ("MaxPool2d", 7, 4),
        ("Conv2d", 15, 4),
    ]
    assert [r["output_shape"] for r in stack] == [[8, 14, 14], [8, 7, 7], [16, 7, 7]]
    memory = summary["training_memory_bytes"]
    assert memory["optimizer_state"] == 2 * 4 * summary["n_params"]  # Adam's two moments
    assert memory["inputs"] == 10 * 28 * 28 * 4
    # Conv weights: 8*1*25 + 8, 16*8*9 + 16; dense: 16*7*7 -> 32 -> 10.
    assert summary["n_params"] == 208 + 1168 + (784 * 32 + 32) + (32 * 10 + 10)


def test_a_bad_model_section_is_a_422_naming_the_field(client: TestClient) -> None:
    response = client.post(
        "/architectures/summary",
        json={"family": "mlp", "dataset": {"name": "digits"}, "model": {"hidden": [0]}},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "model.hidden.0"
    unknown = client.post(
        "/architectures/summary", json={"family": "mlp", "dataset": {"name": "upload:nope"}}
    )
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "dataset.name"


def test_a_model_over_the_parameter_cap_is_a_422_naming_the_model(client: TestClient) -> None:
    too_big = {"family": "mlp", "dataset": {"name": "digits"}, "model": {"hidden": [16_384] * 4}}
    response = client.post("/architectures/summary", json=too_big)
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["field"] == "model" and "806,584,330 parameters" in error["message"]
