"""Facts of a job's model without training, taken from the model itself: its parameter count
(`count_parameters`: a job's n_params, capped by admission) and, for POST
/architectures/summary, each layer's output shape and parameter count, the receptive field of
its conv/pool stack, and an estimate of the memory a training step needs.

The model is built on PyTorch's meta device (shapes without storage), so a 50-million-parameter
model costs the API nothing; a module that cannot run there is run on the CPU instead.

The memory per example is measured on the same model: every tensor a forward pass (and a
training step's backward pass) creates is counted while it lives, and the peak at two batch
sizes gives the bytes per example and the fixed part (weight gradients).
"""

import math
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from core.catalog import DatasetInfo
from core.spec import JobSpecBase
from models.base import get_family, n_params

FLOAT_BYTES = 4
# Tensors an optimizer keeps per parameter (LBFGS: _optimizer_state).
OPTIMIZER_STATE = {"gd": 0, "sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adadelta": 2}
# LBFGS's besides its history: direction, last gradient, and in a step the parameters, where
# the line search started, the gradient, three line-search gradients and a trial point.
LBFGS_STEP_VECTORS = 9
CONVS = nn.Conv1d | nn.Conv2d
POOLS = nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d
MAX_COUNTS = 4096  # architectures whose count is kept
_COUNTS: dict[tuple[str, str, DatasetInfo], int] = {}


def _optimizer_state(spec: JobSpecBase) -> int:
    """The most tensors per parameter any of the family's optimizers keeps."""
    counts = [0]
    for name in spec.optimizer_names:
        opt = spec.optimizer_for(name)
        if opt.name == "rmsprop":
            counts.append(1 + (opt.momentum > 0) + bool(opt.centered))
        elif opt.name == "adam":
            counts.append(2 + bool(opt.amsgrad))
        elif opt.name == "lbfgs":  # models/lbfgs.py: its pairs (and a copy of one half as it
            # drops its oldest pair), and a step's vectors
            counts.append(3 * opt.history_size + LBFGS_STEP_VECTORS)
        else:
            counts.append(OPTIMIZER_STATE[opt.name])
    return max(counts)


def _probe(model: nn.Module, info: DatasetInfo, device: torch.device, n: int = 1) -> Any:
    """One forward pass of a batch of n through everything that has layers (a model's
    `probe`, where its training or evaluation runs more than its forward)."""
    if hasattr(model, "probe"):
        return model.probe(torch.zeros(n, *info.input_shape, device=device))
    if hasattr(model, "discriminate"):  # a GAN: z through the generator, then the critic
        return model.discriminate(model.decode(torch.zeros(n, model.latent, device=device)))
    if not hasattr(model, "patterns"):  # a Hopfield network has weights, no layers
        return model(torch.zeros(n, *info.input_shape, device=device))
    return None


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors the ops run under it create, while they live, and the
    peak. Views and in-place results share their input's storage and are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None for r in func._schema.returns):
            return out
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                n = tensor.numel() * tensor.element_size()
                self.live += n
                weakref.finalize(tensor, self._free, n)
        self.peak = max(self.peak, self.live)
        return out


def _peak(model: nn.Module, info: DatasetInfo, device: torch.device, n: int, train: bool) -> int:
    mode = LiveBytes()
    with mode:
        if train:
            output = _probe(model, info, device, n)
            loss = sum(t.float().sum() for t in tree_leaves(output) if isinstance(t, Tensor))
            if isinstance(loss, Tensor) and loss.requires_grad:
                loss.backward()
            del output, loss
        else:
            with torch.no_grad():
                _probe(model, info, device, n)
    model.zero_grad(set_to_none=True)
    return mode.peak


def per_example(
    model: nn.Module,
    info: DatasetInfo,
    device: torch.device,
    batch: int = 2,
    *,
    training: bool = True,
) -> dict[str, int]:
    """Bytes a forward pass holds at its peak per example (inference), and what a training
    step's forward and backward passes hold per example and besides (weight gradients), both
    measured at batches of `batch` and twice that, where the peak is reached as in training."""
    batch = max(2, batch if device.type == "meta" else min(batch, 8))  # batch norm: 2 or more
    was_training = model.training
    try:
        model.eval()
        low, high = (_peak(model, info, device, n, False) for n in (batch, 2 * batch))
        inference = max(0, math.ceil((high - low) / batch))
        if not training:
            return {"inference": inference}
        model.train()
        low, high = (_peak(model, info, device, n, True) for n in (batch, 2 * batch))
        train = max(0, math.ceil((high - low) / batch))
        if any(isinstance(m, nn.RNNBase) for m in model.modules()):
            # A CPU's fused LSTM keeps a workspace the meta device's step-by-step ops do not
            # (a worker's peak was 1.9x what the meta device counts).
            train *= 2
    finally:
        model.train(was_training)
    return {
        "inference": inference,
        "training": train,
        "training_fixed": max(0, low - batch * train),
    }


def _shape(output: Any) -> list[int] | None:
    if isinstance(output, Tensor):
        return list(output.shape[1:])
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return list(output[0].shape[1:])  # an LSTM: its outputs, not its state
    return None


def _axes(value: int | tuple[int, ...], dims: int) -> list[int]:
    return list(value) if isinstance(value, tuple) else [value] * dims


def _dims(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv1d | nn.MaxPool1d | nn.AvgPool1d) else 2


def receptive_fields(model: nn.Module) -> dict[str, dict[str, list]]:
    """Per conv or pool module of the stack that reads the input (until a flatten, dense or
    transposed convolution): its kernel, stride and padding, and per axis the receptive field
    of one of its outputs (input positions it sees), the jump (input positions between
    neighbouring outputs) and the start (the input position at the centre of the first
    output's field; below 0 where padding reaches before the input)."""
    rows: dict[str, dict[str, list]] = {}
    rf: list[int] | None = None
    jump: list[int] = []
    start: list[float] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Flatten | nn.Linear | nn.ConvTranspose2d):
            break  # the conv stack over the input ended
        if not isinstance(module, CONVS | POOLS):
            continue
        dims = _dims(module)
        if rf is None:
            rf, jump, start = [1] * dims, [1] * dims, [0.0] * dims
        kernel = _axes(module.kernel_size, dims)
        stride = _axes(module.stride, dims) if module.stride else kernel
        padding = _axes(module.padding, dims)
        dilation = _axes(getattr(module, "dilation", 1), dims)
        for axis in range(dims):
            # A kernel of k taps spans d(k - 1) + 1 inputs; the field grows by its span less
            # one, in the input's jumps; the centre of the first output moves by half of it,
            # less the padding.
            span = dilation[axis] * (kernel[axis] - 1)
            start[axis] += (span / 2 - padding[axis]) * jump[axis]
            rf[axis] += span * jump[axis]
            jump[axis] *= stride[axis]
        rows[name] = {
            "kernel": kernel,
            "stride": stride,
            "padding": padding,
            "receptive_field": list(rf),
            "jump": list(jump),
            "start": list(start),
        }
    return rows


def count_parameters(spec: JobSpecBase, info: DatasetInfo) -> int:
    """PyTorch's count of the job's model, built on the meta device: the job's n_params, and
    what admission caps. Cached by architecture (the model section and the dataset's facts)."""
    key = (spec.family, spec.model_dump_json(include={"task", "model"}), info)
    if (count := _COUNTS.get(key)) is None:
        with torch.device("meta"):
            count = n_params(get_family(spec.family).build(spec, info))
        if len(_COUNTS) >= MAX_COUNTS:
            _COUNTS.clear()
        _COUNTS[key] = count
    return count


def batch_flops(spec: JobSpecBase, info: DatasetInfo) -> int:
    """FLOPs of one forward pass of a training batch, counted by PyTorch on the meta device
    (matrix products and convolutions; a model that cannot run there counts 0)."""
    batch = spec.train.batch_size
    if spec.train.optimizer.name in ("gd", "lbfgs"):  # the full batch
        batch = spec.dataset.max_train or spec.dataset.n_train or info.n_train or batch
    try:
        with torch.device("meta"):
            model = get_family(spec.family).build(spec, info)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            _probe(model, info, torch.device("meta"), batch)
    except (NotImplementedError, RuntimeError):
        return 0
    return int(counter.get_total_flops())


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
    fields = receptive_fields(model)
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
            **fields.get(name, {}),
        }
        layers.append(row)

    profile = per_example(model, info, device, spec.train.batch_size)
    total = n_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = spec.train.batch_size
    activations = sum(math.prod(row["output_shape"]) for row in layers if row["output_shape"])
    memory = {
        "parameters": total * FLOAT_BYTES,
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
        "n_params": total,
        "trainable_params": trainable,
        "batch_size": batch,
        "training_memory_bytes": memory,
        # Measured (LiveBytes): what admission (models/admission.py) counts.
        "bytes_per_example": profile,
    }
