"""Generative adversarial networks ("gan"): a generator maps z ~ N(0, I) to images in [0, 1]
and a discriminator tells them from the dataset's (Goodfellow et al. 2014). The conv kind is
the DCGAN backbone (Radford et al. 2016): transposed convs with batchnorm and ReLU in the
generator, strided convs with batchnorm (after the first) and leaky ReLU in the
discriminator, weights drawn from N(0, 0.02).
The generator is trained by the non-saturating loss -log D(G(z)) of Goodfellow et al."""

import math
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split
from models.base import ROW, BadRequest, Family, ImageGrid, ImageQuery, Served, register
from models.configs.gan import KERNEL, GANConfig, GANJob
from models.configs.verbs import InterpolateRequest
from models.latent import (
    LatentTrainer,
    along_line,
    endpoints,
    lines_picture,
    prior,
    sample,
    samples_picture,
)

CHUNK = 4096  # images per forward pass of the discriminator
SLOPE = 0.2  # the discriminator's leaky ReLU


class GAN(nn.Module):
    """generator: (batch, latent) -> (batch, *input_shape) logits of the pixels (the images are
    their sigmoid); discriminator: (batch, *input_shape) -> (batch,) logits of "real"."""

    def __init__(self, *, input_shape: tuple[int, ...], config: GANConfig):
        super().__init__()
        self.latent = config.latent
        self.input_shape = tuple(input_shape)
        if config.kind == "mlp":
            self.generator, self.discriminator = _mlp(self.input_shape, config)
        else:
            self.generator, self.discriminator = _conv(self.input_shape, config)
            self.apply(_dcgan_init)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.generator(z))

    def discriminate(self, x: Tensor) -> Tensor:
        return self.discriminator(x).squeeze(1)

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)


def _mlp(input_shape: tuple[int, ...], config: GANConfig) -> tuple[nn.Module, nn.Module]:
    # The generator's hidden layers have batchnorm and leaky ReLU: with plain ReLU layers the
    # default generator collapses to one digit within 30 epochs of digits (sample class
    # entropy 0.0, Frechet distance 2.7x noise's); with them, 0.96 and 0.17x.
    n_in = math.prod(input_shape)
    sizes = [config.latent, *config.hidden, n_in]  # e.g. 16-128-256-64
    generator: list[nn.Module] = []
    for a, b in pairwise(sizes[:-1]):
        generator += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(SLOPE)]
    # pixel logits; the sigmoid comes after
    generator += [nn.Linear(sizes[-2], n_in), nn.Unflatten(1, input_shape)]
    discriminator: list[nn.Module] = [nn.Flatten()]
    for a, b in pairwise(sizes[:0:-1]):  # 64-256-128
        discriminator += [nn.Linear(a, b), nn.LeakyReLU(SLOPE)]
    discriminator.append(nn.Linear(sizes[1], 1))
    return nn.Sequential(*generator), nn.Sequential(*discriminator)


def _conv(input_shape: tuple[int, ...], config: GANConfig) -> tuple[nn.Module, nn.Module]:
    # Maps from the image down: 28x28 -> 14x14 -> 7x7 for two layers. A transposed conv
    # (kernel 4, stride 2, padding 1) doubles a side; output_padding 1 restores an odd one.
    sizes = config.map_sizes(input_shape)[::-1]  # the generator's first map to the image
    channels = [*config.filters, input_shape[0]]
    first = (config.filters[0], *sizes[0])
    generator: list[nn.Module] = [
        nn.Linear(config.latent, math.prod(first)),
        nn.Unflatten(1, first),
        nn.BatchNorm2d(first[0]),
        nn.ReLU(),
    ]
    for (c_in, c_out), ((h_in, w_in), (h_out, w_out)) in zip(
        pairwise(channels), pairwise(sizes), strict=True
    ):
        padding = (h_out - 2 * h_in, w_out - 2 * w_in)
        generator += [
            nn.ConvTranspose2d(c_in, c_out, KERNEL, 2, 1, output_padding=padding),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    generator = generator[:-2]  # pixel logits; the sigmoid comes after
    discriminator: list[nn.Module] = []
    # A stride-2 conv halves a side, rounding down. Batchnorm after every conv but the first,
    # as in DCGAN: without it the discriminator wins on digits and the generator collapses
    # (30 epochs: sample class entropy 0.28 and a Frechet distance 2x noise's; with it, 0.97
    # and 0.13x).
    for k, (c_in, c_out) in enumerate(pairwise(channels[::-1])):
        discriminator.append(nn.Conv2d(c_in, c_out, KERNEL, 2, 1))
        if k:
            discriminator.append(nn.BatchNorm2d(c_out))
        discriminator.append(nn.LeakyReLU(SLOPE))
    discriminator += [nn.Flatten(), nn.Linear(math.prod(first), 1)]
    return nn.Sequential(*generator), nn.Sequential(*discriminator)


def _dcgan_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_gan(spec: GANJob, info: DatasetInfo) -> GAN:
    return GAN(input_shape=info.input_shape, config=spec.model)


class GANTrainer(LatentTrainer):
    """Per batch: a discriminator step on real images against generated ones, then a generator
    step through the updated discriminator, both on the same draws of z."""

    model: GAN

    def trained_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {
            "generator": list(self.model.generator.parameters()),
            "discriminator": list(self.model.discriminator.parameters()),
        }

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        real = self.batch(epoch, index).x
        n = len(real)
        self.model.train()
        z = torch.randn(n, self.model.latent, device=self.device)  # the loop's seeded RNG
        fake = self.model.decode(z)  # (batch, *input_shape)

        def discriminator_loss() -> tuple[Tensor, dict[str, float]]:
            real_logits = self.model.discriminate(real)
            fake_logits = self.model.discriminate(fake.detach())
            loss = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            sums = {
                "d_real": torch.sigmoid(real_logits).sum().item(),
                "d_fake": torch.sigmoid(fake_logits).sum().item(),
            }
            return loss, sums

        def generator_loss() -> tuple[Tensor, dict[str, float]]:
            logits = self.model.discriminate(fake)
            return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)), {}

        d_loss, sums = self.step("discriminator", discriminator_loss)
        g_loss, _ = self.step("generator", generator_loss)
        return {"d_loss": d_loss * n, "g_loss": g_loss * n, "count": float(n), **sums}

    def evaluate(self, split: Split) -> dict[str, float]:
        """The discriminator on the split's images against as many generated ones (from a
        generator seeded with train.seed, so every epoch is judged on the same z)."""
        judged = self.judge(split)
        del judged["g_loss"]
        return judged

    def initial_metrics(self) -> dict[str, float]:
        return {f"train_{k}": v for k, v in self.judge(self.splits.train).items()}

    @torch.inference_mode()
    def judge(self, split: Split) -> dict[str, float]:
        """evaluate's figures and the generator's loss -log D(G(z)) on the same z."""
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.spec.train.seed)
        z = torch.randn(len(split), self.model.latent, generator=generator, device=self.device)
        real_loss, fake_loss, g_loss, d_real, d_fake = 0.0, 0.0, 0.0, 0.0, 0.0
        chunk = self.eval_chunk
        for start in range(0, len(split), chunk):
            real_logits = self.model.discriminate(split.x[start : start + chunk])
            fake_logits = self.model.discriminate(self.model.decode(z[start : start + chunk]))
            real_loss += F.softplus(-real_logits).sum().item()  # -log D(x)
            fake_loss += F.softplus(fake_logits).sum().item()  # -log(1 - D(G(z)))
            g_loss += F.softplus(-fake_logits).sum().item()  # -log D(G(z))
            d_real += torch.sigmoid(real_logits).sum().item()
            d_fake += torch.sigmoid(fake_logits).sum().item()
        n = len(split)
        return {
            "d_loss": (real_loss + fake_loss) / n,
            "g_loss": g_loss / n,
            "d_real": d_real / n,
            "d_fake": d_fake / n,
        }


@torch.inference_mode()
def interpolate(served: Served, request: InterpolateRequest) -> dict[str, Any]:
    """Generated images on the straight line from start to end (endpoints included), the
    endpoints given or drawn from N(0, I) with `seed`."""
    if request.inputs is not None:
        raise BadRequest("inputs", "a gan has no encoder; give latent vectors start and end")
    return along_line(served, *endpoints(served, request), request.steps)


@torch.inference_mode()
def interpolation_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """Rows of 8 images on the line between pairs of random latent points (query.seed), one
    row per pair: query.n pairs, at most 8."""
    pairs = max(1, min(query.n, ROW))
    ends = prior(served, 2 * pairs, query.seed)
    return lines_picture(served, ends[0::2], ends[1::2], [f"pair {i + 1}" for i in range(pairs)])


register(
    Family(
        spec=GANJob,
        build=build_gan,
        trainer=GANTrainer,
        verbs={"sample": sample, "interpolate": interpolate},
        images={"samples": samples_picture, "interpolation": interpolation_picture},
    )
)
