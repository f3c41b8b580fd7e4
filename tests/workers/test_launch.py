"""`make run` (workers.launch) on a terminal: the API's and the worker's logs read as text lines
there, since both children write to the terminal they inherit, and ANNLAB_LOG_FORMAT is auto."""

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.service import free_port


def read_until(screen: int, seen: list[str], done: re.Pattern, seconds: float) -> bool:
    """Appends what the terminal shows to `seen` until `done` matches all of it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done.search("".join(seen)):
            return True
        ready, _, _ = select.select([screen], [], [], 0.5)
        if ready:
            try:
                seen.append(os.read(screen, 65536).decode(errors="replace"))
            except OSError:  # the terminal's last writer is gone
                return bool(done.search("".join(seen)))
    return bool(done.search("".join(seen)))


@pytest.mark.service
def test_make_run_on_a_terminal_shows_text_lines(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ANNLAB_") and k not in ("DATABASE_URL", "BROKER_URL")
    }
    env["ANNLAB_HOME"] = str(tmp_path)
    migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)

    port = free_port()
    screen, terminal = os.openpty()
    launch = subprocess.Popen(
        [sys.executable, "-m", "workers.launch", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen: list[str] = []
    try:
        worker_ready = re.compile(r"INFO\s+celery\S*: .*ready", re.S)
        assert read_until(screen, seen, worker_ready, 120), "".join(seen)[-3000:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        request_line = re.compile(r"\d\d:\d\d:\d\d INFO\s+annlab\.http: GET /healthz 200")
        assert read_until(screen, seen, request_line, 30), "".join(seen)[-3000:]
    finally:
        launch.send_signal(signal.SIGTERM)
        launch.wait(timeout=30)
        read_until(screen, seen, re.compile(r"$^"), 1)
        os.close(screen)

    lines = [line.strip() for line in "".join(seen).splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith("{")], lines
