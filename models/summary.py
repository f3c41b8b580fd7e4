"""Architecture arithmetic without training (POST /architectures/summary): the family's model
built from a job document, each layer's output shape and parameter count, the receptive field
of its conv/pool stack, and an estimate of the memory a training step needs.

The model is built on PyTorch's meta device (shapes without storage), so a 50-million-parameter
model costs the API nothing; a module that cannot run there is run on the CPU instead.
"""

import math
from typing import Any

import torch
from torch import Tensor, nn

from core.catalog import DatasetInfo
from core.spec import JobSpecBase
from models.base import get_family

FLOAT_BYTES = 4
# Tensors an optimizer keeps per parameter (LBFGS: its history, two vectors per entry).
OPTIMIZER_STATE = {"gd": 0, "sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adadelta": 2}
POOLS = nn.MaxPool2d | nn.AvgPool2d


def _optimizer_state(spec: JobSpecBase) -> int:
    """The most tensors per parameter any of the family's optimizers keeps."""
    counts = [0]
    for name in spec.optimizer_names:
        opt = spec.optimizer_for(name)
        if opt.name == "rmsprop":
            counts.append(1 + (opt.momentum > 0))
        elif opt.name == "lbfgs":
            counts.append(2 * opt.history_size + 2)
        else:
            counts.append(OPTIMIZER_STATE[opt.name])
    return max(counts)


def _probe(model: nn.Module, info: DatasetInfo, device: torch.device) -> None:
    """One forward pass of a batch of one through everything that has layers."""
    if hasattr(model, "discriminate"):  # a GAN: z through the generator, then the critic
        model.discriminate(model.decode(torch.zeros(1, model.latent, device=device)))
    elif not hasattr(model, "patterns"):  # a Hopfield network has weights, no layers
        model(torch.zeros(1, *info.input_shape, device=device))


def _shape(output: Any) -> list[int] | None:
    if isinstance(output, Tensor):
        return list(output.shape[1:])
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return list(output[0].shape[1:])  # an LSTM: its outputs, not its state
    return None


def _pair(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def summarize(spec: JobSpecBase, info: DatasetInfo) -> dict[str, Any]:
    family = get_family(spec.family)
    try:
        return _summary(family.build, spec, info, torch.device("meta"))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel
        return _summary(family.build, spec, info, torch.device("cpu"))


def _summary(build: Any, spec: JobSpecBase, info: DatasetInfo, device: torch.device) -> dict:
    with device:
        model = build(spec, info)
    model.eval()
    shapes: dict[str, list[int] | None] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            shapes.setdefault(name, _shape(output))  # the first call: a module run twice
            # (a GAN's shared nothing; a DBM's mean field) keeps its first shape

        return hook

    hooks = [
        module.register_forward_hook(record(name)) for name, module in model.named_modules() if name
    ]
    try:
        with torch.no_grad():
            _probe(model, info, device)
    finally:
        for hook in hooks:
            hook.remove()

    layers = []
    rf, jump, image = 1, 1, len(info.input_shape) == 3
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        leaf = next(module.children(), None) is None
        if not (leaf or own) or (not name and not own):
            continue
        row: dict[str, Any] = {
            "name": name or "(model)",
            "type": type(module).__name__,
            "output_shape": shapes.get(name),
            "n_params": own,
        }
        if image and isinstance(module, nn.Conv2d | POOLS):
            # The receptive field grows by (k - 1) input jumps; the jump by the stride.
            kernel = _pair(module.kernel_size)
            dilation = _pair(module.dilation) if isinstance(module, nn.Conv2d | nn.MaxPool2d) else 1
            stride = _pair(module.stride) if module.stride else kernel
            rf += (dilation * (kernel - 1)) * jump
            jump *= stride
            row |= {"kernel": kernel, "stride": stride, "receptive_field": rf, "jump": jump}
        elif isinstance(module, nn.Flatten | nn.Linear | nn.ConvTranspose2d):
            image = False  # the conv stack over the input ended
        layers.append(row)

    n_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = spec.train.batch_size
    activations = sum(math.prod(row["output_shape"]) for row in layers if row["output_shape"])
    memory = {
        "parameters": n_params * FLOAT_BYTES,
        "gradients": trainable * FLOAT_BYTES,
        "optimizer_state": _optimizer_state(spec) * trainable * FLOAT_BYTES,
        "inputs": batch * math.prod(info.input_shape) * FLOAT_BYTES,
        "activations": batch * activations * FLOAT_BYTES,
    }
    memory["total"] = sum(memory.values())
    return {
        "family": spec.family,
        "input_shape": list(info.input_shape),
        "layers": layers,
        "n_params": n_params,
        "trainable_params": trainable,
        "batch_size": batch,
        "training_memory_bytes": memory,
    }
