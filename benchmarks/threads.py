"""Epoch seconds on one torch thread against the worker's default (two here), for a small MLP and
a default CNN, by a bare loop and by the runner (workers.runner.run_job, the thread policy
turned off so the count set is the count used), on an idle machine and on one loaded by busy
processes that this script starts and stops. Prints one JSON line per case with the ratio
of each run's median epoch to the baseline (2 threads, idle) of the same case in this process.

    .venv/bin/python benchmarks/threads.py [--epochs 3] [--busy 2] [--threads 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scratch import queue, scratch_settings  # noqa: E402
from core.catalog import resolve  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.db import Metric, session_scope  # noqa: E402
from models.registry import get_family  # noqa: E402
from models.summary import batch_flops, count_parameters  # noqa: E402
from workers.runner import run_job  # noqa: E402

CASES = {
    "mlp 1-32-32-1 function1d": {
        "family": "mlp",
        "task": "regression",
        "dataset": {"name": "function1d", "n_train": 2000, "val_fraction": 0.0},
        "model": {"hidden": [32, 32], "activation": "tanh"},
    },
    "mlp 10-100-1 mackey_glass (1,201 parameters)": {
        "family": "mlp",
        "task": "regression",
        "dataset": {"name": "mackey_glass", "lag": 10, "val_fraction": 0.0},
        "model": {"hidden": [100]},
    },
    "mlp 64-16-10 digits": {
        "family": "mlp",
        "dataset": {"name": "digits", "val_fraction": 0.0},
        "model": {"hidden": [16]},
    },
    "mlp default digits": {"family": "mlp", "dataset": {"name": "digits", "val_fraction": 0.0}},
    "cnn default digits": {"family": "cnn", "dataset": {"name": "digits", "val_fraction": 0.0}},
    "mlp 64-512-512-10 digits": {
        "family": "mlp",
        "dataset": {"name": "digits", "val_fraction": 0.0},
        "model": {"hidden": [512, 512]},
    },
    "mlp 64-2048-2048-10 digits": {
        "family": "mlp",
        "dataset": {"name": "digits", "val_fraction": 0.0},
        "model": {"hidden": [2048, 2048]},
    },
}


def bare_epochs(document: dict, settings, epochs: int) -> float:
    """Median seconds of an epoch of a hand-written loop over the job's model and data."""
    _, spec = queue(settings, document)
    splits = load_dataset(spec.dataset, settings, torch.device("cpu"))
    torch.manual_seed(0)
    model = get_family(spec.family).build(spec, splits.info)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y, batch = splits.train.x, splits.train.y, spec.train.batch_size
    loss_fn = F.mse_loss if spec.task == "regression" else F.cross_entropy
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad(set_to_none=True)
            out = model(x[idx])
            target = y[idx]
            if spec.task == "regression":
                out = out.reshape(target.shape)
            loss_fn(out, target).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def runner_epochs(document: dict, settings, epochs: int) -> float:
    """Median seconds of an epoch of the same job trained by the runner."""
    job_id, _ = queue(settings, document | {"train": {"epochs": epochs}})
    assert run_job(job_id, settings=settings, worker="bench") == "succeeded"
    with session_scope(settings.database_url) as session:
        # Epoch 0 evaluates the initial weights and trains nothing.
        rows = session.query(Metric).filter(Metric.job_id == job_id, Metric.epoch > 0).all()
        return statistics.median(r.seconds for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="busy processes for the load")
    parser.add_argument("--threads", type=int, default=2, help="the worker's default")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    settings = scratch_settings(checkpoint_seconds=3600, single_thread_flops=0)
    for name in args.cases:
        document = CASES[name]
        _, spec = queue(settings, document)
        info = resolve(spec.dataset, None)
        row = {
            "case": name,
            "params": count_parameters(spec, info),
            "batch_flops": batch_flops(spec, info),
        }
        bare_epochs(document, settings, 1)  # warm-up: first calls, allocator, thread pool
        for load in ("idle", "loaded"):
            busy = []
            if load == "loaded":
                code = "import time; end = time.time() + 600\nwhile time.time() < end: pass"
                busy = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args.busy)]
                time.sleep(0.5)
            try:
                for threads in (args.threads, 1):
                    torch.set_num_threads(threads)
                    row[f"bare {load} {threads}t s"] = bare_epochs(document, settings, args.epochs)
                    row[f"runner {load} {threads}t s"] = runner_epochs(
                        document, settings, args.epochs
                    )
                row[f"load average {load}"] = os.getloadavg()[0]
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
        torch.set_num_threads(args.threads)
        for how in ("bare", "runner"):
            base = row[f"{how} idle {args.threads}t s"]
            for key in [k for k in row if k.startswith(how) and k.endswith(" s")]:
                row[key.replace(" s", " x")] = round(row[key] / base, 2)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
