"""Shared by the families that map inputs to labels or values (MLP, CNN, LSTM, ViT):
activations, the supervised trainer and the `predict` and `forecast` verbs."""

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.datasets import Split, Splits
from core.spec import JobSpecBase
from models.base import (
    BadRequest,
    Batch,
    Batchable,
    ImageQuery,
    Lines,
    Served,
    to_channels_last,
)
from models.configs.verbs import MAX_FORECAST_STEPS, ForecastRequest, PredictRequest
from models.lbfgs import LBFGS
from models.training import GradientTrainer, Sums

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


def stacks_exactly(model: nn.Module) -> bool:
    """Whether the model's stacked form gives each model of a stack of any size the bits of
    its stack of one (an MLP's `stacks_exactly`); False for a model without one."""
    exact = getattr(model, "stacks_exactly", None)
    return exact is not None and exact()


class SupervisedTrainer(GradientTrainer):
    """Inputs to labels (cross-entropy) or to values (MSE)."""

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.classify = spec.task == "classification"
        self.channels_last = to_channels_last(model)
        # Training steps go through the compiled module (same parameters); evaluation, whose
        # batches differ in size, through the plain one.
        self.forward = torch.compile(model) if spec.train.compile else model
        self.exact_stack = stacks_exactly(model)  # see member_loss

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        if self.classify:
            return F.cross_entropy(outputs, y, label_smoothing=smoothing)
        return F.mse_loss(outputs, y)

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, Sums]:
        if isinstance(self.optimizers.get("model"), LBFGS):
            found = self.member_loss(batch)
            if found is not None:
                return found
        outputs = self.forward(self.inputs(batch.x))
        # Smoothing shapes the training loss only; evaluation reports the plain cross-entropy.
        loss = self.loss(outputs, batch.y, self.spec.train.label_smoothing)
        if self.classify:
            return loss, {"accuracy": (outputs.argmax(1) == batch.y).sum()}
        return loss, {"mse": loss.detach() * len(batch.y)}

    def member_loss(self, batch: Batch) -> tuple[torch.Tensor, Sums] | None:
        """The loss and sums as a stack of models computes them (`stacked_batch_loss`), for a
        stack of this one model; None where the model has no stacked form that gives each
        model of a stack its own bits (`stacks_exactly`). An LBFGS model trains on this loss:
        LBFGS turns a last-bit difference into another run, and a stack on one thread then
        gives each of its models these very bits in one pass (models/stack.py)."""
        if not self.exact_stack:
            return None
        params = {n: p.unsqueeze(0) for n, p in self.model.named_parameters()}
        params |= {n: b.unsqueeze(0) for n, b in self.model.named_buffers()}
        one = Batch(
            x=batch.x[None], y=batch.y[None], clean=batch.clean[None], index=batch.index[None]
        )
        found = self.stacked_batch_loss(params, one)
        if found is None:
            return None
        losses, sums = found
        return losses[0], {name: value[0] for name, value in sums.items()}

    def stacked_batch_loss(
        self, params: dict[str, torch.Tensor], batch: Batch, products: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        if type(self).batch_loss is not SupervisedTrainer.batch_loss:
            return None  # a subclass's own loss: vmapped
        smoothing = self.spec.train.label_smoothing
        found = self.stacked_figures(params, batch.x, batch.y, smoothing, products)
        if found is None:
            return None
        losses, correct = found
        if correct is not None:
            return losses, {"accuracy": correct}
        return losses, {"mse": losses.detach() * batch.y.shape[1]}

    def stacked_figures(
        self,
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        smoothing: float = 0.0,
        products: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """K models' `loss` on their stacked inputs x (K, n, ...) and targets y (K, n, ...),
        and (classification) their right answers, K values each. None where the model has no
        stacked forward (an MLP's has one) or the trainer does not run it plainly (compiled,
        channels-last)."""
        stacked = getattr(self.model, "stacked", None)
        if stacked is None or self.forward is not self.model or self.channels_last:
            return None
        outputs = stacked(params, x, products)
        if outputs is None:
            return None
        outputs = outputs.float()
        k, n = outputs.shape[:2]
        if self.classify:
            flat = F.cross_entropy(
                outputs.flatten(0, 1), y.flatten(), label_smoothing=smoothing, reduction="none"
            )
            return flat.view(k, n).mean(1), (outputs.argmax(2) == y).sum(1)
        return F.mse_loss(outputs, y, reduction="none").flatten(1).mean(1), None

    def train_batch(self, epoch: int, index: int) -> Sums:
        batch = self.batch(epoch, index)
        self.model.train()
        loss, sums = self.step("model", lambda: self.batch_loss(batch))
        n = len(batch.y)
        return {"loss": loss * n, "count": float(n), **sums}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        self.model.eval()
        loss_sum, correct = 0.0, 0
        chunk = self.eval_chunk
        for start in range(0, len(split), chunk):
            x, y = split.x[start : start + chunk], split.y[start : start + chunk]
            with self.autocast():
                outputs = self.model(self.inputs(x)).float()
            loss_sum += self.loss(outputs, y).item() * len(y)
            if self.classify:
                correct += (outputs.argmax(1) == y).sum().item()
        return self.figures(loss_sum / len(split), correct, split)

    def figures(self, loss: float, correct: int, split: Split) -> dict[str, float]:
        """A split's figures from its mean loss and (classification) its correct answers."""
        metrics = {"loss": loss}
        if self.classify:
            metrics["accuracy"] = correct / len(split)
        else:
            # NMSE: the MSE over the targets' variance (1 = no better than predicting the mean).
            metrics["mse"] = loss
            metrics["nmse"] = loss / max(split.y_variance, 1e-12)
        return metrics


MAX_INPUT = 1e6  # no feature this service trains on comes near it; 1e30 is a mistake


def inputs_tensor(served: Served, inputs: list[Any], *, raw: bool) -> torch.Tensor:
    """The request's inputs as a (n, *input_shape) batch on the model's device. Checked in
    numpy: a batched call converts its inputs on the API's event loop (api/serving.py), where
    a small torch op gives up the GIL and waits for the batcher's thread to hand it back."""
    info = served.info
    try:
        array = np.asarray(inputs)
    except ValueError as exc:  # ragged
        raise BadRequest("inputs", f"inputs must be (nested) lists of numbers: {exc}") from exc
    if array.dtype.kind not in "iuf":  # booleans, strings, objects are not values
        raise BadRequest("inputs", "inputs must be numbers (not booleans, strings or nulls)")
    per_example = math.prod(info.input_shape)
    if array.ndim == 0 or array[0].size != per_example:
        raise BadRequest(
            "inputs", f"each input must hold {per_example} numbers (shape {list(info.input_shape)})"
        )
    if not np.isfinite(array).all():
        raise BadRequest("inputs", "inputs must be finite numbers")
    if np.abs(array).max() > MAX_INPUT:  # so within float32's range
        raise BadRequest(
            "inputs", f"inputs must be within +-{MAX_INPUT:g} (images in [0, 1], or raw=true)"
        )
    x = array.astype(np.float32).reshape(len(array), *info.input_shape)
    if raw:
        x /= info.input_scale  # in numpy, as the checks: no torch op on the event loop
    return torch.from_numpy(x).to(served.device)


class Predict(Batchable):
    """Class labels and probabilities for a classifier, values for a regressor."""

    def rows(self, served: Served, request: PredictRequest) -> torch.Tensor:
        if request.attention and not hasattr(served.module, "attention_maps"):
            raise BadRequest("attention", f"a {served.spec.family} model has no attention maps")
        return inputs_tensor(served, request.inputs, raw=request.raw)

    @torch.inference_mode()
    def answer(self, served: Served, rows: torch.Tensor) -> dict[str, Any]:
        outputs = served.forward(rows)
        if served.spec.task != "classification":
            return {"outputs": outputs.cpu().tolist()}
        probabilities = outputs.softmax(1)
        labels = probabilities.argmax(1).cpu().tolist()
        answer: dict[str, Any] = {"outputs": labels, "probabilities": probabilities.cpu().tolist()}
        if served.info.classes:
            answer["class_names"] = [served.info.classes[k] for k in labels]
        return answer


predict = Predict()


@torch.inference_mode()
def forecast(served: Served, request: ForecastRequest) -> dict[str, Any]:
    """Run a one-step forecaster on its own predictions `steps` times (recursive forecasting)."""
    info = served.info
    if not info.sequence:
        raise BadRequest("steps", "forecast needs a model trained on a time series")
    lag, mean, std = info.input_shape[0], info.series_mean, info.series_std
    truth = None
    if request.history is not None:
        if len(request.history) != lag:
            raise BadRequest("history", f"history must hold the last {lag} values (the lag)")
        window = (torch.tensor(request.history, dtype=torch.float32) - mean) / std
    else:
        test = served.dataset().test
        window = test.x[0].float().cpu()
        truth = (test.y[: request.steps, 0].cpu() * std + mean).tolist()
    window = window.to(served.device)
    values = []
    for _ in range(request.steps):
        value = served.module(window.view(1, lag)).view(-1)[:1]
        values.append(value)
        window = torch.cat([window[1:], value])
    forecast = (torch.cat(values).cpu() * std + mean).tolist()
    return {
        "forecast": forecast,
        "truth": truth,
        "start": "history" if request.history is not None else "test",
    }


def forecast_picture(served: Served, query: ImageQuery) -> Lines:
    """The recursive forecast from the start of the test period against the truth."""
    if query.steps > MAX_FORECAST_STEPS:
        raise BadRequest("steps", f"a forecast runs at most {MAX_FORECAST_STEPS} steps")
    answer = forecast(served, ForecastRequest(steps=query.steps))
    return Lines(
        {"truth": answer["truth"], "forecast (recursive)": answer["forecast"]},
        xlabel="steps ahead",
    )
