"""Gradient training shared by every family that learns by backpropagation: optimizers,
learning-rate schedules, penalties, and the step of a named optimizer."""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from core.datasets import Splits
from core.spec import JobSpecBase, OptimizerSpec, ScheduleSpec
from models.base import Trainer
from models.lbfgs import LBFGS


def make_optimizer(
    opt: OptimizerSpec, weight_decay: float, params: list[nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    """`fused`: torch's fused implementation (gd, sgd, momentum, nesterov and adam have one)."""
    wd = weight_decay
    kernel = {"fused": True} if fused else {}
    # eps 0: the smallest normal float instead, which leaves every other sum as it is and makes
    # the update of a parameter that has had no gradient yet 0 (the limit), not 0/0.
    eps = opt.eps or (torch.finfo(params[0].dtype).tiny if params else 0.0)
    match opt.name:
        case "gd" | "sgd":
            return torch.optim.SGD(params, lr=opt.lr, weight_decay=wd, **kernel)
        case "momentum" | "nesterov":
            return torch.optim.SGD(
                params,
                lr=opt.lr,
                momentum=opt.momentum,
                dampening=opt.dampening or 0.0,
                nesterov=opt.name == "nesterov",
                weight_decay=wd,
                **kernel,
            )
        case "adam":
            return torch.optim.Adam(
                params,
                lr=opt.lr,
                betas=tuple(opt.betas),
                eps=eps,
                amsgrad=bool(opt.amsgrad),
                weight_decay=wd,
                **kernel,
            )
        case "adadelta":
            return torch.optim.Adadelta(params, lr=opt.lr, rho=opt.rho, eps=eps, weight_decay=wd)
        case "rmsprop":
            return torch.optim.RMSprop(
                params,
                lr=opt.lr,
                alpha=opt.rho,
                eps=eps,
                momentum=opt.momentum,
                centered=bool(opt.centered),
                weight_decay=wd,
            )
        case "lbfgs":  # no weight_decay argument: penalty() adds the L2 term to the loss
            return LBFGS(
                params,
                lr=opt.lr,
                max_iter=opt.max_iter,
                max_eval=opt.max_eval,
                tolerance_grad=opt.tolerance_grad,
                tolerance_change=opt.tolerance_change,
                history_size=opt.history_size,
                line_search_fn=opt.line_search_fn,
            )
    raise ValueError(f"unknown optimizer {opt.name!r}")


def make_scheduler(
    spec: ScheduleSpec | None,
    optimizer: torch.optim.Optimizer,
    mode: str = "min",
    *,
    epochs: int = 1,
    steps_per_epoch: int = 1,
) -> Any:
    """The schedule over a stage of `epochs` epochs of `steps_per_epoch` steps each."""
    if spec is None:
        return None
    match spec.name:
        case "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(epochs, 1), eta_min=spec.min_lr
            )
        case "one_cycle":  # the learning rate only; momentum and betas stay as configured
            lr = optimizer.param_groups[0]["lr"]
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=spec.max_lr or 10 * lr,
                # It sets the lr for step 0 when made and again after each step: the last
                # batch's step lands on the end of the cycle.
                total_steps=epochs * steps_per_epoch + 1,
                pct_start=spec.pct_start,
                cycle_momentum=False,
            )
        case "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, spec.step_size, spec.gamma)
        case "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, spec.gamma)
        case "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode, factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr
            )
    raise ValueError(f"unknown schedule {spec.name!r}")


def penalty(params: list[nn.Parameter], opt: OptimizerSpec, spec: JobSpecBase) -> Tensor | float:
    """L1 on the weights (not biases), and L2 for LBFGS, which has no weight_decay of its own."""
    train = spec.train
    weights = [p for p in params if p.dim() > 1]
    total: Tensor | float = 0.0
    if train.l1:
        total = total + train.l1 * sum(w.abs().sum() for w in weights)
    if train.weight_decay and opt.name == "lbfgs":
        total = total + 0.5 * train.weight_decay * sum(w.pow(2).sum() for w in weights)
    return total


# Schedules stepped after every optimizer step rather than at the end of an epoch.
PER_BATCH = (torch.optim.lr_scheduler.OneCycleLR,)

Sums = dict[str, Tensor | float]  # sums over a batch, tensors left on the device
LossFn = Callable[[], tuple[Tensor, Sums]]  # -> (mean loss, sums for the epoch)


class GradientTrainer(Trainer):
    """Named optimizers over parts of the model, each with the job's LR schedule.

    A subclass says which parameters each optimizer trains (`trained_parameters`; one
    "model" optimizer over everything by default) and calls `step(name, loss_fn)` in its
    `train_batch`, or `apply_gradients(name, grads)` where it computes the gradient itself
    (contrastive divergence has no loss to differentiate).
    """

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        precision = spec.train.precision
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        # Forward passes under bfloat16 autocast; weights, gradients and optimizer stay float32.
        self.bf16 = precision == "bfloat16" or (
            precision == "auto" and spec.accelerated and cuda_bf16
        )
        self.build_optimizers()

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def trained_parameters(self) -> dict[str, list[nn.Parameter]]:
        """What each optimizer trains in the current stage."""
        return {"model": list(self.model.parameters())}

    def build_optimizers(self) -> None:
        mode = self.spec.metrics().get(self.plateau_metric(), "min")
        self.optimizers, self.schedulers = {}, {}
        for name, params in self.trained_parameters().items():
            opt = make_optimizer(
                self.spec.optimizer_for(name), self.spec.train.weight_decay, params
            )
            self.optimizers[name] = opt
            scheduler = make_scheduler(
                self.spec.train.schedule,
                opt,
                mode,
                epochs=self.stages[self.stage].epochs,
                steps_per_epoch=self.n_batches(1),
            )
            if scheduler is not None:
                self.schedulers[name] = scheduler

    def on_stage(self, stage: int) -> None:
        self.build_optimizers()  # each stage starts with fresh optimizers over what it trains

    def step(self, name: str, loss_fn: LossFn) -> tuple[Tensor, Sums]:
        """One step of optimizer `name` on loss_fn's loss plus the penalties; returns the
        (detached) loss and sums of the (first) evaluation. LBFGS evaluates loss_fn several
        times."""
        optimizer = self.optimizers[name]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        opt_spec = self.spec.optimizer_for(name)
        first: list[tuple[Tensor, dict[str, float]]] = []

        def closure() -> Tensor:
            for p in params:  # optimizer.zero_grad(set_to_none=True), without its profiling
                p.grad = None
            with self.autocast():
                loss, sums = loss_fn()
            # LBFGS's line search needs the value whose gradient it gets: penalties included.
            total = loss + penalty(params, opt_spec, self.spec)
            total.backward()
            self.before_optimizer_step(optimizer)
            if not first:
                first.append((loss.detach(), sums))
            return total

        if isinstance(optimizer, LBFGS):
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        self.after_step(name)
        # A tensor, not a float: reading it would wait for the device after every step; the
        # loop sums tensors on the device and reads them once per epoch.
        return first[0]

    def apply_gradients(self, name: str, grads: Mapping[nn.Parameter, Tensor]) -> None:
        """One step of optimizer `name` along gradients computed without autograd (a
        parameter left out is not moved); L1 adds its subgradient on the weights, and
        weight decay is the optimizer's own."""
        optimizer = self.optimizers[name]
        l1 = self.spec.train.l1
        for group in optimizer.param_groups:
            for p in group["params"]:
                grad = grads.get(p)
                if grad is not None and l1 and p.dim() > 1:
                    grad = grad + l1 * p.detach().sign()
                p.grad = grad
        self.before_optimizer_step(optimizer)
        optimizer.step()
        self.after_step(name)

    def after_step(self, name: str) -> None:
        """A schedule stepped per batch (one_cycle) moves on after each step of its optimizer."""
        scheduler = self.schedulers.get(name)
        if isinstance(scheduler, PER_BATCH):
            scheduler.step()
