"""Autoencoders: "ae" (dense and conv) on Fashion-MNIST, "sae" (stacked, pretrained greedily,
then fine-tuned) on digits; their configs, verbs, and a resumed run that matches an unbroken one.
"""

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from core.catalog import CATALOG, is_available
from core.checkpoint import pack, unpack
from core.datasets import Split, Splits, load_dataset
from core.settings import Settings
from models.autoencoder import AETrainer, SAETrainer, build_ae, build_sae
from models.base import BadRequest, Served, get_family, n_params
from models.configs.autoencoder import AEJob, ConvAEConfig, SAEJob
from models.configs.verbs import (
    DecodeRequest,
    EncodeRequest,
    PredictRequest,
    ReconstructRequest,
)
from tests.models.support import fit

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
    sae = SAEJob.model_validate({"family": "sae", "dataset": DIGITS, "train": {"epochs": 7}})
    assert sae.total_epochs() == 2 * 20 + 10 + 7


@pytest.mark.parametrize(
    ("dataset", "model", "message"),
    [
        ({"name": "surface2d"}, {"kind": "conv"}, "needs image inputs"),
        (DIGITS, {"kind": "conv", "filters": [4, 4, 4, 4]}, r"shrinks the \(1, 8, 8\) input"),
        ({"name": "function1d"}, {"output": "sigmoid"}, "use output 'identity'"),
        (DIGITS, {"loss": "bce", "output": "identity"}, "needs output 'sigmoid'"),
        (DIGITS, {"hidden": [16_384] * 3}, "parameters; the limit"),
        (DIGITS, {"kind": "conv", "hidden": [8]}, "Extra inputs"),
        (DIGITS, {"kind": "lstm"}, "does not match any of the expected tags"),
        (DIGITS, {"latent": 0}, "greater than or equal to 1"),
    ],
)
def test_ae_config_refuses(dataset: dict, model: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AEJob.model_validate({"family": "ae", "dataset": dataset, "model": model})


def test_sae_config_refuses_non_image_classification() -> None:
    with pytest.raises(ValidationError, match="classifies images"):
        SAEJob.model_validate({"family": "sae", "dataset": {"name": "surface2d"}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        SAEJob.model_validate({"family": "sae", "dataset": DIGITS, "model": {"head_epochs": 0}})


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
    assert n_params(model) == spec.model.n_params(info.input_shape)


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
    x, target = trainer.batch(1, 0)
    index = trainer._order[1][: len(x)]
    assert torch.equal(target, digits.train.x[index]) and not torch.equal(x, target)


# --- "sae" on digits -----------------------------------------------------------------------


def sae(seed: int, epochs: int = 20, **model: object) -> SAEJob:
    return SAEJob.model_validate(
        {
            "family": "sae",
            "dataset": DIGITS,
            "model": model,
            "train": {"seed": seed, "epochs": epochs},
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fine_tuning_beats_the_frozen_pretrained_features(seed: int, digits: Splits) -> None:
    spec = sae(seed)
    torch.manual_seed(seed)
    trainer = SAETrainer(spec, build_sae(spec, digits.info), digits, CPU)
    history = fit(trainer, digits)
    stages = [m["stage"] for m in history]
    assert stages == [0.0] * 20 + [1.0] * 20 + [2.0] * 10 + [3.0] * 20
    assert history[19]["train_loss"] < history[0]["train_loss"]  # layer 0 learned to reconstruct
    before = trainer.result()["test_accuracy_before_finetune"]
    after = trainer.evaluate(digits.test)["accuracy"]
    assert 0.7 < before < after - 0.03 and after > 0.93, (before, after)


def test_sae_serves_predict_and_reconstruct(digits: Splits) -> None:
    spec = sae(0, layers=[32, 16], pretrain_epochs=1, head_epochs=1)
    model = build_sae(spec, digits.info).eval()
    served = Served(module=model, spec=spec, info=digits.info, dataset=lambda: digits)
    verbs = get_family("sae").verbs
    x = digits.test.x[:4].tolist()
    assert len(verbs["predict"](served, PredictRequest(inputs=x))["probabilities"][0]) == 10
    answer = verbs["reconstruct"](served, ReconstructRequest(inputs=x))
    assert torch.tensor(answer["outputs"]).shape == (4, 1, 8, 8) and len(answer["loss"]) == 4


@pytest.mark.parametrize(
    "stop",
    [
        (2, 5),  # mid-epoch, pretraining layer 1 (epoch 1 pretrained layer 0)
        (3, 0),  # between pretraining and the head (epochs 3 and 4)
        (4, 3),  # mid-epoch, the last head epoch
        (5, 0),  # between the head and fine-tuning (epochs 5 and 6)
        (6, 7),  # mid fine-tuning, after the before-fine-tuning score was taken
    ],
)
def test_a_resumed_sae_run_matches_an_unbroken_one(
    stop: tuple[int, int], digits: Splits, tmp_path: Path
) -> None:
    spec = sae(3, epochs=2, layers=[32, 16], pretrain_epochs=1, head_epochs=2)
    epochs = spec.total_epochs()
    assert epochs == 6

    torch.manual_seed(0)
    unbroken = SAETrainer(spec, build_sae(spec, digits.info), digits, CPU)
    fit(unbroken, digits)

    torch.manual_seed(0)
    first = SAETrainer(spec, build_sae(spec, digits.info), digits, CPU)
    epoch, batch = stop
    fit(first, digits, range(1, epoch))
    for index in range(batch):
        first.train_batch(epoch, index)
    blob = pack({"model": first.model.state_dict(), "trainer": first.state()})

    state, _ = unpack(blob)
    torch.manual_seed(1)  # a fresh process; the weights come from the checkpoint
    resumed = SAETrainer(spec, build_sae(spec, digits.info), digits, CPU)
    resumed.model.load_state_dict(state["model"])
    resumed.load_state(state["trainer"])
    if batch:  # finish the broken epoch
        for index in range(batch, resumed.n_batches(epoch)):
            resumed.train_batch(epoch, index)
        resumed.end_epoch(epoch, {"train_loss": 0.0})
        epoch += 1
    fit(resumed, digits, range(epoch, epochs + 1))

    for name, tensor in unbroken.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.result() == unbroken.result()
    assert set(unbroken.result()) == {"test_accuracy_before_finetune", "test_loss_before_finetune"}
    assert math.isfinite(resumed.result()["test_accuracy_before_finetune"])


def test_the_stacked_model_is_a_classifier_over_its_encoders(digits: Splits) -> None:
    spec = sae(0, layers=[24, 12])
    model = build_sae(spec, digits.info)
    assert [m[0].out_features for m in model.encoders] == [24, 12]
    assert [m[0].out_features for m in model.decoders] == [64, 24]
    x = digits.test.x[:5]
    assert model(x).shape == (5, 10) and model.reconstruct(x).shape == x.shape
