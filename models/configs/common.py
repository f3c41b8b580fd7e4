"""What the family configs share: activations, the parameter cap, the job's dataset facts."""

from typing import Literal

from pydantic import ValidationInfo

from core.catalog import DatasetInfo, resolve
from core.spec import Direction, JobSpecBase, uploads_of

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "silu", "identity"]
MAX_PARAMS = 50_000_000


def dataset_of(info: ValidationInfo) -> DatasetInfo | None:
    """The job's dataset (with its per-job shape), inside a `model` field validator; None when
    it is unknown yet (the dataset section failed, or an upload not resolved yet)."""
    dataset = info.data.get("dataset")
    return resolve(dataset, uploads_of(info)) if dataset is not None else None


def check_params(n: int) -> None:
    if n > MAX_PARAMS:
        raise ValueError(f"the model would have {n:,} parameters; the limit is {MAX_PARAMS:,}")


class SupervisedJob(JobSpecBase):
    """A family that maps inputs to labels (cross-entropy) or values (MSE)."""

    def train_metrics(self) -> dict[str, Direction]:
        if self.task == "classification":
            return {"loss": "min", "accuracy": "max"}
        return {"loss": "min", "mse": "min"}

    def eval_metrics(self) -> dict[str, Direction]:
        if self.task == "classification":
            return {"loss": "min", "accuracy": "max"}
        # nmse: the MSE over the targets' variance (1 = no better than predicting the mean).
        return {"loss": "min", "mse": "min", "nmse": "min"}
