"""Admission by estimated memory: what a training run of a job will hold at once (weights,
gradients, optimizer state, one batch's inputs and activations, the dataset resident on the
device, a time series' window matrix), checked against the per-worker budget at submission
and again in the worker before anything is loaded. An estimate, not a measurement: it counts
float32 tensors and no allocator slack."""

import math

from core.catalog import DatasetInfo
from core.spec import JobSpecBase
from models.summary import summarize

FLOAT_BYTES = 4
GIB = 1024**3


class TooBig(ValueError):
    """The job would not fit; `field` names what to make smaller."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _examples(spec: JobSpecBase, info: DatasetInfo) -> int:
    data = spec.dataset
    if info.sequence:
        return data.n_points  # one window per point
    train = data.n_train or info.n_train or 10_000
    if data.max_train is not None:
        train = min(train, data.max_train)
    return train + (data.n_test or info.n_test or train // 4)


def estimate(spec: JobSpecBase, info: DatasetInfo) -> dict[str, int]:
    memory = summarize(spec, info)["training_memory_bytes"]
    parts = {
        "model": memory["parameters"] + memory["gradients"] + memory["optimizer_state"],
        "batch": memory["inputs"] + memory["activations"],
        # Twice: as loaded and as split into the tensors the trainer holds.
        "dataset": 2 * _examples(spec, info) * math.prod(info.input_shape) * FLOAT_BYTES,
    }
    return parts | {"total": sum(parts.values())}


def check(spec: JobSpecBase, info: DatasetInfo, budget: int) -> dict[str, int]:
    """The estimate; TooBig naming the largest part when the total is over `budget`."""
    parts = estimate(spec, info)
    if parts["total"] <= budget:
        return parts
    largest = max(("model", "batch", "dataset"), key=parts.__getitem__)
    field = {
        "model": "model",
        "batch": "train.batch_size",
        "dataset": "dataset.n_points" if info.sequence else "dataset.max_train",
    }[largest]
    shown = ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items() if k != "total")
    raise TooBig(
        field,
        f"training would need about {parts['total'] / GIB:.1f} GiB ({shown} GiB); a worker "
        f"has {budget / GIB:.1f} GiB (ANNLAB_WORKER_MEMORY_BYTES). Make the {largest} smaller",
    )
