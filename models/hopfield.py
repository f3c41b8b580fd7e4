"""Hopfield network ("hopfield"): an associative memory (Hopfield 1982, 1984).

The weights are given by the job, with biases b, or computed in closed form from +/-1 patterns
by one of three rules: hebbian, W = (1/N) sum_mu p_mu p_mu^T (Hopfield 1982); pseudo_inverse,
W = P^+ P, the projection onto the span of the patterns, which makes every stored pattern a
fixed point while they are linearly independent (Personnaz, Guyon & Dreyfus 1985); storkey,
Storkey's (1997) incremental rule, W_ij += (1/N) (p_i p_j - p_i h_ji - h_ij p_j) with the local
field h_ij = sum_{k != i, j} W_ik p_k.

Binary states: the energy is E(s) = -1/2 s^T W s - b^T s. A unit takes the sign of its field
h_i = sum_j W_ij s_j + b_i and keeps its state where h_i = 0; asynchronous updates (one unit at
a time, a fresh random order each sweep) never raise E when W is symmetric with a non-negative
diagonal; synchronous ones may end on a 2-cycle.

Continuous states (Hopfield 1984): x in [-1, 1]^N and x_i <- tanh(gain h_i), one unit at a time
(async), every unit at once (sync), or by Euler steps of size dt of the flow
dx/dt = -x + tanh(gain h) (flow; dt = 1 is sync). The energy adds the inverse activation's
integral, int_0^x atanh(s) ds = ((1 + x) ln(1 + x) + (1 - x) ln(1 - x)) / 2 (ln 2 at +-1):
    E(x) = -1/2 x^T W x - b^T x + (1/gain) sum_i int_0^{x_i} atanh(s) ds.
For symmetric W with zero diagonal an async update puts x_i at the minimum of E over x_i, so E
never rises, nor along the flow: dE/dx_i = (atanh(x_i) - gain h_i) / gain has the sign opposite
to dx_i/dt. The three share their fixed points x* = tanh(gain (W x* + b)), and the Jacobian of
the update map there, J = gain diag(1 - x*^2) W. A fixed point is stable for sync where every
|eig J| < 1, for the flow where every Re eig(J - I) < 0; the latter also judges async (for
symmetric W with zero diagonal both mean a strict local minimum of E).

Weights and states are float64, so that a field that is 0 in exact arithmetic is seen as 0.
"""

import math
from collections.abc import Sequence
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
    Trajectories,
    register,
)
from models.configs.hopfield import HopfieldConfig, HopfieldJob, Mode
from models.configs.verbs import MAX_FIXED_POINT_STARTS, AttractorsRequest, RecallRequest
from models.supervised import inputs_tensor

# A field within this share of sum_j |W_ij| + |b_i| of 0 is 0 (float64 rounding of exact zeros).
TOLERANCE = 1e-9
MAX_ATTRACTOR_NEURONS = 16
MAX_FIXED_POINT_NEURONS = 10
SETTLED = 1e-6  # continuous: no unit's update moves it further, the state is a fixed point
DISTINCT = 1e-6  # continuous: fixed points this close in every unit are one
BASIN = 1e-3  # continuous: a start that ends this close to a fixed point is in its basin
DEFAULT_RANDOM_STARTS = 200
NEWTON_STEPS = 100


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


def atanh_integral(x: Tensor) -> Tensor:
    """int_0^x atanh(s) ds, elementwise for x in [-1, 1] (ln 2 at +-1)."""
    return (torch.special.xlogy(1 + x, 1 + x) + torch.special.xlogy(1 - x, 1 - x)) / 2


class HopfieldNetwork(nn.Module):
    """N units fully connected by weights W with biases b, and the p patterns they store (kept
    so that a recall can say which pattern it reached). `gain` None: binary states."""

    def __init__(
        self,
        *,
        n_units: int,
        n_patterns: int,
        gain: float | None = None,
        bias: Sequence[float] | None = None,
    ):
        super().__init__()
        # A parameter (no gradient) so that the weights travel with the checkpoint and give
        # the module its device.
        self.weight = nn.Parameter(
            torch.zeros(n_units, n_units, dtype=torch.float64), requires_grad=False
        )
        self.register_buffer("patterns", torch.zeros(n_patterns, n_units, dtype=torch.float64))
        # From the job's config, like the gain: not in the checkpoint.
        b = torch.zeros(n_units) if bias is None else torch.tensor(bias, dtype=torch.float64)
        self.register_buffer("bias", b.double(), persistent=False)
        self.gain = gain

    @property
    def n_units(self) -> int:
        return self.weight.shape[0]

    @property
    def continuous(self) -> bool:
        return self.gain is not None

    def store(self, patterns: Tensor, config: HopfieldConfig) -> None:
        """Set the weights: the given ones, or from (p, N) +/-1 patterns by the rule."""
        with torch.no_grad():
            self.patterns.copy_(patterns)
            if config.weights is not None:
                weight = torch.tensor(config.weights, dtype=torch.float64)
            else:
                weight = weights_for(patterns, config.rule, zero_diagonal=config.zero_diagonal)
            self.weight.copy_(weight)

    def fields(self, s: Tensor) -> Tensor:
        return s @ self.weight.T + self.bias  # (batch, N)

    def tolerance(self) -> Tensor:
        return TOLERANCE * (self.weight.abs().sum(1) + self.bias.abs())  # (N,)

    def activate(self, fields: Tensor) -> Tensor:
        return torch.tanh(self.gain * fields)

    def energy(self, s: Tensor) -> Tensor:
        energy = -0.5 * ((s @ self.weight.T) * s).sum(1) - s @ self.bias  # (batch,)
        if self.continuous:
            energy = energy + atanh_integral(s).sum(1) / self.gain
        return energy

    def step(self, s: Tensor) -> Tensor:
        """One synchronous update: every unit takes the sign of its field (0 keeps it), or
        tanh(gain * field)."""
        if self.continuous:
            return self.activate(self.fields(s))
        return sign_or_keep(self.fields(s), s, self.tolerance())

    def is_fixed(self, s: Tensor) -> Tensor:
        if self.continuous:
            return (self.step(s) - s).abs().amax(1) <= SETTLED
        return (self.step(s) == s).all(1)  # (batch,)

    def overlaps(self, s: Tensor) -> Tensor:
        """m = s . p / N with each stored pattern: (batch, p); exactly +-1 on a pattern."""
        return s @ self.patterns.T / self.n_units


def sign_or_keep(fields: Tensor, s: Tensor, tolerance: Tensor) -> Tensor:
    return torch.where(fields > tolerance, 1.0, torch.where(fields < -tolerance, -1.0, s))


def build_hopfield(spec: HopfieldJob, info: DatasetInfo) -> HopfieldNetwork:
    config = spec.model
    return HopfieldNetwork(
        n_units=math.prod(info.input_shape),
        n_patterns=n_stored(spec, info),
        gain=config.gain if config.state == "continuous" else None,
        bias=config.bias,
    )


def n_stored(spec: HopfieldJob, info: DatasetInfo) -> int:
    return info.n_classes if info.name == "patterns" else spec.model.n_patterns


def binarize(x: Tensor, threshold: float) -> Tensor:
    """(batch, ...) inputs -> (batch, N) float64 +/-1: +1 above `threshold` (a +/-1 input
    stays as it is for any threshold in [0, 1))."""
    return torch.where(x.flatten(1) > threshold, 1.0, -1.0).double()


def flip(s: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Flip (negate) round(fraction * N) units of each state, chosen at random."""
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
    final: Tensor  # (batch, N)
    iterations: Tensor  # (batch,) sweeps (async), updates (sync) or steps (flow) applied
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
    step_size: float | None = None,
    record: bool = False,
) -> Settled:
    """Update each state until it is a fixed point, sync reaches a 2-cycle, or max_iterations.

    Async draws one permutation of the units per sweep, shared by the whole batch, so a start
    ends where it would alone. Flow (continuous) moves each state `step_size` of the way to
    its sync update. A state that stopped keeps its value (and energy) afterwards.
    """
    s = start.clone()
    n = s.shape[1]
    weight, bias, tolerance = net.weight, net.bias, net.tolerance()
    iterations = torch.zeros(len(s), dtype=torch.long, device=s.device)
    done = net.is_fixed(s)
    converged = done.clone()
    previous = s.clone()  # sync: the state before the last update
    energy = net.energy(s)
    energies, states = [energy], [s.clone()] if record else []
    for _ in range(max_iterations):
        if done.all():
            break
        active = (~done).nonzero()[:, 0]  # only these rows are computed
        before = s[active]
        x = before.clone()
        if mode == "async":
            order = torch.randperm(n, generator=generator, device=generator.device)
            for i in order.tolist():
                field = x @ weight[i] + bias[i]
                if net.continuous:
                    x[:, i] = net.activate(field)
                else:
                    x[:, i] = sign_or_keep(field, x[:, i], tolerance[i])
        elif mode == "sync":
            x = net.step(x)
        else:
            x = x + step_size * (net.step(x) - x)
        s[active] = x
        iterations[active] += 1
        fixed = net.is_fixed(x)
        converged[active] |= fixed
        if mode == "sync":  # back where it was two updates ago: a 2-cycle
            fixed |= (x - previous[active]).abs().amax(1) <= (SETTLED if net.continuous else 0)
            previous[active] = before
        done[active] |= fixed
        energy = energy.clone()
        energy[active] = net.energy(x)
        energies.append(energy)
        if record:
            states.append(s.clone())
    return Settled(
        final=s,
        iterations=iterations,
        converged=converged,
        energies=torch.stack(energies),
        states=states,
    )


def reaches(final: Tensor, patterns: Tensor) -> Tensor:
    """Whether each final state has the signs of its pattern (binary: is it)."""
    return (torch.sign(final) == patterns).all(1)


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
        net, config = self.model, self.config
        patterns = stored_patterns(self.spec, self.splits.info, self.splits.train)
        net.store(patterns.to(self.device), config)
        if net.continuous:  # a pattern stays in its orthant
            settled = settle(
                net,
                net.patterns,
                mode=config.mode,
                max_iterations=config.max_iterations,
                generator=torch.Generator(device=self.device).manual_seed(0),
                step_size=config.step_size,
            )
            stable = reaches(settled.final, net.patterns).sum().item()
        else:
            stable = net.is_fixed(net.patterns).sum().item()
        return {"stable": float(stable), "count": float(len(patterns))}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Noisy examples of the stored classes settle; recall is the share that reach the
        pattern of their label (continuous: its signs), energy the mean final energy."""
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
            step_size=config.step_size,
        )
        return {
            "recall": reaches(settled.final, net.patterns[labels]).double().mean().item(),
            "energy": net.energy(settled.final).mean().item(),
        }


def matched(net: HopfieldNetwork, s: Tensor) -> tuple[list[int | None], list[bool], Tensor]:
    """For each state: the stored pattern whose signs it has (or None), whether it has a
    pattern's negative signs, and its overlaps with every pattern."""
    signs = net.overlaps(torch.where(s.abs() <= SETTLED, 0.0, torch.sign(s)))  # (batch, p)
    patterns = [int(row.nonzero()[0]) if row.any() else None for row in signs == 1.0]
    inverted = (signs == -1.0).any(1) & ~(signs == 1.0).any(1)
    return patterns, inverted.tolist(), net.overlaps(s)


def refuse_flow(net: HopfieldNetwork, request: RecallRequest | AttractorsRequest) -> None:
    if request.mode == "flow" and not net.continuous:
        raise BadRequest("mode", "flow is for continuous states; this network is binary")
    if request.step_size is not None and request.mode != "flow":
        raise BadRequest("step_size", "step_size is for mode flow")


def continuous_inputs(served: Served, inputs: list[Any]) -> Tensor:
    """Start states in [-1, 1], as given (images in [0, 1]: 2 x - 1), float64."""
    inputs_tensor(served, inputs, raw=False)  # the checks of shape and values
    x = torch.from_numpy(np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1))
    if len(served.info.input_shape) == 3:
        x = 2 * x - 1
    if (x.abs() > 1).any():
        scale = " (images in [0, 1])" if len(served.info.input_shape) == 3 else ""
        raise BadRequest("inputs", f"continuous states hold values in [-1, 1]{scale}")
    return x.to(served.device)


@torch.inference_mode()
def recall(served: Served, request: RecallRequest) -> dict[str, Any]:
    """Start states (given, or stored patterns) with `noise` of their units flipped, settled."""
    net: HopfieldNetwork = served.module
    config: HopfieldConfig = served.spec.model
    refuse_flow(net, request)
    p = len(net.patterns)
    if request.patterns is not None:
        if (bad := max(request.patterns)) >= p:
            raise BadRequest(
                "patterns", f"pattern {bad} is out of range: the model stores {p} (0..{p - 1})"
            )
        start = net.patterns[request.patterns]
    elif net.continuous:
        start = continuous_inputs(served, request.inputs)
    else:
        start = binarize(inputs_tensor(served, request.inputs, raw=False), config.threshold)
    generator = torch.Generator(device=served.device).manual_seed(request.seed)
    settled = settle(
        net,
        flip(start, request.noise, generator),
        mode=request.mode,
        max_iterations=request.max_iterations,
        generator=generator,
        step_size=request.step_size or config.step_size,
        record=request.trajectory,
    )

    def values(t: Tensor) -> list[Any]:
        return (t if net.continuous else t.int()).cpu().tolist()

    patterns, inverted, overlaps = matched(net, settled.final)
    energies = settled.energies.T.cpu().tolist()  # (batch, iterations + 1)
    states = values(torch.stack(settled.states, 1)) if request.trajectory else None
    results = []
    for b, final in enumerate(values(settled.final)):
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
    """Binary: every one of the 2^N states settled, grouped by where it ends: a fixed point,
    or (sync, or a start still moving after max_iterations) a cycle, named by its state with
    the most leading +1s. Continuous: every fixed point found, with its stability
    (fixed_points_found)."""
    net: HopfieldNetwork = served.module
    refuse_flow(net, request)
    if net.continuous:
        return fixed_points_found(served, request)
    for name in ("grid", "n_random"):
        if getattr(request, name) is not None:
            raise BadRequest(
                name, f"{name} is for continuous states; a binary network starts from all 2^n"
            )
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


# --- continuous fixed points ---------------------------------------------------------------


def default_grid(n: int) -> int:
    """Points per axis: the most, up to 9, whose grid holds at most 1024 starts."""
    return max(g for g in range(1, 10) if g**n <= 1024)


def count_starts(n: int, request: AttractorsRequest) -> int:
    """Starts of a continuous attractors call: the grid, the origin, the random ones."""
    grid = request.grid or default_grid(n)
    n_random = DEFAULT_RANDOM_STARTS if request.n_random is None else request.n_random
    return grid**n + 1 + n_random


def search_starts(n: int, request: AttractorsRequest, generator: torch.Generator) -> Tensor:
    """(starts, n): a grid over [-1, 1]^n with its ends, the origin, and uniform draws."""
    grid = request.grid or default_grid(n)
    device = generator.device
    axis = torch.linspace(-1, 1, grid, dtype=torch.float64, device=device)
    if grid == 1:
        axis = axis.new_zeros(1)
    points = torch.cartesian_prod(*[axis] * n).reshape(-1, n)
    n_random = DEFAULT_RANDOM_STARTS if request.n_random is None else request.n_random
    draws = torch.rand(n_random, n, generator=generator, device=device, dtype=torch.float64)
    return torch.cat([points, points.new_zeros(1, n), draws * 2 - 1])


def solve_fixed_points(net: HopfieldNetwork, starts: Tensor) -> Tensor:
    """The distinct solutions of x = tanh(gain (W x + b)) that Newton's method reaches from
    `starts`, (k, N). It solves for the fields, u - W tanh(gain u) - b = 0 with x = tanh(gain u),
    which has no bounds to leave; a step that does not shrink the residual is halved."""
    weight, bias, gain = net.weight, net.bias, net.gain
    eye = torch.eye(net.n_units, dtype=weight.dtype, device=weight.device)

    def residual(u: Tensor) -> Tensor:
        return u - torch.tanh(gain * u) @ weight.T - bias

    u = torch.atanh(starts.clamp(-1 + 1e-9, 1 - 1e-9)) / gain
    r = residual(u)
    # Rows still moving: not yet solved, and the last step shrank their residual.
    moving = torch.arange(len(u), device=u.device)
    for _ in range(NEWTON_STEPS):
        size = r[moving].abs().amax(1)
        moving = moving[size > 1e-13]
        if len(moving) == 0:
            break
        uk, rk, size = u[moving], r[moving], size[size > 1e-13]
        slope = gain * (1 - torch.tanh(gain * uk) ** 2)  # (rows, N)
        jacobian = eye - weight[None] * slope[:, None, :]  # d residual_i / d u_j
        delta, info = torch.linalg.solve_ex(jacobian, rk[..., None])
        delta = torch.where((info == 0)[:, None], delta[..., 0], rk)  # singular: a plain step
        rate = torch.ones_like(size)
        new_u, new_r = uk, rk
        worse = torch.ones_like(size, dtype=torch.bool)
        for _ in range(30):
            trial = uk - rate[:, None] * delta
            new_u = torch.where(worse[:, None], trial, new_u)
            new_r = torch.where(worse[:, None], residual(trial), new_r)
            worse = new_r.abs().amax(1) >= size
            if not worse.any():
                break
            rate = torch.where(worse, rate / 2, rate)
        u[moving[~worse]], r[moving[~worse]] = new_u[~worse], new_r[~worse]
        moving = moving[~worse]
    scale = 1 + weight.abs().sum(1).max() + bias.abs().max()
    x = torch.tanh(gain * u[r.abs().amax(1) <= 1e-10 * scale])
    keys = torch.round(x / DISTINCT).long()
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1 if len(x) else 0,), len(x), device=x.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(x), device=x.device), "amin")
    return x[first] + 0.0  # no -0.0


def stability(net: HopfieldNetwork, points: Tensor, mode: Mode) -> tuple[list[str], Tensor]:
    """Each fixed point's stability and the eigenvalues that decide it, (k, N) complex, largest
    real part first: of the map's Jacobian for sync, of the flow's (J - I) otherwise."""
    slope = net.gain * (1 - points**2)  # (k, N)
    jacobian = slope[:, :, None] * net.weight[None]  # d x'_i / d x_j at x' = x
    eigenvalues = torch.linalg.eigvals(jacobian)
    if mode == "sync":
        stable = eigenvalues.abs() < 1 - 1e-9
    else:
        eigenvalues = eigenvalues - 1
        stable = eigenvalues.real < -1e-9
    order = eigenvalues.real.argsort(1, descending=True)
    eigenvalues = eigenvalues.gather(1, order)
    kinds = [
        "stable" if row.all() else "unstable" if not row.any() else "saddle" for row in stable.cpu()
    ]
    return kinds, eigenvalues


def fixed_points_found(served: Served, request: AttractorsRequest) -> dict[str, Any]:
    """Starts on a grid, the origin and random ones, settled by `request.mode`; Newton's method
    from the starts and from where they ended finds the fixed points, each classified by its
    Jacobian's eigenvalues, with the starts that end within BASIN of it."""
    net: HopfieldNetwork = served.module
    n = net.n_units
    if n > MAX_FIXED_POINT_NEURONS:
        raise BadRequest(
            "model",
            f"fixed points are searched for continuous networks of at most "
            f"{MAX_FIXED_POINT_NEURONS} neurons; this one has {n}",
        )
    if (total := count_starts(n, request)) > MAX_FIXED_POINT_STARTS:
        field = "grid" if request.grid is not None or request.n_random is None else "n_random"
        raise BadRequest(
            field,
            f"{total} starts (grid^{n} + 1 + n_random) is more than {MAX_FIXED_POINT_STARTS}",
        )
    generator = torch.Generator(device=served.device).manual_seed(request.seed)
    starts = search_starts(n, request, generator)
    settled = settle(
        net,
        starts,
        mode=request.mode,
        max_iterations=request.max_iterations,
        generator=generator,
        step_size=request.step_size or served.spec.model.step_size,
    )
    points = solve_fixed_points(net, torch.cat([starts, settled.final]))
    basins = torch.zeros(len(points), dtype=torch.long, device=points.device)
    unsettled = 0
    for chunk in settled.final.split(256):
        if len(points) == 0:
            unsettled += len(chunk)
            continue
        distance = (chunk[:, None, :] - points[None]).abs().amax(2)  # (chunk, k)
        nearest, which = distance.min(1)
        near = nearest <= BASIN
        basins += torch.bincount(which[near], minlength=len(points))
        unsettled += int((~near).sum())
    kinds, eigenvalues = stability(net, points, request.mode)
    patterns, _, _ = matched(net, points)
    energies = net.energy(points).cpu().tolist()
    found = [
        {
            "state": state,
            "energy": energies[k],
            "basin": int(basins[k]),
            "stored": patterns[k] is not None,
            "kind": "fixed_point",
            "stability": kinds[k],
            "eigenvalues": eigenvalues[k].real.cpu().tolist(),
            "eigenvalues_imag": eigenvalues[k].imag.cpu().tolist(),
        }
        for k, state in enumerate(points.cpu().tolist())
    ]
    rank = {"stable": 0, "saddle": 1, "unstable": 2}
    found.sort(
        key=lambda a: (rank[a["stability"]], -a["basin"], a["energy"], [-v for v in a["state"]])
    )
    return {"n_neurons": n, "starts": len(starts), "attractors": found, "unsettled": unsettled}


# --- pictures ------------------------------------------------------------------------------


def noisy_stored(served: Served, query: ImageQuery, mode: Mode) -> tuple[Tensor, Settled]:
    """query.n stored patterns (cycling through them) with model.noise of their units flipped,
    settled for at most query.steps iterations; returns the indices and the run."""
    net: HopfieldNetwork = served.module
    which = torch.arange(query.n, device=served.device) % len(net.patterns)
    generator = torch.Generator(device=served.device).manual_seed(query.seed)
    start = flip(net.patterns[which], served.spec.model.noise, generator)
    settled = settle(
        net,
        start,
        mode=mode,
        max_iterations=query.steps,
        generator=generator,
        step_size=served.spec.model.step_size,
        record=True,
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


def paths(states: list[Tensor], iterations: Tensor) -> list[np.ndarray]:
    """Each start's states (each (batch, d)) until it stopped: (steps, d) per start."""
    stacked = torch.stack(states, 1).cpu().numpy()  # (batch, iterations + 1, d)
    return [stacked[b, : t + 1] for b, t in enumerate(iterations.tolist())]


@torch.inference_mode()
def states_picture(served: Served, query: ImageQuery) -> Trajectories:
    """Networks of 2 or 3 neurons: query.n paths from random starts (binary: corners) in the
    state space, by the model's mode; the fixed points marked (continuous: by stability) and,
    for 2 continuous neurons, each point's move x' - x as an arrow. Larger networks: paths from
    noisy stored patterns in the plane of the overlaps with patterns 0 and 1."""
    net: HopfieldNetwork = served.module
    config: HopfieldConfig = served.spec.model
    n, device = net.n_units, served.device
    generator = torch.Generator(device=device).manual_seed(query.seed)
    if n > 3:
        if len(net.patterns) < 2:
            raise BadRequest(
                "model",
                f"a network of {n} neurons is drawn in the plane of its overlaps with stored "
                f"patterns 0 and 1; this one stores {len(net.patterns)}",
            )
        _, settled = noisy_stored(served, query, config.mode)
        overlaps = [net.overlaps(s)[:, :2] for s in settled.states]
        return Trajectories(
            names=["overlap with pattern 0", "overlap with pattern 1"],
            panels=[(0, 1)],
            paths=paths(overlaps, settled.iterations),
            points={"stored": net.overlaps(net.patterns)[:, :2].cpu().numpy()},
        )
    shape = (query.n, n)
    if net.continuous:
        starts = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        starts = starts * 2 - 1
    else:
        starts = torch.randint(0, 2, shape, generator=generator, device=device).double() * 2 - 1
    settled = settle(
        net,
        starts,
        mode=config.mode,
        max_iterations=query.steps,
        generator=generator,
        step_size=config.step_size,
        record=True,
    )
    arrows = None
    if net.continuous:
        request = AttractorsRequest(mode=config.mode)
        points = solve_fixed_points(net, search_starts(n, request, generator))
        kinds, _ = stability(net, points, config.mode)
        marked = {
            kind: points[[k for k, c in enumerate(kinds) if c == kind]].cpu().numpy()
            for kind in ("stable", "saddle", "unstable")
            if kind in kinds
        }
        if n == 2:
            axis = torch.linspace(-0.95, 0.95, 15, dtype=torch.float64, device=device)
            grid = torch.cartesian_prod(axis, axis)
            arrows = torch.cat([grid, net.step(grid) - grid], 1).cpu().numpy()
    else:
        bits = 2 ** torch.arange(n - 1, -1, -1, device=device)
        corners = ((torch.arange(2**n, device=device)[:, None] & bits) > 0).double() * 2 - 1
        marked = {"fixed point": corners[net.is_fixed(corners)].cpu().numpy()}
    return Trajectories(
        names=[f"x[{i}]" for i in range(n)],
        panels=[(0, 1)] if n == 2 else [(0, 1), (0, 2), (1, 2)],
        paths=paths(settled.states, settled.iterations),
        points=marked,
        arrows=arrows,
    )


register(
    Family(
        spec=HopfieldJob,
        build=build_hopfield,
        trainer=HopfieldTrainer,
        verbs={"recall": recall, "attractors": attractors},
        images={"energy": energy_picture, "recall": recall_picture, "states": states_picture},
    )
)
