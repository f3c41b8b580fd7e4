"""Variational autoencoder ("vae"; Kingma & Welling 2014, "Auto-Encoding Variational Bayes"),
with a weight beta on the KL term (beta-VAE; Higgins et al. 2017).

The encoder gives q(z|x) = N(mean, diag(exp(log_var))); the decoder gives Bernoulli logits of
each pixel; the prior is N(0, I). Per example, the loss is
    reconstruction + beta * KL,   reconstruction = -log p(x|z) = BCE summed over the pixels,
    KL = KL(q(z|x) || N(0, I)) = 1/2 sum_j (mean_j^2 + var_j - 1 - log var_j),
with z = mean + std * eps, eps ~ N(0, I) (the reparameterization trick); the ELBO is
-(reconstruction + KL).
"""

import math
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.autoencoder import CHUNK, conv_coders, reconstruct_with, reconstructions_picture
from models.base import BadRequest, Family, ImageGrid, ImageQuery, Served, register
from models.configs.vae import VAEConfig, VAEJob
from models.configs.verbs import (
    DecodeRequest,
    EncodeRequest,
    InterpolateRequest,
    ReconstructRequest,
)
from models.latent import (
    LatentTrainer,
    along_line,
    decode_all,
    endpoints,
    latents,
    lines_picture,
    sample,
    samples_picture,
)
from models.supervised import activation, inputs_tensor

EVAL_SEED = 0  # the z drawn to evaluate a split, the same at every epoch


class VAE(nn.Module):
    """encoder: (batch, *input_shape) -> (batch, 2 * latent), means then log-variances;
    decoder: (batch, latent) -> (batch, *input_shape) Bernoulli logits."""

    def __init__(self, *, input_shape: tuple[int, ...], config: VAEConfig):
        super().__init__()
        self.input_shape, self.latent = tuple(input_shape), config.latent
        if config.kind == "mlp":
            self.encoder, self.decoder = _mlp(self.input_shape, config)
        else:
            self.encoder, self.decoder = _conv(self.input_shape, config)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-variance) of q(z|x), each (batch, latent)."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """(batch, latent) -> the decoder's means, (batch, *input_shape) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def terms(self, x: Tensor, target: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction, KL) of each example, (batch,) each, with z = mean + std * eps."""
        mean, log_var = self.posterior(x)
        z = mean + torch.exp(0.5 * log_var) * eps
        bce = F.binary_cross_entropy_with_logits(self.logits(z), target, reduction="none")
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(1)
        return bce.flatten(1).sum(1), kl

    def forward(self, x: Tensor) -> Tensor:
        """The decoder's means at the posterior means: the reconstruction of x."""
        return self.decode(self.posterior(x)[0])


def _mlp(input_shape: tuple[int, ...], config: VAEConfig) -> tuple[nn.Module, nn.Module]:
    sizes = [math.prod(input_shape), *config.hidden]  # e.g. 64-256-128
    encoder: list[nn.Module] = [nn.Flatten()]
    for a, b in pairwise(sizes):
        encoder += [nn.Linear(a, b), activation(config.activation)]
    encoder.append(nn.Linear(sizes[-1], 2 * config.latent))
    decoder: list[nn.Module] = [nn.Linear(config.latent, sizes[-1]), activation(config.activation)]
    for a, b in pairwise(sizes[::-1]):  # 128-256-64
        decoder += [nn.Linear(a, b), activation(config.activation)]
    decoder.pop()  # logits out
    decoder.append(nn.Unflatten(1, input_shape))
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def _conv(input_shape: tuple[int, ...], config: VAEConfig) -> tuple[nn.Module, nn.Module]:
    return conv_coders(input_shape, config.conv_ae(), code_out=2 * config.latent)


def build_vae(spec: VAEJob, info: DatasetInfo) -> VAE:
    return VAE(input_shape=info.input_shape, config=spec.model)


class VAETrainer(LatentTrainer):
    """Maximize the (beta-weighted) ELBO by minibatch; labels are ignored. Noisy inputs in
    (with `train.input_noise`), the clean ones as targets. One eps per example and step, drawn
    from torch's global RNG before the step (so LBFGS re-evaluates one and the same loss)."""

    model: VAE

    def __init__(self, spec: VAEJob, model: VAE, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.beta = spec.model.beta

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        batch = self.batch(epoch, index)
        self.model.train()
        eps = torch.randn(len(batch.x), self.model.latent, device=self.device)

        def loss_fn() -> tuple[Tensor, dict[str, float]]:
            reconstruction, kl = self.model.terms(batch.x, batch.clean, eps)
            loss = (reconstruction + self.beta * kl).mean()
            return loss, {"reconstruction": reconstruction.sum().item(), "kl": kl.sum().item()}

        loss, sums = self.step("model", loss_fn)
        n = len(batch.x)
        return {"loss": loss * n, "count": float(n), **sums}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Means over the split, with one z per example drawn from a generator seeded 0."""
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(EVAL_SEED)
        reconstruction_sum, kl_sum = 0.0, 0.0
        chunk = self.eval_chunk
        for start in range(0, len(split), chunk):
            x = split.x[start : start + chunk]
            eps = torch.randn(len(x), self.model.latent, generator=generator, device=self.device)
            reconstruction, kl = self.model.terms(x, x, eps)
            reconstruction_sum += reconstruction.sum().item()
            kl_sum += kl.sum().item()
        n = len(split)
        reconstruction, kl = reconstruction_sum / n, kl_sum / n
        return {
            "loss": reconstruction + self.beta * kl,
            "reconstruction": reconstruction,
            "kl": kl,
            "elbo": -(reconstruction + kl),
        }


def _posterior_means(module: VAE, x: Tensor) -> Tensor:
    return torch.cat([module.posterior(x[i : i + CHUNK])[0] for i in range(0, len(x), CHUNK)])


@torch.inference_mode()
def reconstruct(served: Served, request: ReconstructRequest) -> dict[str, Any]:
    """The decoder's means at the posterior means; `loss` is each example's Bernoulli negative
    log-likelihood of its input under that reconstruction: BCE SUMMED over the pixels (nats per
    example, the same scale as the `reconstruction` metric; inputs are clamped to [0, 1] for it)."""
    module = served.module

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        logits = module.logits(module.posterior(x)[0])
        bce = F.binary_cross_entropy_with_logits(logits, x.clamp(0, 1), reduction="none")
        return torch.sigmoid(logits), bce.flatten(1).sum(1)

    return reconstruct_with(served, request, run)


@torch.inference_mode()
def encode(served: Served, request: EncodeRequest) -> dict[str, Any]:
    """The posterior's means (`codes`) and standard deviations (`std`) of each input."""
    x = inputs_tensor(served, request.inputs, raw=request.raw)
    parts = [served.module.posterior(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
    mean = torch.cat([p[0] for p in parts])
    std = torch.cat([torch.exp(0.5 * p[1]) for p in parts])
    return {"codes": mean.cpu().tolist(), "std": std.cpu().tolist()}


@torch.inference_mode()
def decode(served: Served, request: DecodeRequest) -> dict[str, Any]:
    """The decoder's means of latent codes, or the one image of the mean of a split's posterior
    means."""
    if request.codes is not None:
        codes = latents(served, request.codes, "codes")
    else:
        split: Split = getattr(served.dataset(), request.mean_of)
        codes = _posterior_means(served.module, split.x.to(served.device)).mean(0, keepdim=True)
    outputs = decode_all(served.module, codes)
    return {"outputs": outputs.cpu().tolist(), "codes": codes.cpu().tolist()}


@torch.inference_mode()
def interpolate(served: Served, request: InterpolateRequest) -> dict[str, Any]:
    """Decoded points on the straight line from start to end (endpoints included): latent
    vectors given, drawn from the prior with `seed`, or the posterior means of two `inputs`."""
    if request.inputs is not None:
        if request.start is not None or request.end is not None:
            raise BadRequest("inputs", "give either inputs or start/end, not both")
        x = inputs_tensor(served, request.inputs, raw=request.raw)
        start, end = _posterior_means(served.module, x)
    else:
        start, end = endpoints(served, request)
    return along_line(served, start, end, request.steps)


@torch.inference_mode()
def interpolation_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """Rows of 8 decoded points between the posterior means of test images 2i and 2i + 1."""
    test = served.dataset().test.x
    pairs = max(1, min(query.n, len(test) // 2))
    codes = _posterior_means(served.module, test[: 2 * pairs].to(served.device))
    labels = [f"test {2 * i}-{2 * i + 1}" for i in range(pairs)]
    return lines_picture(served, codes[0::2], codes[1::2], labels)


@torch.inference_mode()
def latent_grid_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """A 2-D latent space's decoded means over a query.n x query.n grid (at least 2 x 2) of
    Gaussian quantiles in (0.05, 0.95): z1 left to right, z2 top to bottom from high to low."""
    if served.spec.model.latent != 2:
        raise BadRequest(
            "name",
            f"latent_grid needs a 2-D latent space; this vae's has {served.spec.model.latent}",
        )
    side = max(2, query.n)
    values = torch.special.ndtri(torch.tensor(np.linspace(0.05, 0.95, side))).float()
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")  # (side, side) each
    z = torch.stack([z1, z2], dim=-1).reshape(side * side, 2).to(served.device)
    images = decode_all(served.module, z).view(side, side, *served.info.input_shape)
    rows = [(f"z2={values.flip(0)[i].item():.2f}", images[i].cpu().numpy()) for i in range(side)]
    return ImageGrid(rows)


register(
    Family(
        spec=VAEJob,
        build=build_vae,
        trainer=VAETrainer,
        verbs={
            "sample": sample,
            "reconstruct": reconstruct,
            "encode": encode,
            "decode": decode,
            "interpolate": interpolate,
        },
        images={
            "samples": samples_picture,
            "reconstructions": reconstructions_picture,
            "interpolation": interpolation_picture,
            "latent_grid": latent_grid_picture,
        },
    )
)
