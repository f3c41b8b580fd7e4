"""Every registered family: builds from defaults, trains a step, reports the metrics its job
class declares, and serves every verb and picture it declares."""

import math

import numpy as np
import pytest
import torch

from core.checkpoint import pack, unpack
from core.datasets import load_dataset
from core.settings import Settings
from core.spec import OptimizerName
from models.base import (
    REGISTRY,
    BadRequest,
    Family,
    ImageGrid,
    ImageQuery,
    Picture,
    Served,
    for_inference,
    get_family,
    register,
)
from models.configs import verbs as v
from models.loop import fit, restore_trainer, trainer_state
from models.registry import REGISTRY as LOADED
from models.specs import FAMILY_NAMES, SPECS
from models.supervised import SupervisedTrainer

TINY = {"name": "digits", "max_train": 32}
# A small job per family; a family added without one fails test_every_family_has_an_example.
EXAMPLES = {
    "mlp": {"family": "mlp", "dataset": TINY},
    "cnn": {
        "family": "cnn",
        "dataset": TINY,
        "model": {"conv": [{"filters": 4, "pool": "max"}], "dense": [16]},
    },
    "lstm": {"family": "lstm", "dataset": TINY},
    "vit": {
        "family": "vit",
        "dataset": TINY,
        "model": {"patch": 2, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
    },
    "ae": {"family": "ae", "dataset": TINY, "model": {"hidden": [16], "latent": 4}},
    "sae": {
        "family": "sae",
        "dataset": TINY,
        "model": {"layers": [16], "pretrain_epochs": 1, "head_epochs": 1},
    },
    "rbm": {"family": "rbm", "dataset": TINY, "model": {"hidden": 16}},
    "dbm": {
        "family": "dbm",
        "dataset": TINY,
        "model": {"layers": [16, 8], "pretrain_epochs": 1},
        "train": {"epochs": 1},
    },
    "gan": {"family": "gan", "dataset": TINY, "model": {"latent": 4}},
    "vae": {"family": "vae", "dataset": TINY, "model": {"latent": 2}},
    "hopfield": {
        "family": "hopfield",
        "dataset": {"name": "patterns", "patterns": [[1, 1], [-1, -1], [1, -1]]},
    },
}


def request_for(verb: str, x: torch.Tensor) -> object:
    """A small valid request of each verb, on inputs x."""
    inputs = x.tolist()
    return {
        "predict": lambda: v.PredictRequest(inputs=inputs),
        "forecast": lambda: v.ForecastRequest(steps=3),
        "reconstruct": lambda: v.ReconstructRequest(inputs=inputs),
        "encode": lambda: v.EncodeRequest(inputs=inputs),
        "decode": lambda: v.DecodeRequest(mean_of="test"),
        "sample": lambda: v.SampleRequest(n=4, steps=3),
        "interpolate": lambda: v.InterpolateRequest(steps=3),
        "score": lambda: v.ScoreRequest(inputs=inputs),
        "recall": lambda: v.RecallRequest(patterns=[0], noise=0.0),
        "attractors": lambda: v.AttractorsRequest(),
    }[verb]()


# Verbs and pictures that refuse these examples by design (a 422 naming a field).
REFUSED = {
    ("mlp", "forecast"),
    ("lstm", "forecast"),
    ("cnn", "forecast"),
    ("gan", "sample"),
    ("vae", "sample"),
}


def test_every_family_has_an_example_and_matching_verbs() -> None:
    assert set(LOADED) == set(FAMILY_NAMES) == set(EXAMPLES)
    for name, family in LOADED.items():
        assert set(family.verbs) == set(SPECS[name].verbs)
        assert set(family.images) == set(SPECS[name].images)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_stored_job_document_parses_back_to_the_same_job(name: str) -> None:
    """The API stores the job with every default filled in; the worker parses that again."""
    spec = SPECS[name].model_validate(EXAMPLES[name])
    stored = spec.model_dump(mode="json")
    assert SPECS[name].model_validate(stored).model_dump(mode="json") == stored


def test_unknown_or_duplicate_family_fails_loudly() -> None:
    with pytest.raises(KeyError, match="unknown model family 'nope'"):
        get_family("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register(Family(spec=SPECS["mlp"], build=lambda s, i: None, trainer=SupervisedTrainer))
    assert REGISTRY["mlp"].name == "mlp"


def test_a_family_must_serve_what_its_job_class_declares() -> None:
    class Odd(SPECS["mlp"]):  # a job class that declares one verb more than it serves
        verbs = ("predict", "forecast", "sample")

    mlp = REGISTRY.pop("mlp")
    try:
        with pytest.raises(ValueError, match="serves verbs"):
            register(Family(spec=Odd, build=lambda s, i: None, trainer=SupervisedTrainer))
    finally:
        REGISTRY["mlp"] = mlp


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_family_trains_reports_its_declared_metrics_and_serves(
    name: str, settings: Settings
) -> None:
    torch.manual_seed(0)
    family = get_family(name)
    spec = family.spec.model_validate(EXAMPLES[name])
    splits = load_dataset(spec.dataset, settings)
    model = family.build(spec, splits.info)
    trainer = family.trainer(spec, model, splits, torch.device("cpu"))
    trainer.begin_epoch(1)
    stats = trainer.train_batch(1, 0)
    assert stats["count"] > 0 and all(math.isfinite(x) for x in stats.values()), stats

    # Every epoch reports only metrics the job class declares, each of them at some epoch.
    history = fit(trainer, splits)
    declared = spec.metrics()
    reported = {k for row in history for k in row if k != "stage" and not k.startswith("lr")}
    assert reported == set(declared), (reported, declared)
    if spec.has_initial_epoch():  # epoch 0 reports what the first trained epoch reports
        validated = history[1] | {k: v for k, v in history[-1].items() if k.startswith("val_")}
        assert history[0].keys() == validated.keys(), (history[0], history[1])
    assert all(math.isfinite(x) for row in history for x in row.values())
    test = trainer.evaluate(splits.test)
    assert set(test) == set(spec.eval_metrics())

    # Every verb and picture answers a small request, the model laid out as the API serves it.
    served = Served(
        module=for_inference(model, torch.device("cpu")),
        spec=spec,
        info=splits.info,
        dataset=lambda: splits,
    )
    x = splits.test.x[:4]
    for verb, run in family.verbs.items():
        if (name, verb) in REFUSED:
            with pytest.raises(BadRequest):
                run(served, request_for(verb, x))
            continue
        answer = run(served, request_for(verb, x))
        assert answer and isinstance(answer, dict), (verb, answer)
    for image, draw in family.images.items():
        if (name, image) in REFUSED:
            with pytest.raises(BadRequest):
                draw(served, ImageQuery(n=4, steps=3))
            continue
        picture = draw(served, ImageQuery(n=4, steps=3))
        assert isinstance(picture, Picture), image
        if isinstance(picture, ImageGrid):
            for _, images in picture.rows:
                assert images.ndim == 4 and np.isfinite(images).all(), image


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


# Persistent chains are trainer state the checkpoint must carry; so are a per-batch schedule and
# the augmentation's position in its random stream.
RESUMED = EXAMPLES | {
    "rbm (persistent)": {
        "family": "rbm",
        "dataset": TINY,
        "model": {"hidden": 16, "persistent": True},
    },
    "cnn (augmented, one_cycle, smoothed)": {
        "family": "cnn",
        "dataset": TINY,
        "model": {"conv": [{"filters": 4, "pool": "max", "batchnorm": True}], "dense": [16]},
        "train": {
            "epochs": 3,
            "augment": {"crop": 2, "flip": True},
            "label_smoothing": 0.1,
            "schedule": {"name": "one_cycle"},
        },
    },
}


@pytest.mark.parametrize("name", sorted(RESUMED))
def test_a_run_resumed_from_a_checkpoint_mid_epoch_matches_an_unbroken_one(
    name: str, settings: Settings
) -> None:
    """Every family, stopped in the middle of its last epoch, saved as the runner saves it
    (weights, stage, named optimizers, the family's own state, the RNG), restored into a
    fresh trainer in a process whose RNG is elsewhere, ends with the same weights."""
    document = dict(RESUMED[name])
    document["train"] = {**document.get("train", {}), "batch_size": 8, "seed": 3}
    family = get_family(document["family"])
    spec = family.spec.model_validate(document)
    splits = load_dataset(spec.dataset, settings)
    last = spec.total_epochs()

    def fresh(seed: int) -> object:
        torch.manual_seed(seed)
        model = family.build(spec, splits.info)
        return family.trainer(spec, model, splits, torch.device("cpu"))

    unbroken = fresh(0)
    fit(unbroken, splits)

    first = fresh(0)
    fit(first, splits, until=last - 1)
    first.begin_epoch(last)
    stop = first.n_batches(last) // 2
    for index in range(stop):
        first.train_batch(last, index)
    saved, _ = unpack(pack(trainer_state(first)))

    resumed = fresh(1)
    restore_trainer(resumed, saved)
    resumed.begin_epoch(last)
    for index in range(stop, resumed.n_batches(last)):
        resumed.train_batch(last, index)
    expected, got = unbroken.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.allclose(got[key], expected[key], rtol=1e-5, atol=1e-6), key
    assert resumed.evaluate(splits.test) == pytest.approx(unbroken.evaluate(splits.test))
