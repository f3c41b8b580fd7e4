"""MLP config: hidden sizes, activation, dropout, batchnorm."""

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from core.spec import StrictModel
from models.configs.common import Activation, SupervisedJob


class MLPConfig(StrictModel):
    hidden: list[Annotated[int, Field(ge=1, le=16_384)]] = Field(
        [128, 64], max_length=32, description="sizes of the hidden layers, input to output"
    )
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batchnorm: bool = False


class MLPJob(SupervisedJob):
    stackable: ClassVar[bool] = True
    stack_widths: ClassVar[tuple[str, ...]] = ("model.hidden",)
    verbs: ClassVar[tuple[str, ...]] = ("predict", "forecast")
    images: ClassVar[tuple[str, ...]] = ("forecast",)
    family: Literal["mlp"]
    model: MLPConfig = Field(MLPConfig(), validate_default=True)
