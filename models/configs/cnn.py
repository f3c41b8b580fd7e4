"""CNN config: a conv stack (filters, kernel, stride, padding, pooling) and a dense head."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PlainValidator, ValidationInfo, WithJsonSchema, field_validator

from core.spec import StrictModel
from models.configs.common import Activation, SupervisedJob, dataset_of


def _padding(value: object) -> int | str:
    if value == "same" or (type(value) is int and 0 <= value <= 16):
        return value
    raise ValueError("padding must be 'same' or an integer 0..16")


# One type, not a union, so a bad value is one error at `padding` rather than one per branch.
Padding = Annotated[
    int | str,
    PlainValidator(_padding),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 16}, {"const": "same"}]}
    ),
]


class ConvLayer(StrictModel):
    filters: int = Field(ge=1, le=2048)
    kernel: int = Field(3, ge=1, le=15)
    stride: int = Field(1, ge=1, le=8)
    padding: Padding = Field("same", description="'same' keeps the size at stride 1")
    pool: Literal["max", "avg"] | None = None
    pool_size: int = Field(2, ge=1, le=8)
    batchnorm: bool = False

    def pad(self) -> int:
        return self.kernel // 2 if self.padding == "same" else self.padding


class CNNConfig(StrictModel):
    # Defaults measured on Fashion-MNIST (README, "Training options, and the GPU path"): three
    # conv blocks with batchnorm, and a cosine schedule over the default 20 epochs.
    conv: list[ConvLayer] = Field(
        [
            ConvLayer(filters=32, pool="max", batchnorm=True),
            ConvLayer(filters=64, pool="max", batchnorm=True),
            ConvLayer(filters=128, pool="max", batchnorm=True),
        ],
        min_length=1,
        max_length=32,
    )
    dense: list[Annotated[int, Field(ge=1, le=16_384)]] = Field([128], max_length=8)
    activation: Activation = "relu"
    dropout: float = Field(0.4, ge=0.0, lt=1.0, description="before each dense layer")

    def feature_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """(channels, height, width) after each conv layer and its pool; ValueError if none left."""
        c, h, w = input_shape
        shapes = []
        for i, layer in enumerate(self.conv):
            h = (h + 2 * layer.pad() - layer.kernel) // layer.stride + 1
            w = (w + 2 * layer.pad() - layer.kernel) // layer.stride + 1
            if layer.pool:
                h, w = h // layer.pool_size, w // layer.pool_size
            if h < 1 or w < 1:
                raise ValueError(f"conv layer {i} shrinks the {input_shape} input to nothing")
            c = layer.filters
            shapes.append((c, h, w))
        return shapes


class CNNJob(SupervisedJob):
    verbs: ClassVar[tuple[str, ...]] = ("predict",)
    default_schedule: ClassVar[dict[str, Any] | None] = {"name": "cosine"}
    family: Literal["cnn"]
    model: CNNConfig = Field(CNNConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: CNNConfig, info: ValidationInfo) -> CNNConfig:
        if (data := dataset_of(info)) is not None:
            if len(data.input_shape) != 3:
                raise ValueError(
                    f"a CNN needs image inputs; {data.name!r} has shape {data.input_shape}"
                )
            model.feature_shapes(data.input_shape)
        return model
