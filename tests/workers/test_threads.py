"""Torch's threads in a worker: set from the settings when the worker starts, one thread for a
job whose batches are small, the worker's count for a larger one, restored after each job."""

import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from celery.signals import worker_init
from pydantic import ValidationError

from core.catalog import resolve
from core.settings import Settings
from models.specs import parse_job_spec
from models.summary import batch_flops
from models.supervised import SupervisedTrainer
from tests.conftest import ROOT
from tests.workers.test_runner import submit
from workers import celery_app
from workers.runner import run_job

SMALL = {  # an MLP 1-32-32-1: 139,264 FLOPs per batch of 64
    "family": "mlp",
    "task": "regression",
    "dataset": {"name": "function1d", "n_train": 200},
    "model": {"hidden": [32, 32]},
    "train": {"epochs": 2},
}
LARGER = {  # an MLP 64-128-64-10 on digits: 2,179,072 FLOPs per batch of 64
    "family": "mlp",
    "dataset": {"name": "digits", "max_train": 256},
    "train": {"epochs": 2},
}


@pytest.fixture(autouse=True)
def threads_restored() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_default_is_the_cores_shared_among_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert Settings().worker_threads() == 8
    monkeypatch.setenv("ANNLAB_WORKERS_PER_MACHINE", "3")
    assert Settings().worker_threads() == 2
    monkeypatch.setenv("ANNLAB_WORKERS_PER_MACHINE", "16")
    assert Settings().worker_threads() == 1
    monkeypatch.setenv("ANNLAB_TORCH_THREADS", "5")
    assert Settings().torch_threads == 5 and Settings().worker_threads() == 5


@pytest.mark.parametrize("name", ["ANNLAB_TORCH_THREADS", "ANNLAB_WORKERS_PER_MACHINE"])
def test_a_count_below_one_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValidationError, match=name.removeprefix("ANNLAB_").lower()):
        Settings()


def test_the_worker_sets_its_threads_when_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setattr(celery_app, "settings", Settings(torch_threads=3))
    worker_init.send(sender=None)
    assert torch.get_num_threads() == 3


def threads_in_training(
    settings: Settings, document: dict, monkeypatch: pytest.MonkeyPatch
) -> set[int]:
    """The thread counts torch had at each training step of the job."""
    real_step, seen = SupervisedTrainer.train_batch, set()

    def step(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        seen.add(torch.get_num_threads())
        return real_step(self, epoch, index)

    monkeypatch.setattr(SupervisedTrainer, "train_batch", step)
    assert run_job(submit(settings, document), settings=settings, worker="w") == "succeeded"
    return seen


def test_a_small_job_trains_on_one_thread_and_the_count_comes_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(3)
    settings.single_thread_flops = 1_000_000
    assert threads_in_training(settings, SMALL, monkeypatch) == {1}
    assert torch.get_num_threads() == 3


def test_a_larger_job_trains_on_the_workers_threads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(3)
    settings.single_thread_flops = 1_000_000
    assert threads_in_training(settings, LARGER, monkeypatch) == {3}
    settings.single_thread_flops = 0  # the policy off: every job on the worker's threads
    assert threads_in_training(settings, SMALL, monkeypatch) == {3}
    assert torch.get_num_threads() == 3


def test_the_count_comes_back_after_a_failed_job(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(3)
    seen = []

    def diverge(self: SupervisedTrainer, epoch: int, index: int) -> dict:
        seen.append(torch.get_num_threads())
        return {"loss": float("nan")}

    monkeypatch.setattr(SupervisedTrainer, "train_batch", diverge)
    assert run_job(submit(settings, SMALL), settings=settings, worker="w") == "failed"
    assert seen == [1] and torch.get_num_threads() == 3


def test_a_batch_is_counted_on_the_meta_device() -> None:
    spec = parse_job_spec(SMALL)
    info = resolve(spec.dataset, None)
    assert batch_flops(spec, info) == 2 * 64 * (1 * 32 + 32 * 32 + 32 * 1)
    full = parse_job_spec(SMALL | {"train": {"optimizer": {"name": "lbfgs"}}})
    assert batch_flops(full, info) == 2 * 200 * (1 * 32 + 32 * 32 + 32 * 1)  # the full batch


FAULTS = """
import resource, torch
from workers.threads import tune_allocator
assert tune_allocator()
x, y = torch.ones(36, 180, 50), torch.ones(36, 180, 50)  # 1.3 MB each, as a stack's activations

def step(x):
    a = x * y
    c = a.relu() * a + x
    return c.tanh()

for _ in range(5):
    x = step(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # 5 fresh tensors a step: 80,000 pages in all
    x = step(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_worker_reuses_freed_memory_for_a_stacks_tensors() -> None:
    """With the worker's allocator thresholds, tensors of a few MB allocated and freed each
    step reuse the heap: few page faults (measured: 0 to 1,900; with glibc's defaults about
    50,000, most of the pages)."""
    found = subprocess.run(
        [sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert int(found.stdout) < 8_000  # a tenth of the pages the steps allocate


FROZEN = """
import gc
from workers.runner import warm_up
from workers.threads import freeze_startup_objects
warm_up()
before = len(gc.get_objects())
frozen = freeze_startup_objects()
print(before, frozen, len(gc.get_objects()))
"""


def test_a_worker_keeps_what_it_made_at_start_out_of_the_collectors_passes() -> None:
    """What a worker holds once warmed up (torch, the ORM, the models' modules) is frozen:
    the collector's full passes walk only what jobs make afterwards."""
    found = subprocess.run(
        [sys.executable, "-c", FROZEN], capture_output=True, text=True, check=True, cwd=ROOT
    )
    before, frozen, after = map(int, found.stdout.split())
    assert frozen > 100_000  # measured: about 410,000
    assert after < before // 100
