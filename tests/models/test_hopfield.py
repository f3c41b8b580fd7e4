"""Hopfield networks ("hopfield"): the attractors of a 2-neuron network under each rule, worked
out by hand; energy that never rises under async updates on noisy digits; the `patterns`
dataset and the bounds of recall and attractors. Continuous states: the energy's formula and
its descent, the fixed points and stability of 2- and 3-neuron networks with given weights,
their pictures, and the bounds."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from api import plots
from core.datasets import load_dataset
from core.settings import Settings
from models.base import BadRequest, ImageQuery, Lines, Served, Trajectories
from models.configs.hopfield import HopfieldJob
from models.configs.verbs import AttractorsRequest, RecallRequest
from models.hopfield import (
    HopfieldNetwork,
    HopfieldTrainer,
    attractors,
    build_hopfield,
    energy_picture,
    recall,
    states_picture,
    weights_for,
)
from models.loop import fit

CPU = torch.device("cpu")
THREE = [[1, 1], [-1, -1], [1, -1]]


def network(document: dict, settings: Settings) -> tuple[Served, list[dict[str, float]]]:
    spec = HopfieldJob.model_validate({"family": "hopfield", **document})
    splits = load_dataset(spec.dataset, settings)
    trainer = HopfieldTrainer(spec, build_hopfield(spec, splits.info), splits, CPU)
    history = fit(trainer, splits)
    trainer.model.eval()
    served = Served(module=trainer.model, spec=spec, info=splits.info, dataset=lambda: splits)
    return served, history


def found(answer: dict) -> dict[tuple[int, ...], dict]:
    return {tuple(a["state"]): a for a in answer["attractors"]}


# Worked by hand for the patterns [1, 1], [-1, -1], [1, -1] with a zero diagonal:
# hebbian: W = (1/2)(3 1; 1 3) -> off-diagonal 1/2, so the two aligned states attract and a
#   mixed start falls to whichever unit the random order updates first;
# storkey: the off-diagonal goes 1/2, 1, 1/2 over the three patterns: the same network;
# pseudo_inverse: P+ P = I (the patterns span the plane), no off-diagonal weight: every state
#   is a fixed point of its own, the stored [1, -1] among them.
ATTRACTORS = {
    "hebbian": {(1, 1), (-1, -1)},
    "storkey": {(1, 1), (-1, -1)},
    "pseudo_inverse": {(1, 1), (-1, -1), (1, -1), (-1, 1)},
}


@pytest.mark.parametrize("rule", sorted(ATTRACTORS))
def test_two_neurons_storing_three_patterns_have_the_attractors_worked_by_hand(
    rule: str, settings: Settings
) -> None:
    served, history = network(
        {"dataset": {"name": "patterns", "patterns": THREE}, "model": {"rule": rule}}, settings
    )
    answer = attractors(served, AttractorsRequest(seed=0))
    assert answer["n_neurons"] == 2 and answer["starts"] == 4
    states = found(answer)
    assert set(states) == ATTRACTORS[rule]
    assert sum(a["basin"] for a in answer["attractors"]) == 4
    assert all(a["kind"] == "fixed_point" for a in answer["attractors"])
    for state, a in states.items():
        assert a["stored"] == (list(state) in THREE), state
    # train_stable: the share of the stored patterns that are fixed points.
    stable = sum(list(s) in THREE for s in ATTRACTORS[rule]) / 3
    assert history[-1]["train_stable"] == pytest.approx(stable)


def test_storkey_on_two_neurons_keeps_the_diagonal_worked_by_hand() -> None:
    patterns = torch.tensor(THREE, dtype=torch.float64)
    w = weights_for(patterns, "storkey", zero_diagonal=False)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5], [0.5, 2.0]], dtype=torch.float64))
    hebbian = weights_for(patterns, "hebbian", zero_diagonal=True)
    assert torch.allclose(hebbian, torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64))


def test_sync_updates_find_the_two_cycle(settings: Settings) -> None:
    served, _ = network({"dataset": {"name": "patterns", "patterns": THREE}}, settings)
    answer = attractors(served, AttractorsRequest(mode="sync"))
    states = found(answer)
    assert states[(1, 1)]["kind"] == states[(-1, -1)]["kind"] == "fixed_point"
    # [1, -1] and [-1, 1] swap forever; named by the larger code, [1, -1].
    assert states[(1, -1)]["kind"] == "cycle" and states[(1, -1)]["basin"] == 2


def test_noisy_digits_are_recalled_with_energy_that_never_rises(settings: Settings) -> None:
    # The pseudo-inverse rule: the mean digits are correlated (a shared background), and a
    # Hebbian network keeps only one of the three means as a fixed point.
    served, history = network(
        {
            "dataset": {"name": "digits"},
            "model": {"n_patterns": 3, "noise": 0.1, "rule": "pseudo_inverse"},
        },
        settings,
    )
    splits = served.dataset()
    x = splits.test.x[splits.test.y < 3][:30]
    answer = recall(served, RecallRequest(inputs=x.tolist(), noise=0.15, seed=1))
    for result in answer["results"]:
        energy = np.asarray(result["energy"])
        assert (np.diff(energy) <= 1e-9).all(), energy
        assert len(result["states"]) == len(energy) == result["iterations"] + 1
        assert result["converged"]
    assert history[-1]["val_recall"] > 0.5, history
    picture = energy_picture(served, ImageQuery(n=5, steps=20))
    assert isinstance(picture, Lines)
    for values in picture.series.values():
        assert (np.diff(values) <= 1e-9).all(), values


def test_recall_from_a_stored_pattern_stays_and_bounds_hold(settings: Settings) -> None:
    served, _ = network(
        {
            "dataset": {"name": "patterns", "n_patterns": 3, "dim": 40},
            "model": {"rule": "pseudo_inverse"},
        },
        settings,
    )
    answer = recall(served, RecallRequest(patterns=[0, 1, 2], noise=0.0))
    assert [r["pattern"] for r in answer["results"]] == [0, 1, 2]
    assert all(r["iterations"] == 0 for r in answer["results"])
    with pytest.raises(BadRequest) as refused:
        recall(served, RecallRequest(patterns=[3]))
    assert refused.value.field == "patterns"
    with pytest.raises(BadRequest) as refused:
        attractors(served, AttractorsRequest())  # 40 neurons: 2^40 starts
    assert refused.value.field == "model"
    with pytest.raises(BadRequest) as refused:
        recall(served, RecallRequest(inputs=[[1, -1, 1]]))
    assert refused.value.field == "inputs"
    for bad in ({}, {"inputs": [[1, 1]], "patterns": [0]}, {"patterns": [0], "noise": 2}):
        with pytest.raises(ValidationError):
            RecallRequest(**bad)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"name": "patterns", "patterns": [[0, 1], [1, 0]]}, "write each 0 as -1"),
        ({"name": "patterns", "patterns": [[1, -1], [1, -1, 1]]}, "pattern 1 has 3"),
        ({"name": "patterns", "patterns": [[1, 2]]}, "holds 2"),
        ({"name": "patterns", "patterns": [[1, -1]], "n_patterns": 4}, "not both"),
        ({"name": "patterns", "kfold": 3}, "no kfold"),
        ({"name": "digits", "patterns": [[1, -1]]}, "dataset 'patterns'"),
    ],
)
def test_bad_pattern_sets_are_refused(dataset: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HopfieldJob.model_validate({"family": "hopfield", "dataset": dataset})


def test_image_datasets_store_one_pattern_per_class_at_most() -> None:
    with pytest.raises(ValidationError, match="n_patterns 11"):
        HopfieldJob.model_validate(
            {"family": "hopfield", "dataset": {"name": "digits"}, "model": {"n_patterns": 11}}
        )
    with pytest.raises(ValidationError, match="stores"):
        HopfieldJob.model_validate({"family": "hopfield", "dataset": {"name": "function1d"}})
    spec = HopfieldJob.model_validate(
        {"family": "hopfield", "dataset": {"name": "patterns", "n_patterns": 7, "dim": 30}}
    )
    assert spec.stages()[0].name == "store" and spec.optimizer_names == ()
    net = HopfieldNetwork(n_units=30, n_patterns=7)
    assert net.weight.shape == (30, 30) and not net.weight.requires_grad


# --- continuous states -----------------------------------------------------------------------

SWAP = [[0.0, 1.0], [1.0, 0.0]]  # two neurons that copy each other
TRIANGLE = [[0.0, 1.0, -1.0], [1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]


def continuous(weights: list[list[float]], settings: Settings, **model: object) -> Served:
    document = {"state": "continuous", "weights": weights, **model}
    served, _ = network({"dataset": {"name": "patterns"}, "model": document}, settings)
    return served


def test_continuous_energy_is_the_formula_and_never_rises_along_async_updates_and_the_flow(
    settings: Settings,
) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 5))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0.0)
    b = rng.normal(size=5) * 0.3
    served = continuous(w.tolist(), settings, gain=2.0, bias=b.tolist())
    x = np.array([0.5, -0.5, 0.9, -1.0, 0.0])
    # The integral of atanh from 0 to x, x atanh(x) + ln(1 - x^2) / 2, is ln 2 at +-1.
    integral = [
        math.log(2) if abs(v) == 1 else v * math.atanh(v) + math.log(1 - v * v) / 2 for v in x
    ]
    expected = -0.5 * x @ w @ x - b @ x + sum(integral) / 2.0
    energy = served.module.energy(torch.tensor(x)[None]).item()
    assert energy == pytest.approx(expected, abs=1e-9)

    starts = rng.uniform(-1, 1, size=(20, 5)).tolist()
    for mode, step, slack in (("async", None, 1e-12), ("flow", 0.05, 1e-9)):
        request = RecallRequest(
            inputs=starts, mode=mode, step_size=step, max_iterations=400, seed=3
        )
        for result in recall(served, request)["results"]:
            energies = np.asarray(result["energy"])
            assert (np.diff(energies) <= slack).all(), (mode, energies)
            assert result["converged"], mode
            assert np.abs(result["states"][0] - np.asarray(starts)).min() == 0.0
            assert all(-1.0 <= v <= 1.0 for v in result["final"])
    first = recall(served, RecallRequest(inputs=[[0.3, -0.7, 0.1, 0.0, 1.0]], max_iterations=1))
    assert first["results"][0]["states"][0] == [0.3, -0.7, 0.1, 0.0, 1.0]  # as given


def fixed_point_of(gain: float) -> float:
    """The positive solution of a = tanh(gain a), by iterating from 1."""
    a = 1.0
    for _ in range(200):
        a = math.tanh(gain * a)
    return a


@pytest.mark.parametrize(
    ("mode", "origin"), [("async", "saddle"), ("flow", "saddle"), ("sync", "unstable")]
)
def test_two_copying_neurons_have_the_fixed_points_worked_by_hand(
    mode: str, origin: str, settings: Settings
) -> None:
    # x = tanh(5 W x): x1 = x2 = +-a with a = tanh(5 a), and 0. The map's Jacobian there is
    # 5 (1 - a^2) W, eigenvalues +-5 (1 - a^2) ~ +-0.001: stable. At 0 it is 5 W, eigenvalues
    # +-5: the flow's (J - I) are 4 and -6, a saddle; the sync map's both lie outside the
    # unit circle: unstable.
    served = continuous(SWAP, settings, gain=5.0)
    answer = attractors(served, AttractorsRequest(mode=mode))
    a = fixed_point_of(5.0)
    points = {tuple(round(v, 6) for v in p["state"]): p for p in answer["attractors"]}
    assert set(points) == {(round(a, 6),) * 2, (round(-a, 6),) * 2, (0.0, 0.0)}
    slope = 5 * (1 - a**2)
    for p in answer["attractors"]:
        if abs(p["state"][0]) > 0.5:
            assert p["stability"] == "stable" and p["basin"] > 0
            shift = 0.0 if mode == "sync" else -1.0
            assert p["eigenvalues"] == pytest.approx([slope + shift, -slope + shift], abs=1e-9)
    zero = points[(0.0, 0.0)]
    assert zero["stability"] == origin and zero["energy"] == pytest.approx(0.0, abs=1e-12)
    expected = [5.0, -5.0] if mode == "sync" else [4.0, -6.0]
    assert zero["eigenvalues"] == pytest.approx(expected) and zero["eigenvalues_imag"] == [0, 0]
    assert sum(p["basin"] for p in answer["attractors"]) + answer["unsettled"] == answer["starts"]
    # Sync swaps (a, -a) and (-a, a) forever: those starts end on no fixed point.
    assert (answer["unsettled"] > 0) == (mode == "sync")
    corner = recall(served, RecallRequest(inputs=[[0.3, 0.7]], mode=mode, max_iterations=1000))
    assert corner["results"][0]["final"] == pytest.approx([a, a], abs=1e-5)
    assert corner["results"][0]["converged"]


def test_three_neurons_have_more_fixed_points_than_binary_attractors(settings: Settings) -> None:
    binary, _ = network({"dataset": {"name": "patterns"}, "model": {"weights": TRIANGLE}}, settings)
    corners = attractors(binary, AttractorsRequest())["attractors"]
    served = continuous(TRIANGLE, settings, gain=3.0)
    found = attractors(served, AttractorsRequest())["attractors"]
    assert len(found) > len(corners) == 6
    w = torch.tensor(TRIANGLE, dtype=torch.float64)
    states = torch.tensor([p["state"] for p in found], dtype=torch.float64)
    assert torch.allclose(states, torch.tanh(3.0 * states @ w.T), atol=1e-9)  # fixed points
    assert torch.cdist(states, states).add(torch.eye(len(states))).min() > 1e-3  # distinct
    kinds = [p["stability"] for p in found]
    assert kinds.count("stable") == 6 and kinds.count("saddle") == len(found) - 6
    # At 0 the flow's Jacobian is 3 W - I, eigenvalues 3 * (1, 1, -2) - 1.
    zero = next(p for p in found if max(abs(v) for v in p["state"]) < 1e-9)
    assert zero["eigenvalues"] == pytest.approx([2.0, 2.0, -7.0])


def test_continuous_pictures_render(settings: Settings) -> None:
    served = continuous(SWAP, settings, gain=5.0, mode="flow")
    picture = states_picture(served, ImageQuery(n=6, steps=200))
    assert isinstance(picture, Trajectories) and picture.panels == [(0, 1)]
    assert len(picture.points["stable"]) == 2 and len(picture.points["saddle"]) == 1
    assert picture.arrows is not None and picture.arrows.shape == (225, 4)
    assert len(picture.paths) == 6
    for path in picture.paths:
        assert np.abs(np.abs(path[-1]) - fixed_point_of(5.0)).max() < 1e-3, path[-1]
    three = states_picture(continuous(TRIANGLE, settings, gain=3.0), ImageQuery(n=4, steps=50))
    assert three.panels == [(0, 1), (0, 2), (1, 2)] and three.arrows is None
    for draw in (picture, three, energy_picture(served, ImageQuery(n=3, steps=20))):
        png = plots.render(draw, "hopfield")
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size[0] > 200
        image.verify()


def test_bad_continuous_input_names_the_field(settings: Settings) -> None:
    def refused_job(model: dict, at: str) -> None:
        with pytest.raises(ValidationError) as refused:
            HopfieldJob.model_validate(
                {"family": "hopfield", "dataset": {"name": "patterns", "dim": 2}, "model": model}
            )
        assert [e.get("ctx", {}).get("at") for e in refused.value.errors()] == [at]

    refused_job({"state": "continuous", "weights": [[0, 1], [1]]}, "weights")
    refused_job({"state": "continuous", "weights": [[0] * 3] * 3}, "weights")  # 2 values
    refused_job({"state": "continuous", "weights": SWAP, "bias": [0, 0, 0]}, "bias")
    refused_job({"gain": 2.0}, "gain")
    refused_job({"mode": "flow"}, "mode")
    refused_job({"weights": SWAP, "rule": "storkey"}, "rule")
    with pytest.raises(ValidationError):
        HopfieldJob.model_validate(
            {"family": "hopfield", "dataset": {"name": "patterns"}, "model": {"weights": [[0]]}}
        )

    served = continuous(SWAP, settings)
    for request, field in (
        (RecallRequest(inputs=[[0.3, -1.5]]), "inputs"),
        (RecallRequest(inputs=[[0.3, -0.7, 0.1]]), "inputs"),
        (RecallRequest(inputs=[[0.3, -0.7]], step_size=0.1), "step_size"),
    ):
        with pytest.raises(BadRequest) as refused:
            recall(served, request)
        assert refused.value.field == field
    with pytest.raises(BadRequest) as refused:
        attractors(served, AttractorsRequest(grid=101))  # 101^2 + 1 + 200 starts
    assert refused.value.field == "grid"
    with pytest.raises(ValidationError):
        AttractorsRequest(n_random=10**6)
    eleven, _ = network(
        {"dataset": {"name": "patterns", "dim": 11}, "model": {"state": "continuous"}}, settings
    )
    with pytest.raises(BadRequest) as refused:
        attractors(eleven, AttractorsRequest())
    assert refused.value.field == "model"
    binary, _ = network({"dataset": {"name": "patterns", "patterns": THREE}}, settings)
    for request, field in (
        (AttractorsRequest(mode="flow"), "mode"),
        (AttractorsRequest(grid=3), "grid"),
    ):
        with pytest.raises(BadRequest) as refused:
            attractors(binary, request)
        assert refused.value.field == field
