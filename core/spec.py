"""The family-independent parts of a job document: dataset, optimizer, training run.

Pydantic only (no torch), so the API validates a job and publishes its schema without PyTorch.
Every float refuses NaN and Inf; every number has bounds; unknown keys are errors.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.catalog import CATALOG, MAX_PATTERN_DIM, MAX_PATTERNS, DatasetInfo, Kind, resolve


def uploads_of(info: ValidationInfo) -> Mapping[str, DatasetInfo] | None:
    """Facts of uploaded datasets, passed as validation context by whoever knows them."""
    return (info.context or {}).get("uploads")


def error_at(path: str, message: str) -> PydanticCustomError:
    """A validation error for `path` below the field being validated: the API names
    `<field>.<path>` (a field validator's own location stops at the field)."""
    return PydanticCustomError("value_error", "{message}", {"at": path, "message": message})


def _whole(value: Any, annotation: Any) -> Any:
    """`value` with each float that has no fraction where `annotation` wants an int made that
    int (JSON has one number type: 5.0 is the integer 5 to JSON Schema, and to this API)."""
    annotation = _bare(annotation)
    options = [_bare(a) for a in get_args(annotation)] if get_origin(annotation) else []
    if type(value) is float and value.is_integer():
        wants_int = annotation is int or (int in options and float not in options)
        return int(value) if wants_int and get_origin(annotation) is not list else value
    if isinstance(value, list):
        lists = [a for a in [annotation, *options] if get_origin(a) is list]
        if lists and _mentions_int(item := get_args(lists[0])[0]):  # not a list of pixels
            return [_whole(v, item) for v in value]
    return value


def _mentions_int(annotation: Any) -> bool:
    annotation = _bare(annotation)
    return annotation is int or any(_mentions_int(a) for a in get_args(annotation))


def _bare(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


class StrictModel(BaseModel):
    # strict: `true` is not an epoch count and "5" is not a number; an int is still a float,
    # and a float with no fraction is an int.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: _whole(v, fields[k].annotation) if k in fields else v for k, v in data.items()}


UPLOAD_NAME = r"upload:[a-z0-9][a-z0-9_-]{0,63}"
# What the document says a dataset name may be; the validator refuses anything else with the
# list of built-in names.
DATASET_NAME = "^(" + "|".join([*(re.escape(n) for n in sorted(CATALOG)), UPLOAD_NAME]) + ")$"


class DatasetSpec(StrictModel):
    name: str = Field(
        max_length=80,
        description="a built-in dataset, see GET /datasets, or upload:<name>",
        json_schema_extra={"pattern": DATASET_NAME},
    )
    val_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of train held out")
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        le=0.5,
        description="share held out for test where the dataset has no official test split",
    )
    max_train: int | None = Field(
        None, ge=1, le=10_000_000, description="use at most this many training examples"
    )
    split_seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the train/val/test split")
    # Synthetic sets.
    n_train: int | None = Field(None, ge=10, le=1_000_000)
    n_test: int | None = Field(None, ge=10, le=1_000_000)
    noise: float = Field(0.0, ge=0.0, le=10.0, description="std of Gaussian target noise")
    function: Literal["sin", "sinc", "cubic", "step", "abs"] = "sin"
    # Time series (mackey_glass, lorenz): ordered splits, windows of `lag` values.
    lag: int = Field(30, ge=1, le=1000, description="past values per example (time series)")
    n_points: int = Field(2000, ge=50, le=1_000_000, description="series length (time series)")
    tau: int = Field(17, ge=1, le=100, description="Mackey-Glass delay")
    dt: float = Field(0.02, gt=0.0, le=1.0, description="Lorenz sampling step")
    n_per_class: int | None = Field(
        None, ge=1, le=100_000, description="train on at most this many examples of each class"
    )
    kfold: int | None = Field(
        None,
        ge=2,
        le=20,
        description="k-fold cross-validation over the training part (ordered folds for time "
        "series); replaces val_fraction",
    )
    # Hopfield pattern sets: given, or `n_patterns` random ones of `dim` values.
    patterns: list[Annotated[list[int], Field(max_length=MAX_PATTERN_DIM)]] | None = Field(
        None,
        max_length=MAX_PATTERNS,
        description="patterns: the +/-1 patterns themselves (1..256 of 2..4096 values, all the "
        "same length); leave out for random ones",
    )
    n_patterns: int | None = Field(
        None, ge=1, le=1000, description="patterns: how many random patterns (default 5)"
    )
    dim: int | None = Field(
        None, ge=2, le=MAX_PATTERN_DIM, description="patterns: values per random pattern (100)"
    )

    @field_validator("patterns")
    @classmethod
    def _plus_minus_one(cls, patterns: list[list[int]] | None) -> list[list[int]] | None:
        if patterns is None:
            return None
        if not 1 <= len(patterns) <= MAX_PATTERNS:
            raise ValueError(f"give 1 to {MAX_PATTERNS} patterns, not {len(patterns)}")
        dim = len(patterns[0])
        if not 2 <= dim <= MAX_PATTERN_DIM:
            raise ValueError(f"a pattern holds 2 to {MAX_PATTERN_DIM} values; pattern 0 has {dim}")
        for k, pattern in enumerate(patterns):
            if len(pattern) != dim:
                raise ValueError(
                    f"every pattern must have as many values as the first ({dim}); "
                    f"pattern {k} has {len(pattern)}"
                )
            odd = [x for x in pattern if x not in (-1, 1)]
            if odd and set(pattern) <= {0, 1}:
                raise ValueError(
                    f"pattern {k} holds 0/1 values; patterns are -1/1 (write each 0 as -1)"
                )
            if odd:
                raise ValueError(f"pattern {k} holds {odd[0]}; patterns hold -1 and 1 only")
        return patterns

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in CATALOG and not re.fullmatch(UPLOAD_NAME, name):
            # The pattern the document states, said in words.
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "unknown dataset {name}; built in: {known}, or upload:<name> for an uploaded "
                "one (POST /datasets)",
                {"name": repr(name), "known": ", ".join(sorted(CATALOG))},
            )
        return name

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> Self:
        self._random_patterns()
        info = resolve(self, uploads_of(info))
        if info is None:  # an upload the API resolves before the job is stored
            return self
        if self.n_per_class is not None and info.kind != "classification":
            raise ValueError("n_per_class needs a classification dataset")
        if info.sequence and self.lag >= self.n_points // 4:
            raise ValueError(f"lag {self.lag} is too long for a series of {self.n_points} points")
        if self.name == "patterns":
            if self.kfold is not None:
                raise ValueError("patterns trains and tests on the same patterns: no kfold")
            # Train and test are every pattern; there is nothing to hold out.
            self.val_fraction = 0.0
        return self

    def _random_patterns(self) -> None:
        """The dataset `patterns` holds the given patterns or random ones (n_patterns of dim
        values, filled in with their defaults so the stored job says what it holds)."""
        random = [k for k in ("n_patterns", "dim") if getattr(self, k) is not None]
        if self.name != "patterns":
            if self.patterns is not None or random:
                given = "patterns" if self.patterns is not None else " and ".join(random)
                raise ValueError(f"{given} are for the dataset 'patterns'")
        elif self.patterns is not None:
            if random:
                raise ValueError(
                    f"give either patterns or {' and '.join(random)} (random ones), not both"
                )
        else:
            self.n_patterns = self.n_patterns or 5
            self.dim = self.dim or 100


OptimizerName = Literal["gd", "sgd", "momentum", "nesterov", "adam", "adadelta", "rmsprop", "lbfgs"]

# Learning rates filled in when a job leaves lr out. Classification (and a trace): rates that
# train the default models on digits and Fashion-MNIST. Regression: rates that learn the
# built-in regression sets in their default epochs (docs/training.md has the measurements).
DEFAULT_LR: dict[str, float] = {
    "gd": 0.1,
    "sgd": 0.05,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adam": 1e-3,
    "adadelta": 1.0,
    "rmsprop": 1e-3,
    "lbfgs": 1.0,
}
REGRESSION_LR: dict[str, float] = DEFAULT_LR | {"adam": 3e-3}
FULL_BATCH = frozenset({"gd", "lbfgs"})
DEFAULT_EPOCHS = 20
# Epochs of a job on these sets that leaves them out. function1d's 180 training examples make 3
# batches of 64 an epoch: 20 epochs are 60 steps (GD's: 20), too few for any first-order
# optimizer to fit sin(2 pi x); 300 give it about the steps 20 epochs give the other sets.
DATASET_EPOCHS: dict[str, int] = {"function1d": 300}


def default_lr(name: str, task: str | None = None) -> float:
    """The learning rate a job of `task` gets for optimizer `name` when it leaves lr out."""
    return (REGRESSION_LR if task == "regression" else DEFAULT_LR)[name]


# The validation context for a job document the service accepted earlier and reads back.
STORED: dict[str, Any] = {"stored": True}

# The optimizers each hyperparameter is for, and the value it holds for the others (what a
# stored job says of it there). A job that sets one for another optimizer is refused.
APPLIES: dict[str, tuple[tuple[str, ...], Any]] = {
    "momentum": (("momentum", "nesterov", "rmsprop"), 0.0),
    "dampening": (("momentum",), None),
    "betas": (("adam",), [0.9, 0.999]),
    "amsgrad": (("adam",), None),
    "eps": (("adam", "adadelta", "rmsprop"), None),
    "rho": (("adadelta", "rmsprop"), 0.9),
    "centered": (("rmsprop",), None),
    "max_iter": (("lbfgs",), 20),
    "max_eval": (("lbfgs",), None),
    "history_size": (("lbfgs",), 100),
    "tolerance_grad": (("lbfgs",), None),
    "tolerance_change": (("lbfgs",), None),
    "line_search_fn": (("lbfgs",), None),
}
# torch's defaults, filled in where the hyperparameter applies and the job leaves it out.
_EPS = {"adam": 1e-8, "rmsprop": 1e-8, "adadelta": 1e-6}


class OptimizerSpec(StrictModel):
    """A torch optimizer and its hyperparameters; each one left out gets its default for the
    optimizer named, and one that the optimizer does not take is refused (422)."""

    name: OptimizerName = "adam"
    lr: float | None = Field(
        None, gt=0.0, le=100.0, description="default: per optimizer and task (docs/training.md)"
    )
    momentum: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="momentum, nesterov (default 0.9), rmsprop (default 0)",
    )
    dampening: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="momentum: the buffer adds (1 - dampening) g (default 0; nesterov needs 0)",
    )
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        [0.9, 0.999], min_length=2, max_length=2, description="adam: beta1, beta2"
    )
    amsgrad: bool | None = Field(
        None, description="adam: divide by the running maximum of v (default false)"
    )
    eps: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="adam, rmsprop (default 1e-8), adadelta (1e-6, must be > 0): added to the "
        "denominator; 0 is allowed for adam and rmsprop, where a parameter whose gradients "
        "were all 0 then stays put (the limit of eps -> 0) instead of becoming 0/0",
    )
    rho: float = Field(
        0.9, gt=0.0, lt=1.0, description="adadelta's rho, rmsprop's alpha (torch's names)"
    )
    centered: bool | None = Field(
        None, description="rmsprop: divide by an estimate of the variance of g (default false)"
    )
    max_iter: int = Field(20, ge=1, le=1000, description="lbfgs: iterations per step")
    max_eval: int | None = Field(
        None, ge=1, le=10_000, description="lbfgs: evaluations per step (default max_iter * 5/4)"
    )
    history_size: int = Field(100, ge=1, le=1000, description="lbfgs: pairs kept")
    tolerance_grad: float | None = Field(
        None, ge=0.0, le=1000.0, description="lbfgs: stop a step once max |g| <= this (1e-7)"
    )
    tolerance_change: float | None = Field(
        None,
        ge=0.0,
        le=1000.0,
        description="lbfgs: stop a step once the loss or x changes by <= this (1e-9)",
    )
    line_search_fn: Literal["strong_wolfe"] | None = Field(
        None,
        description="lbfgs: strong_wolfe (the default) or null for steps of lr without a line "
        "search",
    )

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> Self:
        name = self.name
        # A stored job is read as it was accepted: one stored before these refusals may hold
        # a value its optimizer ignored.
        stored = bool((info.context or {}).get("stored"))
        for field, (names, neutral) in APPLIES.items():
            value = getattr(self, field)
            if (
                not stored
                and name not in names
                and field in self.model_fields_set
                and value not in (neutral, None)
            ):
                raise error_at(
                    field,
                    f"{field} is for {', '.join(names)}; {name} does not take it",
                )
        if self.momentum is None:
            self.momentum = 0.9 if name in ("momentum", "nesterov") else 0.0
        if name == "nesterov" and self.momentum == 0.0:
            raise error_at("momentum", "nesterov needs momentum > 0")
        if name == "momentum" and self.dampening is None:
            self.dampening = 0.0
        if name == "adam" and self.amsgrad is None:
            self.amsgrad = False
        if name in _EPS and self.eps is None:
            self.eps = _EPS[name]
        if name == "adadelta" and self.eps == 0.0:
            raise error_at("eps", "adadelta needs eps > 0: its first update is sqrt(eps) / ...")
        if name == "rmsprop" and self.centered is None:
            self.centered = False
        if name == "lbfgs":
            if self.max_eval is None:
                self.max_eval = self.max_iter * 5 // 4
            if self.tolerance_grad is None:
                self.tolerance_grad = 1e-7
            if self.tolerance_change is None:
                self.tolerance_change = 1e-9
            if "line_search_fn" not in self.model_fields_set:
                self.line_search_fn = "strong_wolfe"
        return self


class ScheduleSpec(StrictModel):
    """Learning-rate schedule: stepped once per epoch, except one_cycle, stepped per batch.
    cosine anneals from the optimizer's lr to min_lr over the stage's epochs; one_cycle warms
    up to max_lr (default: 10x the optimizer's lr) over pct_start of the steps, then anneals
    (Smith & Topin 2019; torch's OneCycleLR)."""

    name: Literal["step", "exponential", "plateau", "cosine", "one_cycle"]
    step_size: int = Field(10, ge=1, le=10_000, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step, exponential: decay factor")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="plateau: decay factor")
    patience: int = Field(5, ge=0, le=10_000, description="plateau: epochs without improvement")
    min_lr: float = Field(0.0, ge=0.0, le=1.0, description="plateau, cosine: floor")
    max_lr: float | None = Field(
        None, gt=0.0, le=100.0, description="one_cycle: peak (default 10x the optimizer's lr)"
    )
    pct_start: float = Field(0.25, gt=0.0, lt=1.0, description="one_cycle: share warming up")


class AugmentSpec(StrictModel):
    """Random changes to each training image, drawn anew every epoch (images only)."""

    crop: int = Field(
        0, ge=0, le=16, description="pad by this many pixels, then crop back at a random offset"
    )
    flip: bool = Field(False, description="mirror left-right with probability 1/2")


class EarlyStoppingSpec(StrictModel):
    monitor: str = Field(
        "val_loss",
        max_length=64,
        description="a per-epoch metric the family reports; its job class says whether lower "
        "or higher is better (an unknown name is refused with the list of known ones)",
    )
    patience: int = Field(10, ge=1, le=10_000, description="epochs without improvement")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts")
    restore_best: bool = Field(True, description="serve the weights of the best epoch")


class TrainSpec(StrictModel):
    epochs: int = Field(
        DEFAULT_EPOCHS, ge=1, le=10_000, description="default 20; function1d: 300 (lbfgs: 20)"
    )
    batch_size: int = Field(
        64, ge=1, le=65_536, description="ignored by gd and lbfgs, which use the full batch"
    )
    optimizer: OptimizerSpec = OptimizerSpec()
    optimizers: dict[str, OptimizerSpec] = Field(
        {},
        description="per named optimizer of a family that has several (gan: generator and "
        "discriminator; dbm: pretrain and joint); a name left out uses `optimizer` if it is "
        "given, else the family's default for it",
    )
    weight_decay: float = Field(0.0, ge=0.0, le=10.0, description="L2 penalty (lambda)")
    l1: float = Field(0.0, ge=0.0, le=10.0, description="L1 penalty (lambda)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    schedule: ScheduleSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    validate_every: Annotated[int, Field(ge=1, le=10_000)] | Literal["auto"] = Field(
        "auto",
        description="evaluate the validation split every N epochs and at the last; the epochs "
        "between record train metrics only, and early stopping, plateau schedules and "
        "successive halving act on validated epochs alone. auto: every epoch, unless a "
        "validation pass costs more than a training epoch and nothing judges validated "
        "epochs; then every k-th, so that validation costs at most as much as training",
    )
    clip_grad_norm: float | None = Field(
        None, gt=0.0, le=1e6, description="scale the gradients down to this total 2-norm"
    )
    input_noise: float = Field(
        0.0, ge=0.0, le=10.0, description="std of Gaussian noise added to training inputs"
    )
    augment: AugmentSpec | None = Field(None, description="image augmentation while training")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="classification: weight moved to a uniform target"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="bfloat16 runs the forward pass under autocast (weights stay float32); "
        "auto: bfloat16 on a CUDA device for the families that allow it (mlp, cnn, lstm, vit)",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for training (mlp, cnn, lstm, vit): slower to "
        "start, faster per step on a GPU",
    )


Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Stage:
    """A run of consecutive epochs with one meaning (pretraining a layer, fine-tuning, ...)."""

    name: str
    epochs: int
    monitored: bool = True  # early stopping and fold selection judge its epochs


def _draws_across(section: Any) -> bool:
    """Whether a model section has dropout or batch norm anywhere (a layer's own included)."""
    if isinstance(section, dict):
        if section.get("dropout") or section.get("batchnorm"):
            return True
        return any(_draws_across(value) for value in section.values())
    if isinstance(section, list):
        return any(_draws_across(value) for value in section)
    return False


# What a member of a stack may have of its own (dotted paths in a job document): its seeds, its
# data's values (not their shapes), its learning rate and penalties, and when it stops.
MEMBER_OWN = (
    "train.seed",
    "train.optimizer.lr",
    "train.weight_decay",
    "train.l1",
    "train.input_noise",
    "train.early_stopping",
    "train.validate_every",
    "train.device",
    "dataset.split_seed",
    "dataset.noise",
    "dataset.function",
    "dataset.tau",
    "dataset.dt",
)


class JobSpecBase(StrictModel):
    """A job document; each family narrows `family`, adds its `model` section and declares
    what the runner and the API need to know of it without torch: its inference verbs, its
    named optimizers, its stages and its metrics with their direction."""

    verbs: ClassVar[tuple[str, ...]] = ()
    images: ClassVar[tuple[str, ...]] = ()  # GET /models/{id}/images/<name>.png
    # The optimizers its trainer steps, by name; () for a family with no gradient training.
    optimizer_names: ClassVar[tuple[str, ...]] = ("model",)
    # Family defaults for named optimizers (used unless the job sets them or `optimizer`).
    default_optimizers: ClassVar[dict[str, dict[str, Any]]] = {}
    # The family's learning-rate schedule when the job leaves `train.schedule` out (a job that
    # says "schedule": null gets none).
    default_schedule: ClassVar[dict[str, Any] | None] = None
    # LBFGS needs one loss to re-evaluate; families that update otherwise refuse it.
    allows_lbfgs: ClassVar[bool] = True
    # Whose training may run under bfloat16 autocast and torch.compile (train.precision,
    # train.compile): the families with one plain forward pass and a standard loss.
    accelerated: ClassVar[bool] = False
    # Whether jobs of the family may train as one stack (models/stack.py): its trainer's batch
    # is one step of its "model" optimizer on `batch_loss`, which runs under torch.func.vmap.
    stackable: ClassVar[bool] = False
    # Lists of layer sizes (dotted paths) in which members of a stack may differ: each member
    # is zero-padded to the widest, which leaves its numbers its own (models/stack.py).
    stack_widths: ClassVar[tuple[str, ...]] = ()

    family: str
    dataset: DatasetSpec
    task: Kind | None = Field(
        None, validate_default=True, description="defaults to the dataset's kind"
    )
    train: TrainSpec = Field(TrainSpec(), validate_default=True)

    @classmethod
    def family_name(cls) -> str:
        (name,) = get_args(cls.model_fields["family"].annotation)
        return name

    # --- what the runner needs ----------------------------------------------------------

    def stages(self) -> list[Stage]:
        """The run's epochs in order; one stage unless the family trains in several."""
        return [Stage("train", self.train.epochs)]

    def has_initial_epoch(self) -> bool:
        """Whether each fold records epoch 0, its initial weights evaluated before any step:
        every family that trains by steps of its optimizers (not Hopfield's closed form)."""
        return bool(self.optimizer_names)

    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages())

    def monitor_from(self) -> int | None:
        """The first epoch that early stopping judges (None: no stage is monitored)."""
        first = 1
        for stage in self.stages():
            if stage.monitored and stage.epochs:
                return first
            first += stage.epochs
        return None

    def train_metrics(self) -> dict[str, Direction]:
        """What an epoch reports of its training batches (`train_` + name)."""
        return {"loss": "min"}

    def eval_metrics(self) -> dict[str, Direction]:
        """What evaluating a split reports (`val_` + name per epoch, `test_` + name at the end)."""
        return {"loss": "min"}

    def has_validation(self) -> bool:
        return self.dataset.val_fraction > 0 or self.dataset.kfold is not None

    def metrics(self) -> dict[str, Direction]:
        """Every per-epoch metric and whether lower or higher is better."""
        metrics = {f"train_{k}": d for k, d in self.train_metrics().items()}
        if self.has_validation():
            metrics |= {f"val_{k}": d for k, d in self.eval_metrics().items()}
        return metrics

    def selection_metric(self) -> str:
        """What picks the best fold of a cross-validated job when no monitor is set."""
        return "val_loss" if "val_loss" in self.metrics() else "train_loss"

    def optimizer_for(self, name: str) -> OptimizerSpec:
        return self.train.optimizers.get(name, self.train.optimizer)

    def shape_document(self) -> dict[str, Any]:
        """The job document without what a stack's member may have of its own (MEMBER_OWN):
        what decides its shapes, its steps and its memory."""
        document = self.model_dump(mode="json")
        for path in MEMBER_OWN:
            *parents, leaf = path.split(".")
            node = document
            for part in parents:
                node = node.get(part) or {}
            node.pop(leaf, None)
        return document

    def stack_key(self, owner: str | None = None) -> str | None:
        """Jobs with the same key may train as one stack: the same model, data shapes,
        optimizer, batches and epochs (an upload: the same owner's). What each member may have
        of its own (MEMBER_OWN: its seeds, learning rate, penalties, noise, early stopping) is
        left out. None: the job
        trains alone (its family cannot stack, or it needs what a stack cannot give each
        member exactly: dropout or batch norm draw across the stack, one_cycle and clipping
        act per step)."""
        train = self.train
        opt = self.optimizer_for("model")
        model = getattr(self, "model", None)
        if (
            not self.stackable
            or self.optimizer_names != ("model",)
            or len(self.stages()) != 1
            or (model is not None and _draws_across(model.model_dump()))
            or train.compile
            or train.precision == "bfloat16"
            or train.clip_grad_norm is not None
            or train.augment is not None
            or (train.schedule is not None and train.schedule.name == "one_cycle")
        ):
            return None
        document = self.shape_document()
        # A padded member's weights are a strided block of the stack's, which a matrix product
        # may sum in another order; LBFGS's line search turns that last bit into another run.
        widths = self.stack_widths if opt.name != "lbfgs" else ()
        for path in widths:  # how many layers, not their sizes
            *parents, leaf = path.split(".")
            node = document
            for part in parents:
                node = node.get(part) or {}
            node[leaf] = len(node.get(leaf) or [])
        if self.dataset.name not in CATALOG:  # an upload's name is its owner's
            document["owner"] = owner
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    # --- validation ---------------------------------------------------------------------

    @field_validator("task")
    @classmethod
    def _task_fits_dataset(cls, task: Kind | None, info: ValidationInfo) -> Kind | None:
        dataset = info.data.get("dataset")
        if dataset is None:  # the dataset section failed and reports its own error
            return task
        data = resolve(dataset, uploads_of(info))
        if data is None:
            return task
        kind = data.kind
        if task is not None and task != kind:
            raise ValueError(f"task {task!r} does not fit dataset {dataset.name!r} ({kind})")
        return kind

    @field_validator("train")
    @classmethod
    def _family_train_defaults(cls, train: TrainSpec, info: ValidationInfo) -> TrainSpec:
        """The family's named optimizers (unknown names refused), default schedule and each
        optimizer's default learning rate for the task filled in where the job leaves them
        out, so the stored job says what it ran with."""
        unknown = sorted(set(train.optimizers) - set(cls.optimizer_names))
        if unknown:
            known = ", ".join(cls.optimizer_names) or "none"
            raise error_at(
                f"optimizers.{unknown[0]}",
                f"{cls.family_name()} has no optimizer {unknown[0]!r}; its optimizers: {known}",
            )
        if cls.default_schedule is not None and "schedule" not in train.model_fields_set:
            train.schedule = ScheduleSpec(**cls.default_schedule)  # the stored job says so
        explicit = "optimizer" in train.model_fields_set
        for name, default in cls.default_optimizers.items():
            if name not in train.optimizers:  # filled in, so the stored job says what it used
                train.optimizers[name] = train.optimizer if explicit else OptimizerSpec(**default)
        if not cls.allows_lbfgs:
            for name in ("", *train.optimizers):
                spec = train.optimizers[name] if name else train.optimizer
                if spec.name == "lbfgs":
                    path = f"optimizers.{name}.name" if name else "optimizer.name"
                    raise error_at(
                        path,
                        f"{cls.family_name()} does not train by one loss; lbfgs cannot step it",
                    )
        dataset = info.data.get("dataset")
        # LBFGS, 20 iterations a step, converges on them in the usual epochs.
        lbfgs = train.optimizer.name == "lbfgs"
        if "epochs" not in train.model_fields_set and dataset is not None and not lbfgs:
            train.epochs = DATASET_EPOCHS.get(dataset.name, train.epochs)
        task = info.data.get("task")
        if task is not None:  # None: an upload, filled in once its kind is known
            for spec in (train.optimizer, *train.optimizers.values()):
                if spec.lr is None:
                    spec.lr = default_lr(spec.name, task)
        return train

    @model_validator(mode="after")
    def _train_options_fit_dataset(self, info: ValidationInfo) -> Self:
        if not self.accelerated:
            if self.train.precision == "bfloat16":
                raise error_at("train.precision", f"{self.family} trains in float32 only")
            if self.train.compile:
                raise error_at("train.compile", f"{self.family} cannot be compiled")
        if self.train.label_smoothing and self.task not in (None, "classification"):
            raise error_at("train.label_smoothing", "label smoothing needs a classification task")
        if self.train.augment is not None:
            data = resolve(self.dataset, uploads_of(info))
            if data is not None and len(data.input_shape) != 3:
                raise error_at(
                    "train.augment",
                    f"augmentation needs image inputs; {self.dataset.name!r} has inputs of shape "
                    f"{data.input_shape}",
                )
        return self

    @model_validator(mode="after")
    def _monitor_is_a_metric(self) -> Self:
        stopping = self.train.early_stopping
        if stopping is None or self.task is None:  # task None: an upload not resolved yet
            return self
        if self.monitor_from() is None:
            raise error_at(
                "train.early_stopping", f"{self.family} has no epochs that early stopping judges"
            )
        metrics = self.metrics()
        if stopping.monitor not in metrics:
            hint = ""
            if stopping.monitor.startswith("val_") and not self.has_validation():
                hint = " (the dataset has val_fraction 0: no validation split)"
            raise error_at(
                "train.early_stopping.monitor",
                f"{self.family} does not report {stopping.monitor!r}{hint}; "
                f"it reports {', '.join(metrics)}",
            )
        return self
