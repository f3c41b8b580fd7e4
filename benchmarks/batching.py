"""One training epoch fed from tensors already on the device (what the trainers do) against the
same epoch through a per-sample torch DataLoader, in the same process. Prints the ratio.

    .venv/bin/python benchmarks/batching.py [--dataset digits|fashion_mnist] [--repeats 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from core.datasets import load_dataset
from core.settings import Settings
from models.registry import get_family
from models.supervised import SupervisedTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    home = Path(tempfile.mkdtemp())
    settings = Settings(home=home, data_dir=home / "data")
    settings.ensure_dirs()
    family = get_family("mlp")
    spec = family.spec.model_validate(
        {"family": "mlp", "dataset": {"name": args.dataset}, "train": {"batch_size": 64}}
    )
    splits = load_dataset(spec.dataset, settings, device)
    trainer: SupervisedTrainer = family.trainer(
        spec, family.build(spec, splits.info).to(device), splits, device
    )

    def tensor_epoch(epoch: int) -> None:
        for index in range(trainer.n_batches(epoch)):
            trainer.train_batch(epoch, index)

    cpu = TensorDataset(splits.train.x.cpu(), splits.train.y.cpu())
    loader = DataLoader(cpu, batch_size=64, shuffle=True)

    def loader_epoch(_: int) -> None:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            trainer.model.train()
            trainer.optimizers["model"].zero_grad()
            trainer.loss(trainer.model(x), y).backward()
            trainer.optimizers["model"].step()

    def best(run) -> float:
        run(0)  # warm-up
        times = []
        for epoch in range(1, args.repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run(epoch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times)

    baseline, ours = best(loader_epoch), best(tensor_epoch)
    print(
        f"batching device={device} dataset={args.dataset} examples={len(splits.train)} "
        f"dataloader_epoch_ms={baseline * 1e3:.1f} device_tensors_epoch_ms={ours * 1e3:.1f} "
        f"ratio={baseline / ours:.2f}"
    )


if __name__ == "__main__":
    main()
