"""Training in-process as the runner does, minus the database: shared by the family tests."""

import torch

from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import Trainer
from models.registry import get_family


def fit(trainer: Trainer, splits: Splits, epochs: range | None = None) -> list[dict[str, float]]:
    """Run the trainer epoch by epoch (all of them by default); return each epoch's metrics."""
    history = []
    for epoch in range(1, trainer.spec.total_epochs() + 1) if epochs is None else epochs:
        trainer.begin_epoch(epoch)
        sums: dict[str, float] = {}
        for index in range(trainer.n_batches(epoch)):
            for name, value in trainer.train_batch(epoch, index).items():
                sums[name] = sums.get(name, 0.0) + value
        metrics = trainer.epoch_metrics(sums)
        if splits.val is not None:
            metrics |= {f"val_{k}": v for k, v in trainer.evaluate(splits.val).items()}
        trainer.end_epoch(epoch, metrics)
        if len(trainer.stages) > 1:
            metrics["stage"] = float(trainer.stage)
        history.append(metrics)
    return history


def train(document: dict, settings: Settings) -> tuple[Trainer, Splits]:
    """Build a job's model from its document, train it on CPU, leave it in eval mode."""
    torch.manual_seed(0)
    family = get_family(document["family"])
    spec = family.spec.model_validate(document)
    splits = load_dataset(spec.dataset, settings)
    trainer = family.trainer(spec, family.build(spec, splits.info), splits, torch.device("cpu"))
    fit(trainer, splits)
    trainer.model.eval()
    return trainer, splits
