"""Shared by the families that map inputs to labels or values (MLP, CNN): activations, optimizers,
the minibatch trainer and the `predict` verb."""

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from core.spec import FULL_BATCH, JobSpecBase, TrainSpec
from models.base import Trainer

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


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
        case "lbfgs":  # no weight_decay argument: the trainer adds the L2 term to the loss
            return torch.optim.LBFGS(
                params,
                lr=opt.lr,
                max_iter=opt.max_iter,
                history_size=opt.history_size,
                line_search_fn="strong_wolfe",
            )
    raise ValueError(f"unknown optimizer {opt.name!r}")


def _penalty(model: nn.Module, train: TrainSpec) -> torch.Tensor | float:
    """L1 on the weights (not biases), and L2 for LBFGS, which has no weight_decay of its own."""
    weights = [p for p in model.parameters() if p.dim() > 1]
    total: torch.Tensor | float = 0.0
    if train.l1:
        total = total + train.l1 * sum(w.abs().sum() for w in weights)
    if train.weight_decay and train.optimizer.name == "lbfgs":
        total = total + 0.5 * train.weight_decay * sum(w.pow(2).sum() for w in weights)
    return total


class SupervisedTrainer(Trainer):
    """Minibatch training on tensors already on the device: cross-entropy or MSE, any optimizer."""

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.classify = spec.task == "classification"
        self.optimizer = make_optimizer(spec.train, list(model.parameters()))
        n = len(splits.train)
        full = spec.train.optimizer.name in FULL_BATCH
        self.batch_size = n if full else min(spec.train.batch_size, n)
        self._order: tuple[int, torch.Tensor] | None = None

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, y) if self.classify else F.mse_loss(outputs, y)

    def n_batches(self, epoch: int) -> int:
        return math.ceil(len(self.splits.train) / self.batch_size)

    def _batch_indices(self, epoch: int, index: int) -> torch.Tensor:
        # The order of an epoch depends on (seed, epoch) alone, so a run resumed mid-epoch
        # sees exactly the batches it would have seen.
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.spec.train.seed * 100_003 + epoch)
            order = torch.randperm(len(self.splits.train), generator=generator)
            self._order = (epoch, order.to(self.device))
        return self._order[1][index * self.batch_size : (index + 1) * self.batch_size]

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        idx = self._batch_indices(epoch, index)
        x, y = self.splits.train.x[idx], self.splits.train.y[idx]
        self.model.train()
        first: list[tuple[torch.Tensor, torch.Tensor]] = []

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            outputs = self.model(x)
            loss = self.loss(outputs, y)
            (loss + _penalty(self.model, self.spec.train)).backward()
            if not first:
                first.append((outputs.detach(), loss.detach()))
            return loss

        if isinstance(self.optimizer, torch.optim.LBFGS):
            self.optimizer.step(closure)
        else:
            closure()
            self.optimizer.step()
        outputs, loss = first[0]
        stats = {"loss": loss.item() * len(y), "count": float(len(y))}
        if self.classify:
            stats["correct"] = (outputs.argmax(1) == y).sum().item()
        return stats

    def epoch_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        metrics = {"train_loss": sums["loss"] / sums["count"]}
        if self.classify:
            metrics["train_accuracy"] = sums["correct"] / sums["count"]
        else:
            metrics["train_mse"] = metrics["train_loss"]
        return metrics

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(split), 4096):
            x, y = split.x[start : start + 4096], split.y[start : start + 4096]
            outputs = self.model(x)
            loss_sum += self.loss(outputs, y).item() * len(y)
            if self.classify:
                correct += (outputs.argmax(1) == y).sum().item()
        metrics = {"loss": loss_sum / len(split)}
        metrics["accuracy" if self.classify else "mse"] = (
            correct / len(split) if self.classify else metrics["loss"]
        )
        return metrics

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def inputs_tensor(inputs: list[Any], info: DatasetInfo, *, raw: bool) -> torch.Tensor:
    """The request's inputs as a (n, *input_shape) batch; ValueError names what does not fit."""
    x = torch.as_tensor(inputs, dtype=torch.float32)
    per_example = math.prod(info.input_shape)
    if x.dim() == 0 or x[0].numel() != per_example:
        raise ValueError(
            f"each input must hold {per_example} numbers (shape {list(info.input_shape)})"
        )
    if not torch.isfinite(x).all():
        raise ValueError("inputs must be finite numbers")
    x = x.reshape(len(x), *info.input_shape)
    return x / info.input_scale if raw else x


@torch.inference_mode()
def predict(model: nn.Module, spec: JobSpecBase, info: DatasetInfo, request: Any) -> dict[str, Any]:
    """Class labels and probabilities for a classifier, values for a regressor."""
    device = next(model.parameters()).device
    x = inputs_tensor(request.inputs, info, raw=request.raw).to(device)
    outputs = model(x)
    if spec.task != "classification":
        return {"outputs": outputs.cpu().tolist()}
    probabilities = outputs.softmax(1)
    labels = probabilities.argmax(1).cpu().tolist()
    answer: dict[str, Any] = {"outputs": labels, "probabilities": probabilities.cpu().tolist()}
    if info.classes:
        answer["class_names"] = [info.classes[k] for k in labels]
    return answer
