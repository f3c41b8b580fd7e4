"""Variational autoencoder ("vae") on digits: its config (sample_epochs filled in, bounds, image
datasets only), exact conv output sizes, training that raises the ELBO, beta at work, the verbs
and pictures (resuming is tested for every family in test_families)."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F

from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import BadRequest, ImageGrid, ImageQuery, Served, get_family
from models.configs.vae import VAEConfig, VAEJob
from models.configs.verbs import (
    DecodeRequest,
    EncodeRequest,
    InterpolateRequest,
    ReconstructRequest,
    SampleRequest,
)
from models.loop import Position, fit
from models.vae import VAE, VAETrainer, build_vae

CPU = torch.device("cpu")
DIGITS = {"name": "digits"}


def vae(epochs: int = 5, seed: int = 0, dataset: dict | None = None, **model: object) -> VAEJob:
    return VAEJob.model_validate(
        {
            "family": "vae",
            "dataset": dataset or DIGITS,
            "model": model,
            "train": {"epochs": epochs, "seed": seed},
        }
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    settings = Settings(home=tmp_path_factory.mktemp("digits"))
    return load_dataset(vae().dataset, settings)


def trained(spec: VAEJob, digits: Splits) -> VAETrainer:
    torch.manual_seed(spec.train.seed)
    trainer = VAETrainer(spec, build_vae(spec, digits.info), digits, CPU)
    fit(trainer, digits)
    trainer.model.eval()
    return trainer


@pytest.fixture(scope="module")
def plane(digits: Splits) -> Served:
    """A vae with a 2-D latent space, trained 3 epochs, served."""
    spec = vae(epochs=3, latent=2)
    model = trained(spec, digits).model
    return Served(module=model, spec=spec, info=digits.info, dataset=lambda: digits)


# --- config -----------------------------------------------------------------------------


def test_the_validator_fills_in_five_sample_epochs_from_first_to_last() -> None:
    assert vae(epochs=20).model.sample_epochs == [1, 6, 11, 15, 20]
    assert vae(epochs=100).model.sample_epochs == [1, 26, 51, 75, 100]
    assert vae(epochs=3).model.sample_epochs == [1, 2, 3]
    assert vae(epochs=1).model.sample_epochs == [1]
    assert vae(epochs=9, sample_epochs=[9, 2, 2]).model.sample_epochs == [2, 9]
    spec = vae(epochs=20)
    again = VAEJob.model_validate(spec.model_dump())  # a stored job validates again as it is
    assert again.model == spec.model and again.optimizer_for("model").lr == 3e-3


@pytest.mark.parametrize(
    ("model", "epochs", "message"),
    [
        ({"sample_epochs": [1, 21]}, 20, r"sample_epochs \[21\] are past the run's last epoch"),
        ({"sample_epochs": [0]}, 20, "greater than or equal to 1"),
        ({"latent": 0}, 20, "greater than or equal to 1"),
        ({"latent": 1025}, 20, "less than or equal to 1024"),
        ({"beta": -0.5}, 20, "greater than or equal to 0"),
        ({"beta": 101}, 20, "less than or equal to 100"),
        ({"n_kept": 65}, 20, "less than or equal to 64"),
        ({"kind": "conv", "filters": [8, 8, 8, 8, 8]}, 20, "too small for stride 2"),
    ],
)
def test_the_config_refuses_what_does_not_fit(model: dict, epochs: int, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        vae(epochs=epochs, **model)


def test_a_vae_needs_an_image_dataset() -> None:
    with pytest.raises(ValidationError, match="a vae models images"):
        vae(dataset={"name": "surface2d"})


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (4, 2), (5, 3)])
def test_the_conv_vae_decodes_to_the_exact_input_size(
    shape: tuple[int, int, int], kernel: int, stride: int
) -> None:
    config = VAEConfig(kind="conv", latent=5, filters=[4, 8], kernel=kernel, stride=stride)
    model = VAE(input_shape=shape, config=config)
    x = torch.rand(3, *shape)
    mean, log_var = model.posterior(x)
    assert mean.shape == log_var.shape == (3, 5)
    assert model.logits(mean).shape == (3, *shape)
    reconstruction, kl = model.terms(x, x, torch.randn(3, 5))
    assert reconstruction.shape == kl.shape == (3,)


def test_the_mlp_vae_gives_back_the_input_shape() -> None:
    model = VAE(input_shape=(1, 8, 8), config=VAEConfig(latent=3, hidden=[32, 16]))
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)


# --- training ---------------------------------------------------------------------------


def test_training_lowers_the_loss_and_raises_the_test_elbo(digits: Splits) -> None:
    spec = vae(epochs=5)
    torch.manual_seed(0)
    trainer = VAETrainer(spec, build_vae(spec, digits.info), digits, CPU)
    untrained = trainer.evaluate(digits.test)
    assert trainer.evaluate(digits.test) == untrained  # one fixed z per example: deterministic
    history = fit(trainer, digits)
    test = trainer.evaluate(digits.test)
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 3, history
    assert test["elbo"] > untrained["elbo"] + 10, (untrained, test)  # about -44 -> -26 nats
    assert test["elbo"] == pytest.approx(-(test["reconstruction"] + test["kl"]))
    assert test["loss"] == pytest.approx(-test["elbo"])  # beta 1
    for row in history:
        assert row["train_kl"] >= 0 and row["val_kl"] >= 0
        assert row["train_loss"] == pytest.approx(row["train_reconstruction"] + row["train_kl"])
    assert test["kl"] > 0.5  # the posterior carries information about x


def test_beta_trades_reconstruction_for_kl(digits: Splits) -> None:
    free = trained(vae(epochs=3, beta=0.0), digits).evaluate(digits.test)
    tight = trained(vae(epochs=3, beta=4.0), digits).evaluate(digits.test)
    assert free["reconstruction"] < tight["reconstruction"] - 2, (free, tight)
    assert tight["kl"] < free["kl"], (free, tight)
    assert tight["loss"] == pytest.approx(tight["reconstruction"] + 4 * tight["kl"])
    assert free["loss"] == pytest.approx(free["reconstruction"])


def test_samples_are_kept_at_the_sample_epochs_from_fixed_latent_points(digits: Splits) -> None:
    spec = vae(epochs=3, sample_epochs=[1, 3], n_kept=5)
    torch.manual_seed(0)
    trainer = VAETrainer(spec, build_vae(spec, digits.info), digits, CPU)
    kept = {}
    for epoch in range(1, 4):
        fit(trainer, digits, Position(epoch=epoch), until=epoch)
        kept[epoch] = trainer.epoch_artifacts(epoch)
    assert kept[2] == {}
    assert set(kept[1]) == set(kept[3]) == {"samples"}
    first, last = kept[1]["samples"], kept[3]["samples"]
    assert first.shape == last.shape == (5, 1, 8, 8)
    assert 0 <= first.min() and last.max() <= 1 and not torch.equal(first, last)
    assert torch.equal(trainer.epoch_artifacts(3)["samples"], last)  # the same latent points
    drawn = trainer.samples(7, torch.Generator().manual_seed(4))
    assert drawn.shape == (7, 1, 8, 8) and 0 <= drawn.min() and drawn.max() <= 1
    assert torch.equal(drawn, trainer.samples(7, torch.Generator().manual_seed(4)))


# --- verbs and pictures -----------------------------------------------------------------


def test_sample_is_seeded_and_checks_latents(plane: Served) -> None:
    sample = get_family("vae").verbs["sample"]
    one = sample(plane, SampleRequest(n=4, seed=1))
    assert np.asarray(one["samples"]).shape == (4, 1, 8, 8)
    assert np.asarray(one["latents"]).shape == (4, 2)
    assert sample(plane, SampleRequest(n=4, seed=1)) == one
    assert sample(plane, SampleRequest(n=4, seed=2))["samples"] != one["samples"]
    again = sample(plane, SampleRequest(latents=one["latents"]))
    assert np.allclose(again["samples"], one["samples"], atol=1e-6)
    with pytest.raises(BadRequest) as wrong:
        sample(plane, SampleRequest(latents=[[0.0, 0.0, 0.0]]))
    assert wrong.value.field == "latents"
    with pytest.raises(BadRequest) as gibbs:
        sample(plane, SampleRequest(n=2, steps=3))
    assert gibbs.value.field == "steps"


def test_encode_reconstruct_and_decode_use_the_posterior_means(
    plane: Served, digits: Splits
) -> None:
    verbs = get_family("vae").verbs
    x = digits.test.x[:6]
    codes = verbs["encode"](plane, EncodeRequest(inputs=x.tolist()))
    mean, log_var = plane.module.posterior(x)
    assert np.allclose(codes["codes"], mean.tolist(), atol=1e-6)
    assert np.allclose(codes["std"], torch.exp(0.5 * log_var).tolist(), atol=1e-6)
    assert np.all(np.asarray(codes["std"]) > 0)

    rebuilt = verbs["reconstruct"](plane, ReconstructRequest(inputs=x.tolist()))
    logits = plane.module.logits(mean)
    expected = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    assert np.allclose(rebuilt["outputs"], torch.sigmoid(logits).tolist(), atol=1e-6)
    assert np.allclose(rebuilt["loss"], expected.tolist(), rtol=1e-5)  # summed over pixels
    with pytest.raises(BadRequest) as masked:
        verbs["reconstruct"](plane, ReconstructRequest(inputs=x.tolist(), mask=[[1]]))
    assert masked.value.field == "mask"

    decoded = verbs["decode"](plane, DecodeRequest(codes=codes["codes"]))
    assert np.allclose(decoded["outputs"], rebuilt["outputs"], atol=1e-6)
    centre = verbs["decode"](plane, DecodeRequest(mean_of="train"))
    train_mean = plane.module.posterior(digits.train.x)[0].mean(0)
    assert np.asarray(centre["outputs"]).shape == (1, 1, 8, 8)
    assert np.allclose(centre["codes"], [train_mean.tolist()], atol=1e-5)
    test_centre = verbs["decode"](plane, DecodeRequest(mean_of="test"))["codes"]
    assert not np.allclose(test_centre, centre["codes"])
    with pytest.raises(BadRequest) as wrong:
        verbs["decode"](plane, DecodeRequest(codes=[[0.0] * 5]))
    assert wrong.value.field == "codes"


def test_interpolate_walks_a_straight_line(plane: Served, digits: Splits) -> None:
    interpolate = get_family("vae").verbs["interpolate"]
    path = interpolate(plane, InterpolateRequest(steps=5, seed=3))
    latents = np.asarray(path["latents"])
    assert latents.shape == (5, 2) and np.asarray(path["outputs"]).shape == (5, 1, 8, 8)
    assert np.allclose(latents[2], (latents[0] + latents[4]) / 2, atol=1e-6)
    fixed = interpolate(plane, InterpolateRequest(steps=3, start=[0.0, 0.0], seed=3))
    assert fixed["latents"][0] == [0.0, 0.0] and np.allclose(fixed["latents"][-1], latents[-1])
    x = digits.test.x[:2]
    between = interpolate(plane, InterpolateRequest(inputs=x.tolist(), steps=4))
    means = plane.module.posterior(x)[0]
    assert np.allclose(between["latents"][0], means[0].tolist(), atol=1e-6)
    assert np.allclose(between["latents"][-1], means[1].tolist(), atol=1e-6)
    for field, request in [
        ("start", InterpolateRequest(start=[0.0] * 3)),
        ("end", InterpolateRequest(end=[1.0])),
        ("inputs", InterpolateRequest(inputs=[[0.0] * 5, [0.0] * 5])),
        ("inputs", InterpolateRequest(inputs=x.tolist(), start=[0.0, 0.0])),
    ]:
        with pytest.raises(BadRequest) as refused:
            interpolate(plane, request)
        assert refused.value.field == field


def test_the_pictures(plane: Served, digits: Splits) -> None:
    images = get_family("vae").images
    grid = images["latent_grid"](plane, ImageQuery(n=6))
    assert len(grid.rows) == 6 and all(row.shape == (6, 1, 8, 8) for _, row in grid.rows)
    assert grid.rows[0][0].startswith("z2=1.64")  # the 95% quantile at the top
    samples = images["samples"](plane, ImageQuery(n=10, seed=1))
    assert [row.shape[0] for _, row in samples.rows] == [8, 2]
    drawn = get_family("vae").verbs["sample"](plane, SampleRequest(n=10, seed=1))["samples"]
    assert np.allclose(np.concatenate([row for _, row in samples.rows]), drawn, atol=1e-6)
    path = images["interpolation"](plane, ImageQuery(n=3))
    assert len(path.rows) == 3 and all(row.shape == (8, 1, 8, 8) for _, row in path.rows)
    rebuilt = images["reconstructions"](plane, ImageQuery(n=4))
    assert isinstance(rebuilt, ImageGrid) and rebuilt.rows[1][1].shape == (4, 1, 8, 8)

    spec = vae(epochs=1, latent=3)
    flat = Served(
        module=build_vae(spec, digits.info).eval(),
        spec=spec,
        info=digits.info,
        dataset=lambda: digits,
    )
    with pytest.raises(BadRequest, match="needs a 2-D latent space") as refused:
        images["latent_grid"](flat, ImageQuery())
    assert refused.value.field == "name"
