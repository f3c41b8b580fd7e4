"""What a family is (job class, module builder, trainer, inference verbs) and the registry.

A family is one `Family` declaration at the end of its module. Its job class (torch-free, in
models/configs) declares the verbs, the named optimizers, the stages and the metrics with their
direction; the trainer here says what one batch of training means. models/loop.py runs the loop
and treats every family alike: it saves and restores `optimizers`, `schedulers`, `stage` and
`state()` generically.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.catalog import DatasetInfo
from core.datasets import Split, Splits
from core.spec import FULL_BATCH, AugmentSpec, JobSpecBase


@dataclass
class Batch:
    x: Tensor  # the inputs the model trains on (with `train.input_noise` added, if any)
    y: Tensor  # their labels or targets
    clean: Tensor  # the inputs without noise (what an autoencoder reconstructs)
    index: Tensor  # their positions in the training split


def augment(x: Tensor, spec: AugmentSpec, seed: int, epoch: int, index: int) -> Tensor:
    """Images (n, c, h, w) each cropped at its own random offset after zero-padding by
    `spec.crop` pixels, and mirrored with probability 1/2 if `spec.flip`; on x's device, in one
    indexing operation. The draws depend on (seed, epoch, index) alone, so a resumed run sees
    the same images."""
    n, c, h, w = x.shape
    g = torch.Generator(device=x.device).manual_seed((seed * 100_003 + epoch) * 1_000_003 + index)
    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if spec.crop:
        shifts = torch.randint(0, 2 * spec.crop + 1, (2, n, 1), generator=g, device=x.device)
        x = nn.functional.pad(x, (spec.crop,) * 4)
        rows, cols = rows + shifts[0], cols + shifts[1]
    if spec.flip:
        flipped = torch.rand(n, 1, generator=g, device=x.device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    samples = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return x[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]


class Trainer:
    """A family's training run, stepped batch by batch by models/loop.py.

    A subclass builds its optimizers into `optimizers` (and `schedulers`), and says what a
    batch of training is (`train_batch`) and how a split is evaluated (`evaluate`).
    """

    model: nn.Module
    callbacks: Sequence[Any] = ()  # the loop's callbacks (models/loop.py), set by its fit
    validated: bool = True  # whether the epoch ending now evaluated the validation split

    def __init__(self, spec: JobSpecBase, model: nn.Module, splits: Splits, device: torch.device):
        self.spec, self.model, self.splits, self.device = spec, model, splits, device
        self.stages = spec.stages()
        self.stage = self.stage_at(1)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        n = len(splits.train)
        names = spec.optimizer_names
        full = any(spec.optimizer_for(name).name in FULL_BATCH for name in names)
        self.batch_size = n if full else min(spec.train.batch_size, n)
        self._order: tuple[int, Tensor] | None = None

    # --- stages ---------------------------------------------------------------------------

    def stage_at(self, epoch: int) -> int:
        """The index in `stages` of the stage that runs `epoch` (past the end: the last one)."""
        last = 0
        for k, stage in enumerate(self.stages):
            if stage.epochs:
                last = k
                if epoch <= stage.epochs:
                    return k
                epoch -= stage.epochs
        return last

    def begin_epoch(self, epoch: int) -> None:
        """The loop calls this before an epoch's first batch (also when it resumes)."""
        self.enter(self.stage_at(epoch))

    def enter(self, stage: int) -> None:
        if stage != self.stage:
            self.stage = stage
            self.on_stage(stage)

    def on_stage(self, stage: int) -> None:
        """A new stage begins (a staged family builds that stage's optimizers here)."""

    # --- batches --------------------------------------------------------------------------

    @cached_property
    def eval_chunk(self) -> int:
        """Examples per evaluation pass (models/admission.py: no more than a step holds)."""
        from models.admission import eval_chunk  # the model built again on the meta device

        return eval_chunk(self.spec, self.splits.info)

    def n_batches(self, epoch: int) -> int:
        return math.ceil(len(self.splits.train) / self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The training examples' order in `epoch`. It depends on (seed, epoch) alone, so a
        run resumed mid-epoch sees exactly the batches it would have seen."""
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.spec.train.seed * 100_003 + epoch)
            order = torch.randperm(len(self.splits.train), generator=generator)
            self._order = (epoch, order.to(self.device))
        return self._order[1]

    def batch(self, epoch: int, index: int) -> Batch:
        idx = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        train = self.splits.train
        clean = train.x[idx]
        if self.spec.train.augment is not None:
            clean = augment(clean, self.spec.train.augment, self.spec.train.seed, epoch, index)
        x = clean
        if self.spec.train.input_noise:
            x = clean + self.spec.train.input_noise * torch.randn_like(clean)
        return Batch(x=x, y=train.y[idx], clean=clean, index=idx)

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """A subclass calls this between computing the gradients and stepping `optimizer`."""
        for callback in self.callbacks:
            callback.on_before_optimizer_step(self, optimizer)

    def stacked_batch_loss(
        self, params: dict[str, Tensor], batch: Batch, products: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]] | None:
        """The training loss and sums of K models of this one's shape at once, from their
        parameters and batches stacked on a first dimension (a stack, models/stack.py): K
        values each. `products`: every layer a batched matrix product (an MLP's layers of one
        input or output are otherwise other forms of the same sums). None: the stack runs the
        trainer's own loss under torch.func.vmap."""
        return None

    def train_batch(self, epoch: int, index: int) -> dict[str, float]:
        """Train on batch `index` of `epoch`; return sums over its examples and their `count`
        (the epoch's `train_<name>` is the sum over batches divided by the count)."""
        raise NotImplementedError

    def epoch_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        count = sums["count"]
        return {f"train_{k}": v / count for k, v in sums.items() if k != "count"}

    def evaluate(self, split: Split) -> dict[str, float]:
        raise NotImplementedError

    def initial_metrics(self) -> dict[str, float]:
        """Epoch 0's `train_` figures: the training split evaluated as a validation split is
        (no noise, augmentation, dropout or label smoothing), keeping the figures the family
        reports for training. A family whose evaluation lacks one of them adds it."""
        reported = self.spec.train_metrics()
        found = self.evaluate(self.splits.train)
        return {f"train_{k}": v for k, v in found.items() if k in reported}

    # --- epochs and the end ---------------------------------------------------------------

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch with its metrics (learning-rate schedules step here)."""
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
                continue  # stepped after each batch (GradientTrainer.after_step)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                watched = self.plateau_metric()
                if watched in metrics and self.validated:
                    scheduler.step(metrics[watched])
            else:
                scheduler.step()
        metrics |= self.learning_rates()

    def learning_rates(self) -> dict[str, float]:
        """Each optimizer's learning rate now: `lr` for "model", `lr_<name>` for the others."""
        return {
            "lr" if name == "model" else f"lr_{name}": optimizer.param_groups[0]["lr"]
            for name, optimizer in self.optimizers.items()
        }

    def plateau_metric(self) -> str:
        stopping = self.spec.train.early_stopping
        return stopping.monitor if stopping else self.spec.selection_metric()

    def state(self) -> dict[str, Any]:
        """What else a resumed run needs besides weights, optimizers and stage (PCD chains...)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def result(self) -> dict[str, Any]:
        """Family-specific results added to the job's result at the end (after the test run)."""
        return {}

    def epoch_artifacts(self, epoch: int) -> dict[str, Tensor]:
        """Tensors to keep with this epoch's metric row (a GAN's samples at chosen epochs)."""
        return {}

    def samples(self, n: int, generator: torch.Generator) -> Tensor | None:
        """n new examples shaped like the inputs, in [0, 1], for a generative family (their
        quality is measured at the end of the job); None for the others."""
        return None


@dataclass
class Served:
    """A trained model as the verbs see it, with the job's dataset on demand."""

    module: nn.Module  # in eval mode
    spec: JobSpecBase
    info: DatasetInfo
    dataset: Callable[[], Splits]  # loads (once) the job's dataset, for verbs that need it
    per_input: int = 0  # bytes a forward pass holds per input (models/admission.py)

    @cached_property
    def weights_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())

    @cached_property
    def row_bytes(self) -> int:
        """What a predict call holds per input: its forward pass, its values in and out."""
        from models.admission import VALUE_BYTES

        values = max(math.prod(self.info.input_shape), self.info.n_classes or 1)
        return self.per_input + values * VALUE_BYTES

    @cached_property
    def chunk_rows(self) -> int:
        """Inputs per forward pass of a large call (predict)."""
        from models.admission import VERB_CHUNK_BYTES

        return max(1, VERB_CHUNK_BYTES // max(1, self.per_input))

    def forward(self, x: Tensor) -> Tensor:
        """The module over x, in chunks of chunk_rows inputs."""
        rows = self.chunk_rows
        if len(x) <= rows:
            return self.module(x)
        return torch.cat([self.module(x[i : i + rows]) for i in range(0, len(x), rows)])

    @cached_property
    def device(self) -> torch.device:
        """Where the module lives (it is not moved once served; read on every call)."""
        return next(self.module.parameters()).device


class BadRequest(ValueError):
    """A verb's input does not fit the model; the API answers 422 naming `field`."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


Verb = Callable[[Served, Any], dict[str, Any]]


class Batchable:
    """A verb whose calls may share a forward pass. Its requests carry `inputs`, one per row;
    `rows` checks a request and makes it a tensor with a row per input (a BadRequest names the
    field), and `answer` answers a tensor of rows with lists holding a row per input. Called as
    a verb, it answers one request: `answer(rows(request))`. The API's batcher concatenates the
    rows of several calls, answers them at once and gives each caller its own rows
    (api/serving.py); a request for which `joins` is false is answered alone, by the call."""

    def rows(self, served: Served, request: Any) -> Tensor:
        raise NotImplementedError

    def answer(self, served: Served, rows: Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def joins(self, request: Any) -> bool:
        return True

    @torch.inference_mode()
    def __call__(self, served: Served, request: Any) -> dict[str, Any]:
        return self.answer(served, self.rows(served, request))


ROW = 8  # images per row of a picture


@dataclass
class ImageGrid:
    """Labelled rows of images, each row an array (n, channels, height, width) in [0, 1]."""

    rows: list[tuple[str, np.ndarray]]

    @classmethod
    def of(cls, label: str, images: Tensor) -> "ImageGrid":
        """Images (n, C, H, W) in rows of ROW, the first row labelled."""
        array = images.cpu().numpy()
        starts = range(0, len(array), ROW)
        return cls([(label if i == 0 else "", array[i : i + ROW]) for i in starts])


@dataclass
class Lines:
    """Curves over x = 1, 2, ...: name -> values (a name starting "truth" is drawn in black)."""

    series: dict[str, list[float]]
    xlabel: str
    ylabel: str = ""


@dataclass
class Trajectories:
    """Paths through a state space, drawn on square panels that each plot two coordinates."""

    names: list[str]  # the coordinates
    panels: list[tuple[int, int]]  # (x, y) coordinates of each panel
    paths: list[np.ndarray]  # each (steps, coordinates), from its start
    points: dict[str, np.ndarray]  # marked points by what they are: (k, coordinates)
    arrows: np.ndarray | None = None  # (m, 4): x, y, dx, dy, drawn on a single panel
    bounds: tuple[float, float] = (-1.0, 1.0)


Picture = ImageGrid | Lines | Trajectories


@dataclass(frozen=True)
class ImageQuery:
    """The query of GET /models/{id}/images/{name}.png; each picture reads what it needs."""

    n: int = 10  # examples or samples shown
    seed: int = 0
    steps: int = 200  # forecast steps, Gibbs steps, recall iterations
    layer: int = 1  # dbm: whose filters


ImageFn = Callable[[Served, ImageQuery], Picture]


@dataclass(frozen=True)
class Family:
    """Everything about a family in one declaration; its name is its job class's `family`,
    and its verbs and images are the ones that class declares."""

    spec: type[JobSpecBase]
    build: Callable[[Any, DatasetInfo], nn.Module]
    trainer: type[Trainer]
    verbs: Mapping[str, Verb] = field(default_factory=dict)
    images: Mapping[str, ImageFn] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.family_name()

    @property
    def batchable(self) -> list[str]:
        """The verbs whose calls the API may batch."""
        return [name for name, verb in self.verbs.items() if isinstance(verb, Batchable)]


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in REGISTRY:
        raise ValueError(f"model family {family.name!r} is registered twice")
    for what, served, declared in (
        ("verbs", family.verbs, family.spec.verbs),
        ("images", family.images, family.spec.images),
    ):
        if set(served) != set(declared):
            raise ValueError(
                f"family {family.name!r} serves {what} {sorted(served)} but its job class "
                f"declares {sorted(declared)}"
            )
    REGISTRY[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model family {name!r}; known: {', '.join(sorted(REGISTRY))}"
        ) from None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_channels_last(model: nn.Module) -> bool:
    """Puts a model with 2-d convolutions in NHWC memory order, in place; whether it has any.

    Convolutions run fastest on NHWC tensors: cuDNN's tensor-core kernels on a GPU, oneDNN's
    on a CPU (figures in docs/benchmarks.md). NCHW inputs need no conversion: a convolution whose
    weights are NHWC gives NHWC outputs, and everything after it keeps the order."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """The trained model on `device`, in eval mode, its weights laid out for answering calls.

    Convolutions go NHWC (to_channels_last). On a CPU, each nn.Linear's weight (out, in) is
    also stored column-major, as the contiguous (in, out) matrix it multiplies by: the same
    values, read by MKL's sgemm without a transpose, faster for the few rows a predict call or
    a batch of them brings (docs/benchmarks.md). On a GPU the layout stays as it trained."""
    model.to(device).eval()
    to_channels_last(model)
    if device.type == "cpu":
        with torch.no_grad():
            for module in model.modules():
                if type(module) is nn.Linear:
                    module.weight.data = module.weight.data.t().contiguous().t()
    return model
