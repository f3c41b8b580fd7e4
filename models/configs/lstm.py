"""LSTM config: stacked (optionally bidirectional) LSTM layers and a dense head.

Every dataset reads as a sequence: a time series' window as `lag` steps of one value, an image
row by row (H steps of C*W values), a point of d coordinates as d steps of one value.
"""

from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from core.spec import StrictModel
from models.configs.common import Activation, SupervisedJob, dataset_of


def sequence_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(steps, features per step) of one example of this shape."""
    if len(input_shape) == 1:
        return input_shape[0], 1
    if len(input_shape) == 3:
        channels, height, width = input_shape
        return height, channels * width
    raise ValueError(f"an LSTM cannot read inputs of shape {input_shape} as a sequence")


class LSTMConfig(StrictModel):
    hidden: int = Field(64, ge=1, le=4096, description="units per LSTM layer (and direction)")
    layers: int = Field(1, ge=1, le=8, description="stacked LSTM layers")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between LSTM layers (layers >= 2)")
    bidirectional: bool = False
    head: list[Annotated[int, Field(ge=1, le=16_384)]] = Field(
        [], max_length=8, description="dense layer sizes after the last hidden state"
    )
    activation: Activation = Field("relu", description="of the head's dense layers")

    @model_validator(mode="after")
    def _dropout_needs_layers(self) -> Self:
        if self.dropout > 0 and self.layers == 1:
            raise ValueError("dropout acts between LSTM layers; it needs layers >= 2")
        return self


class LSTMJob(SupervisedJob):
    stackable: ClassVar[bool] = True
    verbs: ClassVar[tuple[str, ...]] = ("predict", "forecast")
    images: ClassVar[tuple[str, ...]] = ("forecast",)
    family: Literal["lstm"]
    model: LSTMConfig = Field(LSTMConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: LSTMConfig, info: ValidationInfo) -> LSTMConfig:
        if (data := dataset_of(info)) is not None:
            sequence_shape(data.input_shape)
        return model
