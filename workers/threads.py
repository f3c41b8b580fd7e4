"""Torch's threads in a worker: its share of the cores, and one thread for a small job."""

import contextlib
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
