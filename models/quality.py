"""Sample quality of generative families: FID's recipe (Heusel et al. 2017) on the features of
a small classifier instead of Inception (whose weights cannot be downloaded here), and the class
histogram of the samples under that classifier, whose entropy shows mode collapse as a number.

The classifier is trained once per dataset, deterministically, and kept in SQL (feature_nets),
so every worker measures with the same one and no job pays for it twice. One worker at a time
trains it, under a lease (core/feature_nets.py); another that needs it meanwhile waits for it.
"""

import dataclasses
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import linalg
from sqlalchemy.exc import IntegrityError
from torch import Tensor, nn
from torch.nn import functional as F

from core import feature_nets
from core.catalog import DatasetInfo
from core.checkpoint import pack_weights, unpack_weights
from core.datasets import Split, load_dataset
from core.db import FeatureNet, session_scope
from core.feature_nets import RECIPE
from core.settings import Settings
from core.spec import DatasetSpec
from models.base import Trainer
from models.loop import Callback, Position

log = logging.getLogger(__name__)
N_SAMPLES = 1000  # samples drawn at the end of a job to measure
STEPS, BATCH, MAX_TRAIN = 800, 64, 20_000
CHUNK = 512  # images per pass of the feature net


def applies(info: DatasetInfo) -> bool:
    """Quality is measured for labelled image datasets (the classifier needs the labels)."""
    return feature_nets.applies(info)


class FeatureClassifier(nn.Module):
    """Two conv blocks and a 128-unit layer whose activations are the features."""

    def __init__(self, *, input_shape: tuple[int, ...], n_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.to_maps = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 64 * (height // 4) * (width // 4)
        self.to_features = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU())
        self.to_logits = nn.Linear(128, n_classes)

    def features(self, x: Tensor) -> Tensor:  # (batch, C, H, W) -> (batch, 128)
        return self.to_features(self.to_maps(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.to_logits(self.features(x))


def _key(spec: DatasetSpec, owner: str | None) -> str:
    return feature_nets.key_of(spec.name, owner)


# Told `done` of `total` steps of scoring (total None: a part that is not counted in steps)
Report = Callable[[int, int | None], None]


def train_feature_net(
    spec: DatasetSpec,
    settings: Settings,
    device: torch.device,
    owner: str | None = None,
    report: Report | None = None,
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train the classifier on the dataset's default split, without touching the caller's RNG;
    `report` hears of every step done (of STEPS)."""
    split = DatasetSpec(name=spec.name, val_fraction=0.0)
    splits = load_dataset(split, settings, device, owner)
    train, info = splits.train, splits.info
    n = min(len(train), MAX_TRAIN)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        net = FeatureClassifier(input_shape=info.input_shape, n_classes=info.n_classes).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        net.train()
        if report is not None:
            report(0, STEPS)
        for step in range(STEPS):
            if step % max(1, n // BATCH) == 0:
                order = torch.randperm(n, generator=generator).to(device)
            start = (step % max(1, n // BATCH)) * BATCH
            idx = order[start : start + BATCH]
            loss = F.cross_entropy(net(train.x[idx]), train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if report is not None:
                report(step + 1, STEPS)
    net.eval()
    with torch.inference_mode():
        logits = torch.cat(
            [net(splits.test.x[i : i + CHUNK]) for i in range(0, len(splits.test), CHUNK)]
        )
        accuracy = (logits.argmax(1) == splits.test.y).float().mean().item()
    facts = {
        "dataset": spec.name,
        "recipe": RECIPE,
        "test_accuracy": accuracy,
        "data_info": dataclasses.asdict(info),
    }
    return net, facts


class LeaseLost(Exception):
    """This worker's lease on a feature net's training is not its own any more."""


class _Lease:
    """The lease a worker trains a feature net under: `step` writes how far it is and renews
    the lease (at most every heartbeat_seconds, and at the first and last step)."""

    def __init__(self, settings: Settings, key: str, token: str):
        self.settings, self.key, self.token = settings, key, token
        self.written: float | None = None

    def step(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        due = self.written is None or now - self.written >= self.settings.heartbeat_seconds
        if total is None or not (due or done in (0, total)):
            return
        with session_scope(self.settings.database_url) as session:
            kept = feature_nets.renew(
                session,
                self.key,
                self.token,
                step=done,
                steps=total,
                lease_seconds=self.settings.lease_seconds,
            )
        if not kept:
            raise LeaseLost(self.key)
        self.written = now

    def release(self) -> None:
        try:
            with session_scope(self.settings.database_url) as session:
                feature_nets.release(session, self.key, self.token)
        except Exception:  # noqa: BLE001 - the lease then runs out by itself
            log.exception("could not release the feature net training %s", self.key)


def _stored(settings: Settings, key: str) -> tuple[bytes, dict[str, Any]] | None:
    with session_scope(settings.database_url) as session:
        row = session.get(FeatureNet, key)
        return (row.data, row.info) if row is not None else None


def _restore(stored: tuple[bytes, dict[str, Any]], device: torch.device) -> FeatureClassifier:
    data, facts = stored
    info = DatasetInfo.from_dict(facts["data_info"])
    net = FeatureClassifier(input_shape=info.input_shape, n_classes=info.n_classes)
    net.load_state_dict(unpack_weights(data)[0])
    return net.to(device).eval()


def _train_and_store(
    spec: DatasetSpec,
    settings: Settings,
    device: torch.device,
    owner: str | None,
    report: Report | None,
    lease: _Lease,
) -> FeatureClassifier:
    """Train under `lease` and store the net; LeaseLost if another worker took the lease or
    stored one first. Any other failure releases the lease."""

    def step(done: int, total: int | None) -> None:
        lease.step(done, total)
        if report is not None:
            report(done, total)

    try:
        net, facts = train_feature_net(spec, settings, device, owner, step)
    except LeaseLost:
        raise
    except BaseException:
        lease.release()
        raise
    try:
        with session_scope(settings.database_url) as session:
            feature_nets.store(session, lease.key, info=facts, data=pack_weights(net, facts))
    except IntegrityError as exc:  # another worker stored one first: use that one, like everyone
        raise LeaseLost(lease.key) from exc
    return net


def feature_net(
    spec: DatasetSpec,
    settings: Settings,
    device: torch.device,
    owner: str | None = None,
    report: Report | None = None,
    worker: str | None = None,
) -> FeatureClassifier:
    """The dataset's feature classifier (an upload's is `owner`'s): the stored one; or, while
    another worker trains it, the one it stores, waited for (telling `report` of that worker's
    steps); or trained now by this `worker` (telling `report` of its steps) and stored. A
    training whose lease expired is taken over."""
    key = _key(spec, owner)
    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    while True:
        if (stored := _stored(settings, key)) is not None:
            return _restore(stored, device)
        with session_scope(settings.database_url) as session:
            token = feature_nets.claim(
                session, key, worker=worker, steps=STEPS, lease_seconds=settings.lease_seconds
            )
            state = feature_nets.state(session, key)
        if token is not None:
            try:
                return _train_and_store(
                    spec, settings, device, owner, report, _Lease(settings, key, token)
                )
            except LeaseLost:
                log.warning("another worker took over the feature net %s; waiting for it", key)
                continue
        if state.status == "training" and report is not None:
            report(state.step or 0, state.steps)
        if state.status != "ready":
            time.sleep(settings.heartbeat_seconds)


def memory(info: DatasetInfo) -> int:
    """Bytes scoring holds at once besides the job's own tensors (an estimate, for admission):
    the dataset loaded again to train the feature net if none is stored yet, the net's passes
    over a chunk, and the features and images it scores."""
    from models.summary import per_example  # torch's meta device

    with torch.device("meta"):
        net = FeatureClassifier(input_shape=info.input_shape, n_classes=info.n_classes)
    image = math.prod(info.input_shape) * 4
    per = per_example(net, info, torch.device("meta"))
    examples = (info.n_train or 0) + (info.n_test or 0)
    passes = max(CHUNK * (image + per["inference"]), BATCH * (image + per["training"]))
    features = ((info.n_test or 0) + 2 * N_SAMPLES) * 128 * 8 * 2  # float64, torch and numpy
    return 2 * examples * image + passes + features + 2 * N_SAMPLES * image


@torch.inference_mode()
def _features(net: FeatureClassifier, x: Tensor) -> tuple[np.ndarray, Tensor]:
    """(features as float64 numpy, predicted classes) over x in chunks."""
    feats, classes = [], []
    for start in range(0, len(x), CHUNK):
        f = net.features(x[start : start + CHUNK])
        feats.append(f.double().cpu())
        classes.append(net.to_logits(f).argmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(classes)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (n, d)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric
    # PSD matrix: stable where the product is singular (a collapsed generator's S is ~0).
    values, vectors = linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    trace_root = np.sqrt(linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def measure(net: FeatureClassifier, samples: Tensor, test: Split) -> dict[str, Any]:
    """Frechet distance of the samples to the test images, the same for uniform noise (the
    scale to read it against), and the samples' class histogram and its normalized entropy
    (1: every class equally often; 0: one class only, a collapsed generator)."""
    device = next(net.parameters()).device
    samples = samples.to(device).float()
    test_feats, _ = _features(net, test.x.to(device))
    sample_feats, classes = _features(net, samples)
    noise = torch.rand(samples.shape, generator=torch.Generator().manual_seed(0)).to(device)
    noise_feats, _ = _features(net, noise)
    n_classes = net.to_logits.out_features
    histogram = torch.bincount(classes, minlength=n_classes).double() / len(classes)
    nonzero = histogram[histogram > 0]
    entropy = float(-(nonzero * nonzero.log()).sum() / math.log(n_classes))
    return {
        "frechet_distance": frechet_distance(sample_feats, test_feats),
        "frechet_distance_noise": frechet_distance(noise_feats, test_feats),
        "sample_class_histogram": [round(v, 4) for v in histogram.tolist()],
        "sample_class_entropy": entropy,
    }


class SampleQuality(Callback):
    """Adds to a generative family's fold result how its samples compare with the test
    images (the feature net is trained once per dataset and kept in the database); `report`
    hears how far scoring is: the feature net's training steps, when it trains one."""

    def __init__(self, settings: Settings, owner: str | None, report: Report | None = None):
        self.settings, self.owner, self.report = settings, owner, report

    def on_train_end(self, trainer: Trainer, position: Position, result: dict[str, Any]) -> None:
        spec, splits, device = trainer.spec, trainer.splits, trainer.device
        if not applies(splits.info):
            return
        if self.report is not None:
            self.report(0, None)
        samples = trainer.samples(N_SAMPLES, torch.Generator(device).manual_seed(spec.train.seed))
        if samples is not None:
            net = feature_net(spec.dataset, self.settings, device, self.owner, self.report)
            result |= measure(net, samples, splits.test)
