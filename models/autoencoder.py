"""Autoencoders: "ae", a dense or convolutional autoencoder serving reconstruct, encode and
decode; and "sae", a stacked autoencoder classifier, pretrained greedily one layer at a time
(Hinton & Salakhutdinov 2006; Bengio et al. 2007), then fine-tuned end to end.
"""

import math
from collections.abc import Callable
from dataclasses import replace
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.base import BadRequest, Family, Served, register
from models.configs.autoencoder import AEJob, ConvAEConfig, DenseAEConfig, SAEConfig, SAEJob
from models.configs.verbs import DecodeRequest, EncodeRequest, ReconstructRequest
from models.supervised import activation, inputs_tensor, predict
from models.training import GradientTrainer, make_optimizer, make_scheduler

CHUNK = 4096  # examples per forward pass when evaluating or encoding a whole split


def per_example_loss(name: str, out: Tensor, x: Tensor, pre: Tensor | None = None) -> Tensor:
    """(batch,) reconstruction losses, each averaged over the example's values.

    `pre` is the output before its sigmoid; bce needs it (the logits form is the stable one).
    """
    match name:
        case "l1":
            values = (out - x).abs()
        case "mse":
            values = (out - x).square()
        case "bce":
            values = F.binary_cross_entropy_with_logits(pre, x, reduction="none")
        case _:
            raise ValueError(f"unknown reconstruction loss {name!r}")
    return values.flatten(1).mean(1)


# --- "ae" -----------------------------------------------------------------------------------


class AutoEncoder(nn.Module):
    """encoder: (batch, *input_shape) -> (batch, latent), the code is linear;
    decoder: (batch, latent) -> (batch, *input_shape), before the output activation."""

    def __init__(self, *, input_shape: tuple[int, ...], config: DenseAEConfig | ConvAEConfig):
        super().__init__()
        if config.kind == "dense":
            self.encoder, self.decoder = _dense(input_shape, config)
        else:
            self.encoder, self.decoder = _conv(input_shape, config)
        self.output = activation(config.output_for(input_shape))

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, code: Tensor) -> Tensor:
        return self.output(self.decoder(code))

    def reconstruct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(the reconstruction before the output activation, the reconstruction)"""
        pre = self.decoder(self.encoder(x))
        return pre, self.output(pre)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def _dense(input_shape: tuple[int, ...], config: DenseAEConfig) -> tuple[nn.Module, nn.Module]:
    sizes = config.sizes(math.prod(input_shape))  # e.g. 784-196-49-32
    encoder: list[nn.Module] = [nn.Flatten()]
    decoder: list[nn.Module] = []
    for a, b in pairwise(sizes):
        encoder += [nn.Linear(a, b), activation(config.activation)]
    for a, b in pairwise(sizes[::-1]):  # 32-49-196-784
        decoder += [nn.Linear(a, b), activation(config.activation)]
    encoder.pop(), decoder.pop()  # a linear code; the output activation comes after decoder
    decoder.append(nn.Unflatten(1, input_shape))
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def _conv(input_shape: tuple[int, ...], config: ConvAEConfig) -> tuple[nn.Module, nn.Module]:
    k, s, pad = config.kernel, config.stride, config.kernel // 2
    shapes = [tuple(input_shape), *config.feature_shapes(input_shape)]
    encoder: list[nn.Module] = []
    for (c_in, _, _), (c_out, _, _) in pairwise(shapes):
        encoder += [nn.Conv2d(c_in, c_out, k, s, pad), activation(config.activation)]
    top = shapes[-1]
    encoder += [nn.Flatten(), nn.Linear(math.prod(top), config.latent)]
    decoder: list[nn.Module] = [
        nn.Linear(config.latent, math.prod(top)),
        activation(config.activation),
        nn.Unflatten(1, top),
    ]
    for (c_in, h_in, w_in), (c_out, h_out, w_out) in pairwise(shapes[::-1]):
        # output_padding restores the exact size the conv came from (stride 2: 7 -> 14, 4 -> 7).
        padding = (h_out - ((h_in - 1) * s - 2 * pad + k), w_out - ((w_in - 1) * s - 2 * pad + k))
        decoder += [
            nn.ConvTranspose2d(c_in, c_out, k, s, pad, output_padding=padding),
            activation(config.activation),
        ]
    decoder.pop()  # the output activation comes after the decoder
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def build_ae(spec: AEJob, info: DatasetInfo) -> AutoEncoder:
    return AutoEncoder(input_shape=info.input_shape, config=spec.model)


class AETrainer(GradientTrainer):
    """Reconstruct the inputs; labels are ignored. With `train.input_noise` it is a denoising
    autoencoder (Vincent et al. 2008): noisy inputs in, the clean ones as targets."""

    model: AutoEncoder

    def __init__(self, spec: AEJob, model: AutoEncoder, splits: Splits, device: torch.device):
        # The batches' "labels" are the clean inputs: GradientTrainer.batch adds noise to x only.
        train = Split(x=splits.train.x, y=splits.train.x)
        super().__init__(spec, model, replace(splits, train=train), device)
        self.loss_name = spec.model.loss

    def batch_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        pre, out = self.model.reconstruct(x)
        return per_example_loss(self.loss_name, out, y, pre).mean(), {}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        self.model.eval()
        loss_sum, mse_sum = 0.0, 0.0
        for start in range(0, len(split), CHUNK):
            x = split.x[start : start + CHUNK]
            pre, out = self.model.reconstruct(x)
            loss_sum += per_example_loss(self.loss_name, out, x, pre).sum().item()
            mse_sum += per_example_loss("mse", out, x).sum().item()
        return {"loss": loss_sum / len(split), "mse": mse_sum / len(split)}


def _shape_of(inputs: list[Any]) -> list[int]:
    """The shape of one example as the request sent it (inputs_tensor checked it is regular)."""
    shape, value = [], inputs[0]
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0]
    return shape


Reconstruction = Callable[[Tensor], tuple[Tensor, Tensor]]  # x -> (outputs, per-example loss)


def _reconstruct(served: Served, request: ReconstructRequest, run: Reconstruction) -> dict:
    """Reconstructions shaped and scaled like the request's inputs, and each one's loss."""
    x = inputs_tensor(served, request.inputs, raw=request.raw)
    parts = [run(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
    out, losses = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    scale = served.info.input_scale if request.raw else 1.0
    outputs = (out * scale).reshape(len(x), *_shape_of(request.inputs))
    return {"outputs": outputs.cpu().tolist(), "loss": losses.cpu().tolist()}


@torch.inference_mode()
def reconstruct(served: Served, request: ReconstructRequest) -> dict[str, Any]:
    """Inputs through the bottleneck and back, with each example's reconstruction loss."""

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        pre, out = served.module.reconstruct(x)
        return out, per_example_loss(served.spec.model.loss, out, x, pre)

    return _reconstruct(served, request, run)


@torch.inference_mode()
def encode(served: Served, request: EncodeRequest) -> dict[str, Any]:
    """The latent code of each input."""
    x = inputs_tensor(served, request.inputs, raw=request.raw)
    codes = torch.cat([served.module.encode(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])
    return {"codes": codes.cpu().tolist()}


@torch.inference_mode()
def decode(served: Served, request: DecodeRequest) -> dict[str, Any]:
    """Images (shaped like the dataset's inputs, scaled to [0, 1]) from latent codes, or the one
    image of the mean code of a split of the job's dataset."""
    module, latent = served.module, served.spec.model.latent
    if request.codes is not None:
        if any(len(code) != latent for code in request.codes):
            raise BadRequest("codes", f"each code must hold {latent} numbers (the latent size)")
        codes = torch.tensor(request.codes, dtype=torch.float32, device=served.device)
    else:
        split: Split = getattr(served.dataset(), request.mean_of)
        total = torch.zeros(latent, device=served.device)
        for start in range(0, len(split), CHUNK):
            total += module.encode(split.x[start : start + CHUNK].to(served.device)).sum(0)
        codes = (total / len(split)).unsqueeze(0)
    outputs = torch.cat([module.decode(codes[i : i + CHUNK]) for i in range(0, len(codes), CHUNK)])
    return {"outputs": outputs.cpu().tolist(), "codes": codes.cpu().tolist()}


register(
    Family(
        name="ae",
        spec=AEJob,
        build=build_ae,
        trainer=AETrainer,
        verbs={"reconstruct": reconstruct, "encode": encode, "decode": decode},
    )
)


# --- "sae" ----------------------------------------------------------------------------------


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


def build_sae(spec: SAEJob, info: DatasetInfo) -> StackedAutoEncoder:
    return StackedAutoEncoder(
        input_shape=info.input_shape, n_classes=info.n_classes, config=spec.model
    )


class SAETrainer(GradientTrainer):
    """Stages, each a run of epochs and a fresh optimizer over what it trains:
    stage k < L (L = number of layers): autoencoder k (encoder k and decoder k) learns to
    reconstruct the codes of the frozen encoders below it (stage 0: the pixels);
    stage L ("head"): the classifier on the frozen encoders;
    stage L + 1 ("fine-tune"): everything but the decoders, end to end, by cross-entropy.

    The stage of an epoch depends on the epoch number alone; state() says which stage the
    optimizer belongs to, so a resumed run continues with the right one.
    """

    model: StackedAutoEncoder

    def __init__(
        self, spec: SAEJob, model: StackedAutoEncoder, splits: Splits, device: torch.device
    ):
        self.n_layers = len(spec.model.layers)
        self.stage = self.stage_of(spec, 1)
        self.loss_name = spec.model.loss
        self.labels, self.clean = splits.train.y, splits.train.x
        self.noisy = spec.train.input_noise > 0
        self.before_finetune: dict[str, float] = {}
        # The batches' "labels" are example indices, which give both the labels and the clean
        # inputs (GradientTrainer.batch adds `input_noise` to x only).
        indices = torch.arange(len(splits.train), device=splits.train.x.device)
        super().__init__(spec, model, replace(splits, train=Split(splits.train.x, indices)), device)
        self.test = splits.test

    @staticmethod
    def stage_of(spec: SAEJob, epoch: int) -> int:
        pretraining = spec.model.pretrain_epochs * len(spec.model.layers)
        if epoch <= pretraining:
            return (epoch - 1) // spec.model.pretrain_epochs
        if epoch <= pretraining + spec.model.head_epochs:
            return len(spec.model.layers)
        return len(spec.model.layers) + 1

    def total_epochs(self) -> int:
        return self.spec.total_epochs()

    def monitor_from(self) -> int:
        # Before fine-tuning, val_loss is an untrained or frozen head's: early stopping waits.
        model = self.spec.model
        return model.pretrain_epochs * len(model.layers) + model.head_epochs + 1

    def parameters(self) -> list[nn.Parameter]:
        model, stage = self.model, self.stage
        if stage < self.n_layers:
            return [*model.encoders[stage].parameters(), *model.decoders[stage].parameters()]
        if stage == self.n_layers:
            return list(model.head.parameters())
        return [*model.encoders.parameters(), *model.head.parameters()]

    def _enter(self, stage: int) -> None:
        if stage != self.stage:
            self.stage = stage
            self.optimizer = make_optimizer(self.spec.train, self.parameters())
            self.scheduler = make_scheduler(self.spec.train.schedule, self.optimizer)

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        self._enter(self.stage_of(self.spec, epoch))
        return super().train_batch(epoch, index)

    def batch_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        model, stage = self.model, self.stage
        if stage < self.n_layers:
            with torch.no_grad():  # the encoders below are frozen
                h = model.encode(x, stage)
                target = model.encode(self.clean[y], stage) if self.noisy else h
            out = model.decoders[stage](model.encoders[stage](h))
            return per_example_loss(self.loss_name, out, target).mean(), {}
        if stage == self.n_layers:
            with torch.no_grad():
                h = model.encode(x)
            logits = model.head(h)
        else:
            logits = model(x)
        labels = self.labels[y]
        correct = (logits.argmax(1) == labels).sum().item()
        return F.cross_entropy(logits, labels), {"correct": float(correct)}

    def epoch_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        metrics = super().epoch_metrics(sums) | {"stage": float(self.stage)}
        if self.stage >= self.n_layers:
            metrics["train_accuracy"] = sums["correct"] / sums["count"]
        return metrics

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """The classifier's loss and accuracy, and the reconstruction loss through the layers
        pretrained so far (all of them once pretraining is over)."""
        self.model.eval()
        depth = min(self.stage + 1, self.n_layers)
        loss_sum, correct, reconstruction_sum = 0.0, 0, 0.0
        for start in range(0, len(split), CHUNK):
            x, y = split.x[start : start + CHUNK], split.y[start : start + CHUNK]
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

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        super().end_epoch(epoch, metrics)
        if self.stage == self.n_layers and self.stage_of(self.spec, epoch + 1) != self.stage:
            # The last head epoch: the test score of the pretrained features, before fine-tuning.
            test = self.evaluate(self.test)
            self.before_finetune = {
                "test_accuracy_before_finetune": test["accuracy"],
                "test_loss_before_finetune": test["loss"],
            }

    def state(self) -> dict[str, Any]:
        return super().state() | {"stage": self.stage, "before_finetune": self.before_finetune}

    def load_state(self, state: dict[str, Any]) -> None:
        self._enter(state["stage"])
        super().load_state(state)
        self.before_finetune = dict(state["before_finetune"])

    def result(self) -> dict[str, float]:
        return dict(self.before_finetune)


@torch.inference_mode()
def reconstruct_sae(served: Served, request: ReconstructRequest) -> dict[str, Any]:
    """Inputs up through every encoder and back down through the decoders."""

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        out = served.module.reconstruct(x)
        return out, per_example_loss(served.spec.model.loss, out, x)

    return _reconstruct(served, request, run)


register(
    Family(
        name="sae",
        spec=SAEJob,
        build=build_sae,
        trainer=SAETrainer,
        verbs={"predict": predict, "reconstruct": reconstruct_sae},
    )
)
