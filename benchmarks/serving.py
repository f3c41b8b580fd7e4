"""Predict throughput and latency over HTTP, with dynamic batching and without.

For each model: trains it in this process on Fashion-MNIST (digits if Fashion-MNIST is not
here; one short epoch: the weights do not matter, the architecture does), starts two real APIs
under uvicorn on the same database, one with batching off (ANNLAB_BATCH_WINDOW_MS=0) and one
with the default window, and runs 1, 8 and 32 concurrent clients (asyncio, each a keep-alive
connection sending one test image per request, the next when the answer is in) against each
in turn. Prints one line per model and concurrency:

    predict <model> <n> clients | batched <req/s> p50 <ms> p99 <ms> (<inputs> per pass) |
        unbatched ... | ratio <x>

Models: `cnn`, the README's CNN with its defaults (its forward pass is a small part of a
request's cost), and `mlp-4096`, an MLP with two hidden layers of 4096 (20 M weights: a pass
over one input costs about as much as over 8, the case batching is for).

Run: .venv/bin/python benchmarks/serving.py [--seconds 4] [--models cnn mlp-4096]
The clients run on the same machine as the servers and take their share of its cores (a
small one: plain asyncio streams). The servers use torch's own number of threads, as `make run`
does (one per core), unless OMP_NUM_THREADS is set: the batched server runs one forward pass at
a time and needs them to use the cores, the unbatched one runs a pass per call on the
threadpool (one thread each serves it no better: OMP_NUM_THREADS=1 gave it the same figures).
"per pass" is the mean number of inputs in the batched server's forward passes, from its
/metrics (annlab_predict_batch_inputs).
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MODELS = {
    "cnn": {"family": "cnn"},
    "mlp-4096": {"family": "mlp", "model": {"hidden": [4096, 4096]}},
}


def train(home: str, model: dict) -> tuple[str, list[dict]]:
    """A succeeded job in ANNLAB_HOME=home, and request bodies of its test images."""
    os.environ["ANNLAB_HOME"] = home
    from benchmarks.scratch import queue, scratch_settings
    from core.catalog import CATALOG, is_available
    from core.datasets import load_dataset
    from workers.runner import run_job

    settings = scratch_settings(home)
    dataset = "fashion_mnist" if is_available(CATALOG["fashion_mnist"], settings) else "digits"
    document = {
        **model,
        "dataset": {"name": dataset, "max_train": 2000},
        "train": {"epochs": 1},
    }
    job_id, spec = queue(settings, document)
    assert run_job(job_id, settings=settings, worker="bench") == "succeeded"
    test = load_dataset(spec.dataset, settings).test
    bodies = [{"inputs": [x.tolist()]} for x in test.x[:256]]
    return job_id, bodies


@contextmanager
def api(home: str, window_ms: float):
    """A uvicorn API as `make run` starts it, with this batching window."""
    port = free_port()
    env = {
        **os.environ,
        "ANNLAB_HOME": home,
        "ANNLAB_BATCH_WINDOW_MS": str(window_ms),
        "ANNLAB_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the API (window {window_ms} ms) did not start")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


async def client(port: int, requests: list[bytes], stop: float, latencies: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection sending `requests` in turn, each when the answer to
    the one before is in, until `stop`. Plain asyncio streams: an HTTP client library would
    cost as much CPU per request as the server and take half of a small machine's cores."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        k = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            writer.write(requests[k % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or b'"outputs"' not in body:
                raise RuntimeError(f"predict failed: {head[:20]!r} {body[:200]!r}")
            k += 1
    finally:
        writer.close()


def load(url: str, job_id: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """`clients` connections sending predict calls back to back for `seconds`."""
    port = int(url.rsplit(":", 1)[1])
    requests = []
    for body in bodies:
        content = json.dumps(body).encode()
        requests.append(
            f"POST /models/{job_id}/predict HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(content)}\r\n\r\n".encode()
            + content
        )
    latencies: list[float] = []

    async def run() -> float:
        began = time.monotonic()
        stop = began + seconds
        await asyncio.gather(
            *(client(port, requests[k:] + requests[:k], stop, latencies) for k in range(clients))
        )
        return time.monotonic() - began

    elapsed = asyncio.run(run())
    every = sorted(latencies)
    return {
        "rps": len(every) / elapsed,
        "p50": statistics.median(every) * 1000,
        "p99": every[min(len(every) - 1, int(0.99 * len(every)))] * 1000,
    }


def inputs_per_pass(url: str) -> tuple[float, float]:
    """The batched forward passes so far and the inputs they took, from the API's /metrics."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    samples = {s.name: s.value for f in families for s in f.samples}
    return (
        samples.get("annlab_predict_batch_inputs_count", 0.0),
        samples.get("annlab_predict_batch_inputs_sum", 0.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window-ms", type=float, default=None, help="default: the settings'")
    args = parser.parse_args()

    from core.settings import Settings

    window = args.window_ms if args.window_ms is not None else Settings().batch_window_ms
    for name in args.models:
        home = tempfile.mkdtemp(prefix="annlab-bench-")
        job_id, bodies = train(home, MODELS[name])
        with ExitStack() as stack:
            batched = stack.enter_context(api(home, window))
            unbatched = stack.enter_context(api(home, 0))
            for url in (batched, unbatched):  # load the model (and torch), then warm up
                httpx.post(f"{url}/models/{job_id}/predict", json=bodies[0], timeout=120)
                load(url, job_id, bodies, 4, 1.0)
            for clients in args.clients:
                passes, inputs = inputs_per_pass(batched)
                on = load(batched, job_id, bodies, clients, args.seconds)
                after = inputs_per_pass(batched)
                per_pass = (after[1] - inputs) / max(after[0] - passes, 1)
                off = load(unbatched, job_id, bodies, clients, args.seconds)
                print(
                    f"predict {name} {clients:2d} clients | batched {on['rps']:5.0f} req/s "
                    f"p50 {on['p50']:5.1f} ms p99 {on['p99']:6.1f} ms ({per_pass:4.1f} per pass)"
                    f" | unbatched "
                    f"{off['rps']:5.0f} req/s p50 {off['p50']:5.1f} ms p99 {off['p99']:6.1f} ms"
                    f" | ratio {on['rps'] / off['rps']:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
