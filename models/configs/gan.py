"""Generative adversarial network config ("gan"): a dense or DCGAN-style convolutional generator
and its mirrored discriminator, for image datasets."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import Direction, JobSpecBase, StrictModel
from models.configs.autoencoder import Size, require_images
from models.configs.common import SampleEpochs, dataset_of, with_sample_epochs

KERNEL = 4  # DCGAN's 4x4 kernels, stride 2, padding 1: each layer halves or doubles a side


class GANConfig(StrictModel):
    kind: Literal["mlp", "conv"] = Field(
        "mlp",
        description="mlp: dense layers; conv: the DCGAN backbone (transposed convs with "
        "batchnorm and ReLU in the generator, strided convs with batchnorm and leaky ReLU in "
        "the discriminator)",
    )
    latent: int = Field(16, ge=1, le=1024, description="size of z, drawn from N(0, I)")
    hidden: list[Size] = Field(
        [128, 256],
        min_length=1,
        max_length=8,
        description="mlp: generator widths, latent to image (each with batchnorm and leaky "
        "ReLU); the discriminator mirrors them",
    )
    filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [64, 32],
        min_length=1,
        max_length=6,
        description="conv: generator channels, from the smallest map to the image; each layer "
        "doubles the map; the discriminator mirrors them",
    )
    sample_epochs: SampleEpochs = None
    n_kept: int = Field(16, ge=1, le=64, description="samples kept at each of sample_epochs")

    def map_sizes(self, input_shape: tuple[int, ...]) -> list[tuple[int, int]]:
        """conv: (height, width) of the maps from the image down to the generator's first map,
        each side halved (rounded down) per layer; ValueError where one reaches nothing."""
        _, h, w = input_shape
        sizes = [(h, w)]
        for _ in self.filters:
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(
                    f"{len(self.filters)} conv layers halve a {input_shape[1]}x{input_shape[2]} "
                    "image to nothing; use fewer filters"
                )
            sizes.append((h, w))
        return sizes


class GANJob(JobSpecBase):
    """A generative adversarial network (Goodfellow et al. 2014; DCGAN: Radford et al. 2016) of
    an image dataset; the labels are ignored. Each batch steps the discriminator (real against
    generated, by binary cross-entropy), then the generator (the non-saturating loss)."""

    verbs: ClassVar[tuple[str, ...]] = ("sample", "interpolate")
    images: ClassVar[tuple[str, ...]] = ("samples", "interpolation")
    optimizer_names: ClassVar[tuple[str, ...]] = ("generator", "discriminator")
    # The DCGAN recipe: Adam at 2e-4 with beta1 = 0.5.
    default_optimizers: ClassVar[dict[str, dict[str, Any]]] = {
        "generator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
        "discriminator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
    }
    allows_lbfgs: ClassVar[bool] = False
    family: Literal["gan"]
    model: GANConfig = Field(GANConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: GANConfig, info: ValidationInfo) -> GANConfig:
        model = with_sample_epochs(model, info)
        if (data := dataset_of(info)) is None:
            return model
        require_images(data, "a gan generates images")
        if model.kind == "conv":
            model.map_sizes(data.input_shape)
        return model

    def train_metrics(self) -> dict[str, Direction]:
        # d_real, d_fake: the discriminator's mean probability that an image is real.
        return {"d_loss": "min", "g_loss": "min", "d_real": "max", "d_fake": "min"}

    def eval_metrics(self) -> dict[str, Direction]:
        return {"d_loss": "min", "d_real": "max", "d_fake": "min"}

    def selection_metric(self) -> str:
        return "train_g_loss"  # a gan has no loss called loss
