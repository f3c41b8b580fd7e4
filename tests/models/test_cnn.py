"""The CNN's conv stack: per-axis kernels, strides and pools, 1-D convolutions over series,
and old job documents (one integer per field, pools without a stride) as they were."""

import math

import torch

from core.catalog import resolve
from core.datasets import load_dataset
from core.settings import Settings
from models.base import Served, for_inference, get_family
from models.configs import verbs as v
from models.registry import REGISTRY  # noqa: F401 - every family registered
from models.specs import parse_job_spec

OLD = {
    "family": "cnn",
    "dataset": {"name": "digits"},
    "model": {
        "conv": [
            {"filters": 4, "kernel": 5, "stride": 1, "padding": 2, "pool": "max"},
            {"filters": 6, "pool": "avg", "pool_size": 2, "batchnorm": True},
        ],
        "dense": [8],
    },
}


def built(document: dict) -> torch.nn.Module:
    spec = parse_job_spec(document)
    torch.manual_seed(0)
    return get_family("cnn").build(spec, resolve(spec.dataset)).eval()


def test_an_old_document_echoes_as_posted_and_builds_its_per_axis_spelling() -> None:
    spec = parse_job_spec(OLD)
    stored = spec.model_dump(mode="json")["model"]["conv"][0]
    assert (stored["kernel"], stored["stride"], stored["padding"]) == (5, 1, 2)
    assert (stored["pool_size"], stored["pool_stride"], stored["pool_padding"]) == (2, None, 0)
    per_axis = {
        "filters": 4,
        "kernel": [5, 5],
        "stride": [1, 1],
        "padding": [2, 2],
        "pool": "max",
        "pool_size": [2, 2],
        "pool_stride": [2, 2],
    }
    spelled = {**OLD, "model": {**OLD["model"], "conv": [per_axis, OLD["model"]["conv"][1]]}}
    old, new = built(OLD), built(spelled)
    assert old.state_dict().keys() == new.state_dict().keys()
    assert all(
        torch.equal(a, b)
        for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True)
    )
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(old(x), new(x))
    pools = [m for m in old.modules() if isinstance(m, torch.nn.MaxPool2d | torch.nn.AvgPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [((2, 2), (2, 2))] * 2


def test_a_1d_cnn_forecasts_a_time_series(settings: Settings) -> None:
    document = {
        "family": "cnn",
        "dataset": {"name": "mackey_glass", "lag": 16, "n_points": 300},
        "model": {
            "conv": [
                {"filters": 4, "kernel": 5, "pool": "max", "pool_size": 3, "pool_stride": 1},
                {"filters": 4, "kernel": [3], "stride": 2, "batchnorm": True},
            ],
            "dense": [8],
        },
    }
    family = get_family("cnn")
    spec = family.spec.model_validate(document)
    assert spec.task == "regression"
    splits = load_dataset(spec.dataset, settings)
    model = family.build(spec, splits.info)
    convs = [type(m).__name__ for m in model.to_features if "Conv" in type(m).__name__]
    assert convs == ["Conv1d", "Conv1d"]
    trainer = family.trainer(spec, model, splits, torch.device("cpu"))
    trainer.begin_epoch(1)
    stats = trainer.train_batch(1, 0)
    assert stats["count"] > 0 and all(math.isfinite(x) for x in stats.values())
    served = Served(
        module=for_inference(model, torch.device("cpu")),
        spec=spec,
        info=splits.info,
        dataset=lambda: splits,
    )
    predicted = family.verbs["predict"](served, v.PredictRequest(inputs=[[0.5] * 16] * 2))
    assert len(predicted["outputs"]) == 2 and len(predicted["outputs"][0]) == 1
    forecast = family.verbs["forecast"](served, v.ForecastRequest(steps=5))
    assert len(forecast["forecast"]) == 5 and all(map(math.isfinite, forecast["forecast"]))
