"""ViT config: square patches, a pre-norm transformer encoder and a CLS or mean-pooled head."""

from typing import ClassVar, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from core.spec import StrictModel
from models.configs.common import SupervisedJob, dataset_of


class ViTConfig(StrictModel):
    patch: int = Field(4, ge=1, le=64, description="side of the square patches; divides H and W")
    dim: int = Field(64, ge=1, le=4096, description="token width; a multiple of heads")
    depth: int = Field(4, ge=1, le=32, description="transformer encoder blocks")
    heads: int = Field(4, ge=1, le=64, description="attention heads per block")
    mlp_dim: int = Field(128, ge=1, le=16_384, description="hidden width of each block's MLP")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="after embeddings and dense layers")
    pool: Literal["cls", "mean"] = Field(
        "cls", description="classify from the CLS token, or from the mean of the patch tokens"
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        return self

    def grid(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        """(rows, columns) of patches; ValueError if the patch does not tile the image."""
        _, height, width = input_shape
        if height % self.patch or width % self.patch:
            raise ValueError(
                f"model.patch {self.patch} must divide the image's height and width "
                f"({height}x{width})"
            )
        return height // self.patch, width // self.patch


class ViTJob(SupervisedJob):
    verbs: ClassVar[tuple[str, ...]] = ("predict",)
    family: Literal["vit"]
    model: ViTConfig = Field(ViTConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: ViTConfig, info: ValidationInfo) -> ViTConfig:
        if (data := dataset_of(info)) is not None:
            if len(data.input_shape) != 3:
                raise ValueError(
                    f"a ViT needs image inputs; {data.name!r} has shape {data.input_shape}"
                )
            model.grid(data.input_shape)
        return model
