"""Variational autoencoder config ("vae"): a dense or convolutional VAE with a Bernoulli
likelihood on images in [0, 1], and a beta on its KL term (beta-VAE)."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import Direction, JobSpecBase, StrictModel
from models.configs.autoencoder import ConvAEConfig, Size, require_images
from models.configs.common import (
    Activation,
    SampleEpochs,
    dataset_of,
    with_sample_epochs,
)


class VAEConfig(StrictModel):
    kind: Literal["mlp", "conv"] = Field(
        "mlp", description="mlp: dense layers; conv: strided convs down, transposed convs up"
    )
    latent: int = Field(8, ge=1, le=1024, description="size of z")
    hidden: list[Size] = Field(
        [512],
        min_length=1,
        max_length=8,
        description="mlp: encoder widths, input to latent; the decoder mirrors them",
    )
    activation: Activation = "relu"
    filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [32, 64], min_length=1, max_length=8, description="conv: channels of each strided conv"
    )
    kernel: int = Field(3, ge=1, le=9, description="conv: padding is kernel // 2")
    stride: int = Field(2, ge=1, le=4, description="conv: convs shrink by it, transposed grow")
    beta: float = Field(
        1.0, ge=0.0, le=100.0, description="weight of the KL term (1: the plain VAE's ELBO)"
    )
    sample_epochs: SampleEpochs = None
    n_kept: int = Field(16, ge=1, le=64, description="samples kept at each of sample_epochs")

    def conv_ae(self) -> ConvAEConfig:
        """conv: the autoencoder whose convs the vae's encoder and decoder are."""
        return ConvAEConfig(
            kind="conv",
            latent=self.latent,
            activation=self.activation,
            filters=self.filters,
            kernel=self.kernel,
            stride=self.stride,
        )

    def feature_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """conv: (channels, height, width) after each strided conv (ValueError if too small)."""
        return self.conv_ae().feature_shapes(input_shape)


class VAEJob(JobSpecBase):
    """A variational autoencoder (Kingma & Welling 2014; beta-VAE: Higgins et al. 2017) of an
    image dataset; the labels are ignored. Its loss per example is the reconstruction's
    Bernoulli negative log-likelihood plus beta times KL(q(z|x) || N(0, I))."""

    verbs: ClassVar[tuple[str, ...]] = ("sample", "reconstruct", "encode", "decode", "interpolate")
    images: ClassVar[tuple[str, ...]] = (
        "samples",
        "reconstructions",
        "interpolation",
        "latent_grid",
    )
    # A faster Adam than the global default: 20 epochs of digits (420 steps) then give samples
    # well below noise by the Frechet distance; at 1e-3 the posterior stays near the prior.
    default_optimizers: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {"name": "adam", "lr": 3e-3}
    }
    family: Literal["vae"]
    model: VAEConfig = Field(VAEConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: VAEConfig, info: ValidationInfo) -> VAEConfig:
        model = with_sample_epochs(model, info)
        if (data := dataset_of(info)) is None:
            return model
        require_images(data, "a vae models images in [0, 1] (a Bernoulli likelihood)")
        if model.kind == "conv":
            model.feature_shapes(data.input_shape)
        return model

    def train_metrics(self) -> dict[str, Direction]:
        return {"loss": "min", "reconstruction": "min", "kl": "min"}

    def eval_metrics(self) -> dict[str, Direction]:
        return {"loss": "min", "reconstruction": "min", "kl": "min", "elbo": "max"}
