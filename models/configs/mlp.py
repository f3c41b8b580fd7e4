"""MLP config: hidden sizes, activation, dropout, batchnorm."""

import math
from itertools import pairwise
from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import StrictModel
from models.configs.common import Activation, SupervisedJob, check_params, dataset_of


class MLPConfig(StrictModel):
    hidden: list[Annotated[int, Field(ge=1, le=16_384)]] = Field(
        [128, 64], max_length=32, description="sizes of the hidden layers, input to output"
    )
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batchnorm: bool = False

    def n_params(self, n_in: int, n_out: int) -> int:
        sizes = [n_in, *self.hidden, n_out]
        linear = sum((a + 1) * b for a, b in pairwise(sizes))
        return linear + (2 * sum(self.hidden) if self.batchnorm else 0)


class MLPJob(SupervisedJob):
    verbs: ClassVar[tuple[str, ...]] = ("predict", "forecast")
    images: ClassVar[tuple[str, ...]] = ("forecast",)
    family: Literal["mlp"]
    model: MLPConfig = Field(MLPConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: MLPConfig, info: ValidationInfo) -> MLPConfig:
        if (data := dataset_of(info)) is not None:
            n_out = data.n_classes or data.target_dim
            check_params(model.n_params(math.prod(data.input_shape), n_out))
        return model
