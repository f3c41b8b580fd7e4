"""Requests and answers of the tools that need no worker (no torch here): an optimizer stepped
on a 1-D function with its state at every step (POST /optimizers/trace), and a model's layers,
parameters, receptive fields and training memory (POST /architectures/summary)."""

from typing import Literal

from pydantic import BaseModel, Field

from core.spec import OptimizerSpec, StrictModel

Function = Literal["relu", "sigmoid", "abs", "quadratic", "bump"]
TRACED = ("gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "adadelta")
MAX_TRACE_STEPS = 10_000


class TracedOptimizer(OptimizerSpec):
    name: Literal[TRACED] = "adam"  # type: ignore[valid-type]


class TraceRequest(StrictModel):
    optimizer: TracedOptimizer = Field(
        TracedOptimizer(),
        description="gd, sgd (the same in 1-D), momentum, nesterov, adam, "
        "rmsprop or adadelta, with its hyperparameters as in a job's train.optimizer",
    )
    function: Function = Field(
        "quadratic",
        description="relu: max(0, x); sigmoid; abs: |x|; quadratic: x^2; bump: "
        "1 - exp(-x^2) - (1 - height) exp(-(x - 3)^2), a global minimum 0 at x = 0 and a "
        "second one of about `height` at x = 3, a ridge of about 1 between them",
    )
    height: float = Field(
        0.5, ge=-1.0, le=1.0, description="bump: the second minimum's height (< 1)"
    )
    x0: float = Field(1.0, ge=-100.0, le=100.0, description="the starting point")
    steps: int = Field(50, ge=1, le=MAX_TRACE_STEPS)


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
    u: float | None = Field(None, description="adadelta: running mean of squared updates")
    x: float = Field(description="x after the step")
    f: float = Field(description="f(x) after the step")


class TraceResponse(BaseModel):
    function: Function
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
