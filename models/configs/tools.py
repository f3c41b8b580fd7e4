"""Requests and answers of the tools that need no worker (no torch here): an optimizer stepped
on a 1-D function with its state at every step (POST /optimizers/trace), a model's layers,
parameters, receptive fields and training memory (POST /architectures/summary), and a small
stack of layers with given weights run on a given input (POST /architectures/forward)."""

import math
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core import expression
from core.spec import OptimizerSpec, StrictModel, default_lr, error_at
from models.configs.cnn import Kernel, Padding, PoolSize, Stride, axes
from models.configs.common import Activation

Function = Literal["relu", "sigmoid", "abs", "quadratic", "bump"]
TRACED = ("gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "adadelta")
MAX_TRACE_STEPS = 10_000


class TracedOptimizer(OptimizerSpec):
    name: Literal[TRACED] = "adam"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _default_lr(self) -> "TracedOptimizer":
        if self.lr is None:
            self.lr = default_lr(self.name)
        return self


class FunctionExpression(StrictModel):
    expression: str = Field(
        max_length=expression.MAX_LENGTH,
        description="f(x) in Python's notation: numbers, x, pi, e, + - * / ** and "
        f"{', '.join(expression.FUNCTIONS)}; e.g. 1 - exp(-x**2) - 0.5*exp(-(x-3)**2)",
        examples=["1 - exp(-x**2) - 0.5*exp(-(x-3)**2)"],
    )

    @field_validator("expression")
    @classmethod
    def _parses(cls, text: str) -> str:
        expression.parse(text)
        return text


class TraceRequest(StrictModel):
    optimizer: TracedOptimizer = Field(
        TracedOptimizer(),
        description="gd, sgd (the same in 1-D), momentum, nesterov, adam, "
        "rmsprop or adadelta, with its hyperparameters as in a job's train.optimizer",
    )
    function: Function | FunctionExpression = Field(
        "quadratic",
        description="relu: max(0, x); sigmoid; abs: |x|; quadratic: x^2; bump: "
        "1 - exp(-x^2) - (1 - height) exp(-(x - 3)^2), a global minimum 0 at x = 0 and a "
        "second one of about `height` at x = 3, a ridge of about 1 between them; or "
        '{"expression": "..."}, a function of x written out',
    )
    height: float = Field(
        0.5, ge=-1.0, le=1.0, description="bump: the second minimum's height (< 1)"
    )
    x0: float = Field(1.0, ge=-100.0, le=100.0, description="the starting point")
    steps: int = Field(50, ge=1, le=MAX_TRACE_STEPS)

    @field_validator("function", mode="before")
    @classmethod
    def _named_or_written(cls, value: Any) -> Any:
        """A name, or an expression checked here so that its error names function.expression."""
        if isinstance(value, dict):
            try:
                return FunctionExpression.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "expression"
                raise error_at(where, first["msg"].removeprefix("Value error, ")) from None
        if isinstance(value, str) and value not in get_args(Function):
            raise ValueError(
                f"unknown function {value!r}; named: {', '.join(get_args(Function))}, or "
                '{"expression": "..."}'
            )
        return value


class TraceStep(BaseModel):
    step: int = Field(description="t = 1, 2, ...")
    g: float = Field(description="f'(x) at the point the step starts from")
    m: float | None = Field(
        None, description="first moment (adam) or momentum buffer (momentum, nesterov, rmsprop)"
    )
    v: float | None = Field(
        None, description="second moment (adam) or running mean of g^2 (rmsprop, adadelta)"
    )
    m_hat: float | None = Field(None, description="adam: m / (1 - beta1^t)")
    v_hat: float | None = Field(None, description="adam: v / (1 - beta2^t)")
    v_max: float | None = Field(
        None, description="adam with amsgrad: the largest v so far, which the step divides by"
    )
    g_avg: float | None = Field(None, description="centered rmsprop: running mean of g")
    u: float | None = Field(None, description="adadelta: running mean of squared updates")
    x: float = Field(description="x after the step")
    f: float = Field(description="f(x) after the step")


class TraceResponse(BaseModel):
    function: Function | FunctionExpression
    optimizer: OptimizerSpec
    x0: float
    f0: float
    steps: list[TraceStep]


class LayerSummary(BaseModel):
    name: str = Field(description="the module's path in the model")
    type: str
    output_shape: list[int] | None = Field(description="per example; None if not run")
    n_params: int = Field(description="the module's own parameters")
    kernel: list[int] | None = Field(None, description="conv/pool: per axis (height, width)")
    stride: list[int] | None = None
    padding: list[int] | None = None
    receptive_field: list[int] | None = Field(
        None,
        description="conv/pool of the stack over the input, per axis: input positions one "
        "output sees",
    )
    jump: list[int] | None = Field(None, description="input positions between neighbouring outputs")
    start: list[float] | None = Field(
        None,
        description="the input position (index from 0) at the centre of the first output's "
        "receptive field; below 0 where padding reaches before the input",
    )


class TrainingMemory(BaseModel):
    """Bytes of a training step, float32: a lower bound (no allocator slack, no workspace)."""

    parameters: int
    gradients: int
    optimizer_state: int = Field(description="the largest of the family's optimizers' state")
    inputs: int = Field(description="one batch of inputs")
    activations: int = Field(description="every layer's output for a batch, kept for backward")
    total: int


class ArchitectureSummary(BaseModel):
    family: str
    input_shape: list[int]
    layers: list[LayerSummary]
    n_params: int = Field(description="equal to PyTorch's count of the built model")
    trainable_params: int
    batch_size: int = Field(description="the job's train.batch_size")
    training_memory_bytes: TrainingMemory


# --- POST /architectures/forward --------------------------------------------------------------

MAX_FORWARD_LAYERS = 32
MAX_FORWARD_INPUT = 65_536  # values of the input
MAX_FORWARD_PARAMS = 65_536  # weights and biases of all layers together
MAX_FORWARD_VALUES = 131_072  # values of all layers' outputs together
MAX_FORWARD_FLOPS = 100_000_000  # multiplies and adds of the whole pass
MAX_VALUE = 1e6  # of an input, weight or bias
CONVS = ("conv1d", "conv2d")
POOLS = ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d")
WEIGHTED = ("dense", *CONVS)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
LayerType = Literal[CONVS + POOLS + ("dense", "flatten") + ACTIVATIONS]  # type: ignore[valid-type]


def shape_of(value: object) -> tuple[int, ...]:
    """The shape of a nested list of numbers, each level as long as its neighbours (a tensor);
    ValueError if it is ragged, empty, or holds anything but finite numbers within MAX_VALUE."""
    shape: list[int] = []
    level = [value]
    while isinstance(level[0], list):
        if not all(isinstance(v, list) for v in level):
            raise ValueError(f"mixes lists and numbers at depth {len(shape) + 1}")
        size = len(level[0])
        if size == 0 or any(len(v) != size for v in level):
            raise ValueError(
                f"is not rectangular: lists at depth {len(shape) + 1} differ in length"
            )
        shape.append(size)
        level = [item for v in level for item in v]
    for v in level:
        if type(v) not in (int, float) or not math.isfinite(v) or abs(v) > MAX_VALUE:
            raise ValueError(f"must hold finite numbers within +-{MAX_VALUE:g}")
    return tuple(shape)


def _values(depths: tuple[int, ...], what: str) -> Any:
    """Nested lists of numbers, `depths` levels deep; kept as given."""

    def check(value: object) -> list:
        if not isinstance(value, list):
            raise ValueError(f"must be {what}")
        if len(shape := shape_of(value)) not in depths:
            raise ValueError(f"must be {what}; it has {len(shape)} levels of lists")
        return value  # type: ignore[return-value]

    def nested(depth: int) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number", "minimum": -MAX_VALUE, "maximum": MAX_VALUE}
        for _ in range(depth):
            schema = {"type": "array", "items": schema, "minItems": 1}
        return schema

    schema = nested(depths[0]) if len(depths) == 1 else {"anyOf": [nested(d) for d in depths]}
    return Annotated[list, PlainValidator(check), WithJsonSchema(schema)]


Input = _values((1, 2, 3), "(features), (channels, length) or (channels, height, width)")
Weight = _values(
    (2, 3, 4),
    "a dense (units, features), conv1d (filters, channels, length) or "
    "conv2d (filters, channels, height, width) weight",
)
Bias = _values((1,), "a list of numbers, one per unit or filter")
WEIGHT_LAYOUT = {
    "dense": ("units", "features"),
    "conv1d": ("filters", "channels", "length"),
    "conv2d": ("filters", "channels", "height", "width"),
}
FIELDS = {  # what each kind of layer takes besides its type
    **{t: {"filters", "kernel", "stride", "padding", "weight", "bias"} for t in CONVS},
    **{t: {"size", "stride", "padding"} for t in POOLS},
    "dense": {"units", "weight", "bias"},
}


class ForwardLayer(StrictModel):
    type: LayerType = Field(
        description="conv1d, conv2d (PyTorch's: a cross-correlation, the kernel not flipped); "
        "maxpool1d, maxpool2d, avgpool1d, avgpool2d; dense (x W^T + b, as nn.Linear); flatten; "
        "an activation: " + ", ".join(ACTIVATIONS)
    )
    weight: Weight | None = Field(
        None,
        description="as PyTorch stores it: dense (units, features), conv1d (filters, channels, "
        "length), conv2d (filters, channels, height, width); default: drawn from `seed`",
    )
    bias: Bias | None = Field(
        None, description="one per unit or filter; default: drawn from `seed`"
    )
    filters: int | None = Field(None, ge=1, le=1024, description="conv without a weight")
    units: int | None = Field(None, ge=1, le=16_384, description="dense without a weight")
    kernel: Kernel | None = Field(None, description="conv without a weight: 1..15 or per axis")
    size: PoolSize | None = Field(None, description="pool: 1..8 or per axis")
    stride: Stride | None = Field(None, description="conv: default 1; pool: default its size")
    padding: Padding | None = Field(
        None, description="default 0; conv: 0..16 or 'same' (kernel // 2); pool: at most size // 2"
    )

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> Self:
        takes = FIELDS.get(self.type, set())
        for field in ("weight", "bias", "filters", "units", "kernel", "size", "stride", "padding"):
            if getattr(self, field) is not None and field not in takes:
                raise error_at(field, f"a {self.type} layer takes no {field}")
        if self.type in POOLS:
            if self.size is None:
                raise error_at("size", f"a {self.type} layer needs its size")
            if self.padding == "same":
                raise error_at("padding", "a pool's padding is a number (at most size // 2)")
            size, pad = axes(self.size, 2), axes(self.padding or 0, 2)
            if any(p > s // 2 for s, p in zip(size, pad, strict=False)):
                raise error_at("padding", "must be at most half the pool's size on every axis")
        if self.type in WEIGHTED:
            self._check_weight()
        return self

    def _check_weight(self) -> None:
        layout = WEIGHT_LAYOUT[self.type]
        if self.weight is None:
            needs = ("units",) if self.type == "dense" else ("filters", "kernel")
            for field in needs:
                if getattr(self, field) is None:
                    raise error_at(field, f"a {self.type} layer without a weight needs its {field}")
            return
        shape = shape_of(self.weight)
        if len(shape) != len(layout):
            raise error_at(
                "weight",
                f"a {self.type} weight is {', '.join(layout)}: {len(layout)} "
                f"levels of lists; this one has {len(shape)}",
            )
        out = self.units if self.type == "dense" else self.filters
        if out is not None and out != shape[0]:
            raise error_at("weight", f"holds {shape[0]} {layout[0]}; the layer says {out}")
        if self.kernel is not None and axes(self.kernel, len(shape) - 2) != shape[2:]:
            raise error_at(
                "weight", f"has a kernel of {list(shape[2:])}; the layer says {self.kernel}"
            )
        if self.bias is not None and shape_of(self.bias) != shape[:1]:
            raise error_at("bias", f"must hold {shape[0]} numbers, one per {layout[0][:-1]}")

    def parameters_given(self) -> bool:
        """Whether every weight and bias it has is given (nothing left to draw)."""
        return self.type not in WEIGHTED or (self.weight is not None and self.bias is not None)


EXAMPLE_1D = {
    "input": [[1, 3, 2, 1, 2, 3]],
    "layers": [
        {"type": "conv1d", "weight": [[[1, 0, 2]]], "bias": [1]},
        {"type": "relu"},
        {"type": "maxpool1d", "size": 2, "stride": 1},
        {"type": "flatten"},
        {"type": "dense", "weight": [[1, 0, -1]], "bias": [0.5]},
    ],
}


class ForwardRequest(StrictModel):
    input: Input = Field(
        description="one example: (features) for a dense layer, (channels, length) for 1-D "
        f"layers, (channels, height, width) for 2-D ones; at most {MAX_FORWARD_INPUT:,} values"
    )
    layers: list[ForwardLayer] = Field(min_length=1, max_length=MAX_FORWARD_LAYERS)
    seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="draws every weight and bias the layers leave out, in layer order, as "
        "PyTorch initialises a new layer after torch.manual_seed(seed); without it, every "
        "dense and conv layer needs its weight and bias",
    )

    @model_validator(mode="after")
    def _drawn_with_a_seed(self) -> Self:
        if self.seed is None:
            for i, layer in enumerate(self.layers):
                if not layer.parameters_given():
                    field = "weight" if layer.weight is None else "bias"
                    raise error_at(
                        f"layers.{i}.{field}", f"give the {field}, or a seed to draw it from"
                    )
        return self


class ForwardLayerOutput(BaseModel):
    type: str
    module: str = Field(description="the PyTorch module that ran")
    output_shape: list[int]
    output: list[Any] = Field(description="the layer's output for the example, float64")
    n_params: int
    weight: list[Any] | None = Field(None, description="drawn from `seed`; null where given")
    bias: list[float] | None = Field(None, description="drawn from `seed`; null where given")


class ForwardResponse(BaseModel):
    dtype: Literal["float64"] = Field(
        description="every value is computed in float64, so hand-worked numbers match exactly"
    )
    input_shape: list[int]
    layers: list[ForwardLayerOutput]
    n_params: int
