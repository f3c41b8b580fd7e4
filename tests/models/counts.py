"""Parameter counts worked by hand from each family's architecture: oracles for the count the
service takes from the built model (models/summary.py count_parameters), and CONFIGS, jobs of
every family with other than default models to count."""

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from models.configs.cnn import conv_input
from models.configs.gan import KERNEL
from models.configs.lstm import sequence_shape

Shape = tuple[int, ...]
DIGITS = {"name": "digits"}


def dense(sizes: list[int]) -> int:
    """Linear layers through `sizes`, each with its bias."""
    return sum((a + 1) * b for a, b in pairwise(sizes))


def mirrored(sizes: list[int]) -> int:
    """Dense layers through `sizes` and back (a decoder mirrors its encoder: the same weights'
    count, the other side's biases)."""
    return sum((a + 1) * b + (b + 1) * a for a, b in pairwise(sizes))


def mirrored_convs(channels: list[int], kernel: int) -> int:
    k2 = kernel**2
    return sum(a * k2 * b + b + b * k2 * a + a for a, b in pairwise(channels))


def mlp(config: Any, shape: Shape, n_out: int) -> int:
    batchnorm = 2 * sum(config.hidden) if config.batchnorm else 0
    return dense([math.prod(shape), *config.hidden, n_out]) + batchnorm


def cnn(config: Any, shape: Shape, n_out: int) -> int:
    channels, *sides = conv_input(shape)  # a flat input is one channel
    total, c_in = 0, channels
    for layer in config.conv:
        total += (c_in * math.prod(layer.kernels(len(sides))) + 1) * layer.filters
        total += 2 * layer.filters if layer.batchnorm else 0
        c_in = layer.filters
    return total + dense([math.prod(config.feature_shapes(shape)[-1]), *config.dense, n_out])


def lstm(config: Any, shape: Shape, n_out: int) -> int:
    _, features = sequence_shape(shape)
    directions = 2 if config.bidirectional else 1
    total, width = 0, features
    for _ in range(config.layers):
        # Four gates, each with input and recurrent weights and two biases (as torch has).
        total += directions * 4 * (width * config.hidden + config.hidden**2 + 2 * config.hidden)
        width = directions * config.hidden
    return total + dense([width, *config.head, n_out])


def vit(config: Any, shape: Shape, n_out: int) -> int:
    rows, columns = config.grid(shape)
    dim, hidden, cls = config.dim, config.mlp_dim, int(config.pool == "cls")
    embed = (shape[0] * config.patch**2 + 1) * dim  # patches to tokens
    embed += (rows * columns + cls) * dim + cls * dim  # position embeddings, CLS token
    # Per block: two layer norms, q/k/v and output projections, the MLP.
    block = 4 * dim + 4 * (dim * dim + dim) + (dim + 1) * hidden + (hidden + 1) * dim
    return embed + config.depth * block + 2 * dim + (dim + 1) * n_out


def ae(config: Any, shape: Shape, n_out: int) -> int:
    if config.kind == "dense":
        return mirrored(config.sizes(math.prod(shape)))
    flat = math.prod(config.feature_shapes(shape)[-1])
    convs = mirrored_convs([shape[0], *config.filters], config.kernel)
    return convs + (flat + 1) * config.latent + (config.latent + 1) * flat


def vae(config: Any, shape: Shape, n_out: int) -> int:
    # The encoder ends in 2 * latent values (means and log-variances); the decoder starts
    # from latent values.
    latent = config.latent
    if config.kind == "mlp":
        sizes = [math.prod(shape), *config.hidden]
        return mirrored(sizes) + (sizes[-1] + 1) * 2 * latent + (latent + 1) * sizes[-1]
    flat = math.prod(config.feature_shapes(shape)[-1])
    convs = mirrored_convs([shape[0], *config.filters], config.kernel)
    return convs + (flat + 1) * 2 * latent + (latent + 1) * flat


def gan(config: Any, shape: Shape, n_out: int) -> int:
    n_in = math.prod(shape)
    if config.kind == "mlp":
        generator = dense([config.latent, *config.hidden, n_in]) + 2 * sum(config.hidden)
        return generator + dense([n_in, *config.hidden[::-1], 1])
    h, w = config.map_sizes(shape)[-1]
    channels = [*config.filters, shape[0]]
    k2 = KERNEL**2
    flat = config.filters[0] * h * w
    # Generator: z -> first map (with its batchnorm), transposed convs (batchnorm on all but
    # the last); discriminator: the convs mirrored, then one logit.
    generator = (config.latent + 1) * flat + 2 * config.filters[0]
    generator += sum(a * k2 * b + b for a, b in pairwise(channels)) + 2 * sum(config.filters[1:])
    discriminator = sum(b * k2 * a + a for a, b in pairwise(channels)) + flat + 1
    discriminator += 2 * sum(config.filters[:-1])  # batchnorm after all convs but the first
    return generator + discriminator


def sae(config: Any, shape: Shape, n_out: int) -> int:
    sizes = [math.prod(shape), *config.layers]
    return mirrored(sizes) + (sizes[-1] + 1) * n_out


def rbm(config: Any, shape: Shape, n_out: int) -> int:
    n_visible = math.prod(shape)
    return n_visible * config.hidden + n_visible + config.hidden


def dbm(config: Any, shape: Shape, n_out: int) -> int:
    sizes = [math.prod(shape), *config.layers]
    weights = sum(a * b for a, b in pairwise(sizes))
    # A bias per unit, and pretraining's own visible biases of RBMs 2..L.
    return weights + sum(sizes) + sum(config.layers[:-1])


def hopfield(config: Any, shape: Shape, n_out: int) -> int:
    return math.prod(shape) ** 2  # one weight per pair of units


BY_FAMILY: dict[str, Callable[[Any, Shape, int], int]] = {
    "mlp": mlp,
    "cnn": cnn,
    "lstm": lstm,
    "vit": vit,
    "ae": ae,
    "vae": vae,
    "gan": gan,
    "sae": sae,
    "rbm": rbm,
    "dbm": dbm,
    "hopfield": hopfield,
}


def job(family: str, model: dict, dataset: dict = DIGITS) -> dict:
    return {"family": family, "dataset": dataset, "model": model}


# Configurations other than the defaults, on datasets every machine has.
CONFIGS = [
    job("mlp", {"hidden": [7, 5], "batchnorm": True}),
    job("mlp", {"hidden": [3]}, {"name": "function1d"}),
    job(
        "cnn",
        {
            "conv": [
                {"filters": 3, "kernel": 5, "padding": 0, "batchnorm": True},
                {"filters": 6, "pool": "avg"},
            ],
            "dense": [9],
        },
    ),
    job("cnn", {"conv": [{"filters": 2, "stride": 2, "padding": 1}], "dense": []}),
    job(
        "cnn",
        {
            "conv": [
                {"filters": 3, "kernel": [3, 1], "stride": [1, 2], "padding": [1, 0]},
                {"filters": 4, "kernel": [2, 3], "pool": "max", "pool_size": 3, "pool_stride": 1},
            ],
            "dense": [5],
        },
    ),
    job(
        "cnn",
        {
            "conv": [
                {"filters": 3, "kernel": 5, "batchnorm": True, "pool": "avg", "pool_padding": 1},
                {"filters": 2, "kernel": [4], "stride": 2, "padding": 0},
            ],
            "dense": [6],
        },
        {"name": "mackey_glass", "lag": 24},
    ),
    job("lstm", {"hidden": 12, "layers": 2, "dropout": 0.1, "bidirectional": True, "head": [8]}),
    job("lstm", {"hidden": 5}, {"name": "mackey_glass", "lag": 12}),
    job("vit", {"patch": 2, "dim": 12, "depth": 2, "heads": 3, "mlp_dim": 20, "pool": "mean"}),
    job("vit", {"patch": 4, "dim": 8, "depth": 1, "heads": 2, "mlp_dim": 16}),
    job("ae", {"hidden": [20, 10], "latent": 3}),
    job("ae", {"kind": "conv", "filters": [3, 5], "latent": 4}),
    job("ae", {"hidden": [6], "latent": 1}, {"name": "surface2d"}),
    job("vae", {"latent": 3, "hidden": [20, 10]}),
    job("vae", {"kind": "conv", "filters": [4, 8], "kernel": 4, "latent": 5}),
    job("gan", {"latent": 5, "hidden": [16, 32]}),
    job("gan", {"kind": "conv", "filters": [8, 4], "latent": 5}),
    job("sae", {"layers": [20, 10]}),
    job("sae", {"layers": [7]}),
    job("rbm", {"hidden": 30}),
    job("rbm", {"hidden": 3, "persistent": True}),
    job("dbm", {"layers": [30, 20, 10]}),
    job("dbm", {"layers": [5, 3]}),
    job("hopfield", {"rule": "storkey"}, {"name": "patterns", "patterns": [[1, -1, 1], [1, 1, 1]]}),
    job("hopfield", {"n_patterns": 4}),
]
