"""Autoencoders: "ae" (dense and conv) on Fashion-MNIST, "sae" (stacked, pretrained greedily,
then fine-tuned) on digits; their configs, verbs, and a resumed run that matches an unbroken one.
"""

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError

from core.catalog import CATALOG, is_available
from core.datasets import Split, Splits, load_dataset
from core.settings import Settings
from models.autoencoder import AETrainer, build_ae
from models.base import BadRequest, Served, get_family
from models.configs.autoencoder import AEJob, ConvAEConfig
from models.configs.verbs import (
    DecodeRequest,
    EncodeRequest,
    ReconstructRequest,
)
from models.loop import fit

CPU = torch.device("cpu")
DIGITS = {"name": "digits"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    settings = Settings(home=tmp_path_factory.mktemp("digits"))
    return load_dataset(AEJob.model_validate({"family": "ae", "dataset": DIGITS}).dataset, settings)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Splits]:
    settings = Settings(home=tmp_path_factory.mktemp("fashion"))
    if not is_available(CATALOG["fashion_mnist"], settings):
        pytest.skip(f"Fashion-MNIST is not in {settings.fashion_mnist_system_dir}")
    settings.ensure_dirs()
    spec = AEJob.model_validate(
        {"family": "ae", "dataset": {"name": "fashion_mnist", "max_train": 5000}}
    )
    yield load_dataset(spec.dataset, settings)


# --- configs -------------------------------------------------------------------------------


def test_ae_config_defaults_fit_the_dataset() -> None:
    images = AEJob.model_validate({"family": "ae", "dataset": DIGITS})
    assert images.model.kind == "dense" and images.model.hidden == [196, 49]
    assert images.model.output == "sigmoid" and images.model.latent == 32
    points = AEJob.model_validate({"family": "ae", "dataset": {"name": "surface2d"}})
    assert points.model.output == "identity"
    conv = AEJob.model_validate({"family": "ae", "dataset": DIGITS, "model": {"kind": "conv"}})
    assert isinstance(conv.model, ConvAEConfig) and conv.model.filters == [16, 32]


@pytest.mark.parametrize(
    ("dataset", "model", "message"),
    [
        ({"name": "surface2d"}, {"kind": "conv"}, "needs image inputs"),
        (DIGITS, {"kind": "conv", "filters": [4, 4, 4, 4]}, r"shrinks the \(1, 8, 8\) input"),
        ({"name": "function1d"}, {"output": "sigmoid"}, "use output 'identity'"),
        (DIGITS, {"loss": "bce", "output": "identity"}, "needs output 'sigmoid'"),
        (DIGITS, {"kind": "conv", "hidden": [8]}, "Extra inputs"),
        (DIGITS, {"kind": "lstm"}, "does not match any of the expected tags"),
        (DIGITS, {"latent": 0}, "greater than or equal to 1"),
    ],
)
def test_ae_config_refuses(dataset: dict, model: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AEJob.model_validate({"family": "ae", "dataset": dataset, "model": model})


@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist", "cifar10"])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (4, 2), (5, 3), (3, 1)])
def test_conv_ae_gives_back_the_input_shape(dataset: str, kernel: int, stride: int) -> None:
    info = CATALOG[dataset]
    filters = [4, 8] if stride > 1 else [4]
    spec = AEJob.model_validate(
        {
            "family": "ae",
            "dataset": {"name": dataset},
            "model": {"kind": "conv", "filters": filters, "kernel": kernel, "stride": stride},
        }
    )
    model = build_ae(spec, info)
    x = torch.rand(2, *info.input_shape)
    assert model.encode(x).shape == (2, spec.model.latent)
    assert model(x).shape == x.shape


# --- "ae" on Fashion-MNIST -----------------------------------------------------------------


def train_ae(splits: Splits, model: dict, **train: object) -> tuple[AEJob, AETrainer]:
    spec = AEJob.model_validate(
        {
            "family": "ae",
            "dataset": {"name": "fashion_mnist", "max_train": 5000},
            "model": model,
            "train": train,
        }
    )
    torch.manual_seed(0)
    trainer = AETrainer(spec, build_ae(spec, splits.info), splits, CPU)
    fit(trainer, splits)
    return spec, trainer


def test_a_32_code_reconstructs_fashion_better_than_a_2_code(fashion: Splits) -> None:
    # 784-196-49-lambda, L1 loss, Adam, trained the same way for lambda = 32 and 2.
    train = {"epochs": 3, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.002}}
    losses = {}
    for latent in (2, 32):  # the 32-code model stays for the verbs below
        spec, trainer = train_ae(fashion, {"latent": latent, "loss": "l1"}, **train)
        assert spec.model.hidden == [196, 49]
        losses[latent] = trainer.evaluate(fashion.test)
    assert losses[32]["loss"] < 0.95 * losses[2]["loss"], losses
    assert losses[32]["mse"] < losses[2]["mse"], losses

    # The verbs of the 32-code model.
    served = Served(
        module=trainer.model.eval(), spec=spec, info=fashion.info, dataset=lambda: fashion
    )
    verbs = get_family("ae").verbs
    mean = verbs["decode"](served, DecodeRequest(mean_of="test"))
    assert len(mean["outputs"]) == 1 and len(mean["codes"][0]) == 32
    image = torch.tensor(mean["outputs"][0])
    assert image.shape == (1, 28, 28) and image.numel() == 784
    assert 0.0 <= image.min() and image.max() <= 1.0

    x = fashion.test.x[:3]
    shaped = verbs["reconstruct"](served, ReconstructRequest(inputs=x.tolist()))
    assert torch.tensor(shaped["outputs"]).shape == (3, 1, 28, 28) and len(shaped["loss"]) == 3
    assert sum(shaped["loss"]) / 3 == pytest.approx(losses[32]["loss"], rel=0.5)
    flat_raw = verbs["reconstruct"](
        served, ReconstructRequest(inputs=(x.flatten(1) * 255).tolist(), raw=True)
    )
    assert torch.tensor(flat_raw["outputs"]).shape == (3, 784)
    assert torch.allclose(
        torch.tensor(flat_raw["outputs"]) / 255, torch.tensor(shaped["outputs"]).flatten(1)
    )
    codes = verbs["encode"](served, EncodeRequest(inputs=x.tolist()))["codes"]
    assert torch.tensor(codes).shape == (3, 32)
    decoded = verbs["decode"](served, DecodeRequest(codes=codes))["outputs"]
    assert torch.allclose(torch.tensor(decoded), torch.tensor(shaped["outputs"]), atol=1e-5)
    with pytest.raises(BadRequest, match="32 numbers") as bad:
        verbs["decode"](served, DecodeRequest(codes=[[0.0] * 2]))
    assert bad.value.field == "codes"


def test_a_conv_ae_learns_fashion(fashion: Splits) -> None:
    small = replace(fashion, train=Split(fashion.train.x[:1000], fashion.train.y[:1000]))
    spec = AEJob.model_validate(
        {
            "family": "ae",
            "dataset": {"name": "fashion_mnist"},
            "model": {"kind": "conv", "filters": [8, 16], "latent": 16, "loss": "bce"},
            "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}},
        }
    )
    torch.manual_seed(0)
    trainer = AETrainer(spec, build_ae(spec, small.info), small, CPU)
    test = replace(small.test, x=small.test.x[:1000], y=small.test.y[:1000])
    before = trainer.evaluate(test)
    history = fit(trainer, small)
    after = trainer.evaluate(test)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert after["mse"] < 0.5 * before["mse"], (before, after)


def test_a_denoising_ae_reconstructs_the_clean_inputs(digits: Splits) -> None:
    spec = AEJob.model_validate({"family": "ae", "dataset": DIGITS, "train": {"input_noise": 0.5}})
    trainer = AETrainer(spec, build_ae(spec, digits.info), digits, CPU)
    batch = trainer.batch(1, 0)
    assert torch.equal(batch.clean, digits.train.x[batch.index])
    assert torch.equal(batch.y, digits.train.y[batch.index])
    assert not torch.equal(batch.x, batch.clean)
    # The noise is what the trainer adds: its std is the job's input_noise.
    assert (batch.x - batch.clean).std().item() == pytest.approx(0.5, rel=0.1)
