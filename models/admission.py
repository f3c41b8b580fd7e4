"""Admission by parameter count and estimated memory: a model may have at most MAX_PARAMS
parameters, and the most a job will hold at once is checked against the per-worker budget,
at submission and again in the worker before anything is loaded.

A job holds its weights, gradients and optimizer state and its dataset (twice: as loaded and
as split) throughout, and on top of them one phase at a time: a training step (a batch's
inputs and what its forward and backward passes keep), an evaluation pass over a chunk of a
split, drawing samples (generative families), scoring them with the Frechet feature net, and
writing a checkpoint.
What a pass holds per example is measured on the model built on the meta device
(models/summary.py). Evaluation runs in chunks sized so that a pass holds no more than a
training step (or EVAL_FLOOR_BYTES, if more): `eval_chunk` is what the trainers use. An
estimate, not a measurement: float32 tensors, no allocator slack.
"""

import dataclasses
import json
import math
import threading
from typing import Any

import torch

from core.catalog import DatasetInfo
from core.spec import FULL_BATCH, JobSpecBase
from models import quality
from models.base import ROW, BadRequest, Served, Trainer, get_family
from models.configs.verbs import MAX_FIXED_POINT_STARTS
from models.hopfield import MAX_ATTRACTOR_NEURONS, MAX_FIXED_POINT_NEURONS, count_starts
from models.summary import count_parameters, per_example, summarize

FLOAT_BYTES = 4
GIB = 1024**3
MAX_PARAMS = 50_000_000
MAX_EVAL_CHUNK = 4096
# An evaluation pass may hold this much even where a training step holds less (a tiny model
# evaluates in chunks of MAX_EVAL_CHUNK).
EVAL_FLOOR_BYTES = 64 * 1024**2
PHASES = ("training", "evaluation", "sampling", "scoring", "checkpoint")


class TooBig(ValueError):
    """The job would not fit; `field` names what to make smaller."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _train_examples(spec: JobSpecBase, info: DatasetInfo) -> int:
    data = spec.dataset
    if info.sequence:
        return data.n_points  # one window per point
    train = data.n_train or info.n_train or 10_000
    return min(train, data.max_train) if data.max_train is not None else train


def _examples(spec: JobSpecBase, info: DatasetInfo) -> int:
    train = _train_examples(spec, info)
    if info.sequence:
        return train
    return train + (spec.dataset.n_test or info.n_test or train // 4)


def _batch(spec: JobSpecBase, info: DatasetInfo) -> int:
    train = _train_examples(spec, info)
    full = any(spec.optimizer_for(name).name in FULL_BATCH for name in spec.optimizer_names)
    return train if full else min(spec.train.batch_size, train)


def _chunk(per_example: int, step: int) -> int:
    return max(1, min(MAX_EVAL_CHUNK, max(step, EVAL_FLOOR_BYTES) // max(1, per_example)))


def generates(spec: JobSpecBase, info: DatasetInfo) -> bool:
    """The job ends by drawing samples and scoring them (models/quality.py)."""
    trainer = get_family(spec.family).trainer
    return trainer.samples is not Trainer.samples and quality.applies(info)


def estimate(spec: JobSpecBase, info: DatasetInfo) -> dict[str, int]:
    """Bytes by part; `total` is the resident parts plus the largest phase; `eval_chunk` the
    examples per evaluation pass. Jobs that differ only in seeds, rates and noise (a sweep's
    repeats, a stack's members) share one estimate."""
    # A series' mean and std (kept to undo its scaling) size nothing.
    plain = dataclasses.replace(info, series_mean=None, series_std=None)
    key = (json.dumps(spec.shape_document(), sort_keys=True), repr(plain))
    with _ESTIMATES_LOCK:
        found = _ESTIMATES.get(key)
    if found is None:
        found = _estimate(spec, info)
        with _ESTIMATES_LOCK:
            if len(_ESTIMATES) >= 256:  # the oldest out
                _ESTIMATES.pop(next(iter(_ESTIMATES)))
            _ESTIMATES[key] = found
    return dict(found)


_ESTIMATES: dict[tuple[str, str], dict[str, int]] = {}
_ESTIMATES_LOCK = threading.Lock()


# An LSTM's meta pass runs step by step, about 20 ms a step: past this many steps its memory
# is measured at SHORT_STEPS and twice that, and extended.
SHORT_STEPS = 8


def _memory_facts(spec: JobSpecBase, info: DatasetInfo) -> tuple[dict[str, int], dict[str, int]]:
    """summarize's training memory and bytes per example. An LSTM's on a long sequence: its
    training memory is affine in the sequence's length (measured: equal to the byte at 37 and
    100 steps), its inference peak is not quite (about 10% above the affine extension at 100
    steps) but at most proportional to it, which is what is taken."""
    steps = info.input_shape[0] if info.sequence else 0
    if spec.family != "lstm" or steps <= 2 * SHORT_STEPS:
        facts = summarize(spec, info)
        return facts["training_memory_bytes"], facts["bytes_per_example"]
    short, long = (
        summarize(spec, dataclasses.replace(info, input_shape=(n, *info.input_shape[1:])))
        for n in (SHORT_STEPS, 2 * SHORT_STEPS)
    )

    def extended(part: str) -> dict[str, int]:
        a, b = short[part], long[part]
        return {k: a[k] + math.ceil((b[k] - a[k]) * (steps - SHORT_STEPS) / SHORT_STEPS) for k in a}

    per = extended("bytes_per_example")
    inference = long["bytes_per_example"]["inference"]
    per["inference"] = math.ceil(inference * steps / (2 * SHORT_STEPS))
    return extended("training_memory_bytes"), per


def _estimate(spec: JobSpecBase, info: DatasetInfo) -> dict[str, int]:
    memory, per = _memory_facts(spec, info)
    inputs = math.prod(info.input_shape) * FLOAT_BYTES
    training = _batch(spec, info) * (inputs + per["training"]) + per["training_fixed"]
    inference = inputs + per["inference"]
    chunk = _chunk(inference, training)
    samples = generates(spec, info)
    parts = {
        "model": memory["parameters"] + memory["gradients"] + memory["optimizer_state"],
        # Twice: as loaded and as split into the tensors the trainer holds.
        "dataset": 2 * _examples(spec, info) * inputs,
        "training": training,
        "evaluation": chunk * inference,
        "sampling": quality.N_SAMPLES * inference if samples else 0,
        "scoring": quality.memory(info) if samples else 0,
        # Weights and optimizer state copied out, packed as safetensors bytes, and the
        # database driver's copy of those bytes.
        "checkpoint": 3 * (memory["parameters"] + memory["optimizer_state"]),
    }
    phase = max(parts[name] for name in PHASES)
    return parts | {"total": parts["model"] + parts["dataset"] + phase, "eval_chunk": chunk}


def eval_chunk(spec: JobSpecBase, info: DatasetInfo) -> int:
    """Examples per evaluation pass: as many as hold no more than a training step does."""
    return estimate(spec, info)["eval_chunk"]


def check_params(spec: JobSpecBase, info: DatasetInfo) -> int:
    """The model's parameter count; TooBig naming `model` when it is over MAX_PARAMS."""
    count = count_parameters(spec, info)
    if count > MAX_PARAMS:
        raise TooBig(
            "model", f"the model would have {count:,} parameters; the limit is {MAX_PARAMS:,}"
        )
    return count


def check(spec: JobSpecBase, info: DatasetInfo, budget: int) -> dict[str, int]:
    """The estimate; TooBig naming what to make smaller when the model has more than
    MAX_PARAMS parameters or the total is over `budget`."""
    check_params(spec, info)
    parts = estimate(spec, info)
    if parts["total"] <= budget:
        return parts
    phase = max(PHASES, key=parts.__getitem__)
    largest = max(("model", "dataset", phase), key=parts.__getitem__)
    field = {
        "model": "model",
        "dataset": "dataset.n_points" if info.sequence else "dataset.max_train",
        "training": "train.batch_size",
        "evaluation": "model",  # a single example's pass is too big
        "sampling": "model",
        "scoring": "dataset.name",
        "checkpoint": "model",
    }[largest]
    shown = ", ".join(f"{k} {parts[k] / GIB:.2f}" for k in ("model", "dataset", *PHASES))
    raise TooBig(
        field,
        f"the job would need about {parts['total'] / GIB:.1f} GiB at once (weights, dataset and "
        f"the largest phase; {shown} GiB); a worker has {budget / GIB:.1f} GiB "
        f"(ANNLAB_WORKER_MEMORY). Make {field} smaller ({largest} is the largest part)",
    )


# --- verb calls (the API) ---------------------------------------------------------------------

# A verb's forward pass over many inputs runs in chunks that hold at most this (predict).
VERB_CHUNK_BYTES = 64 * 1024**2
# Each value of a call's inputs and answer, besides the forward pass: a Python float in a list
# as parsed and as answered, numpy's float64 and float32 copies, and its JSON text.
VALUE_BYTES = 80


class CallTooBig(BadRequest):
    """A verb call whose estimate is over the API's budget; `field` says what to make smaller."""


def inference_bytes(spec: JobSpecBase, info: DatasetInfo) -> int:
    """What a forward pass holds per input at its peak (measured on the meta device)."""
    with torch.device("meta"):
        module = get_family(spec.family).build(spec, info)
    try:
        return per_example(module, info, torch.device("meta"), training=False)["inference"]
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel
        module = get_family(spec.family).build(spec, info)
        return per_example(module, info, torch.device("cpu"), training=False)["inference"]


def _units(served: Served, verb: str, body: Any) -> tuple[str, int, int]:
    """(the field that sets the size, how many rows the call runs, values per row)."""
    info = served.info
    values = max(math.prod(info.input_shape), info.n_classes or 1)
    if verb in ("predict", "reconstruct", "encode", "score"):
        extra = 0
        if getattr(body, "attention", False) and hasattr(served.module, "blocks"):
            tokens = math.prod(served.module.grid) + 1  # ViT: every block's map, tokens^2
            extra = len(served.module.blocks) * tokens * tokens
        return "inputs", len(body.inputs), values + extra
    if verb == "decode":
        if body.codes is not None:
            return "codes", len(body.codes), values
        split = info.n_train if body.mean_of == "train" else info.n_test
        return "mean_of", min(split or MAX_EVAL_CHUNK, MAX_EVAL_CHUNK), values
    if verb == "sample":
        return ("latents", len(body.latents), values) if body.latents else ("n", body.n, values)
    if verb in ("interpolate", "forecast"):
        return "steps", body.steps, values
    if verb == "recall":
        field = "inputs" if body.inputs is not None else "patterns"
        states = body.max_iterations + 1 if body.trajectory else 2
        return field, len(getattr(body, field)), values * states
    if verb == "attractors":
        if served.spec.model.state == "continuous":
            # Its starts, each settled, then solved twice (from it and from where it ended)
            # with an n x n Jacobian each.
            n = min(math.prod(info.input_shape), MAX_FIXED_POINT_NEURONS)
            starts = min(count_starts(n, body), MAX_FIXED_POINT_STARTS)
            return "grid", starts, values * 4 + 2 * n * n
        # Every state of the network (the verb refuses a larger one).
        n = min(math.prod(info.input_shape), MAX_ATTRACTOR_NEURONS)
        return "model", 2**n, values * 2
    if verb == "images":
        return "n", max(body.n, ROW), values * 3
    raise KeyError(verb)


def call_bytes(served: Served, verb: str, body: Any) -> tuple[str, int]:
    """A verb call's estimate (bytes besides the weights) and the field that sets it: the
    forward pass over its rows (predict: over a chunk of them) and every value in and out."""
    field, rows, values = _units(served, verb, body)
    forward = min(rows, served.chunk_rows) if verb == "predict" else rows
    return field, forward * served.per_input + rows * values * VALUE_BYTES


def check_call(served: Served, verb: str, body: Any, budget: int) -> int:
    """The call's estimate; CallTooBig naming the field when it and the weights are over
    `budget`."""
    field, need = call_bytes(served, verb, body)
    if need + served.weights_bytes > budget:
        raise CallTooBig(
            field,
            f"this call would need about {(need + served.weights_bytes) / GIB:.2f} GiB "
            f"(the model's weights {served.weights_bytes / GIB:.2f} GiB); the API allows "
            f"{budget / GIB:.2f} GiB (ANNLAB_API_MEMORY). Make {field} smaller",
        )
    return need
