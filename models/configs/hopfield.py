"""Hopfield network config ("hopfield"): an associative memory of +/-1 patterns stored in closed
form by one of three rules, or a network with given weights and biases; binary (+/-1) or
continuous ([-1, 1], tanh) states; no gradient training."""

import math
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from core.spec import Direction, JobSpecBase, Stage, StrictModel, error_at
from models.configs.autoencoder import is_image
from models.configs.common import dataset_of

Mode = Literal["async", "sync", "flow"]
MAX_GIVEN_UNITS = 64  # neurons of a network whose weights the job gives
DEFAULT_GAIN = 4.0
DEFAULT_STEP_SIZE = 0.1
Weight = Annotated[float, Field(ge=-1000.0, le=1000.0)]


class HopfieldConfig(StrictModel):
    state: Literal["binary", "continuous"] = Field(
        "binary",
        description="binary: +/-1 units, s_i <- sign(h_i); continuous: units in [-1, 1], "
        "x_i <- tanh(gain * h_i), with h = W x + b (Hopfield 1984)",
    )
    gain: float | None = Field(
        None,
        gt=0.0,
        le=1000.0,
        description="continuous: the slope of tanh (1/temperature; default 4); the binary "
        "network is its limit as gain grows",
    )
    step_size: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="continuous, mode flow: the Euler step of dx/dt = -x + tanh(gain * h) "
        "(default 0.1; 1 is the sync update)",
    )
    weights: list[Annotated[list[Weight], Field(max_length=MAX_GIVEN_UNITS)]] | None = Field(
        None,
        max_length=MAX_GIVEN_UNITS,
        description="the N x N weights W themselves (2..64 neurons), used as given instead of "
        "a rule (rule and zero_diagonal do not apply); the dataset `patterns` then defaults to "
        "dim N",
    )
    bias: list[Weight] | None = Field(
        None, max_length=4096, description="the N biases b (default 0)"
    )
    rule: Literal["hebbian", "pseudo_inverse", "storkey"] = Field(
        "hebbian",
        description="hebbian: W = (1/N) sum of p p^T; pseudo_inverse: the projection onto the "
        "patterns' span (Personnaz et al. 1985); storkey: Storkey's (1997) incremental rule",
    )
    zero_diagonal: bool = Field(True, description="no self-connections (W_ii = 0)")
    store: Literal["class_means", "examples"] = Field(
        "class_means",
        description="image datasets: store each class's mean training image, or its first "
        "training example (both thresholded)",
    )
    n_patterns: int = Field(
        3,
        ge=1,
        le=1000,
        description="image datasets: store classes 0..n_patterns-1 (at most the dataset's "
        "classes); ignored by the dataset `patterns`, which stores every pattern it holds",
    )
    threshold: float = Field(0.5, ge=0.0, lt=1.0, description="a pixel above it is +1, else -1")
    noise: float = Field(
        0.1, ge=0.0, le=0.5, description="fraction of units flipped before recall in evaluation"
    )
    mode: Mode = Field(
        "async",
        description="evaluation's updates: async (one unit at a time, a random order per sweep), "
        "sync (every unit at once) or, continuous only, flow (Euler steps of the "
        "continuous-time dynamics)",
    )
    max_iterations: int = Field(
        100, ge=1, le=1000, description="evaluation: sweeps (async), updates (sync) or steps"
    )

    @model_validator(mode="after")
    def _state_options(self) -> Self:
        if self.state == "binary":
            for name in ("gain", "step_size"):
                if getattr(self, name) is not None:
                    raise error_at(name, f"{name} is for continuous states (state: continuous)")
            if self.mode == "flow":
                raise error_at("mode", "flow is for continuous states (state: continuous)")
        else:
            self.gain = DEFAULT_GAIN if self.gain is None else self.gain
            self.step_size = DEFAULT_STEP_SIZE if self.step_size is None else self.step_size
        if self.weights is not None:
            n = len(self.weights)
            if not 2 <= n <= MAX_GIVEN_UNITS:
                raise error_at("weights", f"give 2 to {MAX_GIVEN_UNITS} rows, not {n}")
            for i, row in enumerate(self.weights):
                if len(row) != n:
                    raise error_at(
                        "weights", f"W must be square: {n} rows, but row {i} has {len(row)} values"
                    )
            # Only a value other than the default is refused: a stored job re-validates.
            if self.rule != "hebbian" or not self.zero_diagonal:
                field = "rule" if self.rule != "hebbian" else "zero_diagonal"
                raise error_at(field, "weights are used as given: no rule, no zero_diagonal")
        return self


class HopfieldJob(JobSpecBase):
    """A Hopfield network (Hopfield 1982, 1984). The run is one "store" epoch that computes the
    weights from the patterns (or takes the given ones); `train.epochs`, the optimizer and early
    stopping do not apply. train_stable is the share of stored patterns that stay where they
    are (binary: fixed points; continuous: settle with the pattern's signs); recall is the
    share of a split's examples (of stored classes), binarized with `noise` of their units
    flipped, that settle on the pattern of their label (continuous: on its signs)."""

    verbs: ClassVar[tuple[str, ...]] = ("recall", "attractors")
    images: ClassVar[tuple[str, ...]] = ("energy", "recall", "states")
    optimizer_names: ClassVar[tuple[str, ...]] = ()
    allows_lbfgs: ClassVar[bool] = False
    family: Literal["hopfield"]
    model: HopfieldConfig = Field(HopfieldConfig(), validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _patterns_as_wide_as_the_weights(cls, data: Any) -> Any:
        """Given weights and the dataset `patterns` with no size of its own: dim N."""
        if not isinstance(data, dict):
            return data
        model, dataset = data.get("model"), data.get("dataset")
        if (
            isinstance(model, dict)
            and isinstance(model.get("weights"), list)
            and isinstance(dataset, dict)
            and dataset.get("name") == "patterns"
            and not {"patterns", "dim", "n_patterns"} & set(dataset)
        ):
            data = {**data, "dataset": {**dataset, "dim": len(model["weights"])}}
        return data

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: HopfieldConfig, info: ValidationInfo) -> HopfieldConfig:
        if (data := dataset_of(info)) is None:
            return model
        if data.name != "patterns":
            if data.kind != "classification" or not is_image(data):
                raise ValueError(
                    "a Hopfield network stores +/-1 patterns: use the dataset 'patterns' or an "
                    f"image classification dataset; {data.name!r} is {data.kind} with inputs "
                    f"of shape {data.input_shape}"
                )
            if model.n_patterns > data.n_classes:
                raise error_at(
                    "n_patterns",
                    f"n_patterns {model.n_patterns} is more than the {data.n_classes} classes "
                    f"of {data.name!r}: one pattern is stored per class",
                )
        n = math.prod(data.input_shape)
        if model.weights is not None and len(model.weights) != n:
            raise error_at(
                "weights",
                f"W is {len(model.weights)} x {len(model.weights)}, but the patterns of "
                f"{data.name!r} have {n} values",
            )
        if model.bias is not None and len(model.bias) != n:
            raise error_at("bias", f"give one bias per neuron: {n}, not {len(model.bias)}")
        return model

    def stages(self) -> list[Stage]:
        return [Stage("store", 1, monitored=False)]

    def train_metrics(self) -> dict[str, Direction]:
        return {"stable": "max"}

    def eval_metrics(self) -> dict[str, Direction]:
        return {"recall": "max", "energy": "min"}

    def selection_metric(self) -> str:
        return "val_recall" if self.has_validation() else "train_stable"
