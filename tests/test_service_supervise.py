"""A worker that dies (a broker outage ends it; here kill -9) under the supervisor `make run`
uses is started again, and the queue goes on."""

import os
import signal
import subprocess

import pytest

from tests.service import Service

pytestmark = pytest.mark.service


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_supervised_worker_that_dies_is_started_again(service: Service) -> None:
    for worker in list(service.workers):  # only the supervised worker may run jobs here
        if worker.poll() is None:
            service.kill(worker)
    supervisor = service.start_worker(supervised=True)
    (first,) = service.wait_for(lambda: children(supervisor.pid), 30, "the worker process")
    os.kill(first, signal.SIGKILL)
    again = service.wait_for(
        lambda: [c for c in children(supervisor.pid) if c != first], 60, "a new worker process"
    )
    assert again and supervisor.poll() is None
    job = service.submit({"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 2}})
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=120)
    assert done["status"] == "succeeded", done["error"]
