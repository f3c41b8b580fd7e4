"""Gradient training shared by every family that learns by backpropagation: optimizers,
learning-rate schedules, penalties, input noise and the deterministic batch order."""

import math
from typing import Any

import torch
from torch import nn

from core.datasets import Splits
from core.spec import FULL_BATCH, JobSpecBase, ScheduleSpec, TrainSpec
from models.base import Trainer


def make_optimizer(train: TrainSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    opt, wd = train.optimizer, train.weight_decay
    match opt.name:
        case "gd" | "sgd":
            return torch.optim.SGD(params, lr=opt.lr, weight_decay=wd)
        case "momentum" | "nesterov":
            return torch.optim.SGD(
                params,
                lr=opt.lr,
                momentum=opt.momentum,
                nesterov=opt.name == "nesterov",
                weight_decay=wd,
            )
        case "adam":
            return torch.optim.Adam(params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=wd)
        case "adadelta":
            return torch.optim.Adadelta(params, lr=opt.lr, rho=opt.rho, weight_decay=wd)
        case "rmsprop":
            return torch.optim.RMSprop(
                params, lr=opt.lr, alpha=opt.rho, momentum=opt.momentum, weight_decay=wd
            )
        case "lbfgs":  # no weight_decay argument: penalty() adds the L2 term to the loss
            return torch.optim.LBFGS(
                params,
                lr=opt.lr,
                max_iter=opt.max_iter,
                history_size=opt.history_size,
                line_search_fn="strong_wolfe",
            )
    raise ValueError(f"unknown optimizer {opt.name!r}")


def make_scheduler(spec: ScheduleSpec | None, optimizer: torch.optim.Optimizer) -> Any:
    if spec is None:
        return None
    match spec.name:
        case "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, spec.step_size, spec.gamma)
        case "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, spec.gamma)
        case "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr
            )
    raise ValueError(f"unknown schedule {spec.name!r}")


def penalty(model: nn.Module, train: TrainSpec) -> torch.Tensor | float:
    """L1 on the weights (not biases), and L2 for LBFGS, which has no weight_decay of its own."""
    weights = [p for p in model.parameters() if p.dim() > 1]
    total: torch.Tensor | float = 0.0
    if train.l1:
        total = total + train.l1 * sum(w.abs().sum() for w in weights)
    if train.weight_decay and train.optimizer.name == "lbfgs":
        total = total + 0.5 * train.weight_decay * sum(w.pow(2).sum() for w in weights)
    return total


class GradientTrainer(Trainer):
    """Minibatches of tensors already on the device, one optimizer, an optional LR schedule.

    Subclasses say what a batch's loss is (`batch_loss`) and how to evaluate a split.
    """

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.optimizer = make_optimizer(spec.train, self.parameters())
        self.scheduler = make_scheduler(spec.train.schedule, self.optimizer)
        n = len(splits.train)
        full = spec.train.optimizer.name in FULL_BATCH
        self.batch_size = n if full else min(spec.train.batch_size, n)
        self._order: tuple[int, torch.Tensor] | None = None

    def parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains (all of the model unless a family says otherwise)."""
        return list(self.model.parameters())

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's mean loss (to minimise) and extra sums for the epoch's metrics."""
        raise NotImplementedError

    def n_batches(self, epoch: int) -> int:
        return math.ceil(len(self.splits.train) / self.batch_size)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The order of an epoch depends on (seed, epoch) alone, so a run resumed mid-epoch
        # sees exactly the batches it would have seen.
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.spec.train.seed * 100_003 + epoch)
            order = torch.randperm(len(self.splits.train), generator=generator)
            self._order = (epoch, order.to(self.device))
        idx = self._order[1][index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.splits.train.x[idx], self.splits.train.y[idx]
        if self.spec.train.input_noise:
            x = x + self.spec.train.input_noise * torch.randn_like(x)
        return x, y

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        x, y = self.batch(epoch, index)
        self.model.train()
        first: list[tuple[torch.Tensor, dict[str, float]]] = []

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            loss, extra = self.batch_loss(x, y)
            (loss + penalty(self.model, self.spec.train)).backward()
            if not first:
                first.append((loss.detach(), extra))
            return loss

        if isinstance(self.optimizer, torch.optim.LBFGS):
            self.optimizer.step(closure)
        else:
            closure()
            self.optimizer.step()
        loss, extra = first[0]
        return {"loss": loss.item() * len(x), "count": float(len(x)), **extra}

    def epoch_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"train_loss": sums["loss"] / sums["count"]}

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metrics.get("val_loss", metrics["train_loss"]))
        elif self.scheduler is not None:
            self.scheduler.step()
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
