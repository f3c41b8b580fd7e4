"""Hopfield networks ("hopfield"): the attractors of a 2-neuron network under each rule, worked
out by hand; energy that never rises under async updates on noisy digits; the `patterns`
dataset and the bounds of recall and attractors."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core.datasets import load_dataset
from core.settings import Settings
from models.base import BadRequest, ImageQuery, Lines, Served
from models.configs.hopfield import HopfieldJob
from models.configs.verbs import AttractorsRequest, RecallRequest
from models.hopfield import (
    HopfieldNetwork,
    HopfieldTrainer,
    attractors,
    build_hopfield,
    energy_picture,
    recall,
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
