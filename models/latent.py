"""What the latent-variable generators (gan, vae) share: a module that decodes z ~ N(0, I) into
images, a trainer that keeps samples of fixed latent points at the job's `sample_epochs`, and
the verbs and pictures built on decoding (sample, the line between two latent points, the
samples picture)."""

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from core.datasets import Splits
from core.spec import JobSpecBase
from models.base import ROW, BadRequest, ImageGrid, ImageQuery, Served
from models.configs.verbs import InterpolateRequest, SampleRequest
from models.training import GradientTrainer

CHUNK = 4096  # latent points per forward pass


class LatentGenerator(Protocol):
    latent: int

    def decode(self, z: Tensor) -> Tensor: ...  # (batch, latent) -> images in [0, 1]


def decode_all(module: LatentGenerator, z: Tensor) -> Tensor:
    return torch.cat([module.decode(z[i : i + CHUNK]) for i in range(0, len(z), CHUNK)])


class LatentTrainer(GradientTrainer):
    """Keeps the decodings of n_kept latent points (drawn once with train.seed) after each of
    the job's sample_epochs, and draws the samples whose quality models/quality.py measures."""

    model: nn.Module  # a LatentGenerator

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.sample_epochs = set(spec.model.sample_epochs or ())
        kept = torch.Generator().manual_seed(spec.train.seed)  # the same points every epoch
        self.kept_z = torch.randn(spec.model.n_kept, model.latent, generator=kept).to(device)

    @torch.inference_mode()
    def epoch_artifacts(self, epoch: int) -> dict[str, Tensor]:
        if epoch not in self.sample_epochs:
            return {}
        self.model.eval()
        return {"samples": self.model.decode(self.kept_z).cpu()}

    @torch.inference_mode()
    def samples(self, n: int, generator: torch.Generator) -> Tensor:
        self.model.eval()
        z = torch.randn(n, self.model.latent, generator=generator, device=generator.device)
        return decode_all(self.model, z.to(self.device))


def latents(served: Served, values: list[list[float]], field: str) -> Tensor:
    """Latent vectors of a request, each of the model's latent size (else a 422 at `field`)."""
    latent = served.spec.model.latent
    if any(len(z) != latent for z in values):
        raise BadRequest(field, f"each latent vector must hold {latent} numbers (the latent size)")
    return torch.tensor(values, dtype=torch.float32, device=served.device)


def prior(served: Served, n: int, seed: int) -> Tensor:
    """n draws of N(0, I) with `seed`."""
    generator = torch.Generator(device=served.device).manual_seed(seed)
    return torch.randn(n, served.spec.model.latent, generator=generator, device=served.device)


@torch.inference_mode()
def sample(served: Served, request: SampleRequest) -> dict[str, Any]:
    """Images decoded from n draws of the prior N(0, I) with `seed`, or from `latents`."""
    if request.steps is not None:
        raise BadRequest(
            "steps",
            f"a {served.spec.family} samples in one pass; steps is for the Gibbs samplers "
            "(rbm, dbm)",
        )
    if request.latents is not None:
        z = latents(served, request.latents, "latents")
    else:
        z = prior(served, request.n, request.seed)
    samples = decode_all(served.module, z)
    return {"samples": samples.cpu().tolist(), "latents": z.cpu().tolist()}


def endpoints(served: Served, request: InterpolateRequest) -> tuple[Tensor, Tensor]:
    """The request's start and end, each given or drawn from the prior with `seed`."""
    start, end = prior(served, 2, request.seed)  # both drawn: a given one leaves the other
    if request.start is not None:
        start = latents(served, [request.start], "start")[0]
    if request.end is not None:
        end = latents(served, [request.end], "end")[0]
    return start, end


def along_line(served: Served, start: Tensor, end: Tensor, steps: int) -> dict[str, Any]:
    """Images decoded at `steps` points from start to end (both included) and their latents."""
    t = torch.linspace(0.0, 1.0, steps, device=served.device).unsqueeze(1)
    z = start + t * (end - start)  # (steps, latent)
    outputs = decode_all(served.module, z)
    return {"outputs": outputs.cpu().tolist(), "latents": z.cpu().tolist()}


def lines_picture(served: Served, starts: Tensor, ends: Tensor, labels: list[str]) -> ImageGrid:
    """One row per pair: ROW images decoded along the line from starts[i] to ends[i]."""
    pairs = len(starts)
    t = torch.linspace(0.0, 1.0, ROW, device=served.device).view(1, ROW, 1)
    z = (starts.unsqueeze(1) + t * (ends - starts).unsqueeze(1)).flatten(0, 1)
    images = decode_all(served.module, z).view(pairs, ROW, *served.info.input_shape)
    return ImageGrid([(labels[i], images[i].cpu().numpy()) for i in range(pairs)])


@torch.inference_mode()
def samples_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """query.n samples from the prior (query.seed), in rows of 8."""
    z = prior(served, query.n, query.seed)
    return ImageGrid.of("samples", decode_all(served.module, z))
