"""RBM and DBM ("rbm", "dbm") on digits: the pseudo-likelihood is scikit-learn's, the free
energy is the exact marginal, inpainting beats the mean image, staged DBM training, and the
bounds of the Gibbs-chain verbs."""

import itertools
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.neural_network import BernoulliRBM

from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import BadRequest, ImageQuery, Served
from models.configs.dbm import DBMJob
from models.configs.rbm import RBMJob
from models.configs.verbs import ReconstructRequest, SampleRequest
from models.dbm import DBM, DBMTrainer
from models.loop import fit
from models.rbm import RBM, RBMParams, RBMTrainer, filters_picture, inpaint, reconstruct, sample

CPU = torch.device("cpu")
DIGITS = {"name": "digits"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    settings = Settings(home=tmp_path_factory.mktemp("digits"))
    return load_dataset(
        RBMJob.model_validate({"family": "rbm", "dataset": DIGITS}).dataset, settings
    )


def served(trainer: RBMTrainer | DBMTrainer, splits: Splits) -> Served:
    trainer.model.eval()
    return Served(module=trainer.model, spec=trainer.spec, info=splits.info, dataset=lambda: splits)


@pytest.fixture(scope="module")
def rbm(digits: Splits) -> Served:
    """The default RBM trained 15 epochs by CD-1."""
    spec = RBMJob.model_validate({"family": "rbm", "dataset": DIGITS, "train": {"epochs": 15}})
    torch.manual_seed(0)
    trainer = RBMTrainer(spec, RBM(input_shape=digits.info.input_shape, hidden=128), digits, CPU)
    history = fit(trainer, digits)
    assert history[-1]["val_pseudo_likelihood"] > history[0]["val_pseudo_likelihood"]
    assert history[-1]["val_reconstruction"] < history[0]["val_reconstruction"]
    return served(trainer, digits)


# --- the estimators ------------------------------------------------------------------------


def test_pseudo_likelihood_is_scikit_learns(digits: Splits) -> None:
    torch.manual_seed(0)
    params = RBMParams(0.1 * torch.randn(20, 64), 0.1 * torch.randn(64), 0.1 * torch.randn(20))
    x = digits.test.x[:50].flatten(1)
    reference = BernoulliRBM(n_components=20, random_state=7)
    reference.components_ = params.weight.double().numpy()
    reference.intercept_visible_ = params.visible_bias.double().numpy()
    reference.intercept_hidden_ = params.hidden_bias.double().numpy()
    # score_samples flips, in example i, the unit randint draws for it with its random_state.
    units = np.random.RandomState(7).randint(0, 64, 50)
    ours = params.pseudo_likelihood(x, torch.as_tensor(units)).numpy()
    np.testing.assert_allclose(ours, reference.score_samples(x.double().numpy()), rtol=1e-4)


def test_free_energy_is_the_exact_marginal_over_the_hidden_units() -> None:
    torch.manual_seed(0)
    params = RBMParams(torch.randn(3, 4).double(), torch.randn(4).double(), torch.randn(3).double())
    for bits in itertools.product([0.0, 1.0], repeat=4):
        v = torch.tensor([bits], dtype=torch.float64)
        # -log sum_h exp(-E(v, h)), E = -b.v - c.h - h.W.v
        terms = [
            (params.visible_bias @ v[0]) + (params.hidden_bias @ h) + h @ params.weight @ v[0]
            for h in (
                torch.tensor(c, dtype=torch.float64) for c in itertools.product([0, 1], repeat=3)
            )
        ]
        exact = -torch.logsumexp(torch.stack(terms), 0)
        assert params.free_energy(v).item() == pytest.approx(exact.item(), abs=1e-9)


# --- the verbs -------------------------------------------------------------------------------


def test_inpainting_removed_rows_beats_the_mean_image(rbm: Served, digits: Splits) -> None:
    """For the top, middle and bottom rows removed from 100 test digits, the RBM's inpainting
    is closer to the truth than the mean training image is."""
    x = digits.test.x[:100].flatten(1)
    mean = digits.train.x.flatten(1).mean(0)
    for rows in (slice(0, 3), slice(3, 5), slice(5, 8)):
        mask = torch.ones(1, 8, 8, dtype=torch.bool)
        mask[:, rows] = False
        mask = mask.flatten().expand_as(x)
        with torch.inference_mode():
            filled = inpaint(rbm.module, x, mask, steps=200, seed=0)
        missing = ~mask
        ours = (filled - x)[missing].pow(2).mean().item()
        baseline = (mean.expand_as(x) - x)[missing].pow(2).mean().item()
        assert torch.equal(filled[mask], x[mask])  # the known pixels are clamped
        assert ours < 0.8 * baseline, (rows, ours, baseline)


def test_samples_are_seeded_and_bounded(rbm: Served) -> None:
    one = sample(rbm, SampleRequest(n=4, seed=1, steps=30))
    assert np.asarray(one["samples"]).shape == (4, 1, 8, 8) and one["steps"] == 30
    assert sample(rbm, SampleRequest(n=4, seed=1, steps=30)) == one
    assert sample(rbm, SampleRequest(n=4, seed=2, steps=30)) != one
    default = sample(rbm, SampleRequest(n=1))
    assert default["steps"] == rbm.spec.model.sample_steps
    with pytest.raises(BadRequest) as refused:
        sample(rbm, SampleRequest(latents=[[0.0]]))
    assert refused.value.field == "latents"
    with pytest.raises(BadRequest) as refused:  # 1000 chains of 10,000 steps: too much work
        sample(rbm, SampleRequest(n=1000, steps=10_000))
    assert refused.value.field == "steps"
    with pytest.raises(BadRequest) as refused:
        mask = np.ones((8, 8)).tolist()
        inputs = np.zeros((500, 64)).tolist()
        reconstruct(rbm, ReconstructRequest(inputs=inputs, mask=mask, steps=5000))
    assert refused.value.field == "steps"
    for bad in ({"n": 0}, {"n": 1001}, {"steps": 0}, {"steps": 10_001}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            SampleRequest(**bad)


def test_a_mask_is_one_per_input_or_one_for_all_of_0_and_1(rbm: Served, digits: Splits) -> None:
    inputs = digits.test.x[:3].tolist()
    shared = np.ones((8, 8))
    shared[:2] = 0
    answer = reconstruct(rbm, ReconstructRequest(inputs=inputs, mask=shared.tolist(), steps=5))
    out = np.asarray(answer["outputs"])
    assert np.allclose(out[:, :, 2:], np.asarray(inputs)[:, :, 2:])
    per_input = np.ones((3, 64))
    reconstruct(rbm, ReconstructRequest(inputs=inputs, mask=per_input.tolist(), steps=5))
    for bad in ([[1, 0]], np.full((8, 8), 0.5).tolist(), np.ones((2, 64)).tolist()):
        with pytest.raises(BadRequest) as refused:
            reconstruct(rbm, ReconstructRequest(inputs=inputs, mask=bad))
        assert refused.value.field == "mask"
    plain = reconstruct(rbm, ReconstructRequest(inputs=inputs))
    assert np.asarray(plain["outputs"]).shape == (3, 1, 8, 8) and len(plain["loss"]) == 3


def test_filters_are_one_layer_for_an_rbm(rbm: Served) -> None:
    picture = filters_picture(rbm, ImageQuery(n=16))
    images = np.concatenate([row for _, row in picture.rows])
    assert images.shape == (16, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(BadRequest) as refused:
        filters_picture(rbm, ImageQuery(layer=2))
    assert refused.value.field == "layer"


# --- the config ------------------------------------------------------------------------------


def test_config_refuses_what_it_cannot_model() -> None:
    spec = RBMJob.model_validate({"family": "rbm", "dataset": DIGITS, "model": {"hidden": 30}})
    dbm = DBMJob.model_validate(
        {"family": "dbm", "dataset": DIGITS, "model": {"layers": [30, 20, 10]}}
    )
    assert spec.train.optimizers["model"].name == "adam"
    assert set(dbm.train.optimizers) == {"pretrain", "joint"}
    cases = [
        ({"family": "rbm", "dataset": {"name": "function1d"}}, "model"),
        ({"family": "rbm", "dataset": DIGITS, "train": {"optimizer": {"name": "lbfgs"}}}, "lbfgs"),
        ({"family": "dbm", "dataset": DIGITS, "model": {"layers": [10]}}, "layers"),
        ({"family": "rbm", "dataset": DIGITS, "model": {"cd_k": 0}}, "cd_k"),
        (
            {
                "family": "dbm",
                "dataset": DIGITS,
                "train": {"optimizers": {"model": {"name": "sgd"}}},
            },
            "no optimizer .model.",
        ),
    ]
    for document, where in cases:
        job = RBMJob if document["family"] == "rbm" else DBMJob
        with pytest.raises(ValidationError, match=where):
            job.model_validate(document)


# --- the DBM ---------------------------------------------------------------------------------


def test_dbm_pretrains_each_layer_then_trains_jointly(digits: Splits) -> None:
    spec = DBMJob.model_validate(
        {
            "family": "dbm",
            "dataset": DIGITS,
            "model": {"layers": [64, 32], "pretrain_epochs": 4},
            "train": {"epochs": 4},
        }
    )
    torch.manual_seed(0)
    model = DBM(input_shape=(1, 8, 8), layers=[64, 32], mean_field_steps=5)
    trainer = DBMTrainer(spec, model, digits, CPU)
    history = fit(trainer, digits)
    stages = [row["stage"] for row in history]
    assert stages == [0.0] * 5 + [1.0] * 4 + [2.0] * 4  # epoch 0 first
    # Each layer's RBM learns its input; joint training keeps the pixels' reconstruction good.
    for stage in (0, 1):
        rows = [row for row in history[1:] if row["stage"] == stage]
        assert rows[-1]["train_reconstruction"] < rows[0]["train_reconstruction"], stage
    assert {"lr_pretrain"} <= set(history[0]) and {"lr_joint"} <= set(history[-1])
    joint = [row["val_reconstruction"] for row in history if row["stage"] == 2.0]
    assert joint[-1] < 0.05, joint

    dbm = served(trainer, digits)
    samples = np.asarray(sample(dbm, SampleRequest(n=3, seed=0, steps=10))["samples"])
    assert samples.shape == (3, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    for layer in (1, 2):
        picture = filters_picture(dbm, ImageQuery(n=8, layer=layer))
        assert np.concatenate([row for _, row in picture.rows]).shape == (8, 1, 8, 8)
    with pytest.raises(BadRequest) as refused:
        filters_picture(dbm, ImageQuery(layer=3))
    assert refused.value.field == "layer"
    # Layer 2's filters are its weights projected through layer 1's.
    assert torch.allclose(model.filters(2), model.weights[1] @ model.weights[0])
    assert math.isfinite(float(trainer.evaluate(digits.test)["reconstruction"]))
