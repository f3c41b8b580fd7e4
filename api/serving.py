"""Trained models, loaded once from their final checkpoint and kept in a small LRU cache, and
the dynamic batching of their batchable verbs' calls (predict's).

Dynamic batching, as Triton's dynamic batcher and TorchServe's `batch_size` /
`max_batch_delay` describe it: a call waits at most ANNLAB_BATCH_WINDOW_MS for other calls to
the same model's verb (counted from when it arrived, or when the model's previous forward pass
ended if it queued during one), and the inputs of all of them, up to ANNLAB_MAX_BATCH in all (a
call with many inputs counts them all), are answered at once; each caller gets its own rows of
the answer. A forward pass over 32 inputs costs far less than 32 passes over one, so throughput
grows with the number of concurrent callers.

Whatever way a call comes in, the family's verb answers it (Loaded.call). A verb declares
itself batchable by being a models.base.Batchable: `rows` checks a request and makes its rows,
`answer` answers rows. The route (a coroutine on the server's event loop) makes its caller's
rows there, so a bad request is that caller's 422 and never reaches a batch, puts them on the
verb's Batcher queue and awaits a future; the Batcher's worker thread takes the first waiting
call, waits until the window has passed or the batch is full, and hands the batch to FORWARD,
the one thread that runs every model's passes: it concatenates the rows, runs the verb's
`answer` once (torch releases the GIL: the event loop goes on reading requests) and settles
each caller's future with its rows, on the caller's loop. So one forward pass runs at a time in
the process (what a GPU wants; on a CPU torch's own threads share the cores, and see FORWARD
for why one thread). A window of 0 turns batching off: each call runs the verb on its own
thread of the threadpool, as every other verb does.
"""

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from itertools import accumulate, pairwise
from typing import Any

from fastapi import HTTPException
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.metrics import BATCH_INPUTS
from core.catalog import DatasetInfo
from core.db import Job
from core.jobs import latest_checkpoint
from core.settings import Settings

# The one thread that runs the batched forward passes of every cached model, and loads those
# models. torch's CPU threads are OpenMP's (libgomp), which keeps a team of worker threads for
# each thread that has run a parallel op; once the process holds more teams' threads than
# cores, every team sleeps between ops and each op waits for it to wake. One thread for all
# passes keeps a process that only batches to a single team (docs/benchmarks.md has figures).
FORWARD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="annlab-forward")


def final_weights(session: Session, job_id: str) -> bytes:
    """A succeeded job's trained weights; 409 where they are not stored (a database restored
    without its checkpoints), which no retry mends."""
    checkpoint = latest_checkpoint(session, job_id, kind="final")
    if checkpoint is None:
        raise HTTPException(409, f"job {job_id} succeeded but its trained weights are not stored")
    return checkpoint.data


def load_model(job: Job, weights: bytes, settings: Settings) -> Any:
    """A models.base.Served for the job. torch is imported on the first model served."""
    import torch

    from core.checkpoint import unpack_weights
    from core.datasets import load_dataset
    from models.admission import inference_bytes
    from models.base import Served, for_inference
    from models.registry import get_family
    from models.specs import parse_job_spec

    spec = parse_job_spec(job.spec, stored=True)
    info = DatasetInfo.from_dict(job.data_info)
    family = get_family(spec.family)
    module = family.build(spec, info)
    tensors, _ = unpack_weights(weights)
    module.load_state_dict(tensors)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = cache(lambda: load_dataset(spec.dataset, settings, device, job.owner_id))
    return Served(
        module=for_inference(module, device),
        spec=spec,
        info=info,
        dataset=dataset,
        per_input=inference_bytes(spec, info),
    )


class MemoryGate:
    """A semaphore weighted in bytes: each verb call holds its estimate while it runs, and the
    calls running at once hold at most `capacity` together; a call waits until its bytes are
    free. Calls are first refused if over the capacity alone (models/admission.py)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.held = 0
        self.peak = 0  # the most ever held at once
        self._free = threading.Condition()

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        n = min(n, self.capacity)
        with self._free:
            self._free.wait_for(lambda: self.held + n <= self.capacity)
            self.held += n
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._free:
                self.held -= n
                self._free.notify_all()


class Closed(RuntimeError):
    """The batcher's model was evicted from the cache after this caller found it there."""


@dataclass
class Call:
    """One caller's inputs waiting in a Batcher, and the future its outputs (or error) settle."""

    inputs: Any  # a tensor (n, *input_shape)
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


def _settle(future: asyncio.Future, outputs: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the client went away while its call waited
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outputs)


Answer = tuple[Call, Any, BaseException | None]  # a call, and its outputs or its error


def settle_all(answers: list[Answer]) -> None:
    """From the worker thread: hands a batch's answers to their callers' event loops, waking
    each loop once for all of its callers rather than once for each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].future.get_loop(), []).append(answer)
    for loop, some in by_loop.items():
        loop.call_soon_threadsafe(_settle_some, some)


def _settle_some(answers: list[Answer]) -> None:
    for call, outputs, error in answers:
        _settle(call.future, outputs, error)


class Batcher:
    """Runs `forward` over the inputs of calls that arrive within `window` seconds of each
    other or of the end of the previous pass (at most `max_batch` rows; one call larger than
    that runs alone) and gives each call its own rows of the outputs. Callers await `submit`;
    one worker thread makes the batches, and FORWARD runs them. If a batch fails, its calls are
    run one by one, so a call that breaks the module fails alone."""

    def __init__(
        self,
        forward: Callable[[Any], Any],
        *,
        window: float,
        max_batch: int,
        gate: MemoryGate | None = None,
        row_bytes: int = 0,
    ):
        self.forward = forward
        self.gate, self.row_bytes = gate, row_bytes
        self.window = window
        self.max_batch = max_batch
        self.batches = 0  # forward passes run, and the calls they answered: batches <= calls
        self.calls = 0
        self._queue: deque[Call] = deque()
        self._rows = 0  # inputs waiting in the queue
        self._changed = threading.Condition()
        self._closed = False
        self._last_pass = max_batch  # calls the last pass answered; a new model assumes company
        self._expected = max_batch  # calls the worker waits for (within the window)
        self._passed = time.monotonic()  # when the last pass ended, before its answers went out
        self._worker = threading.Thread(target=self._work, name="annlab-batcher", daemon=True)
        self._worker.start()

    async def submit(self, inputs: Any) -> Any:
        """The module's outputs for `inputs`, computed in a batch with other callers'."""
        call = Call(inputs, asyncio.get_running_loop().create_future())
        with self._changed:
            if self._closed:
                raise Closed("this model was evicted from the cache")
            self._queue.append(call)
            self._rows += len(inputs)
            # The worker sleeps until a first call arrives, then until the batch is full or
            # holds the calls it waits for.
            if (
                len(self._queue) == 1
                or len(self._queue) >= self._expected
                or self._rows >= self.max_batch
            ):
                self._changed.notify()
        return await call.future

    def close(self) -> None:
        """The worker answers what is queued, then ends."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _next_batch(self) -> list[Call]:
        """Waits for a first call, then for a full batch or the window, which opens when the
        first waiting call arrived or when the last pass ended, whichever is later; takes the
        calls that fit in max_batch rows, oldest first. [] once closed and empty.

        The window reopens after each pass, since the callers a pass answers tend to call
        again at once; it closes once the calls that queued during the last pass and as many
        as that pass answered are waiting.

        A call waits for no one where no one else is calling: alone in the queue, having
        arrived after the last pass ended, when that pass answered a single call (a caller
        calling in a row by itself, a notebook's loop, would otherwise pay the window on
        every call). Any sign of company, a second call waiting, a call that queued during a
        pass or a pass of several calls, brings the window back."""
        with self._changed:
            self._changed.wait_for(lambda: self._queue or self._closed)
            if not self._queue:
                return []
            first, passed = self._queue[0].arrived, self._passed
            opened = max(first, passed)
            alone = len(self._queue) == 1 and self._last_pass == 1 and first > passed
            # The calls that queued during the last pass, and the callers it answered, back.
            self._expected = self._last_pass + sum(c.arrived <= passed for c in self._queue)
            while (
                not alone
                and not self._closed
                and self._rows < self.max_batch
                and len(self._queue) < self._expected
            ):
                left = opened + self.window - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    break
            batch = [self._queue.popleft()]
            rows = len(batch[0].inputs)
            while self._queue and rows + len(self._queue[0].inputs) <= self.max_batch:
                batch.append(self._queue.popleft())
                rows += len(batch[-1].inputs)
            self._rows -= rows
            self._last_pass = len(batch)
            return batch

    def _work(self) -> None:
        while batch := self._next_batch():
            self.batches += 1
            self.calls += len(batch)
            rows = sum(len(c.inputs) for c in batch)
            BATCH_INPUTS.observe(rows)
            if self.gate is None:
                FORWARD.submit(self._pass, batch).result()  # on the one thread all models share
            else:  # its bytes held before its turn on FORWARD, which then never waits
                with self.gate.hold(rows * self.row_bytes):
                    FORWARD.submit(self._pass, batch).result()

    def _pass(self, batch: list[Call]) -> None:
        """One forward pass over the batch, and each call's answer (or error) handed to it. If
        the pass fails, each call runs again alone, so a call that breaks the module fails
        alone."""
        import torch

        answers: list[Answer] = []
        try:
            with torch.inference_mode():
                outputs = self.forward(torch.cat([c.inputs for c in batch]))
            parts = split_rows(outputs, [len(c.inputs) for c in batch])
            answers = [(call, part, None) for call, part in zip(batch, parts, strict=True)]
        except Exception:  # noqa: BLE001 - each call again alone; it gets its own error
            for call in batch:
                try:
                    with torch.inference_mode():
                        answers.append((call, self.forward(call.inputs), None))
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    answers.append((call, None, exc))
        self._passed = time.monotonic()  # before the answers go out (_next_batch)
        settle_all(answers)


def split_rows(outputs: Any, sizes: list[int]) -> list[Any]:
    """Each call's rows of a batch's outputs: a tensor's, or those of each list in a dict of
    lists with a row per input (a batchable verb's answer)."""
    if isinstance(outputs, dict):
        bounds = list(pairwise(accumulate(sizes, initial=0)))
        return [{key: rows[a:b] for key, rows in outputs.items()} for a, b in bounds]
    return outputs.split(sizes)


@dataclass
class Loaded:
    """A cached model: the family's view of it, its verbs, and a batcher for each verb whose
    calls are batched."""

    job_id: str
    owner_id: str | None  # the job's owner: who may call the model
    served: Any  # models.base.Served
    verbs: Mapping[str, Any]  # the family's verbs (models.base.Verb)
    batchers: dict[str, Batcher]  # empty: batching off, or no verb is batchable
    gate: MemoryGate
    budget: int  # ANNLAB_API_MEMORY

    def reserve(self, verb: str, body: Any) -> Any:
        """The bytes the call holds while it runs, after refusing one over the budget (a
        BadRequest naming the field)."""
        from models.admission import check_call

        return self.gate.hold(check_call(self.served, verb, body, self.budget))

    def run(self, verb: str, body: Any) -> Any:
        """The family's verb, on this thread, within the memory gate."""
        with self.reserve(verb, body):
            return self.verbs[verb](self.served, body)

    async def call(self, verb: str, body: Any) -> Any:
        """The family's verb on this model. A batchable verb's call (models.base.Batchable)
        that joins, of at most max_batch inputs, is checked and made rows here, on the event
        loop, and its rows answered with other callers' on the batcher's thread (its bytes
        held there, per batch); any other call runs the verb on the threadpool."""
        from models.admission import check_call

        batcher = self.batchers.get(verb)
        if batcher is None or len(body.inputs) > batcher.max_batch:
            return await run_in_threadpool(self.run, verb, body)
        batchable = self.verbs[verb]
        if not batchable.joins(body):
            return await run_in_threadpool(self.run, verb, body)
        check_call(self.served, verb, body, self.budget)
        rows = batchable.rows(self.served, body)
        try:
            return await batcher.submit(rows)
        except Closed:  # evicted since: run alone
            return await run_in_threadpool(self.run, verb, body)


class ModelCache:
    """At most settings.model_cache_size models, the least recently used evicted first (its
    batcher answers what it holds, then stops)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._models: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        # What the verb calls of every cached model hold at once.
        self.gate = MemoryGate(settings.api_memory_bytes)

    def find(self, job_id: str) -> Loaded | None:
        """The job's model if it is cached (and now the most recently used)."""
        with self._lock:
            loaded = self._models.get(job_id)
            if loaded is not None:
                self._models.move_to_end(job_id)
            return loaded

    def get(self, session: Session, job: Job) -> Loaded:
        """The job's model, loaded on first use (the job must have succeeded)."""
        job_id = job.id
        if (loaded := self.find(job_id)) is not None:
            return loaded
        from models.registry import get_family

        weights = final_weights(session, job_id)
        family = get_family(job.family)
        batched = family.batchable if self.settings.batch_window_ms > 0 else []
        if batched:  # on the thread that will run its forward passes (see FORWARD)
            served = FORWARD.submit(load_model, job, weights, self.settings).result()
        else:
            served = load_model(job, weights, self.settings)
        batchers = {
            verb: Batcher(
                partial(family.verbs[verb].answer, served),
                window=self.settings.batch_window_ms / 1000,
                max_batch=self.settings.max_batch,
                gate=self.gate,
                row_bytes=served.row_bytes,
            )
            for verb in batched
        }
        with self._lock:
            if job_id in self._models:  # loaded meanwhile by another request: keep that one
                for batcher in batchers.values():
                    batcher.close()
                self._models.move_to_end(job_id)
                return self._models[job_id]
            self._models[job_id] = loaded = Loaded(
                job_id,
                job.owner_id,
                served,
                family.verbs,
                batchers,
                self.gate,
                self.settings.api_memory_bytes,
            )
            while len(self._models) > self.settings.model_cache_size:
                _, evicted = self._models.popitem(last=False)
                for batcher in evicted.batchers.values():
                    batcher.close()
        return loaded

    def cached(self) -> list[str]:
        """The ids of the cached models, least recently used first."""
        with self._lock:
            return list(self._models)

    def batcher(self, job_id: str, verb: str = "predict") -> Batcher | None:
        """A cached model's batcher of a verb (its counts say how well calls were batched)."""
        with self._lock:
            entry = self._models.get(job_id)
        return entry.batchers.get(verb) if entry is not None else None
