"""A stack of layers with given (or seeded) weights run on one given input, every layer's
output kept (POST /architectures/forward): arithmetic worked by hand, checked by the modules
jobs train with (models/cnn.py's convolutions and pools, the activations of
models/supervised.py, nn.Linear, nn.Flatten), in float64.

The stack is first built on the meta device, which checks each layer against the shape it gets
and counts parameters, output values and FLOPs before anything is allocated; only a stack
within the limits is built on the CPU and run."""

import math
from typing import Any

import torch
from torch import nn
from torch.nn import init
from torch.utils.flop_counter import FlopCounterMode

from models.admission import TooBig
from models.base import BadRequest
from models.cnn import conv, pool
from models.configs.cnn import axes
from models.configs.tools import (
    CONVS,
    MAX_FORWARD_FLOPS,
    MAX_FORWARD_INPUT,
    MAX_FORWARD_PARAMS,
    MAX_FORWARD_VALUES,
    POOLS,
    WEIGHT_LAYOUT,
    ForwardLayer,
    ForwardRequest,
    shape_of,
)
from models.supervised import activation

AXES = {1: "(channels, length)", 2: "(channels, height, width)"}
AXIS_NAMES = {1: "length", 2: "height, width"}


def _axes(i: int, layer: ForwardLayer, field: str, dims: int, default: Any) -> tuple[int, ...]:
    """A per-axis field's value for each of `dims` axes; BadRequest if its list names others."""
    value = getattr(layer, field)
    if value is None:
        value = default
    if isinstance(value, list) and len(value) != dims:
        raise BadRequest(
            f"layers.{i}.{field}",
            f"names {len(value)} axes; a {layer.type} layer has {dims} ({AXIS_NAMES[dims]})",
        )
    return axes(value, dims)


def _module(i: int, layer: ForwardLayer, shape: tuple[int, ...]) -> nn.Module:
    """The layer's module for an input of `shape` (one example); BadRequest naming the field
    that does not fit it."""
    kind = layer.type
    if kind in CONVS or kind in POOLS:
        dims = int(kind[-2])
        if len(shape) != dims + 1:
            raise BadRequest(
                f"layers.{i}.type",
                f"a {kind} layer takes an input of shape {AXES[dims]}; it gets {list(shape)}",
            )
        if kind in POOLS:
            size = _axes(i, layer, "size", dims, None)
            return pool(
                kind[:3],
                dims,
                size=size,
                stride=_axes(i, layer, "stride", dims, list(size)),
                padding=_axes(i, layer, "padding", dims, 0),
            )
        if layer.weight is not None:
            filters, channels, *kernel = shape_of(layer.weight)
            if channels != shape[0]:
                raise BadRequest(
                    f"layers.{i}.weight",
                    f"is for {channels} input channels; the layer gets {shape[0]} "
                    f"(its input has shape {list(shape)})",
                )
        else:
            assert layer.filters is not None
            filters, kernel = layer.filters, list(_axes(i, layer, "kernel", dims, None))
        if layer.padding == "same":
            padding = tuple(k // 2 for k in kernel)
        else:
            padding = _axes(i, layer, "padding", dims, 0)
        stride = _axes(i, layer, "stride", dims, 1)
        return conv(dims, shape[0], filters, kernel=tuple(kernel), stride=stride, padding=padding)
    if kind == "dense":
        if len(shape) != 1:
            raise BadRequest(
                f"layers.{i}.type",
                f"a dense layer takes a flat input (features); it gets {list(shape)}: put a "
                "flatten before it",
            )
        if layer.weight is not None:
            units, features = shape_of(layer.weight)
            if features != shape[0]:
                raise BadRequest(
                    f"layers.{i}.weight",
                    f"is for {features} features; the layer gets {shape[0]}",
                )
        else:
            assert layer.units is not None
            units = layer.units
        return nn.Linear(shape[0], units)
    if kind == "flatten":
        return nn.Flatten()
    return activation(kind)


def plan(request: ForwardRequest) -> tuple[list[nn.Module], list[tuple[int, ...]]]:
    """The stack built on the meta device and each layer's output shape; BadRequest for a
    layer that does not fit its input, TooBig for a stack over the limits."""
    shape = shape_of(request.input)
    if math.prod(shape) > MAX_FORWARD_INPUT:
        raise TooBig(
            "input", f"holds {math.prod(shape):,} values; the limit is {MAX_FORWARD_INPUT:,}"
        )
    modules, shapes = [], []
    params = values = 0
    counter = FlopCounterMode(display=False)
    with torch.device("meta"), counter, torch.no_grad():
        x = torch.empty(1, *shape)
        for i, layer in enumerate(request.layers):
            module = _module(i, layer, shape)
            params += sum(p.numel() for p in module.parameters())
            if params > MAX_FORWARD_PARAMS:
                raise TooBig(
                    f"layers.{i}",
                    f"the layers up to this one hold {params:,} parameters; the limit is "
                    f"{MAX_FORWARD_PARAMS:,}",
                )
            try:
                x = module(x)
            except RuntimeError as exc:  # the padded input is smaller than the kernel
                field = "size" if layer.type in POOLS else "weight" if layer.weight else "kernel"
                raise BadRequest(
                    f"layers.{i}.{field}", f"does not fit the layer's input {list(shape)}: {exc}"
                ) from exc
            shape = tuple(x.shape[1:])
            values += x.numel()
            if values > MAX_FORWARD_VALUES:
                raise TooBig(
                    f"layers.{i}",
                    f"the outputs up to this layer hold {values:,} values; the limit is "
                    f"{MAX_FORWARD_VALUES:,}",
                )
            if counter.get_total_flops() > MAX_FORWARD_FLOPS:
                raise TooBig(
                    f"layers.{i}",
                    f"the pass up to this layer takes {counter.get_total_flops():,} FLOPs; the "
                    f"limit is {MAX_FORWARD_FLOPS:,}",
                )
            modules.append(module)
            shapes.append(shape)
    return modules, shapes


def _parameters(
    module: nn.Module, layer: ForwardLayer, generator: torch.Generator | None
) -> dict[str, Any]:
    """Fills a dense or conv module's weight and bias (float64) with the given ones; with a
    generator, draws both first as PyTorch's reset_parameters does for a new float32 layer, so
    the stream goes on as it would building the stack after torch.manual_seed(seed). Returns
    what was drawn and not given."""
    drawn: dict[str, Any] = {}
    values = {"weight": layer.weight, "bias": layer.bias}
    if generator is not None:
        weight = torch.empty(module.weight.shape)
        init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(weight[0].numel())  # 1 / sqrt(fan_in)
        bias = init.uniform_(torch.empty(module.bias.shape), -bound, bound, generator=generator)
        for name, value in (("weight", weight), ("bias", bias)):
            if values[name] is None:
                values[name] = drawn[name] = value.tolist()
    for name, value in values.items():
        getattr(module, name).copy_(torch.tensor(value, dtype=torch.float64))
    return drawn


def forward(request: ForwardRequest) -> dict[str, Any]:
    modules, shapes = plan(request)
    generator = torch.Generator().manual_seed(request.seed) if request.seed is not None else None
    x = torch.tensor([request.input], dtype=torch.float64)
    layers = []
    with torch.no_grad():
        for i, (meta, layer, shape) in enumerate(zip(modules, request.layers, shapes, strict=True)):
            module = meta.to_empty(device="cpu").to(torch.float64).eval()
            drawn = _parameters(module, layer, generator) if layer.type in WEIGHT_LAYOUT else {}
            x = module(x)
            if not torch.isfinite(x).all():
                raise BadRequest(f"layers.{i}", "its output overflows float64")
            layers.append(
                {
                    "type": layer.type,
                    "module": repr(module),
                    "output_shape": list(shape),
                    "output": x[0].tolist(),
                    "n_params": sum(p.numel() for p in module.parameters()),
                    **drawn,
                }
            )
    return {
        "dtype": "float64",
        "input_shape": list(shape_of(request.input)),
        "layers": layers,
        "n_params": sum(row["n_params"] for row in layers),
    }
