"""What the service costs over a hand-written PyTorch loop: the same model, data, optimizer and
batches trained for the same epochs, once by the worker's runner (claim, heartbeat, per-epoch
metrics and checkpoints in SQL, progress) and once by a bare loop, in the same process.
Prints one line: the whole run's seconds (data, model, epochs with their records, the test)
and the training seconds per epoch, of each, and their ratios.

    .venv/bin/python benchmarks/service_overhead.py [--family mlp|cnn] [--dataset digits]
        [--epochs 5] [--max-train N]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scratch import queue, scratch_settings  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.db import Job, Metric, session_scope  # noqa: E402
from models.registry import get_family  # noqa: E402
from workers.runner import run_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-train", type=int, default=None)
    args = parser.parse_args()

    settings = scratch_settings(checkpoint_seconds=3600)

    dataset = {"name": args.dataset, "val_fraction": 0.0}
    if args.max_train:
        dataset["max_train"] = args.max_train
    document = {"family": args.family, "dataset": dataset, "train": {"epochs": args.epochs}}
    job_id, spec = queue(settings, document)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # The service: the runner, as a worker runs it.
    started = time.perf_counter()
    assert run_job(job_id, settings=settings, worker="bench") == "succeeded"
    service_total = time.perf_counter() - started
    with session_scope(settings.database_url) as session:
        rows = session.query(Metric).filter(Metric.job_id == job_id).all()
        service_epoch = sum(r.seconds for r in rows) / len(rows)
        accuracy = session.get(Job, job_id).result["test_accuracy"]

    # The bare loop: the same module, optimizer, batch size and epochs, no service around it;
    # it loads the data and measures the test accuracy at the end too.
    bare_started = time.perf_counter()
    family = get_family(spec.family)
    splits = load_dataset(spec.dataset, settings, device)
    torch.manual_seed(spec.train.seed)
    model = family.build(spec, splits.info).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.train.optimizer.lr)
    x, y, batch = splits.train.x, splits.train.y, spec.train.batch_size
    bare_epochs = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).to(device)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        bare_epochs.append(time.perf_counter() - start)
    bare_epoch = sum(bare_epochs) / len(bare_epochs)
    model.eval()
    with torch.inference_mode():
        bare_accuracy = (model(splits.test.x).argmax(1) == splits.test.y).float().mean().item()
    bare_total = time.perf_counter() - bare_started

    print(
        json.dumps(
            {
                "benchmark": "service_overhead",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "family": args.family,
                "dataset": args.dataset,
                "examples": len(y),
                "epochs": args.epochs,
                "service_total_s": round(service_total, 2),
                "bare_total_s": round(bare_total, 2),
                "ratio_total": round(service_total / bare_total, 3),
                "service_epoch_s": round(service_epoch, 4),
                "bare_epoch_s": round(bare_epoch, 4),
                "ratio_epoch": round(service_epoch / bare_epoch, 3),
                "test_accuracy": round(accuracy, 4),
                "bare_test_accuracy": round(bare_accuracy, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
