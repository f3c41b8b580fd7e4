"""Time to accuracy: a job trained by the worker's runner; prints one line with the epochs and
training seconds (as the runner records them) until its validation accuracy first reached the
target, the whole run's wall clock, the best validation accuracy and the test accuracy.

    .venv/bin/python benchmarks/time_to_accuracy.py                  # the default CNN, to 0.93
    .venv/bin/python benchmarks/time_to_accuracy.py --job docs/jobs/cnn-fashion-augmented.json \
        --target 0.945 [--epochs N] [--max-train N]

On a CPU the whole run takes a while (7 to 20 minutes for the default CNN on Fashion-MNIST
on 2 cores); --max-train, --epochs and a lower --target give a quick figure.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch import queue, scratch_settings  # noqa: E402
from core.db import Job, Metric, session_scope  # noqa: E402
from workers.runner import run_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", default=str(ROOT / "docs/jobs/cnn-fashion-default.json"))
    parser.add_argument("--target", type=float, default=0.93)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=None)
    args = parser.parse_args()

    settings = scratch_settings(checkpoint_seconds=3600)

    document = json.loads(Path(args.job).read_text())
    if args.epochs:
        document.setdefault("train", {})["epochs"] = args.epochs
    if args.max_train:
        document.setdefault("dataset", {})["max_train"] = args.max_train
    job_id, spec = queue(settings, document)
    started = time.perf_counter()
    outcome = run_job(job_id, settings=settings, worker="bench")
    wall = time.perf_counter() - started
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        trained = (Metric.job_id == job_id, Metric.epoch > 0)  # epoch 0 trains nothing
        rows = session.query(Metric).filter(*trained).order_by(Metric.epoch).all()
        result = job.result or {}
    train_seconds = [r.seconds for r in rows]
    epoch = next((r.epoch for r in rows if r.values.get("val_accuracy", 0.0) >= args.target), None)
    print(
        json.dumps(
            {
                "benchmark": "time_to_accuracy",
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "job": Path(args.job).name,
                "outcome": outcome,
                "target": args.target,
                "epochs_to_target": epoch,
                "train_seconds_to_target": round(sum(train_seconds[:epoch]), 1) if epoch else None,
                "epochs_run": len(rows),
                "wall_seconds": round(wall, 1),
                "best_val_accuracy": round(max(r.values.get("val_accuracy", 0) for r in rows), 4),
                "test_accuracy": round(result.get("test_accuracy", float("nan")), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
