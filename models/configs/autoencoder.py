"""Autoencoder config ("ae"): a dense or convolutional autoencoder."""

from typing import Annotated, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator

from core.catalog import DatasetInfo
from core.spec import Direction, JobSpecBase, StrictModel
from models.configs.common import Activation, dataset_of

Size = Annotated[int, Field(ge=1, le=16_384)]
ReconstructionLoss = Literal["l1", "mse", "bce"]


class _AEBase(StrictModel):
    kind: Literal["dense", "conv"]  # narrowed by each kind; declared here so it comes first
    latent: int = Field(32, ge=1, le=4096, description="size of the code (the bottleneck)")
    activation: Activation = "relu"
    output: Literal["sigmoid", "identity"] | None = Field(
        None,
        description="activation of the reconstruction; default sigmoid for images (in [0, 1]), "
        "identity for other inputs",
    )
    loss: ReconstructionLoss = Field(
        "mse", description="reconstruction loss, averaged over the values of an example"
    )

    def output_for(self, input_shape: tuple[int, ...]) -> Literal["sigmoid", "identity"]:
        return self.output or ("sigmoid" if len(input_shape) == 3 else "identity")


class DenseAEConfig(_AEBase):
    kind: Literal["dense"] = "dense"
    hidden: list[Size] = Field(
        [196, 49],
        max_length=16,
        description="encoder sizes, input to bottleneck; the decoder mirrors them",
    )

    def sizes(self, n_in: int) -> list[int]:
        """Encoder widths, input to code: 784-196-49-32 for the defaults on 28x28 images."""
        return [n_in, *self.hidden, self.latent]


class ConvAEConfig(_AEBase):
    kind: Literal["conv"]
    filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [16, 32], min_length=1, max_length=8, description="channels of each downsampling conv"
    )
    kernel: int = Field(3, ge=1, le=9, description="padding is kernel // 2")
    stride: int = Field(2, ge=1, le=4, description="convs shrink by it, transposed convs grow")

    def feature_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """(channels, height, width) after each conv; ValueError when one has nothing to shrink."""
        c, h, w = input_shape
        shapes = []
        for i, filters in enumerate(self.filters):
            if h < self.stride or w < self.stride:
                raise ValueError(
                    f"conv layer {i} gets a {h}x{w} map, too small for stride {self.stride}: "
                    f"the stack shrinks the {input_shape} input to nothing"
                )
            pad = self.kernel // 2
            h = (h + 2 * pad - self.kernel) // self.stride + 1
            w = (w + 2 * pad - self.kernel) // self.stride + 1
            c = filters
            shapes.append((c, h, w))
        return shapes


def _kind(value: object) -> str:
    """A model section without `kind` is a dense autoencoder."""
    if isinstance(value, dict):
        return value.get("kind", "dense")
    return getattr(value, "kind", "dense")


AEConfig = Annotated[
    Annotated[DenseAEConfig, Tag("dense")] | Annotated[ConvAEConfig, Tag("conv")],
    Discriminator(_kind),
]


def is_image(data: DatasetInfo) -> bool:
    return len(data.input_shape) == 3


def require_images(data: DatasetInfo, what: str) -> None:
    """ValueError "<what>; <dataset> has inputs of shape ..." unless the inputs are images."""
    if not is_image(data):
        raise ValueError(f"{what}; {data.name!r} has inputs of shape {data.input_shape}")


class AEJob(JobSpecBase):
    """An autoencoder: it learns to reconstruct the dataset's inputs and ignores the labels."""

    stackable: ClassVar[bool] = True

    verbs: ClassVar[tuple[str, ...]] = ("reconstruct", "encode", "decode")
    images: ClassVar[tuple[str, ...]] = ("reconstructions",)
    family: Literal["ae"]

    def eval_metrics(self) -> dict[str, Direction]:
        return {"loss": "min", "mse": "min"}

    model: AEConfig = Field(DenseAEConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(
        cls, model: DenseAEConfig | ConvAEConfig, info: ValidationInfo
    ) -> DenseAEConfig | ConvAEConfig:
        if (data := dataset_of(info)) is None:
            return model
        image = is_image(data)
        if model.kind == "conv" and not image:
            raise ValueError(
                f"a conv autoencoder needs image inputs; {data.name!r} has shape {data.input_shape}"
            )
        if model.output is None:  # filled in, so the stored job says what it trained
            model = model.model_copy(update={"output": model.output_for(data.input_shape)})
        if model.output == "sigmoid" and not image:
            raise ValueError(
                f"output 'sigmoid' reconstructs values in [0, 1], but {data.name!r} inputs are "
                "not; use output 'identity'"
            )
        if model.loss == "bce" and model.output != "sigmoid":
            raise ValueError("loss 'bce' needs output 'sigmoid' (targets and outputs in [0, 1])")
        if model.kind == "conv":
            model.feature_shapes(data.input_shape)
        return model
