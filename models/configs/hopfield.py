"""Hopfield network config ("hopfield"): an associative memory of +/-1 patterns, stored in
closed form by one of three rules; no gradient training."""

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec import Direction, JobSpecBase, Stage, StrictModel, error_at
from models.configs.autoencoder import is_image
from models.configs.common import dataset_of

Mode = Literal["async", "sync"]


class HopfieldConfig(StrictModel):
    rule: Literal["hebbian", "pseudo_inverse", "storkey"] = Field(
        "hebbian",
        description="hebbian: W = (1/N) sum of p p^T; pseudo_inverse: the projection onto the "
        "patterns' span (Personnaz et al. 1985); storkey: Storkey's (1997) incremental rule",
    )
    zero_diagonal: bool = Field(True, description="no self-connections (W_ii = 0)")
    store: Literal["class_means", "examples"] = Field(
        "class_means",
        description="image datasets: store each class's mean training image, or its first "
        "training example (both thresholded)",
    )
    n_patterns: int = Field(
        3,
        ge=1,
        le=1000,
        description="image datasets: store classes 0..n_patterns-1 (at most the dataset's "
        "classes); ignored by the dataset `patterns`, which stores every pattern it holds",
    )
    threshold: float = Field(0.5, ge=0.0, lt=1.0, description="a pixel above it is +1, else -1")
    noise: float = Field(
        0.1, ge=0.0, le=0.5, description="fraction of units flipped before recall in evaluation"
    )
    mode: Mode = Field(
        "async",
        description="evaluation's updates: async (one unit at a time, a random order per sweep) "
        "or sync (every unit at once)",
    )
    max_iterations: int = Field(
        100, ge=1, le=1000, description="evaluation: sweeps (async) or updates (sync)"
    )


class HopfieldJob(JobSpecBase):
    """A Hopfield network (Hopfield 1982). The run is one "store" epoch that computes the
    weights from the patterns; `train.epochs`, the optimizer and early stopping do not apply.
    train_stable is the share of stored patterns that are fixed points; recall is the share of
    a split's examples (of stored classes), binarized with `noise` of their units flipped,
    that settle on the pattern of their label."""

    verbs: ClassVar[tuple[str, ...]] = ("recall", "attractors")
    images: ClassVar[tuple[str, ...]] = ("energy", "recall")
    optimizer_names: ClassVar[tuple[str, ...]] = ()
    allows_lbfgs: ClassVar[bool] = False
    family: Literal["hopfield"]
    model: HopfieldConfig = Field(HopfieldConfig(), validate_default=True)

    @field_validator("model")
    @classmethod
    def _fits_dataset(cls, model: HopfieldConfig, info: ValidationInfo) -> HopfieldConfig:
        if (data := dataset_of(info)) is None:
            return model
        if data.name != "patterns":
            if data.kind != "classification" or not is_image(data):
                raise ValueError(
                    "a Hopfield network stores +/-1 patterns: use the dataset 'patterns' or an "
                    f"image classification dataset; {data.name!r} is {data.kind} with inputs "
                    f"of shape {data.input_shape}"
                )
            if model.n_patterns > data.n_classes:
                raise error_at(
                    "n_patterns",
                    f"n_patterns {model.n_patterns} is more than the {data.n_classes} classes "
                    f"of {data.name!r}: one pattern is stored per class",
                )
        return model

    def stages(self) -> list[Stage]:
        return [Stage("store", 1, monitored=False)]

    def train_metrics(self) -> dict[str, Direction]:
        return {"stable": "max"}

    def eval_metrics(self) -> dict[str, Direction]:
        return {"recall": "max", "energy": "min"}

    def selection_metric(self) -> str:
        return "val_recall" if self.has_validation() else "train_stable"
