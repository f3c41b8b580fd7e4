"""Deep Boltzmann machines ("dbm"): layers of Bernoulli units v = h0, h1, ..., hL with weights
between neighbouring layers only, energy E = -sum_l h_{l+1}.W_l.h_l - sum_l b_l.h_l
(Salakhutdinov & Hinton 2009).

Training has two parts, each stage with a fresh optimizer:
1. Greedy pretraining (optimizer `pretrain`): layer l is trained as an RBM by CD-k on the
   activities of the layers below, with its weights doubled where the DBM's layer also gets
   input from the other side (Salakhutdinov & Hinton 2012), so that the stack is a DBM
   without rescaling. Each RBM above the pixels has its own visible biases.
2. Joint training of every layer (optimizer `joint`): the data term of the gradient from the
   mean-field posterior of the hidden layers given the data (started bottom-up with doubled
   weights below the top, to stand in for the missing input from above), the model term from
   persistent Gibbs chains that alternate between the odd and the even layers. The chains
   start at training examples and are run WARMUP_SWEEPS sweeps under the pretrained weights
   before the first update (from random states, the first updates undo the pretraining).
   They are the trainer's state, kept with each checkpoint.
"""

import math
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.autoencoder import reconstructions_picture
from models.base import BadRequest, Family, register
from models.configs.dbm import DBMJob
from models.rbm import (
    RBMParams,
    bernoulli,
    contrastive_divergence,
    draw,
    filters_picture,
    inpainting_picture,
    reconstruct,
    sample,
    samples_picture,
    visible_bias_init,
)
from models.training import GradientTrainer

WARMUP_SWEEPS = 50


class DBM(nn.Module):
    """forward: (batch, *input_shape) -> its reconstruction from the mean-field posterior."""

    def __init__(self, *, input_shape: tuple[int, ...], layers: list[int], mean_field_steps: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.mean_field_steps = mean_field_steps
        sizes = [math.prod(input_shape), *layers]
        # weights[i]: (size of layer i + 1, size of layer i); biases[0] are the visible ones.
        self.weights = nn.ParameterList(
            nn.Parameter(0.01 * torch.randn(b, a)) for a, b in pairwise(sizes)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in sizes)
        # Pretraining only: the visible biases of the RBMs of layers 2..L.
        self.pretrain_biases = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in layers[:-1])

    @property
    def depth(self) -> int:
        return len(self.weights)

    def rbm(self, i: int) -> RBMParams:
        """The RBM that pretrains layer i + 1 on layer i. Its weights count twice where the
        DBM's layer would also get input from the other side (Salakhutdinov & Hinton 2012):
        going up into every hidden layer but the top, going down into every layer but v."""
        below = self.biases[0] if i == 0 else self.pretrain_biases[i - 1]
        up = 2.0 if i + 1 < self.depth else 1.0
        down = 2.0 if i > 0 else 1.0
        return RBMParams(self.weights[i], below, self.biases[i + 1], up=up, down=down)

    def up(self, v: Tensor, depth: int) -> Tensor:
        """Activities at layer `depth` through the pretraining RBMs below it."""
        h = v
        for i in range(depth):
            h = self.rbm(i).hidden_probs(h)
        return h

    def stack_reconstruction(self, v: Tensor, depth: int) -> Tensor:
        """v up `depth` pretraining RBMs and back down."""
        h = self.up(v, depth)
        for i in reversed(range(depth)):
            h = self.rbm(i).visible_probs(h)
        return h

    def layer_probs(self, states: list[Tensor], i: int) -> Tensor:
        """p(layer i = 1 | its neighbours in `states`)."""
        total = self.biases[i]
        if i > 0:
            total = total + F.linear(states[i - 1], self.weights[i - 1])
        if i < self.depth:
            total = total + states[i + 1] @ self.weights[i]
        return torch.sigmoid(total)

    def bottom_up(self, v: Tensor) -> list[Tensor]:
        """[v, h1, ..., hL] from v alone, through the pretraining RBMs (weights doubled below
        the top layer)."""
        states = [v]
        for i in range(self.depth):
            states.append(self.rbm(i).hidden_probs(states[i]))
        return states

    def mean_field(self, v: Tensor, steps: int) -> list[Tensor]:
        """[v, mu_1, ..., mu_L]: the mean-field posterior of the hidden layers given v."""
        mu = self.bottom_up(v)
        for _ in range(steps):
            for i in range(1, self.depth + 1):
                mu[i] = self.layer_probs(mu, i)
        return mu

    def chain_start(self, v: Tensor, generator: torch.Generator | None) -> list[Tensor]:
        return [bernoulli(p, generator) for p in self.bottom_up(v)[1:]]

    def sweep(
        self, v: Tensor, hidden: list[Tensor], generator: torch.Generator | None
    ) -> tuple[Tensor, list[Tensor]]:
        """One Gibbs sweep: the odd layers given the even ones, then the even hidden layers;
        returns p(v | h1) and the hidden states."""
        states = [v, *hidden]
        for parity in (1, 0):
            for i in range(1, self.depth + 1):
                if i % 2 == parity:
                    states[i] = bernoulli(self.layer_probs(states, i), generator)
        return self.layer_probs(states, 0), states[1:]

    def reconstruct(self, x: Tensor) -> Tensor:
        mu = self.mean_field(x.flatten(1), self.mean_field_steps)
        return self.layer_probs(mu, 0).view(len(x), *self.input_shape)

    def filters(self, layer: int) -> Tensor:
        """Layer `layer`'s units as weights on the pixels (W_{i-1} ... W_0)."""
        if not 1 <= layer <= self.depth:
            raise BadRequest(
                "layer", f"this dbm has layers 1..{self.depth} of filters, not {layer}"
            )
        projection = self.weights[0]
        for i in range(1, layer):
            projection = self.weights[i] @ projection
        return projection

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)


def build_dbm(spec: DBMJob, info: DatasetInfo) -> DBM:
    config = spec.model
    return DBM(
        input_shape=info.input_shape,
        layers=config.layers,
        mean_field_steps=config.mean_field_steps,
    )


class DBMTrainer(GradientTrainer):
    """Stage i < L: the RBM of layer i + 1 by CD-k; stage L ("joint"): every weight and bias
    by mean-field and persistent chains."""

    model: DBM

    def __init__(self, spec: DBMJob, model: DBM, splits: Splits, device: torch.device):
        self.n_layers = len(spec.model.layers)
        super().__init__(spec, model, splits, device)
        config = spec.model
        self.k, self.steps, self.sweeps = config.cd_k, config.mean_field_steps, config.gibbs_steps
        self.n_chains = config.chains
        with torch.no_grad():  # a checkpoint restored after this overwrites it
            model.biases[0].copy_(visible_bias_init(splits.train.x))
        self.chains: list[Tensor] | None = None
        if self.stage == self.n_layers:  # no pretraining
            self.chains = self.start_chains()

    def trained_parameters(self) -> dict[str, list[nn.Parameter]]:
        if self.stage < self.n_layers:
            return {"pretrain": list(self.model.rbm(self.stage).tensors)}
        return {"joint": [*self.model.weights, *self.model.biases]}

    def on_stage(self, stage: int) -> None:
        super().on_stage(stage)
        if stage == self.n_layers:
            self.chains = self.start_chains()

    @torch.no_grad()
    def start_chains(self) -> list[Tensor]:
        """Chains at random training examples, run WARMUP_SWEEPS sweeps (the loop's seeded RNG)."""
        train = self.splits.train.x
        picked = torch.randint(len(train), (self.n_chains,), device=train.device)
        v = bernoulli(train[picked].flatten(1))
        hidden = self.model.chain_start(v, None)
        for _ in range(WARMUP_SWEEPS):
            pv, hidden = self.model.sweep(v, hidden, None)
            v = bernoulli(pv)
        return [v, *hidden]

    @torch.no_grad()
    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        self.model.train()
        v0 = self.batch(epoch, index).x.flatten(1)
        n = float(len(v0))
        if self.stage < self.n_layers:
            x = self.model.up(v0, self.stage)
            rbm = self.model.rbm(self.stage)
            reconstruction = rbm.reconstruction(x).sum().item()
            cd = contrastive_divergence(rbm, x, self.k, None)
            self.apply_gradients("pretrain", dict(zip(rbm.tensors, cd.grads, strict=True)))
            return {"reconstruction": reconstruction, "count": n}
        model, chains = self.model, self.chains
        assert chains is not None  # started on entering joint training
        mu = model.mean_field(v0, self.steps)
        reconstruction = (model.layer_probs(mu, 0) - v0).pow(2).mean(1).sum().item()
        v, hidden = chains[0], chains[1:]
        for _ in range(self.sweeps):
            pv, hidden = model.sweep(v, hidden, None)
            v = bernoulli(pv)
        self.chains = [v, *hidden]
        fantasy = [pv, *hidden]  # the visible term by its probabilities
        m = len(v)
        grads: dict[nn.Parameter, Tensor] = {}
        for i, weight in enumerate(model.weights):
            grads[weight] = -(mu[i + 1].T @ mu[i] / n - fantasy[i + 1].T @ fantasy[i] / m)
        for i, bias in enumerate(model.biases):
            grads[bias] = -(mu[i].mean(0) - fantasy[i].mean(0))
        self.apply_gradients("joint", grads)
        return {"reconstruction": reconstruction, "count": n}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """The pixels' mean squared error after a pass up and down the RBMs pretrained so far,
        or (joint training) rebuilt from the mean-field posterior."""
        self.model.eval()
        x = split.x.flatten(1)
        total = 0.0
        chunk = self.eval_chunk
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk]
            if self.stage < self.n_layers:
                out = self.model.stack_reconstruction(part, self.stage + 1)
            else:
                out = self.model.reconstruct(part).flatten(1)
            total += (out - part).pow(2).mean(1).sum().item()
        return {"reconstruction": total / len(x)}

    def state(self) -> dict[str, Any]:
        return {"chains": self.chains}

    def load_state(self, state: dict[str, Any]) -> None:
        chains = state["chains"]
        self.chains = None if chains is None else [c.to(self.device) for c in chains]

    @torch.inference_mode()
    def samples(self, n: int, generator: torch.Generator) -> Tensor:
        self.model.eval()
        return draw(self.model, n, self.spec.model.sample_steps, generator)


register(
    Family(
        spec=DBMJob,
        build=build_dbm,
        trainer=DBMTrainer,
        verbs={"sample": sample, "reconstruct": reconstruct},
        images={
            "samples": samples_picture,
            "filters": filters_picture,
            "reconstructions": reconstructions_picture,
            "inpainting": inpainting_picture,
        },
    )
)
