"""Trained models, loaded once from their final checkpoint and kept in a small LRU cache, and
the dynamic batching of their predict calls.

Dynamic batching, as Triton's dynamic batcher and TorchServe's `batch_size` /
`max_batch_delay` describe it: a predict call waits at most ANNLAB_BATCH_WINDOW_MS for other
calls to the same model, and the inputs of all of them, up to ANNLAB_MAX_BATCH in all (a call
with many inputs counts them all), go through the module in one forward pass; each caller is
answered from its own rows of the outputs. A forward pass over 32 inputs costs far less than 32
passes over one, so throughput grows with the number of concurrent callers.

The design follows how the routes run: predict is a plain `def` route, so FastAPI calls it on a
thread of its threadpool, and the thread may block. Each cached model has a Batcher: a queue
and one worker thread, woken through a condition variable. A caller's thread converts and checks
its own inputs (a bad request is that caller's 422 and never reaches a batch), puts them on the
queue and waits for its rows; the worker takes the first waiting call, waits until the window
since it arrived has passed or the batch is full, concatenates, runs the module once and hands
each caller its slice. One worker per model also means one forward pass at a time per model
(what a GPU wants, and on a CPU torch's own threads share the cores). A window of 0 turns
batching off: each call runs the family's predict on its own thread, as before.
"""

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy.orm import Session

from core.catalog import DatasetInfo
from core.db import Job
from core.jobs import latest_checkpoint
from core.settings import Settings


def final_weights(session: Session, job_id: str) -> bytes:
    checkpoint = latest_checkpoint(session, job_id, kind="final")
    if checkpoint is None:
        raise LookupError(f"job {job_id} has no final checkpoint")
    return checkpoint.data


def load_model(job: Job, weights: bytes, settings: Settings) -> Any:
    """A models.base.Served for the job. torch is imported on the first model served."""
    import torch

    from core.checkpoint import unpack_weights
    from core.datasets import load_dataset
    from models.base import Served
    from models.registry import get_family
    from models.specs import parse_job_spec

    spec = parse_job_spec(job.spec)
    info = DatasetInfo.from_dict(job.data_info)
    family = get_family(spec.family)
    module = family.build(spec, info)
    tensors, _ = unpack_weights(weights)
    module.load_state_dict(tensors)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = cache(lambda: load_dataset(spec.dataset, settings, device))
    return Served(module=module.to(device).eval(), spec=spec, info=info, dataset=dataset)


class Closed(RuntimeError):
    """The batcher's model was evicted from the cache after this caller found it there."""


@dataclass
class Call:
    """One caller's inputs waiting in a Batcher, and then its outputs (or the error)."""

    inputs: Any  # a tensor (n, *input_shape)
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Any = None
    error: BaseException | None = None


class Batcher:
    """Runs `forward` over the inputs of calls that arrive within `window` seconds of each
    other (at most `max_batch` rows; one call larger than that runs alone) and gives each call
    its own rows of the outputs. Callers block in `__call__`; one worker thread runs the
    batches. If a batch fails, its calls are run one by one, so a call that breaks the module
    fails alone."""

    def __init__(self, forward: Callable[[Any], Any], *, window: float, max_batch: int):
        self.forward = forward
        self.window = window
        self.max_batch = max_batch
        self.batches = 0  # forward passes run, and the calls they answered: batches <= calls
        self.calls = 0
        self._queue: deque[Call] = deque()
        self._rows = 0  # inputs waiting in the queue
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="annlab-batcher", daemon=True)
        self._worker.start()

    def __call__(self, inputs: Any) -> Any:
        call = Call(inputs)
        with self._changed:
            if self._closed:
                raise Closed("this model was evicted from the cache")
            self._queue.append(call)
            self._rows += len(inputs)
            # The worker sleeps until a first call arrives, then until the batch is full.
            if len(self._queue) == 1 or self._rows >= self.max_batch:
                self._changed.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.outputs

    def close(self) -> None:
        """The worker answers what is queued, then ends."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _next_batch(self) -> list[Call]:
        """Waits for a first call, then for the window since it arrived or a full batch;
        takes the calls that fit in max_batch rows, oldest first. [] once closed and empty."""
        with self._changed:
            self._changed.wait_for(lambda: self._queue or self._closed)
            if not self._queue:
                return []
            while not self._closed and self._rows < self.max_batch:
                left = self._queue[0].arrived + self.window - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    break
            batch = [self._queue.popleft()]
            rows = len(batch[0].inputs)
            while self._queue and rows + len(self._queue[0].inputs) <= self.max_batch:
                batch.append(self._queue.popleft())
                rows += len(batch[-1].inputs)
            self._rows -= rows
            return batch

    def _work(self) -> None:
        import torch

        while batch := self._next_batch():
            try:
                with torch.inference_mode():
                    outputs = self.forward(torch.cat([c.inputs for c in batch]))
                parts = outputs.split([len(c.inputs) for c in batch])
                for call, part in zip(batch, parts, strict=True):
                    call.outputs = part
            except Exception:  # noqa: BLE001 - each call again alone; it gets its own error
                for call in batch:
                    try:
                        with torch.inference_mode():
                            call.outputs = self.forward(call.inputs)
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        call.error = exc
            finally:
                self.batches += 1
                self.calls += len(batch)
                for call in batch:
                    call.done.set()


@dataclass
class Cached:
    served: Any  # models.base.Served
    batcher: Batcher | None  # None: batching off


class ModelCache:
    """At most settings.model_cache_size models, the least recently used evicted first (its
    batcher answers what it holds, then stops)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._models: OrderedDict[str, Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, job: Job) -> Any:
        """The job's models.base.Served, loaded on first use."""
        with self._lock:
            if job.id in self._models:
                self._models.move_to_end(job.id)
                return self._models[job.id].served
        served = load_model(job, final_weights(session, job.id), self.settings)
        batcher = None
        if self.settings.batch_window_ms > 0 and "predict" in served.spec.verbs:
            batcher = Batcher(
                served.module,
                window=self.settings.batch_window_ms / 1000,
                max_batch=self.settings.max_batch,
            )
        with self._lock:
            if job.id in self._models:  # loaded meanwhile by another request: keep that one
                if batcher is not None:
                    batcher.close()
                self._models.move_to_end(job.id)
                return self._models[job.id].served
            self._models[job.id] = Cached(served, batcher)
            while len(self._models) > self.settings.model_cache_size:
                _, evicted = self._models.popitem(last=False)
                if evicted.batcher is not None:
                    evicted.batcher.close()
        return served

    def cached(self) -> list[str]:
        """The ids of the cached models, least recently used first."""
        with self._lock:
            return list(self._models)

    def batcher(self, job_id: str) -> Batcher | None:
        """A cached model's batcher (its counts say how well calls were batched)."""
        with self._lock:
            entry = self._models.get(job_id)
        return entry.batcher if entry is not None else None

    def predict(self, job_id: str, served: Any, request: Any) -> dict[str, Any]:
        """The family's predict (models/supervised.py) on `served` (from get), with the
        forward pass batched with other callers' when batching is on. Attention maps (ViT)
        are per request: unbatched."""
        import torch

        from models.registry import get_family
        from models.supervised import inputs_tensor, predict_answer

        with self._lock:
            entry = self._models.get(job_id)
        batcher = entry.batcher if entry is not None and entry.served is served else None
        if batcher is None or request.attention:
            return get_family(served.spec.family).verbs["predict"](served, request)
        inputs = inputs_tensor(served, request.inputs, raw=request.raw)
        try:
            outputs = batcher(inputs)
        except Closed:  # evicted since: run alone
            with torch.inference_mode():
                outputs = served.module(inputs)
        return predict_answer(served, outputs)
