"""Stacked autoencoder ("sae") on digits: greedy pretraining, head, fine-tuning; the stages
declared on the job; exact resume at every kind of stage boundary."""

import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from core.checkpoint import pack, unpack
from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import Served, get_family
from models.configs.sae import SAEJob
from models.configs.verbs import PredictRequest, ReconstructRequest
from models.loop import Position, fit, restore_trainer, trainer_state
from models.sae import SAETrainer, build_sae

CPU = torch.device("cpu")
DIGITS = {"name": "digits"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    settings = Settings(home=tmp_path_factory.mktemp("digits"))
    return load_dataset(
        SAEJob.model_validate({"family": "sae", "dataset": DIGITS}).dataset, settings
    )


def test_sae_declares_its_stages_and_total_epochs() -> None:
    spec = SAEJob.model_validate({"family": "sae", "dataset": DIGITS, "train": {"epochs": 7}})
    assert spec.total_epochs() == 2 * 20 + 10 + 7
    assert [(s.name, s.epochs, s.monitored) for s in spec.stages()] == [
        ("pretrain_1", 20, False),
        ("pretrain_2", 20, False),
        ("head", 10, False),
        ("finetune", 7, True),
    ]
    assert spec.monitor_from() == 51


def test_sae_config_refuses_non_image_classification() -> None:
    with pytest.raises(ValidationError, match="classifies images"):
        SAEJob.model_validate({"family": "sae", "dataset": {"name": "surface2d"}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        SAEJob.model_validate({"family": "sae", "dataset": DIGITS, "model": {"head_epochs": 0}})


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
    # Epoch 0 (the initial weights) stands before the first stage.
    assert stages == [0.0] * 21 + [1.0] * 20 + [2.0] * 10 + [3.0] * 20
    assert history[20]["train_loss"] < history[1]["train_loss"]  # layer 0 learned to reconstruct
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
    fit(first, digits, until=epoch - 1)
    first.begin_epoch(epoch)
    for index in range(batch):
        first.train_batch(epoch, index)
    blob = pack(trainer_state(first))

    state, _ = unpack(blob)
    torch.manual_seed(1)  # a fresh process; everything comes from the checkpoint
    resumed = SAETrainer(spec, build_sae(spec, digits.info), digits, CPU)
    restore_trainer(resumed, state)
    if batch:  # finish the broken epoch
        resumed.begin_epoch(epoch)
        for index in range(batch, resumed.n_batches(epoch)):
            resumed.train_batch(epoch, index)
        resumed.end_epoch(epoch, {"train_loss": 0.0})
        epoch += 1
    fit(resumed, digits, Position(epoch=epoch))

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
