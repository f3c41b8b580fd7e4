"""Every registered family: builds from defaults, trains a step, serves its verbs."""

import math

import pytest
import torch

from core.datasets import load_dataset
from core.settings import Settings
from core.spec import OptimizerName
from models.base import REGISTRY, Family, Served, get_family, register
from models.configs.verbs import InputsRequest, PredictRequest
from models.registry import REGISTRY as LOADED
from models.specs import FAMILY_NAMES, SPECS
from models.supervised import SupervisedTrainer

# A small job per family; a family added without one fails test_every_family_has_an_example.
EXAMPLES = {
    "mlp": {"family": "mlp", "dataset": {"name": "digits", "max_train": 32}},
    "cnn": {
        "family": "cnn",
        "dataset": {"name": "digits", "max_train": 32},
        "model": {"conv": [{"filters": 4, "pool": "max"}], "dense": [16]},
    },
    "lstm": {"family": "lstm", "dataset": {"name": "digits", "max_train": 32}},
    "vit": {
        "family": "vit",
        "dataset": {"name": "digits", "max_train": 32},
        "model": {"patch": 2, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
    },
    "ae": {
        "family": "ae",
        "dataset": {"name": "digits", "max_train": 32},
        "model": {"hidden": [16], "latent": 4},
    },
    "sae": {
        "family": "sae",
        "dataset": {"name": "digits", "max_train": 32},
        "model": {"layers": [16], "pretrain_epochs": 1, "head_epochs": 1},
    },
}


def test_every_family_has_an_example_and_matching_verbs() -> None:
    assert set(LOADED) == set(FAMILY_NAMES) == set(EXAMPLES)
    for name, family in LOADED.items():
        assert set(family.verbs) == set(SPECS[name].verbs)


def test_unknown_or_duplicate_family_fails_loudly() -> None:
    with pytest.raises(KeyError, match="unknown model family 'nope'"):
        get_family("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register(Family(spec=SPECS["mlp"], build=lambda s, i: None, trainer=SupervisedTrainer))
    assert REGISTRY["mlp"].name == "mlp"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_family_builds_trains_and_predicts(name: str, settings: Settings) -> None:
    family = get_family(name)
    spec = family.spec.model_validate(EXAMPLES[name])
    splits = load_dataset(spec.dataset, settings)
    model = family.build(spec, splits.info)
    trainer = family.trainer(spec, model, splits, torch.device("cpu"))
    stats = trainer.train_batch(1, 0)
    assert math.isfinite(stats["loss"]) and stats["count"] > 0
    x = splits.test.x[:8]
    if "predict" not in family.verbs:  # an autoencoder: its first verb takes inputs, no labels
        assert model(x).shape == x.shape and math.isfinite(trainer.evaluate(splits.test)["loss"])
        served = Served(module=model.eval(), spec=spec, info=splits.info, dataset=lambda: splits)
        verb = next(iter(family.verbs))
        assert len(family.verbs[verb](served, InputsRequest(inputs=x.tolist()))["outputs"]) == 8
        return
    assert model(x).shape == (8, splits.info.n_classes)
    metrics = trainer.evaluate(splits.test)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    served = Served(module=model.eval(), spec=spec, info=splits.info, dataset=lambda: splits)
    answer = family.verbs["predict"](served, PredictRequest(inputs=x.tolist()))
    assert len(answer["outputs"]) == 8 and len(answer["probabilities"][0]) == 10


@pytest.mark.parametrize(
    "optimizer", ["gd", "sgd", "momentum", "nesterov", "adam", "adadelta", "rmsprop", "lbfgs"]
)
def test_every_optimizer_lowers_the_loss(optimizer: OptimizerName, settings: Settings) -> None:
    torch.manual_seed(0)
    family = get_family("mlp")
    spec = family.spec.model_validate(
        {
            "family": "mlp",
            "dataset": {"name": "function1d", "n_train": 200},
            "model": {"hidden": [20], "activation": "tanh"},
            "train": {
                "optimizer": {"name": optimizer},
                "batch_size": 32,
                "weight_decay": 1e-4,
                "l1": 1e-5,
            },
        }
    )
    splits = load_dataset(spec.dataset, settings)
    trainer = family.trainer(spec, family.build(spec, splits.info), splits, torch.device("cpu"))
    before = trainer.evaluate(splits.train)["mse"]
    for epoch in range(1, 31):
        for index in range(trainer.n_batches(epoch)):
            trainer.train_batch(epoch, index)
    after = trainer.evaluate(splits.train)["mse"]
    assert after < 0.8 * before, (before, after)
