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
    # jump 4, 14 -> 7; conv 3/1: rf 7 + 2 * 4 = 15, jump 4, 7 -> 7. The first output's field
    # is centred on pixel 0 (padding 2 = half the kernel), then on (0 + 2) / 2 = 1.
    assert [(r["type"], r["receptive_field"], r["jump"], r["start"]) for r in stack] == [
        ("Conv2d", [5, 5], [2, 2], [0, 0]),
        ("MaxPool2d", [7, 7], [4, 4], [1, 1]),
        ("Conv2d", [15, 15], [4, 4], [1, 1]),
    ]
    assert [r["output_shape"] for r in stack] == [[8, 14, 14], [8, 7, 7], [16, 7, 7]]
    memory = summary["training_memory_bytes"]
    assert memory["optimizer_state"] == 2 * 4 * summary["n_params"]  # Adam's two moments
    assert memory["inputs"] == 10 * 28 * 28 * 4
    # Conv weights: 8*1*25 + 8, 16*8*9 + 16; dense: 16*7*7 -> 32 -> 10.
    assert summary["n_params"] == 208 + 1168 + (784 * 32 + 32) + (32 * 10 + 10)


def test_rectangular_strided_and_padded_layers_are_worked_per_axis(client: TestClient) -> None:
    document = {
        "family": "cnn",
        "dataset": {"name": "fashion_mnist"},
        "model": {
            "conv": [
                {"filters": 4, "kernel": [5, 3], "stride": [2, 1], "padding": [0, 1]},
                {"filters": 2, "kernel": 1, "pool": "max", "pool_size": 3, "pool_stride": 1},
            ],
            "dense": [],
        },
    }
    summary = client.post("/architectures/summary", json=document).json()
    stack = [row for row in summary["layers"] if row["receptive_field"] is not None]
    # Height: conv 5/2 pad 0: 28 -> 12, rf 5, jump 2, centre (5 - 1) / 2 = 2; conv 1: the same;
    # max pool 3/1: 12 -> 10, rf 5 + 2 * 2 = 9, jump 2, centre 2 + 1 * 2 = 4.
    # Width: conv 3/1 pad 1: 28 -> 28, rf 3, jump 1, centre 0; pool 3/1: 26, rf 5, centre 1.
    assert [
        (r["type"], r["kernel"], r["stride"], r["padding"], r["receptive_field"], r["jump"])
        for r in stack
    ] == [
        ("Conv2d", [5, 3], [2, 1], [0, 1], [5, 3], [2, 1]),
        ("Conv2d", [1, 1], [1, 1], [0, 0], [5, 3], [2, 1]),
        ("MaxPool2d", [3, 3], [1, 1], [0, 0], [9, 5], [2, 1]),
    ]
    assert [r["start"] for r in stack] == [[2, 0], [2, 0], [4, 1]]
    assert [r["output_shape"] for r in stack] == [[4, 12, 28], [2, 12, 28], [2, 10, 26]]
    # (1 * 5 * 3 + 1) * 4 + (4 + 1) * 2 weights and biases, then 2 * 10 * 26 -> 10 classes.
    assert summary["n_params"] == 64 + 10 + (520 + 1) * 10


def test_a_1d_cnn_over_a_time_series_is_summed_up(client: TestClient) -> None:
    document = {
        "family": "cnn",
        "dataset": {"name": "mackey_glass", "lag": 20},
        "model": {
            "conv": [
                {"filters": 3, "kernel": 5, "stride": 2, "padding": 0},
                {"filters": 2, "kernel": [3], "pool": "avg", "pool_size": 2, "pool_padding": 1},
            ],
            "dense": [4],
        },
    }
    summary = client.post("/architectures/summary", json=document).json()
    stack = [row for row in summary["layers"] if row["receptive_field"] is not None]
    # conv 5/2: 20 -> 8, rf 5, jump 2, centre 2; conv 3 'same': 8, rf 5 + 2 * 2 = 9, centre 2;
    # avg pool 2/2 pad 1: (8 + 2 - 2) // 2 + 1 = 5, rf 9 + 1 * 2 = 11, jump 4, centre
    # 2 + (0.5 - 1) * 2 = 1.
    assert [
        (r["type"], r["output_shape"], r["receptive_field"], r["jump"], r["start"]) for r in stack
    ] == [
        ("Conv1d", [3, 8], [5], [2], [2]),
        ("Conv1d", [2, 8], [9], [2], [2]),
        ("AvgPool1d", [2, 5], [11], [4], [1]),
    ]
    # One output: the next value of the series.
    assert summary["n_params"] == (5 + 1) * 3 + (3 * 3 + 1) * 2 + (10 + 1) * 4 + (4 + 1) * 1


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


def test_per_axis_lists_must_fit_the_dataset_and_each_other(client: TestClient) -> None:
    def field(conv: dict, dataset: str = "digits") -> str:
        document = {"family": "cnn", "dataset": {"name": dataset}, "model": {"conv": [conv]}}
        response = client.post("/architectures/summary", json=document)
        assert response.status_code == 422, response.text
        return response.json()["detail"][0]["field"]

    assert field({"filters": 2, "kernel": [3]}) == "model.conv.0.kernel"  # images: two axes
    assert field({"filters": 2, "stride": [1, 1]}, "mackey_glass") == "model.conv.0.stride"
    assert field({"filters": 2, "kernel": [3, 3], "padding": [1]}) == "model.conv.0.padding"
    assert field({"filters": 2, "pool": "max", "pool_padding": 2}) == "model.conv.0.pool_padding"
    assert field({"filters": 2, "kernel": [3, 16]}) == "model.conv.0.kernel"  # 1..15


# --- forward passes -------------------------------------------------------------------------


def forward(client: TestClient, body: dict) -> list[dict]:
    response = client.post("/architectures/forward", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["dtype"] == "float64"
    return answer["layers"]


def refused(client: TestClient, body: dict) -> dict:
    response = client.post("/architectures/forward", json=body)
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]


def test_the_documented_1d_example_gives_the_numbers_worked_by_hand(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/architectures/forward"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["examples"]["conv1d"]
    layers = forward(client, example["value"])
    # A cross-correlation as PyTorch's: out[i] = x[i] + 0 x[i + 1] + 2 x[i + 2] + 1 over
    # [1, 3, 2, 1, 2, 3]; the flipped kernel (a convolution's) would give [5, 8, 7, 6].
    assert layers[0]["output"] == [[6, 6, 7, 8]] and layers[0]["output_shape"] == [1, 4]
    assert layers[1]["output"] == [[6, 6, 7, 8]]  # relu
    assert layers[2]["output"] == [[6, 7, 8]]  # max pool of 2 at stride 1
    assert layers[3]["output"] == [6, 7, 8] and layers[3]["output_shape"] == [3]
    assert layers[4]["output"] == [6 - 8 + 0.5]  # dense: W x + b
    assert [row["n_params"] for row in layers] == [4, 0, 0, 0, 4]


def test_2d_convolutions_pools_and_dense_layers_worked_by_hand(client: TestClient) -> None:
    image = [[[1, 2, 0], [2, 1, 1], [0, 2, 5]]]
    square = {"type": "conv2d", "weight": [[[[1, 0], [0, 2]]]], "bias": [0]}
    # out[i][j] = x[i][j] + 2 x[i + 1][j + 1]
    assert forward(client, {"input": image, "layers": [square]})[0]["output"] == [[[3, 4], [6, 11]]]
    # A 1x2 kernel over a 2x3 image: out[i][j] = x[i][j] + 2 x[i][j + 1].
    wide = {"type": "conv2d", "weight": [[[[1, 2]]]], "bias": [0]}
    rows = {"input": [[[3, 0, 2], [4, 1, 5]]], "layers": [wide]}
    assert forward(client, rows)[0]["output"] == [[[3, 4], [6, 11]]]
    # Strides and padding per axis: zero-padded by one column, every second column.
    strided = {**wide, "stride": [1, 2], "padding": [0, 1]}
    layers = forward(client, {**rows, "layers": [strided]})
    assert layers[0]["output"] == [[[0 + 2 * 3, 0 + 2 * 2], [0 + 2 * 4, 1 + 2 * 5]]]
    pools = forward(
        client,
        {
            "input": image,
            "layers": [
                {"type": "maxpool2d", "size": 2, "stride": 1},
                {"type": "avgpool2d", "size": [2, 1]},
                {"type": "flatten"},
                {"type": "dense", "weight": [[1, 0], [0, -1], [1, 1]], "bias": [0, 0, 0.25]},
                {"type": "sigmoid"},
            ],
        },
    )
    assert pools[0]["output"] == [[[2, 2], [2, 5]]]
    assert pools[1]["output"] == [[[2, 3.5]]]  # the mean of each column's pair
    assert pools[3]["output"] == [2, -3.5, 5.75]
    assert pools[4]["output"] == [1 / (1 + math.exp(-v)) for v in (2, -3.5, 5.75)]


def test_weights_left_out_are_drawn_as_pytorch_initialises_layers(client: TestClient) -> None:
    import torch
    from torch import nn

    body = {
        "input": [[0.5, -1.0, 2.0, 0.0]],
        "layers": [
            {"type": "conv1d", "filters": 2, "kernel": 3, "padding": "same"},
            {"type": "flatten"},
            {"type": "dense", "units": 3, "bias": [1, 2, 3]},
        ],
        "seed": 7,
    }
    layers = forward(client, body)
    torch.manual_seed(7)
    conv, dense = nn.Conv1d(1, 2, 3, padding=1), nn.Linear(8, 3)
    assert layers[0]["weight"] == conv.weight.tolist() and layers[0]["bias"] == conv.bias.tolist()
    assert layers[2]["weight"] == dense.weight.tolist() and layers[2]["bias"] is None  # given
    with torch.no_grad():
        x = torch.tensor([body["input"]], dtype=torch.float64)
        hidden = nn.functional.conv1d(x, conv.weight.double(), conv.bias.double(), padding=1)
        out = hidden.flatten(1) @ dense.weight.double().T + torch.tensor([1.0, 2.0, 3.0])
    assert layers[0]["output"] == hidden[0].tolist() and layers[2]["output"] == out[0].tolist()


def test_a_forward_pass_that_does_not_fit_is_a_422_naming_the_field(client: TestClient) -> None:
    row = [[1, 2, 3]]
    conv = {"type": "conv1d", "weight": [[[1, 2]]], "bias": [0]}
    cases = [
        ({"input": row, "layers": [{**conv, "weight": [[[1, 2], [3, 4]]]}]}, "layers.0.weight"),
        ({"input": row, "layers": [{**conv, "bias": [0, 1]}]}, "layers.0.bias"),
        ({"input": row, "layers": [{**conv, "weight": [[[1, 2, 3, 4]]]}]}, "layers.0.weight"),
        ({"input": row, "layers": [{**conv, "weight": [[1, 2]]}]}, "layers.0.weight"),
        ({"input": row, "layers": [{**conv, "filters": 2}]}, "layers.0.weight"),
        (
            {"input": row, "layers": [{"type": "conv2d", "weight": [[[[1]]]], "bias": [0]}]},
            "layers.0.type",
        ),
        (
            {"input": row, "layers": [{"type": "dense", "weight": [[1]], "bias": [0]}]},
            "layers.0.type",
        ),
        (
            {
                "input": row,
                "layers": [{"type": "flatten"}, {"type": "dense", "weight": [[1, 2]], "bias": [0]}],
            },
            "layers.1.weight",
        ),
        (
            {"input": row, "layers": [{"type": "conv1d", "filters": 1, "kernel": 3}]},
            "layers.0.weight",
        ),
        (
            {"input": row, "layers": [{"type": "maxpool1d", "size": 2, "padding": 2}]},
            "layers.0.padding",
        ),
        ({"input": row, "layers": [{"type": "maxpool1d", "size": [2, 2]}]}, "layers.0.size"),
        ({"input": row, "layers": [{"type": "maxpool1d", "size": 4}]}, "layers.0.size"),
        ({"input": row, "layers": [{"type": "relu", "weight": [[1]]}]}, "layers.0.weight"),
        ({"input": [[1, 2], [3]], "layers": [{"type": "relu"}]}, "input"),
        ({"input": [[1, 2], [3, True]], "layers": [{"type": "relu"}]}, "input"),
        ({"input": row, "layers": [{"type": "softmax"}]}, "layers.0.type"),
    ]
    for body, field in cases:
        assert refused(client, body)["field"] == field, body


def test_a_forward_pass_is_bounded(client: TestClient) -> None:
    big = refused(client, {"input": [0.0] * 70_000, "layers": [{"type": "relu"}]})
    assert big["field"] == "input" and big["type"] == "too_big"
    wide = {"type": "dense", "units": 16_384}
    params = refused(client, {"input": [0.0] * 8, "layers": [wide], "seed": 0})
    assert params["field"] == "layers.0" and params["type"] == "too_big"
    assert "147,456 parameters; the limit is 65,536" in params["message"]
    image = [[[0.0] * 200] * 200]  # 40,000 values in, 10 maps of 40,000 out
    maps = {"type": "conv2d", "filters": 10, "kernel": 3, "padding": "same"}
    values = refused(client, {"input": image, "layers": [maps], "seed": 0})
    assert values["field"] == "layers.0" and values["type"] == "too_big"
    # Within the other limits: 4 maps of 128 x 128 in and out, 3,604 parameters; but
    # 2 x 4 x 4 x 15 x 15 x 128 x 128 = 118 million FLOPs.
    maps = [[[0.0] * 128] * 128] * 4
    deep = {"type": "conv2d", "filters": 4, "kernel": 15, "padding": "same"}
    flops = refused(client, {"input": maps, "layers": [{"type": "relu"}, deep], "seed": 0})
    assert flops["field"] == "layers.1" and flops["type"] == "too_big"
    assert "117,964,800 FLOPs" in flops["message"]
    body = b'{"input": [' + b"0," * 3_000_000 + b'0], "layers": [{"type": "relu"}]}'
    over = client.post(
        "/architectures/forward", content=body, headers={"content-type": "application/json"}
    )
    assert over.status_code == 413
