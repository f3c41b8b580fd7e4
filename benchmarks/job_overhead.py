"""Per-job overhead: a job's wall time through workers.runner.run_job against the sum of its
epochs' training seconds, for small jobs with default settings (20 epochs) run one after
another in one process, as a worker runs them (the second run of a job finds its dataset
already loaded).

    .venv/bin/python -m benchmarks.job_overhead [--repeats 2] [--threads 1] [--only digits]
"""

import argparse
import time

import torch
from sqlalchemy import select

from benchmarks.scratch import queue, scratch_settings
from core.db import Metric, session_scope
from workers.runner import run_job

FASHION_1 = {"family": "cnn", "dataset": {"name": "fashion_mnist", "n_per_class": 1}}
JOBS = {
    "MLP 1-32-32-1, function1d": {
        "family": "mlp",
        "dataset": {"name": "function1d"},
        "model": {"hidden": [32, 32]},
    },
    "MLP, digits": {"family": "mlp", "dataset": {"name": "digits"}},
    "CNN, Fashion-MNIST 1 per class": FASHION_1,
    "the same, validate_every 20": FASHION_1 | {"train": {"validate_every": 20}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each job, in order")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--only", help="run the jobs whose name contains this")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = scratch_settings()
    print(f"torch threads {torch.get_num_threads()}")
    print(f"{'job':34} {'run':>3} {'wall s':>8} {'epochs s':>9} {'ratio':>6}")
    for name, document in JOBS.items():
        if args.only and args.only not in name:
            continue
        for run in range(1, args.repeats + 1):
            job_id, _ = queue(settings, document)
            started = time.perf_counter()
            outcome = run_job(job_id, settings=settings, worker="bench")
            wall = time.perf_counter() - started
            with session_scope(settings.database_url) as session:
                seconds = sum(
                    session.scalars(select(Metric.seconds).where(Metric.job_id == job_id))
                )
            ratio = wall / seconds if seconds else float("inf")
            print(f"{name:34} {run:>3} {wall:8.2f} {seconds:9.2f} {ratio:6.2f} {outcome}")


if __name__ == "__main__":
    main()
