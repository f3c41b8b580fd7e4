"""Autoencoders ("ae"): a dense or convolutional autoencoder serving reconstruct, encode and
decode. With `train.input_noise` it is a denoising autoencoder (Vincent et al. 2008)."""

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.base import BadRequest, Batch, Family, ImageGrid, ImageQuery, Served, register
from models.configs.autoencoder import AEJob, ConvAEConfig, DenseAEConfig
from models.configs.verbs import DecodeRequest, EncodeRequest, ReconstructRequest
from models.supervised import activation, inputs_tensor
from models.training import GradientTrainer

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


class AutoEncoder(nn.Module):
    """encoder: (batch, *input_shape) -> (batch, latent), the code is linear;
    decoder: (batch, latent) -> (batch, *input_shape), before the output activation."""

    def __init__(self, *, input_shape: tuple[int, ...], config: DenseAEConfig | ConvAEConfig):
        super().__init__()
        if config.kind == "dense":
            self.encoder, self.decoder = _dense(input_shape, config)
        else:
            self.encoder, self.decoder = conv_coders(input_shape, config)
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


def conv_coders(
    input_shape: tuple[int, ...], config: ConvAEConfig, code_out: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """Strided convs down to a linear code of `code_out` values (default: the latent size; a
    vae's encoder gives means and log-variances), and transposed convs back up from a code of
    the latent size, ending in the output's pre-activation."""
    k, s, pad = config.kernel, config.stride, config.kernel // 2
    shapes = [tuple(input_shape), *config.feature_shapes(input_shape)]
    encoder: list[nn.Module] = []
    for (c_in, _, _), (c_out, _, _) in pairwise(shapes):
        encoder += [nn.Conv2d(c_in, c_out, k, s, pad), activation(config.activation)]
    top = shapes[-1]
    encoder += [nn.Flatten(), nn.Linear(math.prod(top), code_out or config.latent)]
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
    """Reconstruct the inputs; labels are ignored. Noisy inputs in (with `train.input_noise`),
    the clean ones as targets."""

    model: AutoEncoder

    def __init__(self, spec: AEJob, model: AutoEncoder, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.loss_name = spec.model.loss

    def batch_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The batch's mean loss (a stack runs it per member, models/stack.py)."""
        pre, out = self.model.reconstruct(batch.x)
        return per_example_loss(self.loss_name, out, batch.clean, pre).mean(), {}

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        batch = self.batch(epoch, index)
        self.model.train()
        loss, _ = self.step("model", lambda: self.batch_loss(batch))
        n = len(batch.x)
        return {"loss": loss * n, "count": float(n)}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        self.model.eval()
        loss_sum, mse_sum = 0.0, 0.0
        chunk = self.eval_chunk
        for start in range(0, len(split), chunk):
            x = split.x[start : start + chunk]
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


def reconstruct_with(served: Served, request: ReconstructRequest, run: Reconstruction) -> dict:
    """Reconstructions shaped and scaled like the request's inputs, and each one's loss."""
    if request.mask is not None:
        raise BadRequest("mask", f"a {served.spec.family} model does not inpaint (rbm, dbm do)")
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

    return reconstruct_with(served, request, run)


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


def reconstructions_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """Test images over their reconstructions (any family with a `reconstruct` verb)."""
    from models.base import get_family  # the family of `served`, which may be another one

    shape = served.info.input_shape
    if len(shape) != 3:
        raise BadRequest("name", "reconstructions are drawn for image datasets only")
    originals = served.dataset().test.x[: query.n].cpu()
    request = ReconstructRequest(inputs=originals.tolist(), seed=query.seed)
    answer = get_family(served.spec.family).verbs["reconstruct"](served, request)
    rebuilt = torch.tensor(answer["outputs"]).reshape(len(originals), *shape)
    return ImageGrid([("test", originals.numpy()), ("reconstructed", rebuilt.numpy())])


register(
    Family(
        spec=AEJob,
        build=build_ae,
        trainer=AETrainer,
        verbs={"reconstruct": reconstruct, "encode": encode, "decode": decode},
        images={"reconstructions": reconstructions_picture},
    )
)
