"""A stack's batches taken for all members at once (models/stack.py, _Feed) are each member's
own batches, as its trainer takes them alone."""

from typing import Any

import pytest
import torch

from core.datasets import fold_splits, load_dataset
from core.settings import Settings
from models.base import Trainer
from models.registry import get_family
from models.stack import Stack, _Feed


def trainers(settings: Settings, documents: list[dict[str, Any]]) -> list[Trainer]:
    """Each fold of each job a trainer; jobs with one dataset section share its splits, as a
    worker's stack does."""
    made, loaded = [], {}
    for document in documents:
        family = get_family(document["family"])
        spec = family.spec.model_validate(document)
        section = spec.dataset.model_dump_json()
        data = loaded.setdefault(section, load_dataset(spec.dataset, settings))
        folds = spec.dataset.kfold or 1
        for fold in range(folds):
            splits = fold_splits(data, folds, fold) if folds > 1 else data
            model = family.build(spec, splits.info)
            made.append(family.trainer(spec, model, splits, torch.device("cpu")))
    return made


def series(seed: int, hidden: int, kfold: int | None = 3) -> dict[str, Any]:
    return {
        "family": "mlp",
        "dataset": {"name": "mackey_glass", "n_points": 403, "kfold": kfold, "lag": 10},
        "model": {"hidden": [hidden]},
        "train": {"seed": seed, "batch_size": 32},
    }


def test_fed_batches_are_each_members_own(tmp_path: Any) -> None:
    """Folds of different sizes, two seeds (two orders), splits shared and not: every batch
    where the members' sizes agree is theirs to the bit; where they differ (an epoch's last
    batch) the feed gives none and each member takes its own."""
    documents = [series(1, 8), series(2, 16), series(3, 8, kfold=None), series(4, 8, kfold=None)]
    members = trainers(Settings(home=tmp_path), documents)
    sizes = {len(t.splits.train) for t in members}
    assert len(sizes) > 1  # the folds' training splits differ in size
    feed = _Feed.of(members)
    assert feed is not None
    # Each fold's own training split, and one the two jobs without folds share.
    assert len({id(t.splits.train.x) for t in members}) == 7
    fed = skipped = 0
    for epoch in (1, 2):
        for index in range(members[0].n_batches(epoch)):
            batch = feed.batch(epoch, index)
            own = [t.batch(epoch, index) for t in members]
            if batch is None:
                skipped += 1
                assert len({len(b.y) for b in own}) > 1
                continue
            fed += 1
            for k, b in enumerate(own):
                assert torch.equal(batch.x[k], b.x)
                assert torch.equal(batch.y[k], b.y)
                assert torch.equal(batch.index[k], b.index)
    assert fed > 0 and skipped == 2  # one last batch an epoch


@pytest.mark.parametrize("change", ["input_noise", "widths"])
def test_noise_takes_per_member_batches(tmp_path: Any, change: str) -> None:
    """Input noise is drawn from each member's own stream: no feed. Members of different
    widths (a padded stack) are fed."""
    documents = [series(1, 8), series(2, 16 if change == "widths" else 8)]
    if change == "input_noise":
        documents[1]["train"]["input_noise"] = 0.1
    stack = Stack(trainers(Settings(home=tmp_path), documents))
    assert (stack.feed is None) == (change == "input_noise")
