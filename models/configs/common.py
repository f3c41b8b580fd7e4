"""What the family configs share: activations, the job's dataset facts, sample epochs."""

import math
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationInfo

from core.catalog import DatasetInfo, resolve
from core.spec import Direction, JobSpecBase, uploads_of

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "silu", "identity"]
MAX_SAMPLE_EPOCHS = 100


def dataset_of(info: ValidationInfo) -> DatasetInfo | None:
    """The job's dataset (with its per-job shape), inside a `model` field validator; None when
    it is unknown yet (the dataset section failed, or an upload not resolved yet)."""
    dataset = info.data.get("dataset")
    return resolve(dataset, uploads_of(info)) if dataset is not None else None


class SupervisedJob(JobSpecBase):
    """A family that maps inputs to labels (cross-entropy) or values (MSE)."""

    accelerated: ClassVar[bool] = True

    def train_metrics(self) -> dict[str, Direction]:
        if self.task == "classification":
            return {"loss": "min", "accuracy": "max"}
        return {"loss": "min", "mse": "min"}

    def eval_metrics(self) -> dict[str, Direction]:
        if self.task == "classification":
            return {"loss": "min", "accuracy": "max"}
        # nmse: the MSE over the targets' variance (1 = no better than predicting the mean).
        return {"loss": "min", "mse": "min", "nmse": "min"}


# The epochs after which a generator (gan, vae) keeps samples of fixed latent points.
SampleEpochs = Annotated[
    list[Annotated[int, Field(ge=1)]] | None,
    Field(
        min_length=1,
        max_length=MAX_SAMPLE_EPOCHS,
        description="epochs after which samples of fixed latent points are kept; default: five "
        "evenly spaced epochs, the first and the last included",
    ),
]


ModelSection = TypeVar("ModelSection", bound=BaseModel)


def default_sample_epochs(epochs: int) -> list[int]:
    """Five evenly spaced epochs from the first to the last (fewer for a short run)."""
    return sorted({1 + math.floor(k * (epochs - 1) / 4 + 0.5) for k in range(5)})


def with_sample_epochs(model: ModelSection, info: ValidationInfo) -> ModelSection:
    """The model section with its sample_epochs filled in (so the stored job says what it
    keeps) or sorted; ValueError for one past the run's last epoch."""
    if (train := info.data.get("train")) is None:
        return model
    epochs = train.epochs
    if model.sample_epochs is None:
        return model.model_copy(update={"sample_epochs": default_sample_epochs(epochs)})
    if late := [e for e in model.sample_epochs if e > epochs]:
        raise ValueError(
            f"sample_epochs {late} are past the run's last epoch ({epochs}); each must be in "
            f"1..{epochs}"
        )
    return model.model_copy(update={"sample_epochs": sorted(set(model.sample_epochs))})
