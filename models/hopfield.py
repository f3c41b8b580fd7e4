"""Hopfield network ("hopfield"): an associative memory of +/-1 patterns (Hopfield 1982).

The weights are computed in closed form from the patterns, by one of three rules:
hebbian, W = (1/N) sum_mu p_mu p_mu^T (Hopfield 1982); pseudo_inverse, W = P^+ P, the
projection onto the span of the patterns, which makes every stored pattern a fixed point while
they are linearly independent (Personnaz, Guyon & Dreyfus 1985); storkey, Storkey's (1997)
incremental rule, W_ij += (1/N) (p_i p_j - p_i h_ji - h_ij p_j) with the local field
h_ij = sum_{k != i, j} W_ik p_k. The energy is E(s) = -1/2 s^T W s (no biases). A unit takes
the sign of its field h_i = sum_j W_ij s_j and keeps its state where h_i = 0; asynchronous
updates (one unit at a time, a fresh random order each sweep) never raise E when W is symmetric
with a non-negative diagonal; synchronous ones may end on a 2-cycle.

Weights and states are float64, so that a field that is 0 in exact arithmetic is seen as 0.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from models.base import (
    ROW,
    BadRequest,
    Family,
    ImageGrid,
    ImageQuery,
    Lines,
    Served,
    Trainer,
    register,
)
from models.configs.hopfield import HopfieldConfig, HopfieldJob, Mode
from models.configs.verbs import AttractorsRequest, RecallRequest
from models.supervised import inputs_tensor

# A field within this share of sum_j |W_ij| of 0 is 0 (float64 rounding of exact zeros).
TOLERANCE = 1e-9
MAX_ATTRACTOR_NEURONS = 16


def hebbian(patterns: Tensor) -> Tensor:
    return patterns.T @ patterns / patterns.shape[1]


def pseudo_inverse(patterns: Tensor) -> Tensor:
    return torch.linalg.pinv(patterns) @ patterns


def storkey(patterns: Tensor) -> Tensor:
    n = patterns.shape[1]
    weight = patterns.new_zeros(n, n)
    for p in patterns:
        # fields[i, j] = sum over k != i, j of W_ik p_k: the sum over every k, less k = i and,
        # off the diagonal, k = j
        fields = (weight @ p - weight.diagonal() * p)[:, None] - weight * p[None, :]
        fields.diagonal().add_(weight.diagonal() * p)
        weight = weight + (torch.outer(p, p) - p[:, None] * fields.T - fields * p[None, :]) / n
    return weight


RULES = {"hebbian": hebbian, "pseudo_inverse": pseudo_inverse, "storkey": storkey}


def weights_for(patterns: Tensor, rule: str, *, zero_diagonal: bool) -> Tensor:
    """(p, N) +/-1 patterns -> (N, N) symmetric weights by `rule`."""
    weight = RULES[rule](patterns.double())
    weight = (weight + weight.T) / 2
    weight[weight.abs() <= 1e-12 * weight.abs().max()] = 0.0  # rounding left by pinv
    if zero_diagonal:
        weight.fill_diagonal_(0.0)
    return weight


class HopfieldNetwork(nn.Module):
    """N units fully connected by symmetric weights, and the p patterns they store (kept so
    that a recall can say which pattern it reached)."""

    def __init__(self, *, n_units: int, n_patterns: int):
        super().__init__()
        # A parameter (no gradient) so that the weights travel with the checkpoint and give
        # the module its device.
        self.weight = nn.Parameter(
            torch.zeros(n_units, n_units, dtype=torch.float64), requires_grad=False
        )
        self.register_buffer("patterns", torch.zeros(n_patterns, n_units, dtype=torch.float64))

    @property
    def n_units(self) -> int:
        return self.weight.shape[0]

    def store(self, patterns: Tensor, config: HopfieldConfig) -> None:
        """Set the weights from (p, N) +/-1 patterns."""
        with torch.no_grad():
            self.patterns.copy_(patterns)
            self.weight.copy_(
                weights_for(patterns, config.rule, zero_diagonal=config.zero_diagonal)
            )

    def fields(self, s: Tensor) -> Tensor:
        return s @ self.weight.T  # (batch, N)

    def tolerance(self) -> Tensor:
        return TOLERANCE * self.weight.abs().sum(1)  # (N,)

    def energy(self, s: Tensor) -> Tensor:
        return -0.5 * (self.fields(s) * s).sum(1)  # (batch,)

    def step(self, s: Tensor) -> Tensor:
        """One synchronous update: every unit takes the sign of its field (0 keeps it)."""
        return sign_or_keep(self.fields(s), s, self.tolerance())

    def is_fixed(self, s: Tensor) -> Tensor:
        return (self.step(s) == s).all(1)  # (batch,)

    def overlaps(self, s: Tensor) -> Tensor:
        """m = s . p / N with each stored pattern: (batch, p); exactly +-1 on a pattern."""
        return s @ self.patterns.T / self.n_units


def sign_or_keep(fields: Tensor, s: Tensor, tolerance: Tensor) -> Tensor:
    return torch.where(fields > tolerance, 1.0, torch.where(fields < -tolerance, -1.0, s))


def build_hopfield(spec: HopfieldJob, info: DatasetInfo) -> HopfieldNetwork:
    return HopfieldNetwork(n_units=math.prod(info.input_shape), n_patterns=n_stored(spec, info))


def n_stored(spec: HopfieldJob, info: DatasetInfo) -> int:
    return info.n_classes if info.name == "patterns" else spec.model.n_patterns


def binarize(x: Tensor, threshold: float) -> Tensor:
    """(batch, ...) inputs -> (batch, N) float64 +/-1: +1 above `threshold` (a +/-1 input
    stays as it is for any threshold in [0, 1))."""
    return torch.where(x.flatten(1) > threshold, 1.0, -1.0).double()


def flip(s: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Flip round(fraction * N) units of each state, chosen at random."""
    k = round(fraction * s.shape[1])
    if k == 0 or len(s) == 0:
        return s.clone()
    scores = torch.rand(s.shape, generator=generator, device=s.device)
    chosen = scores.argsort(1)[:, :k]  # (batch, k)
    out = s.clone()
    out.scatter_(1, chosen, -s.gather(1, chosen))
    return out


def stored_patterns(spec: HopfieldJob, info: DatasetInfo, train: Split) -> Tensor:
    """The (p, N) +/-1 patterns to store: every pattern of `patterns` (in label order), or for
    images one per class 0..n_patterns-1, its mean training image or its first example."""
    config = spec.model
    if info.name == "patterns":
        return binarize(train.x[train.y.argsort()], 0.0)
    rows = []
    for label in range(config.n_patterns):
        members = train.x[train.y == label]
        if len(members) == 0:
            raise ValueError(f"class {label} has no training examples to store")
        image = members.mean(0) if config.store == "class_means" else members[0]
        rows.append(image)
    return binarize(torch.stack(rows), config.threshold)


@dataclass
class Settled:
    final: Tensor  # (batch, N) +/-1
    iterations: Tensor  # (batch,) sweeps (async) or updates (sync) applied
    converged: Tensor  # (batch,) bool: a fixed point
    energies: Tensor  # (iterations + 1, batch): at the start and after each iteration
    states: list[Tensor]  # each (batch, N), the start and after each iteration (if recorded)


def settle(
    net: HopfieldNetwork,
    start: Tensor,
    *,
    mode: Mode,
    max_iterations: int,
    generator: torch.Generator,
    record: bool = False,
) -> Settled:
    """Update each state until it is a fixed point, sync reaches a 2-cycle, or max_iterations.

    Async draws one permutation of the units per sweep, shared by the whole batch, so a start
    ends where it would alone. A state that stopped keeps its value (and energy) afterwards.
    """
    s = start.clone()
    n = s.shape[1]
    weight, tolerance = net.weight, net.tolerance()
    iterations = torch.zeros(len(s), dtype=torch.long, device=s.device)
    done = net.is_fixed(s)
    converged = done.clone()
    previous = s
    energies, states = [net.energy(s)], [s.clone()] if record else []
    for _ in range(max_iterations):
        if done.all():
            break
        active = ~done
        if mode == "async":
            order = torch.randperm(n, generator=generator, device=generator.device)
            x = s[active]
            for i in order.tolist():
                x[:, i] = sign_or_keep(x @ weight[i], x[:, i], tolerance[i])
            new = s.clone()
            new[active] = x
        else:
            new = torch.where(active[:, None], net.step(s), s)
        cycling = active & (new == previous).all(1) if mode == "sync" else torch.zeros_like(done)
        previous, s = s, new
        iterations += active.long()
        fixed = active & net.is_fixed(s)
        converged |= fixed
        done |= fixed | cycling
        energies.append(net.energy(s))
        if record:
            states.append(s.clone())
    return Settled(
        final=s,
        iterations=iterations,
        converged=converged,
        energies=torch.stack(energies),
        states=states,
    )


class HopfieldTrainer(Trainer):
    """One "store" epoch of one batch: the weights from the patterns in closed form."""

    model: HopfieldNetwork

    def __init__(
        self, spec: HopfieldJob, model: HopfieldNetwork, splits: Splits, device: torch.device
    ):
        super().__init__(spec, model, splits, device)
        self.config: HopfieldConfig = spec.model

    def n_batches(self, epoch: int) -> int:
        return 1

    @torch.no_grad()
    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        self.model.train()
        patterns = stored_patterns(self.spec, self.splits.info, self.splits.train)
        self.model.store(patterns.to(self.device), self.config)
        stable = self.model.is_fixed(self.model.patterns).sum().item()
        return {"stable": float(stable), "count": float(len(patterns))}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Noisy examples of the stored classes settle; recall is the share that reach the
        pattern of their label, energy the mean final energy."""
        self.model.eval()
        net, config = self.model, self.config
        keep = split.y < len(net.patterns)
        x, labels = binarize(split.x[keep], config.threshold), split.y[keep]
        if len(labels) == 0:
            return {"recall": 0.0, "energy": 0.0}
        generator = torch.Generator(device=self.device).manual_seed(0)
        settled = settle(
            net,
            flip(x, config.noise, generator),
            mode=config.mode,
            max_iterations=config.max_iterations,
            generator=generator,
        )
        reached = (settled.final == net.patterns[labels]).all(1)
        return {
            "recall": reached.double().mean().item(),
            "energy": net.energy(settled.final).mean().item(),
        }


def matched(net: HopfieldNetwork, s: Tensor) -> tuple[list[int | None], list[bool], Tensor]:
    """For each state: the stored pattern it equals (or None), whether it equals a pattern's
    negative, and its overlaps with every pattern."""
    overlaps = net.overlaps(s)  # (batch, p)
    patterns = [int(row.nonzero()[0]) if row.any() else None for row in overlaps == 1.0]
    inverted = (overlaps == -1.0).any(1) & ~(overlaps == 1.0).any(1)
    return patterns, inverted.tolist(), overlaps


@torch.inference_mode()
def recall(served: Served, request: RecallRequest) -> dict[str, Any]:
    """Start states (given, or stored patterns) with `noise` of their units flipped, settled."""
    net: HopfieldNetwork = served.module
    config: HopfieldConfig = served.spec.model
    p = len(net.patterns)
    if request.patterns is not None:
        if (bad := max(request.patterns)) >= p:
            raise BadRequest(
                "patterns", f"pattern {bad} is out of range: the model stores {p} (0..{p - 1})"
            )
        start = net.patterns[request.patterns]
    else:
        start = binarize(inputs_tensor(served, request.inputs, raw=False), config.threshold)
    generator = torch.Generator(device=served.device).manual_seed(request.seed)
    settled = settle(
        net,
        flip(start, request.noise, generator),
        mode=request.mode,
        max_iterations=request.max_iterations,
        generator=generator,
        record=request.trajectory,
    )
    patterns, inverted, overlaps = matched(net, settled.final)
    energies = settled.energies.T.cpu().tolist()  # (batch, iterations + 1)
    states = torch.stack(settled.states, 1).int().cpu().tolist() if request.trajectory else None
    results = []
    for b, final in enumerate(settled.final.int().cpu().tolist()):
        t = int(settled.iterations[b])
        results.append(
            {
                "final": final,
                "iterations": t,
                "converged": bool(settled.converged[b]),
                "pattern": patterns[b],
                "inverted": inverted[b],
                "overlaps": overlaps[b].cpu().tolist(),
                "energy": energies[b][: t + 1],
                "states": states[b][: t + 1] if states is not None else None,
            }
        )
    return {"results": results}


@torch.inference_mode()
def attractors(served: Served, request: AttractorsRequest) -> dict[str, Any]:
    """Every one of the 2^N states settled, grouped by where it ends: a fixed point, or (sync,
    or a start still moving after max_iterations) a cycle, named by its state with the most
    leading +1s."""
    net: HopfieldNetwork = served.module
    n = net.n_units
    if n > MAX_ATTRACTOR_NEURONS:
        raise BadRequest(
            "model",
            f"attractors runs all 2^N starting states, for networks of at most "
            f"{MAX_ATTRACTOR_NEURONS} neurons; this one has {n}",
        )
    device = served.device
    bits = 2 ** torch.arange(n - 1, -1, -1, device=device)  # unit 0 is the highest bit
    codes = torch.arange(2**n, device=device)
    starts = ((codes[:, None] & bits) > 0).double() * 2 - 1  # (2^N, N), code 0 = all -1
    generator = torch.Generator(device=device).manual_seed(request.seed)
    settled = settle(
        net, starts, mode=request.mode, max_iterations=request.max_iterations, generator=generator
    )
    final, converged = settled.final, settled.converged
    ends = ((final > 0).long() * bits).sum(1)
    if not converged.all():
        # A sync 2-cycle reaches the same two states from either: name it by the larger code.
        other = ((net.step(final) > 0).long() * bits).sum(1)
        ends = torch.where(converged, ends, torch.maximum(ends, other))
    found = []
    for end in ends.unique().tolist():
        members = ends == end
        state = ((torch.tensor(end, device=device) & bits) > 0).double() * 2 - 1
        patterns, _, _ = matched(net, state[None])
        found.append(
            {
                "state": state.int().cpu().tolist(),
                "energy": net.energy(state[None]).item(),
                "basin": int(members.sum()),
                "stored": patterns[0] is not None,
                "kind": "fixed_point" if bool(converged[members].all()) else "cycle",
            }
        )
    # Largest basins first, then lowest energy, then the most leading +1s.
    found.sort(key=lambda a: (-a["basin"], a["energy"], [-v for v in a["state"]]))
    return {"n_neurons": n, "starts": 2**n, "attractors": found}


def noisy_stored(served: Served, query: ImageQuery, mode: Mode) -> tuple[Tensor, Settled]:
    """query.n stored patterns (cycling through them) with model.noise of their units flipped,
    settled for at most query.steps iterations; returns the indices and the run."""
    net: HopfieldNetwork = served.module
    which = torch.arange(query.n, device=served.device) % len(net.patterns)
    generator = torch.Generator(device=served.device).manual_seed(query.seed)
    start = flip(net.patterns[which], served.spec.model.noise, generator)
    settled = settle(
        net, start, mode=mode, max_iterations=query.steps, generator=generator, record=True
    )
    return which, settled


@torch.inference_mode()
def energy_picture(served: Served, query: ImageQuery) -> Lines:
    """Energy per sweep of async recalls from noisy stored patterns (never rising)."""
    which, settled = noisy_stored(served, query, "async")
    energies = settled.energies.T.cpu().tolist()  # a start that stopped keeps its energy
    series = {f"{b + 1}: pattern {k}": energies[b] for b, k in enumerate(which.tolist())}
    return Lines(series, xlabel="sweep (1: the noisy start)", ylabel="energy")


@torch.inference_mode()
def recall_picture(served: Served, query: ImageQuery) -> ImageGrid:
    """Stored patterns, their noisy versions and what the network recalled, as images (a
    pattern that is not an image is drawn as a 1 x N strip)."""
    which, settled = noisy_stored(served, query, served.spec.model.mode)
    net: HopfieldNetwork = served.module
    shape = served.info.input_shape
    shape = shape if len(shape) == 3 else (1, 1, net.n_units)

    def images(s: Tensor) -> np.ndarray:
        return ((s.float() + 1) / 2).reshape(len(s), *shape).cpu().numpy()

    stored, noisy, recalled = net.patterns[which], settled.states[0], settled.final
    rows = []
    for start in range(0, len(which), ROW):
        part = slice(start, start + ROW)
        rows += [
            ("stored", images(stored[part])),
            ("noisy", images(noisy[part])),
            ("recalled", images(recalled[part])),
        ]
    return ImageGrid(rows)


register(
    Family(
        spec=HopfieldJob,
        build=build_hopfield,
        trainer=HopfieldTrainer,
        verbs={"recall": recall, "attractors": attractors},
        images={"energy": energy_picture, "recall": recall_picture},
    )
)
