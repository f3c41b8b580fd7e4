"""CNN config: a conv stack (filters, kernel, stride, padding, pooling) and a dense head.

The stack convolves in 2-D over images (channels, height, width) and in 1-D over a time
series, whose examples (windows of `lag` values) are one channel of that length. Kernel,
stride, padding and the pool's size, stride and padding are an integer for every axis, or a
list with one per axis: [height, width], or [length]."""

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.spec import StrictModel, error_at
from models.configs.common import Activation, SupervisedJob, dataset_of

MAX_AXES = 2  # 1-D and 2-D convolutions


def _integers(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def _per_axis(low: int, high: int, *, same: bool = False) -> Any:
    """An integer low..high for every axis, or a list of one per axis ("same" too if `same`).
    One type, not a union, so a bad value is one error at its field rather than one per
    branch; the value is kept as given, so a stored job echoes what was posted."""
    words = "'same', " if same else ""
    message = f"must be {words}an integer {low}..{high}, or a list of one per axis"

    def whole(value: object) -> object:  # JSON's 3.0 is the integer 3
        return int(value) if type(value) is float and value.is_integer() else value

    def check(value: object) -> int | str | list[int]:
        value = [whole(v) for v in value] if isinstance(value, list) else whole(value)
        if type(value) is int and low <= value <= high or (same and value == "same"):
            return value  # type: ignore[return-value]
        if (
            isinstance(value, list)
            and 1 <= len(value) <= MAX_AXES
            and all(type(v) is int and low <= v <= high for v in value)
        ):
            return list(value)
        raise ValueError(message)

    options: list[dict[str, Any]] = [
        _integers(low, high),
        {"type": "array", "items": _integers(low, high), "minItems": 1, "maxItems": MAX_AXES},
    ]
    if same:
        options.append({"const": "same"})
    annotation = int | str | list[int] if same else int | list[int]
    return Annotated[annotation, PlainValidator(check), WithJsonSchema({"anyOf": options})]


Kernel = _per_axis(1, 15)
Stride = _per_axis(1, 8)
Padding = _per_axis(0, 16, same=True)
PoolSize = _per_axis(1, 8)
PoolPadding = _per_axis(0, 4)
PER_AXIS = ("kernel", "stride", "padding", "pool_size", "pool_stride", "pool_padding")


def axes(value: int | str | list[int] | None, dims: int) -> tuple[int, ...]:
    """One value per axis of a per-axis field (an integer counts for every axis)."""
    if isinstance(value, list):
        return tuple(value)
    assert isinstance(value, int)
    return (value,) * dims


def conv_input(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(channels, *axes) a conv stack reads from examples of this shape: an image as it is, a
    series' window as one channel."""
    if len(input_shape) == 1:
        return (1, input_shape[0])
    if len(input_shape) == 3:
        return tuple(input_shape)
    raise ValueError(f"a CNN cannot convolve inputs of shape {input_shape}")


def conv_output(size: int, kernel: int, stride: int, pad: int) -> int:
    """A side after a convolution or pool (PyTorch's formula, dilation 1, floor)."""
    return (size + 2 * pad - kernel) // stride + 1


class ConvLayer(StrictModel):
    filters: int = Field(ge=1, le=2048)
    kernel: Kernel = Field(3, description="1..15, or one per axis: [height, width] or [length]")
    stride: Stride = Field(1, description="1..8, or one per axis")
    padding: Padding = Field(
        "same", description="0..16 or one per axis; 'same' (kernel // 2) keeps the size at stride 1"
    )
    pool: Literal["max", "avg"] | None = None
    pool_size: PoolSize = Field(2, description="1..8, or one per axis")
    pool_stride: PoolSize | None = Field(
        None, description="1..8 or one per axis; default pool_size"
    )
    pool_padding: PoolPadding = Field(
        0, description="0..4 or one per axis, at most half the pool's size (PyTorch's rule)"
    )
    batchnorm: bool = False

    @model_validator(mode="after")
    def _consistent_axes(self) -> Self:
        lists = {f: len(v) for f in PER_AXIS if isinstance(v := getattr(self, f), list)}
        if len(set(lists.values())) > 1:
            field = max(lists, key=lambda f: PER_AXIS.index(f))
            raise error_at(field, f"the lists of {', '.join(lists)} name different numbers of axes")
        size, pad = (axes(self.pool_size, 2), axes(self.pool_padding, 2))
        if any(p > s // 2 for s, p in zip(size, pad, strict=False)):
            raise error_at("pool_padding", "must be at most half the pool's size on every axis")
        return self

    def axes(self) -> int | None:
        """How many axes its per-axis lists name; None when every field is one integer."""
        for field in PER_AXIS:
            if isinstance(value := getattr(self, field), list):
                return len(value)
        return None

    def kernels(self, dims: int) -> tuple[int, ...]:
        return axes(self.kernel, dims)

    def strides(self, dims: int) -> tuple[int, ...]:
        return axes(self.stride, dims)

    def pads(self, dims: int) -> tuple[int, ...]:
        if self.padding == "same":
            return tuple(k // 2 for k in self.kernels(dims))
        return axes(self.padding, dims)

    def pool_sizes(self, dims: int) -> tuple[int, ...]:
        return axes(self.pool_size, dims)

    def pool_strides(self, dims: int) -> tuple[int, ...]:
        return axes(self.pool_stride if self.pool_stride is not None else self.pool_size, dims)

    def pool_pads(self, dims: int) -> tuple[int, ...]:
        return axes(self.pool_padding, dims)


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

    def check_axes(self, input_shape: tuple[int, ...]) -> None:
        """Every layer's per-axis lists name the input's axes (error at the first that does not)."""
        dims = len(conv_input(input_shape)) - 1
        for i, layer in enumerate(self.conv):
            if (named := layer.axes()) is not None and named != dims:
                field = next(f for f in PER_AXIS if isinstance(getattr(layer, f), list))
                raise error_at(
                    f"conv.{i}.{field}",
                    f"names {named} axes; the {input_shape} input has {dims} "
                    f"({'[height, width]' if dims == 2 else '[length]'})",
                )

    def feature_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """(channels, *axes) after each conv layer and its pool; ValueError if none left."""
        shape = conv_input(input_shape)
        dims = len(shape) - 1
        shapes = []
        for i, layer in enumerate(self.conv):
            sides = [
                conv_output(*side)
                for side in zip(
                    shape[1:],
                    layer.kernels(dims),
                    layer.strides(dims),
                    layer.pads(dims),
                    strict=True,
                )
            ]
            if layer.pool and min(sides) >= 1:
                sides = [
                    conv_output(*side)
                    for side in zip(
                        sides,
                        layer.pool_sizes(dims),
                        layer.pool_strides(dims),
                        layer.pool_pads(dims),
                        strict=True,
                    )
                ]
            if min(sides) < 1:
                raise ValueError(f"conv layer {i} shrinks the {input_shape} input to nothing")
            shape = (layer.filters, *sides)
            shapes.append(shape)
        return shapes


class CNNJob(SupervisedJob):
    verbs: ClassVar[tuple[str, ...]] = ("predict", "forecast")
    images: ClassVar[tuple[str, ...]] = ("forecast",)
    default_schedule: ClassVar[dict[str, Any] | None] = {"name": "cosine"}
    family: Literal["cnn"]
    model: CNNConfig = Field(CNNConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: CNNConfig, info: ValidationInfo) -> CNNConfig:
        if (data := dataset_of(info)) is not None:
            if len(data.input_shape) != 3 and not data.sequence:
                raise ValueError(
                    "a CNN needs image inputs (2-D convolutions) or a time series (1-D); "
                    f"{data.name!r} has inputs of shape {data.input_shape}"
                )
            model.check_axes(data.input_shape)
            model.feature_shapes(data.input_shape)
        return model
