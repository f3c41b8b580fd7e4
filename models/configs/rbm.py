"""Restricted Boltzmann machine config ("rbm"): Bernoulli visible and hidden units, trained by
contrastive divergence (CD-k) or persistent CD; no loss, no autograd."""

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import Direction, JobSpecBase, StrictModel
from models.configs.autoencoder import require_images
from models.configs.common import dataset_of
from models.configs.verbs import MAX_GIBBS_STEPS

MAX_UNITS = 8192  # hidden units of one layer


class RBMConfig(StrictModel):
    hidden: int = Field(128, ge=1, le=MAX_UNITS, description="hidden units")
    cd_k: int = Field(1, ge=1, le=100, description="Gibbs steps of each contrastive divergence")
    persistent: bool = Field(
        False,
        description="persistent CD (Tieleman 2008): the negative chains carry over from batch "
        "to batch instead of starting at the data",
    )
    sample_steps: int = Field(
        1000,
        ge=1,
        le=MAX_GIBBS_STEPS,
        description="Gibbs steps from a random start of the samples that measure the job's "
        "sample quality, and of `sample` when it names no steps",
    )


# Adam at 1e-2: in 10 to 15 epochs of digits (200 to 300 updates) CD-1 then gives samples
# whose Frechet distance is a fifth to a third of noise's; SGD with momentum 0.5 at 0.1, the
# practical guide's regime, needs several times more updates.
CD_OPTIMIZER: dict[str, Any] = {"name": "adam", "lr": 0.01}


class RBMJob(JobSpecBase):
    """A Bernoulli-Bernoulli RBM (Smolensky 1986; CD: Hinton 2002) of an image dataset; the
    labels are ignored. Each batch computes the CD gradient (data statistics minus those after
    `cd_k` Gibbs steps) and hands it to the `model` optimizer, so momentum, weight decay, L1
    and schedules apply as they do to gradient families.

    Metrics: `reconstruction`, the mean squared error of one deterministic up-down pass, and
    `pseudo_likelihood`, the log pseudo-likelihood per example as scikit-learn's
    BernoulliRBM.score_samples estimates it (one random unit flipped per example)."""

    verbs: ClassVar[tuple[str, ...]] = ("sample", "reconstruct", "score")
    images: ClassVar[tuple[str, ...]] = ("samples", "filters", "reconstructions", "inpainting")
    default_optimizers: ClassVar[dict[str, dict[str, Any]]] = {"model": CD_OPTIMIZER}
    allows_lbfgs: ClassVar[bool] = False
    family: Literal["rbm"]
    model: RBMConfig = Field(RBMConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: RBMConfig, info: ValidationInfo) -> RBMConfig:
        if (data := dataset_of(info)) is not None:
            require_images(data, "an rbm models images with pixels in [0, 1] (Bernoulli units)")
        return model

    def train_metrics(self) -> dict[str, Direction]:
        return {"reconstruction": "min", "pseudo_likelihood": "max"}

    def eval_metrics(self) -> dict[str, Direction]:
        return {"reconstruction": "min", "pseudo_likelihood": "max"}

    def selection_metric(self) -> str:
        # Reconstruction rather than the pseudo-likelihood: one flipped unit per example makes
        # the latter a noisy estimate.
        return "val_reconstruction" if self.has_validation() else "train_reconstruction"
