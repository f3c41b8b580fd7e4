"""Stacked autoencoder ("sae"): a classifier whose encoders are pretrained greedily, one layer
at a time, as autoencoders (Hinton & Salakhutdinov 2006; Bengio et al. 2007), then a head on
the frozen features, then everything fine-tuned end to end."""

import math
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.autoencoder import per_example_loss, reconstruct_with, reconstructions_picture
from models.base import Family, Served, register
from models.configs.sae import SAEConfig, SAEJob
from models.configs.verbs import ReconstructRequest
from models.supervised import activation, predict
from models.training import GradientTrainer


class StackedAutoEncoder(nn.Module):
    """Encoders 784-128-64 (for example), each with its own one-layer decoder back to its input,
    and a linear classifier on the top code. forward: (batch, *input_shape) -> (batch, n_classes)
    logits."""

    def __init__(self, *, input_shape: tuple[int, ...], n_classes: int, config: SAEConfig):
        super().__init__()
        sizes = [math.prod(input_shape), *config.layers]
        self.input_shape = input_shape
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), activation(config.activation))
            for a, b in pairwise(sizes)
        )
        # Decoder 0 rebuilds pixels in [0, 1]; the others rebuild the codes below them, linearly.
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(b, a), nn.Sigmoid() if k == 0 else nn.Identity())
            for k, (a, b) in enumerate(pairwise(sizes))
        )
        self.head = nn.Linear(sizes[-1], n_classes)

    def encode(self, x: Tensor, depth: int | None = None) -> Tensor:
        """(batch, *input_shape) -> the code of encoder `depth - 1` (default: the top one)."""
        h = x.flatten(1)
        for encoder in self.encoders[:depth]:
            h = encoder(h)
        return h

    def reconstruct(self, x: Tensor, depth: int | None = None) -> Tensor:
        """Up through `depth` encoders and back down through their decoders, in reverse."""
        depth = len(self.encoders) if depth is None else depth
        h = self.encode(x, depth)
        for decoder in reversed(self.decoders[:depth]):
            h = decoder(h)
        return h.view(len(x), *self.input_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encode(x))

    def probe(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """What an evaluation runs (models/summary.py measures its memory)."""
        return self(x), self.reconstruct(x)


def build_sae(spec: SAEJob, info: DatasetInfo) -> StackedAutoEncoder:
    return StackedAutoEncoder(
        input_shape=info.input_shape, n_classes=info.n_classes, config=spec.model
    )


class SAETrainer(GradientTrainer):
    """Stages (declared by SAEJob.stages), each with fresh optimizers over what it trains:
    stage k < L (L = number of layers): autoencoder k (encoder k and decoder k) learns to
    reconstruct the codes of the frozen encoders below it (stage 0: the pixels);
    stage L ("head"): the classifier on the frozen encoders;
    stage L + 1 ("finetune"): everything but the decoders, end to end, by cross-entropy.
    """

    model: StackedAutoEncoder

    def __init__(
        self, spec: SAEJob, model: StackedAutoEncoder, splits: Splits, device: torch.device
    ):
        self.n_layers = len(spec.model.layers)
        self.loss_name = spec.model.loss
        self.before_finetune: dict[str, float] = {}
        super().__init__(spec, model, splits, device)

    def trained_parameters(self) -> dict[str, list[nn.Parameter]]:
        model, stage = self.model, self.stage
        if stage < self.n_layers:
            return {
                "model": [*model.encoders[stage].parameters(), *model.decoders[stage].parameters()]
            }
        if stage == self.n_layers:
            return {"model": list(model.head.parameters())}
        return {"model": [*model.encoders.parameters(), *model.head.parameters()]}

    def batch_loss(
        self, x: Tensor, clean: Tensor, labels: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        model, stage = self.model, self.stage
        if stage < self.n_layers:
            with torch.no_grad():  # the encoders below are frozen
                h = model.encode(x, stage)
                target = model.encode(clean, stage) if self.spec.train.input_noise else h
            out = model.decoders[stage](model.encoders[stage](h))
            return per_example_loss(self.loss_name, out, target).mean(), {}
        if stage == self.n_layers:
            with torch.no_grad():
                h = model.encode(x)
            logits = model.head(h)
        else:
            logits = model(x)
        correct = (logits.argmax(1) == labels).sum().item()
        return F.cross_entropy(logits, labels), {"accuracy": float(correct)}

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        batch = self.batch(epoch, index)
        self.model.train()
        loss, sums = self.step("model", lambda: self.batch_loss(batch.x, batch.clean, batch.y))
        n = len(batch.y)
        return {"loss": loss * n, "count": float(n), **sums}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """The classifier's loss and accuracy, and the reconstruction loss through the layers
        pretrained so far (all of them once pretraining is over)."""
        self.model.eval()
        depth = min(self.stage + 1, self.n_layers)
        loss_sum, correct, reconstruction_sum = 0.0, 0, 0.0
        chunk = self.eval_chunk
        for start in range(0, len(split), chunk):
            x, y = split.x[start : start + chunk], split.y[start : start + chunk]
            logits = self.model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            out = self.model.reconstruct(x, depth)
            reconstruction_sum += per_example_loss(self.loss_name, out, x).sum().item()
        n = len(split)
        return {
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "reconstruction": reconstruction_sum / n,
        }

    def initial_metrics(self) -> dict[str, float]:
        # What the first stage trains by: a layer's reconstruction, or the classifier.
        found = self.evaluate(self.splits.train)
        if self.stage < self.n_layers:
            return {"train_loss": found["reconstruction"]}
        return {"train_loss": found["loss"], "train_accuracy": found["accuracy"]}

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        super().end_epoch(epoch, metrics)
        if self.stage == self.n_layers and self.stage_at(epoch + 1) != self.stage:
            # The last head epoch: the test score of the pretrained features, before fine-tuning.
            test = self.evaluate(self.splits.test)
            self.before_finetune = {
                "test_accuracy_before_finetune": test["accuracy"],
                "test_loss_before_finetune": test["loss"],
            }

    def state(self) -> dict[str, Any]:
        return {"before_finetune": self.before_finetune}

    def load_state(self, state: dict[str, Any]) -> None:
        self.before_finetune = dict(state["before_finetune"])

    def result(self) -> dict[str, float]:
        return dict(self.before_finetune)


@torch.inference_mode()
def reconstruct_sae(served: Served, request: ReconstructRequest) -> dict[str, Any]:
    """Inputs up through every encoder and back down through the decoders."""

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        out = served.module.reconstruct(x)
        return out, per_example_loss(served.spec.model.loss, out, x)

    return reconstruct_with(served, request, run)


register(
    Family(
        spec=SAEJob,
        build=build_sae,
        trainer=SAETrainer,
        verbs={"predict": predict, "reconstruct": reconstruct_sae},
        images={"reconstructions": reconstructions_picture},
    )
)
