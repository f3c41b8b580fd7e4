"""`make run`: the API (uvicorn) and a supervised worker, stopped together.

`python -m workers.launch --host HOST --port PORT` starts both, each in its own process group,
so that a terminal's Ctrl-C reaches this process alone and each child is told once. On SIGINT,
SIGTERM or SIGHUP (or when the API exits) it sends both SIGTERM, waits up to STOP_SECONDS, then
SIGKILLs whatever is left of their process groups, and exits."""

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from workers.supervise import POLL_SECONDS, Flag

log = logging.getLogger("annlab.launch")
STOP_SECONDS = 8.0  # longer than the supervisor's own SIGTERM-to-SIGKILL wait


def commands(host: str, port: int) -> dict[str, list[str]]:
    python = sys.executable
    worker = [python, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=solo"]
    return {
        "worker": [python, "-m", "workers.supervise", *worker, "--loglevel=info"],
        "api": [
            python,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "3",
        ],
    }


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all(children: dict[str, subprocess.Popen], grace: float = STOP_SECONDS) -> None:
    """SIGTERM to each child, SIGKILL to what is left of their groups after `grace`; reaps."""
    for child in children.values():
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(c.poll() is None for c in children.values()):
        time.sleep(POLL_SECONDS)
    for name, child in children.items():
        if child.poll() is None or _group_alive(child.pid):
            log.warning("%s did not stop %.0f s after SIGTERM; killing it", name, grace)
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.wait()


def main(argv: list[str] | None = None) -> int:
    stop = Flag()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _: stop.set(signum))
    parser = argparse.ArgumentParser(prog="python -m workers.launch")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="annlab: %(message)s")

    children: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        for name, command in commands(args.host, args.port).items():
            if stop.is_set():
                break
            children[name] = subprocess.Popen(command, process_group=0)
        while not stop.is_set():
            ended = [(n, c.returncode) for n, c in children.items() if c.poll() is not None]
            if ended:
                name, code = ended[0]
                log.warning("%s exited with %s; stopping", name, code)
                code = code or 1
                break
            time.sleep(POLL_SECONDS)
    finally:
        stop_all(children)
    return code


if __name__ == "__main__":
    sys.exit(main())
