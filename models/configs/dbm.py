"""Deep Boltzmann machine config ("dbm"): layers of Bernoulli units, pretrained greedily as
RBMs, then trained jointly (mean-field data term, persistent Gibbs chains model term)."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import Direction, JobSpecBase, Stage, StrictModel
from models.configs.autoencoder import require_images
from models.configs.common import dataset_of
from models.configs.rbm import CD_OPTIMIZER, MAX_UNITS
from models.configs.verbs import MAX_GIBBS_STEPS


class DBMConfig(StrictModel):
    layers: list[Annotated[int, Field(ge=1, le=MAX_UNITS)]] = Field(
        [128, 64], min_length=2, max_length=6, description="hidden layer sizes, bottom to top"
    )
    pretrain_epochs: int = Field(
        10, ge=0, le=1000, description="epochs of greedy RBM pretraining for each layer (0: none)"
    )
    cd_k: int = Field(1, ge=1, le=100, description="pretraining: Gibbs steps of each CD")
    mean_field_steps: int = Field(
        10, ge=1, le=100, description="joint training: mean-field updates of the data term"
    )
    gibbs_steps: int = Field(
        5, ge=1, le=100, description="joint training: Gibbs sweeps of the chains per batch"
    )
    chains: int = Field(
        100, ge=1, le=10_000, description="joint training: persistent chains (fantasy particles)"
    )
    sample_steps: int = Field(
        1000,
        ge=1,
        le=MAX_GIBBS_STEPS,
        description="Gibbs sweeps from a random start of the samples that measure the job's "
        "sample quality, and of `sample` when it names no steps",
    )


class DBMJob(JobSpecBase):
    """A deep Boltzmann machine (Salakhutdinov & Hinton 2009) of an image dataset; the labels
    are ignored. The run's epochs are, in order: `pretrain_epochs` for each layer, training it
    as an RBM by CD-k on the mean-field activities of the layers below, then `train.epochs`
    of joint training of every layer. Pretraining steps the `pretrain` optimizer (fresh for
    each layer), joint training the `joint` one: by default Adam at a tenth of pretraining's
    rate, as the persistent chains must follow the weights.

    Metric: `reconstruction`, the mean squared error of the pixels rebuilt from the layers
    trained so far (pretraining: up and back down the RBM stack; joint: from the mean-field
    posterior of the first hidden layer)."""

    verbs: ClassVar[tuple[str, ...]] = ("sample", "reconstruct")
    images: ClassVar[tuple[str, ...]] = ("samples", "filters", "reconstructions", "inpainting")
    optimizer_names: ClassVar[tuple[str, ...]] = ("pretrain", "joint")
    default_optimizers: ClassVar[dict[str, dict[str, Any]]] = {
        "pretrain": CD_OPTIMIZER,
        "joint": {**CD_OPTIMIZER, "lr": CD_OPTIMIZER["lr"] / 10},
    }
    allows_lbfgs: ClassVar[bool] = False
    family: Literal["dbm"]
    model: DBMConfig = Field(DBMConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: DBMConfig, info: ValidationInfo) -> DBMConfig:
        if (data := dataset_of(info)) is not None:
            require_images(data, "a dbm models images with pixels in [0, 1] (Bernoulli units)")
        return model

    def stages(self) -> list[Stage]:
        # Early stopping judges joint training only: a pretraining stage's reconstruction
        # is that of a part of the model.
        pretrain = [
            Stage(f"pretrain_{k + 1}", self.model.pretrain_epochs, monitored=False)
            for k in range(len(self.model.layers))
        ]
        return [*pretrain, Stage("joint", self.train.epochs)]

    def train_metrics(self) -> dict[str, Direction]:
        return {"reconstruction": "min"}

    def eval_metrics(self) -> dict[str, Direction]:
        return {"reconstruction": "min"}

    def selection_metric(self) -> str:
        return "val_reconstruction" if self.has_validation() else "train_reconstruction"
