"""Generative adversarial networks ("gan"): both backbones fit any image size, the config counts
their parameters, sample grids are kept at the named epochs only, and the verbs' bounds."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import BadRequest, Served
from models.configs.common import default_sample_epochs
from models.configs.gan import GANConfig, GANJob
from models.configs.verbs import InterpolateRequest, SampleRequest
from models.gan import GAN, GANTrainer, build_gan, interpolate, sample
from models.loop import fit

CPU = torch.device("cpu")


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 7, 9)])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_both_backbones_fit_the_image(kind: str, shape: tuple[int, int, int]) -> None:
    config = GANConfig(kind=kind, latent=5, hidden=[16, 32], filters=[8, 4])
    gan = GAN(input_shape=shape, config=config)
    gan.eval()
    images = gan.decode(torch.randn(3, 5))
    assert images.shape == (3, *shape) and images.min() >= 0 and images.max() <= 1
    assert gan.discriminate(images).shape == (3,)


def test_sample_epochs_default_to_five_and_must_be_in_the_run() -> None:
    assert default_sample_epochs(20) == [1, 6, 11, 15, 20]
    assert default_sample_epochs(2) == [1, 2]
    spec = GANJob.model_validate(
        {"family": "gan", "dataset": {"name": "digits"}, "train": {"epochs": 9}}
    )
    assert spec.model.sample_epochs == [1, 3, 5, 7, 9]
    with pytest.raises(ValidationError, match=r"past the run's last epoch"):
        GANJob.model_validate(
            {
                "family": "gan",
                "dataset": {"name": "digits"},
                "model": {"sample_epochs": [3, 12]},
                "train": {"epochs": 10},
            }
        )
    with pytest.raises(ValidationError, match="generates images"):
        GANJob.model_validate({"family": "gan", "dataset": {"name": "function1d"}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[GANTrainer, Splits]:
    spec = GANJob.model_validate(
        {
            "family": "gan",
            "dataset": {"name": "digits", "max_train": 256},
            "model": {"latent": 4, "hidden": [32], "sample_epochs": [2, 3], "n_kept": 5},
            "train": {"epochs": 3},
        }
    )
    splits = load_dataset(spec.dataset, Settings(home=tmp_path_factory.mktemp("gan")))
    torch.manual_seed(0)
    trainer = GANTrainer(spec, build_gan(spec, splits.info), splits, CPU)
    history = fit(trainer, splits)
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"} <= set(history[-1])
    assert {"lr_generator", "lr_discriminator"} <= set(history[-1])
    return trainer, splits


def test_sample_grids_are_kept_at_the_named_epochs_only(
    trained: tuple[GANTrainer, Splits],
) -> None:
    trainer, _ = trained
    assert trainer.epoch_artifacts(1) == {}
    kept = trainer.epoch_artifacts(3)["samples"]
    assert kept.shape == (5, 1, 8, 8)
    # The same latent points every time: the grid at epoch 3 is reproducible.
    assert torch.equal(trainer.epoch_artifacts(3)["samples"], kept)


def test_verbs_are_seeded_and_bounded(trained: tuple[GANTrainer, Splits]) -> None:
    trainer, splits = trained
    trainer.model.eval()
    served = Served(
        module=trainer.model, spec=trainer.spec, info=splits.info, dataset=lambda: splits
    )
    one = sample(served, SampleRequest(n=3, seed=1))
    assert sample(served, SampleRequest(n=3, seed=1)) == one
    again = sample(served, SampleRequest(latents=one["latents"]))
    np.testing.assert_allclose(again["samples"], one["samples"], atol=1e-6)
    path = interpolate(served, InterpolateRequest(start=[0.0] * 4, end=[1.0] * 4, steps=5))
    assert np.allclose(np.asarray(path["latents"])[:, 0], [0, 0.25, 0.5, 0.75, 1])
    bad = [
        (sample, SampleRequest(steps=5), "steps"),
        (sample, SampleRequest(latents=[[0.0, 1.0]]), "latents"),
        (interpolate, InterpolateRequest(start=[0.0]), "start"),
        (interpolate, InterpolateRequest(inputs=[[0.0], [1.0]]), "inputs"),
    ]
    for verb, request, field in bad:
        with pytest.raises(BadRequest) as refused:
            verb(served, request)
        assert refused.value.field == field
