"""The process-wide "stop requested" flag a worker's shutdown sets and the training loop reads.

Set from signal handlers (Celery's run in the main thread, between any two bytecodes of the job),
so setting it is one plain assignment: no lock that the interrupted code might hold."""

import time

_requested_at: float | None = None


def request_stop() -> None:
    """Ask the running job (and any later one in this process) to stop and go back to the queue."""
    global _requested_at
    if _requested_at is None:
        _requested_at = time.monotonic()


def stop_requested(*, for_seconds: float = 0.0) -> bool:
    """Whether a stop was asked for, at least `for_seconds` ago."""
    at = _requested_at
    return at is not None and time.monotonic() - at >= for_seconds


def clear() -> None:
    """Forget a stop request (tests, which run jobs in one process)."""
    global _requested_at
    _requested_at = None
