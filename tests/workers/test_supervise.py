"""The supervisor `make run` starts its worker under: a worker that exits is started again."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workers.supervise import supervise

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_that_exits_is_started_again_until_stopped(tmp_path: Path) -> None:
    marks = tmp_path / "starts"
    # Each run leaves a mark and exits at once, as a worker does when its broker is gone.
    command = [sys.executable, "-c", f"open({str(marks)!r}, 'a').write('x')"]
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(supervise(command, stop, first_wait=0.05, max_wait=0.2))
    )
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not marks.exists() or len(marks.read_text()) < 3):
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert len(marks.read_text()) >= 3
    assert result and result[0] >= 3


def test_stopping_ends_a_running_worker(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervise(command, stop)))
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    stop.set()
    thread.join(30)
    assert result == [1] and time.monotonic() - started < 10


# Ignores SIGTERM and SIGINT, as a worker would that is stuck in a long call.
STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'a').write('x')\n"
    "time.sleep(120)\n"
)


def _alive(pid: int) -> bool:
    """Running, or a zombie nobody reaped."""
    return Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize(
    ("signum", "moment"),
    [(signal.SIGTERM, "running"), (signal.SIGINT, "running"), (signal.SIGTERM, "starting")],
)
def test_the_supervisor_ends_within_10s_of_a_signal_with_its_child_gone(
    tmp_path: Path, signum: int, moment: str
) -> None:
    marks = tmp_path / "started"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "workers.supervise", sys.executable, "-c", STUBBORN, str(marks)],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while moment == "running" and not marks.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        children = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True
            ).stdout.split()
        ]
        assert moment == "starting" or children
        started = time.monotonic()
        os.kill(supervisor.pid, signum)
        supervisor.wait(10)
        assert time.monotonic() - started < 10
        assert not [c for c in children if _alive(c)]
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait()
        subprocess.run(["pkill", "-KILL", "-s", str(supervisor.pid)], check=False)
