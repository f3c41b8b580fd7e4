"""Keeps a worker running: `python -m workers.supervise CMD ...` starts CMD and starts it again
whenever it exits (a broker outage that ends the worker, a crash), waiting 1 s, then 2, 4...
up to 30 s between quick failures, until it gets SIGTERM or SIGINT, which it passes on.
`make run` runs its worker this way; a deployment uses its own supervisor (compose's
`restart:`, systemd)."""

import logging
import signal
import subprocess
import sys
import threading
import time

from core import logs
from core.settings import get_settings

log = logging.getLogger("annlab.supervise")
STEADY_SECONDS = 60.0  # a run this long was healthy: the next failure waits the shortest time


def supervise(
    argv: list[str],
    stop: threading.Event,
    *,
    first_wait: float = 1.0,
    max_wait: float = 30.0,
) -> int:
    """Run argv until `stop` is set; returns how many times it was started."""
    starts, wait = 0, first_wait
    while not stop.is_set():
        started = time.monotonic()
        child = subprocess.Popen(argv)
        starts += 1
        while child.poll() is None:
            if stop.wait(0.2):
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                return starts
        if time.monotonic() - started > STEADY_SECONDS:
            wait = first_wait
        log.warning(
            "%s exited with %s; starting it again in %.1f s", argv[0], child.returncode, wait
        )
        if stop.wait(wait):
            break
        wait = min(max_wait, wait * 2)
    return starts


def main() -> int:
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m workers.supervise CMD [ARGS...]", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    supervise(argv, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
