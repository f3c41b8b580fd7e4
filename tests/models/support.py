"""Training a job's model in-process through models/loop.py, without the database."""

import torch

from core.datasets import Splits, load_dataset
from core.settings import Settings
from models.base import Trainer
from models.loop import fit
from models.registry import get_family


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
