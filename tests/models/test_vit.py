"""ViT: learns digits, returns attention maps over its patches, checks its config."""

import pytest
import torch
from pydantic import ValidationError

from core.catalog import CATALOG
from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import BadRequest, Served, Trainer
from models.configs.verbs import PredictRequest
from models.configs.vit import ViTJob
from models.registry import get_family
from models.specs import parse_job_spec
from models.vit import MAX_ATTENTION_INPUTS, Patches
from tests.models.support import train


def served(trainer: Trainer, splits: Splits) -> Served:
    return Served(module=trainer.model, spec=trainer.spec, info=splits.info, dataset=lambda: splits)


def test_vit_with_defaults_learns_digits_and_shows_its_attention(settings: Settings) -> None:
    # Defaults: 4x4 patches (a 2x2 grid on 8x8 digits), dim 64, depth 4, CLS pooling.
    trainer, splits = train(
        {"family": "vit", "dataset": {"name": "digits"}, "train": {"epochs": 5}}, settings
    )
    assert trainer.evaluate(splits.test)["accuracy"] > 0.8

    x = splits.test.x[:5]
    request = PredictRequest(inputs=x.tolist(), attention=True)
    answer = get_family("vit").verbs["predict"](served(trainer, splits), request)
    assert answer["outputs"] == trainer.model(x).argmax(1).tolist()
    maps = torch.tensor(answer["attention"])
    assert maps.shape == (5, 4, 2, 2)  # (examples, layers, H / patch, W / patch)
    # The CLS token's row sums to 1 over [CLS, patches]; the map holds the patches' part.
    with torch.inference_mode():
        weights = trainer.model.run(x, attention=True)[1]  # (batch, depth, tokens, tokens)
    patch_sums = maps.sum(dim=(2, 3))
    assert (patch_sums > 0).all() and (patch_sums <= 1 + 1e-5).all()
    assert torch.allclose(patch_sums + weights[:, :, 0, 0], torch.ones(5, 4), atol=1e-5)

    # Without attention the answer has none, as for any classifier.
    plain = get_family("vit").verbs["predict"](
        served(trainer, splits), PredictRequest(inputs=x.tolist())
    )
    assert "attention" not in plain and plain["outputs"] == answer["outputs"]


def test_vit_with_small_patches_and_mean_pooling(settings: Settings) -> None:
    trainer, splits = train(
        {
            "family": "vit",
            "dataset": {"name": "digits"},
            "model": {"patch": 2, "dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "pool": "mean"},
            "train": {"epochs": 10, "optimizer": {"name": "adam", "lr": 0.003}},
        },
        settings,
    )
    assert trainer.evaluate(splits.test)["accuracy"] > 0.8
    request = PredictRequest(inputs=splits.test.x[:3].tolist(), attention=True)
    maps = torch.tensor(
        get_family("vit").verbs["predict"](served(trainer, splits), request)["attention"]
    )
    assert maps.shape == (3, 2, 4, 4)
    # No CLS token: the patch tokens' attention, averaged over them, sums to 1 over patches.
    assert torch.allclose(maps.sum(dim=(2, 3)), torch.ones(3, 2), atol=1e-5)


def test_attention_is_bounded_to_a_few_inputs(settings: Settings) -> None:
    spec = ViTJob.model_validate(
        {
            "family": "vit",
            "dataset": {"name": "digits"},
            "model": {"dim": 8, "depth": 1, "heads": 2},
        }
    )
    splits = load_dataset(spec.dataset, settings)
    model = get_family("vit").build(spec, splits.info).eval()
    model_served = Served(module=model, spec=spec, info=splits.info, dataset=lambda: splits)
    inputs = splits.test.x[: MAX_ATTENTION_INPUTS + 1].tolist()
    predict = get_family("vit").verbs["predict"]
    with pytest.raises(BadRequest) as caught:
        predict(model_served, PredictRequest(inputs=inputs, attention=True))
    assert caught.value.field == "inputs"
    assert len(predict(model_served, PredictRequest(inputs=inputs))["outputs"]) == len(inputs)


def test_patches_are_cut_row_by_row() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    patches = Patches(2)(x)  # (batch, patches, C * p * p)
    assert patches.shape == (2, 6, 12)
    assert torch.equal(patches[:, 0], x[:, :, 0:2, 0:2].reshape(2, -1))
    assert torch.equal(patches[:, 1], x[:, :, 0:2, 2:4].reshape(2, -1))
    assert torch.equal(patches[:, 3], x[:, :, 2:4, 0:2].reshape(2, -1))


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_the_module_gives_one_logit_per_class(name: str, pool: str) -> None:
    info = CATALOG[name]
    spec = ViTJob.model_validate(
        {"family": "vit", "dataset": {"name": name}, "model": {"pool": pool}}
    )
    module = get_family("vit").build(spec, info)
    assert module(torch.rand(2, *info.input_shape)).shape == (2, 10)


def test_config_bounds_and_defaults() -> None:
    spec = parse_job_spec({"family": "vit", "dataset": {"name": "fashion_mnist"}})
    assert isinstance(spec, ViTJob)
    assert spec.model.model_dump() == {
        "patch": 4,
        "dim": 64,
        "depth": 4,
        "heads": 4,
        "mlp_dim": 128,
        "dropout": 0.1,
        "pool": "cls",
    }
    assert spec.model.grid((1, 28, 28)) == (7, 7)
    bad = [
        ("digits", {"patch": 3}, r"model.patch 3 must divide the image's height and width \(8x8\)"),
        ("digits", {"dim": 30, "heads": 4}, "dim 30 must be a multiple of heads 4"),
        ("digits", {"depth": 0}, "greater than or equal to 1"),
        ("digits", {"pool": "max"}, "'cls' or 'mean'"),
        ("digits", {"heads": 4.5}, "valid integer"),  # 4.0 is the integer 4, as in JSON
        ("digits", {"tokens": 5}, "Extra inputs"),
        ("surface2d", {}, "a ViT needs image inputs; 'surface2d'"),
    ]
    for dataset, model, message in bad:
        with pytest.raises(ValidationError, match=message):
            parse_job_spec({"family": "vit", "dataset": {"name": dataset}, "model": model})
