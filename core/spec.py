"""The family-independent parts of a job document: dataset, optimizer, training run.

Pydantic only (no torch), so the API validates a job and publishes its schema without PyTorch.
Every float refuses NaN and Inf; every number has bounds; unknown keys are errors.
"""

from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.catalog import CATALOG, Kind


class StrictModel(BaseModel):
    # strict: `true` is not an epoch count and "5" is not a number; an int is still a float.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class DatasetSpec(StrictModel):
    name: str = Field(description="a built-in dataset, see GET /datasets")
    val_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of train held out")
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        le=0.5,
        description="share held out for test where the dataset has no official test split",
    )
    max_train: int | None = Field(
        None, ge=1, le=10_000_000, description="use at most this many training examples"
    )
    split_seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the train/val/test split")
    # Synthetic sets.
    n_train: int | None = Field(None, ge=10, le=1_000_000)
    n_test: int | None = Field(None, ge=10, le=1_000_000)
    noise: float = Field(0.0, ge=0.0, le=10.0, description="std of Gaussian target noise")
    function: Literal["sin", "sinc", "cubic", "step", "abs"] = "sin"

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in CATALOG:
            raise ValueError(f"unknown dataset {name!r}; built in: {', '.join(sorted(CATALOG))}")
        return name


OptimizerName = Literal["gd", "sgd", "momentum", "nesterov", "adam", "adadelta", "rmsprop", "lbfgs"]

# Learning rates that train the default models well; filled in when a job leaves lr out.
DEFAULT_LR: dict[str, float] = {
    "gd": 0.1,
    "sgd": 0.05,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adam": 1e-3,
    "adadelta": 1.0,
    "rmsprop": 1e-3,
    "lbfgs": 1.0,
}
FULL_BATCH = frozenset({"gd", "lbfgs"})


class OptimizerSpec(StrictModel):
    name: OptimizerName = "adam"
    lr: float | None = Field(None, gt=0.0, le=100.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0, description="momentum and nesterov")
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2, description="adam")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="adadelta, rmsprop")
    max_iter: int = Field(20, ge=1, le=1000, description="lbfgs iterations per step")
    history_size: int = Field(100, ge=1, le=1000, description="lbfgs")

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: list[float]) -> list[float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("each beta must be in [0, 1)")
        return betas

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        if self.lr is None:
            self.lr = DEFAULT_LR[self.name]
        if self.momentum is None:
            self.momentum = 0.9 if self.name in ("momentum", "nesterov") else 0.0
        if self.name == "nesterov" and self.momentum == 0.0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class TrainSpec(StrictModel):
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(
        64, ge=1, le=65_536, description="ignored by gd and lbfgs, which use the full batch"
    )
    optimizer: OptimizerSpec = OptimizerSpec()
    weight_decay: float = Field(0.0, ge=0.0, le=10.0, description="L2 penalty (lambda)")
    l1: float = Field(0.0, ge=0.0, le=10.0, description="L1 penalty (lambda)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class JobSpecBase(StrictModel):
    """A job document; each family narrows `family` and adds its `model` section."""

    family: str
    dataset: DatasetSpec
    task: Kind | None = Field(
        None, validate_default=True, description="defaults to the dataset's kind"
    )
    train: TrainSpec = TrainSpec()

    @field_validator("task")
    @classmethod
    def _task_fits_dataset(cls, task: Kind | None, info: ValidationInfo) -> Kind | None:
        dataset = info.data.get("dataset")
        if dataset is None:  # the dataset section failed and reports its own error
            return task
        kind = CATALOG[dataset.name].kind
        if task is not None and task != kind:
            raise ValueError(f"task {task!r} does not fit dataset {dataset.name!r} ({kind})")
        return kind
