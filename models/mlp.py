"""MLP: a stack of fully connected layers for classification and regression.

Images are flattened, so the same job runs on digits, MNIST or a 2-D regression surface.
"""

import math

import torch
from torch import Tensor, nn

from core.catalog import DatasetInfo
from models.base import Family, register
from models.configs.mlp import MLPConfig, MLPJob
from models.supervised import (
    SupervisedTrainer,
    activation,
    forecast,
    forecast_picture,
    predict,
)


class MLP(nn.Module):
    def __init__(self, *, n_in: int, n_out: int, config: MLPConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for size in config.hidden:
            layers.append(nn.Linear(width, size))
            if config.batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(activation(config.activation))
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = size
        self.to_features = nn.Sequential(*layers)
        self.to_outputs = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:  # (batch, *input_shape) -> (batch, n_out)
        return self.to_outputs(self.to_features(x))

    def stacked(
        self, params: dict[str, Tensor], x: Tensor, products: bool = False
    ) -> Tensor | None:
        """The forward passes of K models of this shape at once (a stack, models/stack.py):
        `params` holds each parameter of the K models stacked on a first dimension, x is
        (K, batch, *input_shape); (K, batch, n_out), each layer one batched product (or, unless
        `products`, a broadcast product or a sum of products where it has one input or one
        output). None with batch norm or dropout, which a stack never has."""
        layers = [(f"to_features.{n}", m) for n, m in self.to_features.named_children()]
        x = x.flatten(2)
        for prefix, layer in [*layers, ("to_outputs", self.to_outputs)]:
            if isinstance(layer, nn.Linear):
                weight, bias = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
                x = _stacked_linear(x, weight, bias, products)
            elif isinstance(layer, nn.BatchNorm1d | nn.Dropout):
                return None
            elif not isinstance(layer, nn.Flatten):
                x = layer(x)  # an activation, elementwise
        return x

    def stacks_exactly(self) -> bool:
        """Whether `stacked` (without products) gives each model the bits it gets in a stack of
        one, whatever the stack's size and the model's place in it (on one thread): every layer
        has one input or one output, so every operation is elementwise or a reduction over a
        model's own rows. A batched matrix product does not promise it: on an AMD EPYC, MKL's
        kernels summed some models' products in another order by the batch's size and the
        model's place in it."""
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        return all(1 in (m.in_features, m.out_features) for m in linears)


def _stacked_linear(x: Tensor, weight: Tensor, bias: Tensor, products: bool = False) -> Tensor:
    """K linear layers at once: x (K, batch, in), weight (K, out, in), bias (K, out). Unless
    `products`, a layer of one input or one output is a broadcast product or a sum of
    products: on some machines a batched matrix product of an inner or outer size 1 and its
    backward pass take longer than these, on others less (models/stack.py times both).
    One input: the product, then the bias, rounded apart as nn.Linear's are (addcmul's fused
    rounding is not)."""
    if not products and weight.shape[2] == 1:
        return x * weight.transpose(1, 2) + bias.unsqueeze(1)
    if not products and weight.shape[1] == 1:
        return (x * weight).sum(-1, keepdim=True) + bias.unsqueeze(1)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def build(spec: MLPJob, info: DatasetInfo) -> MLP:
    return MLP(
        n_in=math.prod(info.input_shape), n_out=info.n_classes or info.target_dim, config=spec.model
    )


register(
    Family(
        spec=MLPJob,
        build=build,
        trainer=SupervisedTrainer,
        verbs={"predict": predict, "forecast": forecast},
        images={"forecast": forecast_picture},
    )
)
