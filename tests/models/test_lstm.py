"""LSTM: forecasting Mackey-Glass (with the MLP as a baseline), digits read row by row, config."""

import pytest
import torch
from pydantic import ValidationError

from core.catalog import CATALOG
from core.datasets import Splits
from core.settings import Settings
from models.base import Served, Trainer
from models.configs.lstm import LSTMJob
from models.configs.verbs import ForecastRequest, PredictRequest
from models.lstm import LSTM
from models.registry import get_family
from models.specs import parse_job_spec
from tests.models.support import train

MACKEY_GLASS = {"name": "mackey_glass", "lag": 30}


@pytest.fixture(scope="module")
def lstm_forecaster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, Splits]:
    """An LSTM on Mackey-Glass with every default (hidden 64, Adam 1e-3, 20 epochs)."""
    settings = Settings(home=tmp_path_factory.mktemp("lstm"))
    return train({"family": "lstm", "dataset": MACKEY_GLASS}, settings)


def test_lstm_with_defaults_forecasts_mackey_glass(lstm_forecaster) -> None:
    trainer, splits = lstm_forecaster
    assert trainer.evaluate(splits.test)["nmse"] < 0.05


def test_mlp_with_defaults_forecasts_mackey_glass(settings: Settings) -> None:
    trainer, splits = train({"family": "mlp", "dataset": MACKEY_GLASS}, settings)
    assert trainer.evaluate(splits.test)["nmse"] < 0.05


def test_lstm_forecast_verb_follows_the_series(lstm_forecaster) -> None:
    trainer, splits = lstm_forecaster
    family = get_family("lstm")
    served = Served(
        module=trainer.model, spec=trainer.spec, info=splits.info, dataset=lambda: splits
    )
    answer = family.verbs["forecast"](served, ForecastRequest(steps=40))
    assert answer["start"] == "test"
    assert len(answer["forecast"]) == len(answer["truth"]) == 40
    errors = [abs(f - t) for f, t in zip(answer["forecast"], answer["truth"], strict=True)]
    assert max(errors[:10]) < 0.25 * splits.info.series_std, errors[:10]

    # The same start given as history (in the series' units) gives the same forecast.
    info = splits.info
    history = (splits.test.x[0] * info.series_std + info.series_mean).tolist()
    again = family.verbs["forecast"](served, ForecastRequest(steps=40, history=history))
    assert again["start"] == "history" and again["truth"] is None
    assert again["forecast"] == pytest.approx(answer["forecast"], abs=1e-4)


def test_lstm_classifies_digits_read_row_by_row(settings: Settings) -> None:
    trainer, splits = train(
        {
            "family": "lstm",
            "dataset": {"name": "digits"},
            "train": {"epochs": 10, "optimizer": {"name": "adam", "lr": 0.005}},
        },
        settings,
    )
    assert trainer.evaluate(splits.test)["accuracy"] > 0.8
    served = Served(
        module=trainer.model, spec=trainer.spec, info=splits.info, dataset=lambda: splits
    )
    x = splits.test.x[:16]
    answer = get_family("lstm").verbs["predict"](served, PredictRequest(inputs=x.tolist()))
    assert answer["outputs"] == trainer.model(x).argmax(1).tolist()
    assert answer["class_names"] == [str(k) for k in answer["outputs"]]


@pytest.mark.parametrize("name", ["digits", "fashion_mnist", "surface2d", "mackey_glass"])
def test_every_input_shape_reads_as_a_sequence(name: str) -> None:
    """Stacked, bidirectional, with a head: sizes agree for each shape."""
    info = CATALOG[name]
    spec = LSTMJob.model_validate(
        {
            "family": "lstm",
            "dataset": {"name": name},
            "model": {
                "hidden": 12,
                "layers": 2,
                "dropout": 0.1,
                "bidirectional": True,
                "head": [8],
            },
        }
    )
    module = get_family("lstm").build(spec, info)
    n_out = info.n_classes or info.target_dim
    assert module(torch.rand(3, *info.input_shape)).shape == (3, n_out)


def test_bidirectional_reads_each_direction_to_its_end() -> None:
    """The backward direction's state is taken after it has read back to the first step."""
    config = LSTMJob.model_validate(
        {"family": "lstm", "dataset": {"name": "digits"}, "model": {"bidirectional": True}}
    ).model
    module = LSTM(input_shape=(1, 8, 8), n_out=10, config=config).eval()
    x = torch.rand(4, 1, 8, 8)
    outputs, _ = module.lstm(x.reshape(4, 8, 8))  # (batch, steps, 2 * hidden)
    expected = torch.cat([outputs[:, -1, :64], outputs[:, 0, 64:]], dim=1)
    assert torch.allclose(module(x), module.to_outputs(expected), atol=1e-6)


def test_config_bounds_and_defaults() -> None:
    spec = parse_job_spec({"family": "lstm", "dataset": {"name": "mackey_glass"}})
    assert isinstance(spec, LSTMJob)
    assert spec.model.model_dump() == {
        "hidden": 64,
        "layers": 1,
        "dropout": 0.0,
        "bidirectional": False,
        "head": [],
        "activation": "relu",
    }
    bad = [
        ({"hidden": 0}, "greater than or equal to 1"),
        ({"hidden": "64"}, "valid integer"),
        ({"layers": 9}, "less than or equal to 8"),
        ({"dropout": 0.2}, "needs layers >= 2"),
        ({"cells": 3}, "Extra inputs"),
    ]
    for model, message in bad:
        with pytest.raises(ValidationError, match=message):
            parse_job_spec({"family": "lstm", "dataset": {"name": "digits"}, "model": model})
