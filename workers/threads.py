"""Torch's threads in a worker: its share of the cores, and one thread for a small job; the C
allocator's thresholds for the tensors a stack allocates each step; the objects made at start
kept out of the garbage collector's passes."""

import contextlib
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Iterator

import torch

from core.catalog import DatasetInfo
from core.settings import Settings
from core.spec import JobSpecBase
from models.summary import batch_flops

log = logging.getLogger(__name__)


def apply_worker_threads(settings: Settings) -> int:
    """Set torch's threads for this process from the settings; returns the count set."""
    threads = settings.worker_threads()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # refused once inter-op work has started
        torch.set_num_interop_threads(threads)
    log.info("torch threads: %d", threads)
    return threads


# glibc's mallopt parameters, and what the worker sets them to: blocks up to 32 MiB (glibc's
# most) come from the heap and freed memory is kept until 256 MiB lie unused at its top. By
# default a block of 128 KiB or more may be mapped afresh and unmapped when freed, so a
# stack's (K, batch, width) activations and gradients of a step faulted their pages in again
# (a full-batch step of 36 MLPs 1-50-1 on 180 examples: 74 page faults, 8 with these).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def tune_allocator() -> bool:
    """Set glibc's thresholds (above) for this process; False where the C library has no
    mallopt (musl, macOS) or refuses them."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    log.info("allocator thresholds %s", "set" if done else "left at their defaults")
    return done


def freeze_startup_objects() -> int:
    """Collect what starting the process left behind and move every object left (modules,
    torch's, the ORM's: a few hundred thousand) out of the collector's generations, so that
    its full passes during jobs walk only what jobs made; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def job_threads_for(
    spec: JobSpecBase, info: DatasetInfo, settings: Settings, device: torch.device
) -> int | None:
    """One for a CPU job whose batches are too small to share among threads, else None (the
    worker's count)."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        return None
    flops = batch_flops(spec, info)
    return 1 if 0 < flops < settings.single_thread_flops else None


@contextlib.contextmanager
def job_threads(
    spec: JobSpecBase, info: DatasetInfo, settings: Settings, device: torch.device
) -> Iterator[None]:
    """Torch's threads for the job inside, restored after it."""
    before = torch.get_num_threads()
    threads = job_threads_for(spec, info, settings, device)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
