"""The family-independent parts of a job document: dataset, optimizer, training run.

Pydantic only (no torch), so the API validates a job and publishes its schema without PyTorch.
Every float refuses NaN and Inf; every number has bounds; unknown keys are errors.
"""

import re
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.catalog import CATALOG, DatasetInfo, Kind, resolve


def uploads_of(info: ValidationInfo) -> Mapping[str, DatasetInfo] | None:
    """Facts of uploaded datasets, passed as validation context by whoever knows them."""
    return (info.context or {}).get("uploads")


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
    # Time series (mackey_glass, lorenz): ordered splits, windows of `lag` values.
    lag: int = Field(30, ge=1, le=1000, description="past values per example (time series)")
    n_points: int = Field(2000, ge=50, le=1_000_000, description="series length (time series)")
    tau: int = Field(17, ge=1, le=100, description="Mackey-Glass delay")
    dt: float = Field(0.02, gt=0.0, le=1.0, description="Lorenz sampling step")
    n_per_class: int | None = Field(
        None, ge=1, le=100_000, description="train on at most this many examples of each class"
    )
    kfold: int | None = Field(
        None,
        ge=2,
        le=20,
        description="k-fold cross-validation over the training part (ordered folds for time "
        "series); replaces val_fraction",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in CATALOG and not re.match(r"^upload:[a-z0-9][a-z0-9_-]{0,63}$", name):
            raise ValueError(
                f"unknown dataset {name!r}; built in: {', '.join(sorted(CATALOG))}, "
                "or upload:<name> for an uploaded one (POST /datasets)"
            )
        return name

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> Self:
        info = resolve(self, uploads_of(info))
        if info is None:  # an upload the API resolves before the job is stored
            return self
        if self.n_per_class is not None and info.kind != "classification":
            raise ValueError("n_per_class needs a classification dataset")
        if info.sequence and self.lag >= self.n_points // 4:
            raise ValueError(f"lag {self.lag} is too long for a series of {self.n_points} points")
        return self


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


class ScheduleSpec(StrictModel):
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["step", "exponential", "plateau"]
    step_size: int = Field(10, ge=1, le=10_000, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step, exponential: decay factor")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="plateau: decay factor")
    patience: int = Field(5, ge=0, le=10_000, description="plateau: epochs without improvement")
    min_lr: float = Field(0.0, ge=0.0, le=1.0, description="plateau: floor")


class EarlyStoppingSpec(StrictModel):
    monitor: str = Field(
        "val_loss",
        max_length=64,
        description="a per-epoch metric; lower is better, except for accuracies",
    )
    patience: int = Field(10, ge=1, le=10_000, description="epochs without improvement")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts")
    restore_best: bool = Field(True, description="serve the weights of the best epoch")


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
    schedule: ScheduleSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    input_noise: float = Field(
        0.0, ge=0.0, le=10.0, description="std of Gaussian noise added to training inputs"
    )


class JobSpecBase(StrictModel):
    """A job document; each family narrows `family` and adds its `model` section."""

    family: str
    dataset: DatasetSpec
    task: Kind | None = Field(
        None, validate_default=True, description="defaults to the dataset's kind"
    )
    train: TrainSpec = Field(TrainSpec(), validate_default=True)

    @field_validator("task")
    @classmethod
    def _task_fits_dataset(cls, task: Kind | None, info: ValidationInfo) -> Kind | None:
        dataset = info.data.get("dataset")
        if dataset is None:  # the dataset section failed and reports its own error
            return task
        data = resolve(dataset, uploads_of(info))
        if data is None:
            return task
        kind = data.kind
        if task is not None and task != kind:
            raise ValueError(f"task {task!r} does not fit dataset {dataset.name!r} ({kind})")
        return kind

    @field_validator("train")
    @classmethod
    def _validation_data_for_early_stopping(
        cls, train: TrainSpec, info: ValidationInfo
    ) -> TrainSpec:
        dataset = info.data.get("dataset")
        stopping = train.early_stopping
        if dataset is not None and stopping is not None and stopping.monitor.startswith("val_"):
            if dataset.val_fraction == 0 and dataset.kfold is None:
                raise ValueError(
                    f"early_stopping monitors {stopping.monitor!r} but the dataset has "
                    "val_fraction 0; give it a validation split or monitor a train_ metric"
                )
        return train
