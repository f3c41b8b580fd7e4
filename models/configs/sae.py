"""Stacked autoencoder config ("sae"): pretrained greedily layer by layer, then a head, then
fine-tuned as a classifier."""

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import Direction, Stage, StrictModel
from models.configs.autoencoder import Size, is_image
from models.configs.common import Activation, SupervisedJob, dataset_of


class SAEConfig(StrictModel):
    layers: list[Size] = Field(
        [128, 64], min_length=1, max_length=8, description="encoder sizes, input to top code"
    )
    activation: Activation = "relu"
    pretrain_epochs: int = Field(
        20, ge=0, le=1000, description="epochs of greedy pretraining for each layer (0: none)"
    )
    head_epochs: int = Field(
        10, ge=1, le=1000, description="epochs training the classifier on the frozen encoders"
    )
    loss: Literal["l1", "mse"] = Field("mse", description="reconstruction loss of pretraining")


class SAEJob(SupervisedJob):
    accelerated: ClassVar[bool] = False  # its stages train encoders, decoders and a head apart
    """A stacked autoencoder classifier. The run's epochs are, in order: `pretrain_epochs` for
    each layer, `head_epochs` for the classifier on frozen features, then `train.epochs` of
    fine-tuning everything."""

    verbs: ClassVar[tuple[str, ...]] = ("predict", "reconstruct")
    images: ClassVar[tuple[str, ...]] = ("reconstructions",)
    family: Literal["sae"]
    model: SAEConfig = Field(SAEConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: SAEConfig, info: ValidationInfo) -> SAEConfig:
        if (data := dataset_of(info)) is not None:
            if data.kind != "classification" or not is_image(data):
                raise ValueError(
                    f"a stacked autoencoder classifies images; {data.name!r} is {data.kind} "
                    f"with inputs of shape {data.input_shape}"
                )
        return model

    def stages(self) -> list[Stage]:
        # Before fine-tuning, val_loss is an untrained or frozen head's: early stopping waits.
        pretrain = [
            Stage(f"pretrain_{k + 1}", self.model.pretrain_epochs, monitored=False)
            for k in range(len(self.model.layers))
        ]
        return [
            *pretrain,
            Stage("head", self.model.head_epochs, monitored=False),
            Stage("finetune", self.train.epochs),
        ]

    def eval_metrics(self) -> dict[str, Direction]:
        return {"loss": "min", "accuracy": "max", "reconstruction": "min"}
