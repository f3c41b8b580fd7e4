"""Restricted Boltzmann machines ("rbm"): Bernoulli visible units v and hidden units h, energy
E(v, h) = -b.v - c.h - h.W.v, trained by contrastive divergence (Hinton 2002) or persistent
CD (Tieleman 2008).

The CD gradient of the log-likelihood is <h v^T>_data - <h v^T>_model, the model term taken
after k Gibbs steps from the data (CD-k) or from chains that carry over between batches (PCD).
It is handed to the job's `model` optimizer as the negative gradient, so momentum, weight
decay and schedules are the optimizer's. Following Hinton's practical guide (2010), the
hidden units are sampled while the chain runs and the statistics use probabilities.

The Gibbs-chain verbs and pictures here (sample, reconstruct with a mask, samples, filters,
inpainting) serve any module with the `Boltzmann` interface: the DBM uses them too.
"""

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.autoencoder import reconstructions_picture
from models.base import ROW, BadRequest, Family, ImageGrid, ImageQuery, Served, register
from models.configs.rbm import RBMJob
from models.configs.verbs import ReconstructRequest, SampleRequest, ScoreRequest
from models.supervised import inputs_tensor
from models.training import GradientTrainer

CHUNK = 4096  # examples per evaluation pass
# Chains x Gibbs steps one request may run: 1000 samples of the default 1000 steps, a few
# seconds of CPU for a 784-128 RBM.
MAX_CHAIN_STEPS = 1_000_000


def bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary samples with probabilities p; drawn by `generator` (on its own device) when
    given, else by the global RNG (the loop's seeded one, during training)."""
    if generator is None:
        return torch.bernoulli(p)
    return (torch.rand(p.shape, generator=generator, device=generator.device).to(p.device) < p).to(
        p.dtype
    )


@dataclass(frozen=True)
class RBMParams:
    """One RBM's weights (hidden, visible) and biases: the RBM itself, or one layer of a DBM
    during its pretraining, whose weights may count twice going up or down (`up`, `down`)."""

    weight: Tensor
    visible_bias: Tensor
    hidden_bias: Tensor
    up: float = 1.0
    down: float = 1.0

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.weight, self.visible_bias, self.hidden_bias

    def hidden_probs(self, v: Tensor) -> Tensor:
        return torch.sigmoid(self.up * F.linear(v, self.weight) + self.hidden_bias)

    def visible_probs(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.down * (h @ self.weight) + self.visible_bias)

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + W_j.v), so p(v) is proportional to exp(-F(v))."""
        hidden = F.softplus(F.linear(v, self.weight, self.hidden_bias)).sum(1)
        return -(v @ self.visible_bias) - hidden

    def pseudo_likelihood(self, v: Tensor, units: Tensor) -> Tensor:
        """scikit-learn's BernoulliRBM.score_samples: with unit units[i] of example i flipped
        (x -> 1 - x), D * log sigmoid(F(v flipped) - F(v)), D the number of visible units."""
        rows = torch.arange(len(v), device=v.device)
        flipped = v.clone()
        flipped[rows, units] = 1 - flipped[rows, units]
        return -v.shape[1] * F.softplus(self.free_energy(v) - self.free_energy(flipped))

    def reconstruction(self, v: Tensor) -> Tensor:
        """Each example's mean squared error after one deterministic up-down pass."""
        return (self.visible_probs(self.hidden_probs(v)) - v).pow(2).mean(1)


class CD(NamedTuple):
    grads: tuple[Tensor, Tensor, Tensor]  # minus the CD estimate, for weight and both biases
    chains: Tensor  # the negative chains' visible states after the k steps
    hidden: Tensor  # p(h | v) of the data


def contrastive_divergence(rbm: RBMParams, v0: Tensor, k: int, chains: Tensor | None) -> CD:
    """The CD-k (chains None: start at the data) or PCD gradient for a batch v0."""
    ph0 = rbm.hidden_probs(v0)
    v = v0 if chains is None else chains
    for _ in range(k):
        pv = rbm.visible_probs(bernoulli(rbm.hidden_probs(v)))
        v = bernoulli(pv)
    phk = rbm.hidden_probs(pv)
    n, m = len(v0), len(pv)
    grads = (
        -(ph0.T @ v0 / n - phk.T @ pv / m),
        -(v0.mean(0) - pv.mean(0)),
        -(ph0.mean(0) - phk.mean(0)),
    )
    return CD(grads=grads, chains=v, hidden=ph0)


def visible_bias_init(x: Tensor) -> Tensor:
    """log(p / (1 - p)) of each pixel's mean (Hinton 2010, section 8): the biases with which
    an RBM with no weights has the data's marginals."""
    p = x.flatten(1).mean(0).clamp(0.01, 0.99)
    return torch.log(p / (1 - p))


class Boltzmann(Protocol):
    """What the Gibbs-chain verbs and pictures need of an RBM or a DBM."""

    input_shape: tuple[int, ...]

    def chain_start(self, v: Tensor, generator: torch.Generator) -> Any: ...

    def sweep(
        self, v: Tensor, state: Any, generator: torch.Generator
    ) -> tuple[Tensor, Any]: ...  # -> p(v | the hidden layers), the hidden state

    def reconstruct(self, x: Tensor) -> Tensor: ...

    def filters(self, layer: int) -> Tensor: ...  # (units, visible)


class RBM(nn.Module):
    """forward: (batch, *input_shape) -> its reconstruction by one up-down pass."""

    def __init__(self, *, input_shape: tuple[int, ...], hidden: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        n_visible = math.prod(input_shape)
        # Small random weights (Hinton 2010: N(0, 0.01)); zero biases until the trainer sets
        # the visible ones from the data.
        self.weight = nn.Parameter(0.01 * torch.randn(hidden, n_visible))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))

    @property
    def params(self) -> RBMParams:
        return RBMParams(self.weight, self.visible_bias, self.hidden_bias)

    def chain_start(self, v: Tensor, generator: torch.Generator) -> None:
        return None

    def sweep(self, v: Tensor, state: None, generator: torch.Generator) -> tuple[Tensor, None]:
        rbm = self.params
        return rbm.visible_probs(bernoulli(rbm.hidden_probs(v), generator)), None

    def reconstruct(self, x: Tensor) -> Tensor:
        rbm = self.params
        return rbm.visible_probs(rbm.hidden_probs(x.flatten(1))).view(len(x), *self.input_shape)

    def filters(self, layer: int) -> Tensor:
        if layer != 1:
            raise BadRequest("layer", f"an rbm has one layer of filters; layer {layer} is not one")
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)

    def probe(self, x: Tensor) -> tuple[Any, Tensor]:
        """A CD-1 step and a reconstruction (models/summary.py measures their memory)."""
        return contrastive_divergence(self.params, x.flatten(1), 1, None).grads, self(x)


def build_rbm(spec: RBMJob, info: DatasetInfo) -> RBM:
    return RBM(input_shape=info.input_shape, hidden=spec.model.hidden)


class RBMTrainer(GradientTrainer):
    """Per batch: the CD-k or PCD gradient into the `model` optimizer. The persistent chains
    (one per example of a batch) are part of the trainer's state, so a resumed run goes on
    with the same chains."""

    model: RBM

    def __init__(self, spec: RBMJob, model: RBM, splits: Splits, device: torch.device):
        super().__init__(spec, model, splits, device)
        self.k = spec.model.cd_k
        self.chains: Tensor | None = None
        if spec.model.persistent:
            start = torch.Generator().manual_seed(spec.train.seed)
            shape = (self.batch_size, model.weight.shape[1])
            self.chains = bernoulli(torch.full(shape, 0.5), start).to(device)
        with torch.no_grad():  # a checkpoint restored after this overwrites it
            model.visible_bias.copy_(visible_bias_init(splits.train.x))

    @torch.no_grad()
    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        self.model.train()
        v0 = self.batch(epoch, index).x.flatten(1)
        rbm = self.model.params
        units = torch.randint(v0.shape[1], (len(v0),), device=v0.device)
        sums = {
            "reconstruction": rbm.reconstruction(v0).sum().item(),
            "pseudo_likelihood": rbm.pseudo_likelihood(v0, units).sum().item(),
        }
        cd = contrastive_divergence(rbm, v0, self.k, self.chains)
        if self.chains is not None:
            self.chains = cd.chains
        self.apply_gradients("model", dict(zip(rbm.tensors, cd.grads, strict=True)))
        return {**sums, "count": float(len(v0))}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Both metrics over the split; the flipped units are drawn with seed 0, so every
        epoch is judged on the same ones."""
        self.model.eval()
        rbm = self.model.params
        x = split.x.flatten(1)
        generator = torch.Generator(device=self.device).manual_seed(0)
        units = torch.randint(x.shape[1], (len(x),), generator=generator, device=self.device)
        reconstruction, pseudo_likelihood = 0.0, 0.0
        chunk = self.eval_chunk
        for start in range(0, len(x), chunk):
            part = slice(start, start + chunk)
            reconstruction += rbm.reconstruction(x[part]).sum().item()
            pseudo_likelihood += rbm.pseudo_likelihood(x[part], units[part]).sum().item()
        n = len(x)
        return {"reconstruction": reconstruction / n, "pseudo_likelihood": pseudo_likelihood / n}

    def state(self) -> dict[str, Any]:
        return {"chains": self.chains}

    def load_state(self, state: dict[str, Any]) -> None:
        chains = state["chains"]
        self.chains = None if chains is None else chains.to(self.device)

    @torch.inference_mode()
    def samples(self, n: int, generator: torch.Generator) -> Tensor:
        self.model.eval()
        return draw(self.model, n, self.spec.model.sample_steps, generator)


# --- Gibbs chains, for the RBM and the DBM ---------------------------------------------------


def run_chain(
    module: Boltzmann,
    v: Tensor,
    steps: int,
    generator: torch.Generator,
    *,
    known: Tensor | None = None,
    mask: Tensor | None = None,
    average: bool = False,
) -> Tensor:
    """`steps` Gibbs sweeps from visible states v (batch, visible); where `mask` is true the
    visible units are clamped to `known`. Returns p(v | hidden) of the last sweep, or with
    `average` its mean over the second half of the sweeps (an estimate of the expected image,
    which is what an inpainting should be judged on)."""
    state = module.chain_start(v, generator)
    total, count = torch.zeros_like(v), 0
    for t in range(steps):
        pv, state = module.sweep(v, state, generator)
        v = bernoulli(pv, generator)
        if mask is not None:
            v = torch.where(mask, known, v)
        if average and 2 * t >= steps - 1:
            total, count = total + pv, count + 1
    return total / count if average else pv


def draw(module: Boltzmann, n: int, steps: int, generator: torch.Generator) -> Tensor:
    """n samples (probabilities of the visible units after `steps` sweeps from uniformly random
    states), shaped like the inputs."""
    n_visible = math.prod(module.input_shape)
    device = next(module.parameters()).device
    start = bernoulli(torch.full((n, n_visible), 0.5, device=device), generator)
    return run_chain(module, start, steps, generator).view(n, *module.input_shape)


def inpaint(module: Boltzmann, x: Tensor, mask: Tensor, steps: int, seed: int) -> Tensor:
    """x (batch, visible) with the units where mask is false Gibbs-sampled given the others
    (clamped); those start at random, and come back as their mean probability."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    start = torch.where(mask, x, bernoulli(torch.full_like(x, 0.5), generator))
    filled = run_chain(module, start, steps, generator, known=x, mask=mask, average=True)
    return torch.where(mask, x, filled)


def check_chain_steps(chains: int, steps: int) -> None:
    if chains * steps > MAX_CHAIN_STEPS:
        raise BadRequest(
            "steps",
            f"{chains} chains x {steps} Gibbs steps is more than the {MAX_CHAIN_STEPS:,} one "
            "request may run; ask for fewer samples, inputs or steps",
        )


def mask_tensor(served: Served, mask: list[Any], n: int) -> Tensor:
    """The request's mask as a (n, visible) bool tensor: one mask for every input, or one per
    input; values 0 and 1 only."""
    n_visible = math.prod(served.info.input_shape)
    try:
        m = torch.as_tensor(mask, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise BadRequest("mask", f"a mask is (nested) lists of 0 and 1: {exc}") from exc
    if m.numel() == n_visible:
        m = m.reshape(1, n_visible).expand(n, n_visible)
    elif m.numel() == n * n_visible:
        m = m.reshape(n, n_visible)
    else:
        raise BadRequest(
            "mask",
            f"a mask holds {n_visible} values (shape {list(served.info.input_shape)}), one for "
            f"all the inputs or one per input; this one holds {m.numel()}",
        )
    if not ((m == 0) | (m == 1)).all():
        raise BadRequest("mask", "a mask holds 1 (known) and 0 (missing) only")
    return (m == 1).to(served.device)


@torch.inference_mode()
def sample(served: Served, request: SampleRequest) -> dict[str, Any]:
    """n samples after `steps` Gibbs sweeps (default: the job's sample_steps) from random
    states drawn with `seed`."""
    if request.latents is not None:
        raise BadRequest("latents", f"a {served.spec.family} has no latent space; give steps")
    steps = request.steps or served.spec.model.sample_steps
    check_chain_steps(request.n, steps)
    generator = torch.Generator(device=served.device).manual_seed(request.seed)
    samples = draw(served.module, request.n, steps, generator)
    return {"samples": samples.cpu().tolist(), "steps": steps}


@torch.inference_mode()
def reconstruct(served: Served, request: ReconstructRequest) -> dict[str, Any]:
    """Without a mask: one deterministic pass up and down. With one: the missing values
    inpainted by `steps` Gibbs sweeps with the known ones clamped. The loss is each example's
    mean squared error (with a mask: over its missing values, against what was sent there)."""
    x = inputs_tensor(served, request.inputs, raw=request.raw)
    flat = x.flatten(1)
    if request.mask is None:
        out = served.module.reconstruct(x).flatten(1)
        loss = (out - flat).pow(2).mean(1)
    else:
        check_chain_steps(len(x), request.steps)
        mask = mask_tensor(served, request.mask, len(x))
        out = inpaint(served.module, flat, mask, request.steps, request.seed)
        missing = (~mask).float()
        loss = ((out - flat).pow(2) * missing).sum(1) / missing.sum(1).clamp(min=1)
    scale = served.info.input_scale if request.raw else 1.0
    outputs = (out * scale).reshape(np.shape(request.inputs))
    return {"outputs": outputs.cpu().tolist(), "loss": loss.cpu().tolist()}


@torch.inference_mode()
def score(served: Served, request: ScoreRequest) -> dict[str, Any]:
    """Each input's log pseudo-likelihood (one unit flipped, drawn with `seed`) and free
    energy."""
    rbm = served.module.params
    x = inputs_tensor(served, request.inputs, raw=request.raw).flatten(1)
    generator = torch.Generator(device=served.device).manual_seed(request.seed)
    units = torch.randint(x.shape[1], (len(x),), generator=generator, device=served.device)
    return {
        "pseudo_likelihood": rbm.pseudo_likelihood(x, units).cpu().tolist(),
        "free_energy": rbm.free_energy(x).cpu().tolist(),
    }


@torch.inference_mode()
def samples_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """query.n samples after query.steps Gibbs sweeps (query.seed), in rows of 8."""
    generator = torch.Generator(device=served.device).manual_seed(query.seed)
    return ImageGrid.of("samples", draw(served.module, query.n, query.steps, generator))


@torch.inference_mode()
def filters_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """The weights of the first max(query.n, 8) units of layer query.layer, each drawn as an
    image and scaled to its own range (a DBM's upper layers projected down to the pixels)."""
    weights = served.module.filters(query.layer)
    w = weights[: max(query.n, ROW)]
    low, high = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
    images = ((w - low) / (high - low).clamp(min=1e-12)).view(len(w), *served.info.input_shape)
    return ImageGrid.of(f"layer {query.layer}", images)


@torch.inference_mode()
def inpainting_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """query.n test images; then, for the top, middle and bottom third of the rows removed,
    the image with them gray and its inpainting by query.steps Gibbs sweeps."""
    shape = served.info.input_shape
    x = served.dataset().test.x[: query.n].to(served.device)
    height = shape[1]
    rows = [("test", x.cpu().numpy())]
    for k, where in enumerate(("top", "middle", "bottom")):
        mask = torch.ones(shape, dtype=torch.bool, device=served.device)
        mask[:, k * height // 3 : (k + 1) * height // 3] = False
        masks = mask.flatten().expand(len(x), -1)
        flat = x.flatten(1)
        filled = inpaint(served.module, flat, masks, query.steps, query.seed)
        gray = torch.where(masks, flat, 0.5)
        rows += [
            (f"{where} removed", gray.view(len(x), *shape).cpu().numpy()),
            ("inpainted", filled.view(len(x), *shape).cpu().numpy()),
        ]
    return ImageGrid(rows)


register(
    Family(
        spec=RBMJob,
        build=build_rbm,
        trainer=RBMTrainer,
        verbs={"sample": sample, "reconstruct": reconstruct, "score": score},
        images={
            "samples": samples_picture,
            "filters": filters_picture,
            "reconstructions": reconstructions_picture,
            "inpainting": inpainting_picture,
        },
    )
)
