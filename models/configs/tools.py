"""Requests and answers of the tools that need no worker (no torch here): an optimizer stepped
on a 1-D function with its state at every step (POST /optimizers/trace), and a model's layers,
parameters, receptive fields and training memory (POST /architectures/summary)."""

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from core import expression
from core.spec import OptimizerSpec, StrictModel, default_lr, error_at

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
    kernel: int | None = None
    stride: int | None = None
    receptive_field: int | None = Field(
        None, description="conv/pool over an image: input pixels one output unit sees (a side)"
    )
    jump: int | None = Field(None, description="input pixels between neighbouring outputs")


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
