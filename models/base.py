"""What a family is (spec, module builder, trainer, inference verbs) and the registry of them."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from core.spec import JobSpecBase


class Trainer:
    """A family's training run, stepped batch by batch by the worker's runner.

    The runner owns the loop, checkpoints, metrics rows, leases and cancellation; a trainer owns
    the model, its optimizers and what one batch of training means for its family.
    """

    model: nn.Module

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        self.spec, self.model, self.splits, self.device = spec, model, splits, device

    def total_epochs(self) -> int:
        """Runner epochs in the whole run (families with stages, like SAE, add theirs)."""
        return self.spec.train.epochs

    def monitor_from(self) -> int:
        """The first epoch early stopping judges (a staged family skips its pretraining)."""
        return 1

    def n_batches(self, epoch: int) -> int:
        raise NotImplementedError

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        """Train on batch `index` of `epoch`; return sums over the batch (must include `loss`)."""
        raise NotImplementedError

    def epoch_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-epoch training metrics from the summed batch statistics."""
        raise NotImplementedError

    def evaluate(self, split: Split) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Everything but the model weights that a resumed run needs (optimizer state, ...)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch with its metrics (learning-rate schedules hang here)."""

    def result(self) -> dict[str, float]:
        """Family-specific results added to the job's result at the end (after the test run)."""
        return {}


@dataclass
class Served:
    """A trained model as the verbs see it, with the job's dataset on demand."""

    module: nn.Module  # in eval mode
    spec: JobSpecBase
    info: DatasetInfo
    dataset: Callable[[], Splits]  # loads (once) the job's dataset, for verbs that need it

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


class BadRequest(ValueError):
    """A verb's input does not fit the model; the API answers 422 naming `field`."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


Verb = Callable[[Served, Any], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    name: str
    spec: type[JobSpecBase]
    build: Callable[[JobSpecBase, DatasetInfo], nn.Module]
    trainer: type[Trainer]
    verbs: Mapping[str, Verb] = field(default_factory=dict)


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in REGISTRY:
        raise ValueError(f"model family {family.name!r} is registered twice")
    REGISTRY[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model family {name!r}; known: {', '.join(sorted(REGISTRY))}"
        ) from None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
