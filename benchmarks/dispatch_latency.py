"""Time from POST /jobs to `running` on an idle worker, on the embedded defaults (SQLite and
kombu's SQLAlchemy transport), with the transport's old 1 s polling and with annlab's default;
started_at - created_at of each job, both stamped by the server. Prints one line:

    dispatch p50 <ms> p90 <ms> (poll 1 s) | p50 <ms> p90 <ms> (poll default) | ratio <x>

Run: .venv/bin/python benchmarks/dispatch_latency.py [jobs per run, default 15]
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
JOB = {"family": "mlp", "dataset": {"name": "digits", "max_train": 64}, "train": {"epochs": 1}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(poll: float | None, jobs: int) -> list[float]:
    home = tempfile.mkdtemp(prefix="annlab-bench-")
    env = {**os.environ, "ANNLAB_HOME": home, "OMP_NUM_THREADS": "1"}
    if poll is not None:
        env["ANNLAB_BROKER_POLL_SECONDS"] = str(poll)
    python = sys.executable
    subprocess.run(
        [python, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    procs = [
        subprocess.Popen(
            [python, "-m", "uvicorn", "api.main:app", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                python,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--pool=solo",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
    ]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        waits = []
        for k in range(jobs + 2):  # the first two warm the worker up (imports, dataset cache)
            job = client.post("/jobs", json=JOB).json()
            while (done := client.get(f"/jobs/{job['id']}").json())["status"] in (
                "queued",
                "running",
            ):
                time.sleep(0.05)
            started = datetime.fromisoformat(done["started_at"])
            created = datetime.fromisoformat(done["created_at"])
            if k >= 2:
                waits.append((started - created).total_seconds() * 1000)
            time.sleep(0.3)  # the worker is idle again, waiting on the broker
        return waits
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(30)


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    slow, fast = measure(1.0, jobs), measure(None, jobs)

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=10)[q // 10 - 1] if len(values) > 1 else values[0]

    print(
        f"dispatch p50 {statistics.median(slow):.0f} ms p90 {p(slow, 90):.0f} ms (poll 1 s) | "
        f"p50 {statistics.median(fast):.0f} ms p90 {p(fast, 90):.0f} ms (poll default) | "
        f"ratio {statistics.median(slow) / statistics.median(fast):.1f}x"
    )


if __name__ == "__main__":
    main()
