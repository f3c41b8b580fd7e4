"""The supervisor `make run` starts its worker under: a worker that exits is started again."""

import sys
import threading
import time
from pathlib import Path

from workers.supervise import supervise


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
