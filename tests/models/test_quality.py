"""Sample quality: the Frechet distance itself, the per-dataset feature classifier kept in SQL,
and what the measure says of real images, noise and a collapsed generator."""

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from core.datasets import load_dataset
from core.db import FeatureNet, session_scope
from core.settings import Settings
from core.spec import DatasetSpec
from models import quality

CPU = torch.device("cpu")


def test_frechet_distance_of_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20_000, 4))
    b = rng.normal(size=(20_000, 4))
    assert quality.frechet_distance(a, b) == pytest.approx(0.0, abs=0.01)
    shifted = b + np.array([1.0, 2.0, 0.0, 0.0])
    assert quality.frechet_distance(a, shifted) == pytest.approx(5.0, rel=0.02)
    # Same means, std 2 instead of 1 in every direction: Tr(I + 4I - 2 * 2I) = 4 * 1.
    assert quality.frechet_distance(a, 2 * b) == pytest.approx(4.0, rel=0.05)


def test_the_feature_net_is_trained_once_per_dataset_and_kept(settings: Settings) -> None:
    spec = DatasetSpec(name="digits")
    first = quality.feature_net(spec, settings, CPU)
    again = quality.feature_net(spec, settings, CPU)
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(FeatureNet)) == 1
        facts = session.get(FeatureNet, f"digits/{quality.RECIPE}").info
    assert facts["test_accuracy"] > 0.9, facts
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_real_images_score_far_better_than_noise_and_collapse_shows(settings: Settings) -> None:
    net = quality.feature_net(DatasetSpec(name="digits"), settings, CPU)
    splits = load_dataset(DatasetSpec(name="digits"), settings)
    real = quality.measure(net, splits.train.x[:1000], splits.test)
    assert real["frechet_distance"] < 0.1 * real["frechet_distance_noise"], real
    assert real["sample_class_entropy"] > 0.95 and len(real["sample_class_histogram"]) == 10
    collapsed = quality.measure(net, splits.train.x[:1].repeat(500, 1, 1, 1), splits.test)
    assert collapsed["sample_class_entropy"] == 0.0
    assert max(collapsed["sample_class_histogram"]) == 1.0
    assert collapsed["frechet_distance"] > 3 * real["frechet_distance"]
