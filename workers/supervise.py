"""Keeps a worker running: `python -m workers.supervise CMD ...` starts CMD and starts it again
whenever it exits (a crash, or a kill for memory), waiting 1 s, then 2, 4...
up to 30 s between quick failures, until it gets SIGTERM or SIGINT. Then it sends CMD SIGTERM
(a worker's warm shutdown: its job goes back to the queue), SIGKILLs it if it has not exited
within STOP_SECONDS, and exits. `make run` runs its worker this way; a deployment uses its own
supervisor (compose's `restart:`, systemd)."""

import logging
import signal
import subprocess
import sys
import time
from typing import Protocol

from core import logs
from core.settings import get_settings

log = logging.getLogger("annlab.supervise")
STEADY_SECONDS = 60.0  # a run this long was healthy: the next failure waits the shortest time
STOP_SECONDS = 6.0  # from SIGTERM to SIGKILL: a job checkpoints and requeues well within it
POLL_SECONDS = 0.05


class Stop(Protocol):
    def is_set(self) -> bool: ...


class Flag:
    """A stop flag a signal handler may set: one assignment, no lock (a threading.Event's
    set() takes a lock the interrupted main thread may be holding)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def set(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None


def stop_child(child: subprocess.Popen, grace: float = STOP_SECONDS) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the child is reaped."""
    if child.poll() is None:
        try:
            child.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return child.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not exit %.0f s after SIGTERM; killing it", child.args[0], grace)
            child.kill()
    return child.wait()


def _sleep_until(deadline: float, stop: Stop) -> bool:
    """Short sleeps until `deadline`; whether a stop came first."""
    while time.monotonic() < deadline:
        if stop.is_set():
            return True
        time.sleep(POLL_SECONDS)
    return stop.is_set()


def supervise(
    argv: list[str],
    stop: Stop,
    *,
    first_wait: float = 1.0,
    max_wait: float = 30.0,
    grace: float = STOP_SECONDS,
) -> int:
    """Run argv until `stop` is set; returns how many times it was started."""
    starts, wait = 0, first_wait
    while not stop.is_set():
        started = time.monotonic()
        child = subprocess.Popen(argv)
        starts += 1
        while child.poll() is None:
            if stop.is_set():
                stop_child(child, grace)
                return starts
            time.sleep(POLL_SECONDS)
        if time.monotonic() - started > STEADY_SECONDS:
            wait = first_wait
        log.warning(
            "%s exited with %s; starting it again in %.1f s", argv[0], child.returncode, wait
        )
        if _sleep_until(time.monotonic() + wait, stop):
            break
        wait = min(max_wait, wait * 2)
    return starts


def main() -> int:
    stop = Flag()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _: stop.set(signum))
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m workers.supervise CMD [ARGS...]", file=sys.stderr)
        return 2
    supervise(argv, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
