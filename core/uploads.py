"""Datasets users upload: .npz (X, y) or a one-column CSV series, checked, then kept in SQL
(compressed, in upload_blobs; the uploads row holds the facts).

Nothing is unpickled (allow_pickle=False throughout). Every problem is an UploadError that
names what is wrong, which the API turns into a 4xx.
"""

import hashlib
import io
import re
import zipfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import IO, Any

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.catalog import DatasetInfo, DatasetUnavailable
from core.db import Upload, UploadBlob, sessionmaker_for

PREFIX = "upload:"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_EXAMPLES = 1_000_000
MAX_VALUES_PER_EXAMPLE = 3 * 256 * 256
MAX_CLASSES = 1000


class UploadError(ValueError):
    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


def dataset_name(name: str) -> str:
    """The name jobs use for an upload: `upload:<name>`."""
    if not re.match(NAME_PATTERN, name):
        raise UploadError("name", "use 1-64 lower-case letters, digits, '-' or '_'")
    return PREFIX + name


# An .npz is a zip: what it holds once decompressed is checked before anything is.
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Prepared:
    """A checked upload, ready to store: its facts and its arrays as a compressed .npz."""

    info: DatasetInfo
    data: bytes
    size_bytes: int  # the arrays' bytes, uncompressed: what counts against an owner's quota
    sha256: str


def over_quota(size: int, kept: int, quota: int) -> UploadError:
    return UploadError(
        "file",
        f"your uploads keep {kept:,} bytes and this one holds {size:,} once decompressed; at "
        f"most {quota:,} per owner",
        status=413,
    )


def _header(stream: IO[bytes], name: str = "X.npy") -> tuple[tuple[int, ...], bool, np.dtype]:
    """An .npy's (shape, fortran_order, dtype), from the first bytes of its stream."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        return np.lib.format.read_array_header_2_0(stream)
    except ValueError as exc:
        raise UploadError("file", f"{name} is not an .npy array: {exc}") from exc


def check_archive(raw: bytes, max_uncompressed: int, room: tuple[int, int] | None = None) -> int:
    """What an .npz holds once decompressed, in bytes, by what its zip directory and its arrays'
    headers declare (only the first bytes of X and y are inflated). Refused before any array is
    decompressed: more than `max_uncompressed` bytes (a zip bomb: 2 GB of zeros fit in 2 MB),
    more than an owner's quota left (`room`: bytes kept, quota), object arrays, or an X or y
    whose declared shape breaks the limits. zipfile itself refuses to inflate a member past its
    declared size."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
        raise UploadError("file", f"not a valid .npz archive (np.savez): {exc}") from exc
    with archive:
        members = archive.infolist()
        total = sum(m.file_size for m in members)
        if total > max_uncompressed:
            raise UploadError(
                "file",
                f"the archive would hold {total:,} bytes once decompressed; the limit is "
                f"{max_uncompressed:,}",
                status=413,
            )
        if room is not None and room[0] + total > room[1]:
            raise over_quota(total, *room)
        for member in members:
            if member.filename not in ("X.npy", "y.npy"):
                continue
            with archive.open(member) as stream:
                shape, _, dtype = _header(stream, member.filename)
            if dtype.hasobject:
                raise UploadError(
                    "file", f"only numeric arrays are accepted: {member.filename} holds objects"
                )
            values = int(np.prod(shape)) if shape else 1
            if values * dtype.itemsize > member.file_size:
                raise UploadError(
                    "file", f"{member.filename} declares {shape} but holds fewer bytes"
                )
            if shape and shape[0] > MAX_EXAMPLES:
                raise UploadError(
                    "file",
                    f"{member.filename} declares {shape[0]:,} rows; at most {MAX_EXAMPLES:,}",
                )
    return total


def parse_npz(
    raw: bytes,
    name: str,
    kind: str | None,
    max_uncompressed: int = MAX_UNCOMPRESSED_BYTES,
    room: tuple[int, int] | None = None,
) -> Prepared:
    """Validate an .npz with arrays X (examples) and y (labels or targets); `room`: the owner's
    bytes kept and quota."""
    size = check_archive(raw, max_uncompressed, room)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        names = archive.namelist()
        if not {"X.npy", "y.npy"} <= set(names):
            has = sorted(n.removesuffix(".npy") for n in names)
            raise UploadError("file", f"the archive needs arrays X and y; it has {has}")
        try:
            with archive.open("y.npy") as stream:
                y = np.lib.format.read_array(stream, allow_pickle=False)
            with archive.open("X.npy") as stream:
                x = _examples(_read_examples(stream))
        except UploadError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise UploadError("file", f"not a valid .npz archive: {exc}") from exc
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise UploadError(
            "file", f"y must be (n,) or (n, targets) with n = {len(x)} like X; it is {y.shape}"
        )
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise UploadError("file", f"y must be numeric, not {y.dtype}")
    integer_labels = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    kind = kind or ("classification" if integer_labels and y.ndim == 1 else "regression")
    if kind == "classification":
        if y.ndim != 1 or not integer_labels:
            raise UploadError("file", "classification needs integer labels y of shape (n,)")
        y = y.astype(np.int64)
        if y.min() < 0 or y.max() >= MAX_CLASSES:
            raise UploadError("file", f"labels must be in 0..{MAX_CLASSES - 1}")
        n_classes, target_dim = int(y.max()) + 1, None
    else:
        y = y.astype(np.float32).reshape(len(y), -1)
        if not np.isfinite(y).all():
            raise UploadError("file", "y holds NaN or infinite values")
        n_classes, target_dim = None, y.shape[1]
    info = DatasetInfo(
        name=PREFIX + name,
        kind=kind,
        input_shape=tuple(x.shape[1:]),
        source="upload",
        description=f"uploaded .npz, {len(x)} examples",
        n_classes=n_classes,
        target_dim=target_dim,
        input_scale=255.0 if x.dtype == np.uint8 else 1.0,
        n_train=len(x),
    )
    return _prepared(info, size, X=x, y=y)


def _check_examples(shape: tuple[int, ...], dtype: np.dtype) -> None:
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise UploadError("file", f"X must be numeric, not {dtype}")
    if len(shape) not in (2, 3, 4):
        raise UploadError("file", f"X must be (n, d), (n, h, w) or (n, c, h, w); it is {shape}")
    if not 10 <= shape[0] <= MAX_EXAMPLES:
        raise UploadError("file", f"X must hold 10..{MAX_EXAMPLES} examples; it holds {shape[0]}")
    if int(np.prod(shape[1:])) > MAX_VALUES_PER_EXAMPLE:
        raise UploadError("file", f"each example may hold at most {MAX_VALUES_PER_EXAMPLE} values")


CHUNK_BYTES = 4 * 1024 * 1024


def _read_examples(stream: IO[bytes]) -> np.ndarray:
    """X.npy as float32 (uint8 as it is), converted a few rows at a time, so that a wider dtype
    (float64) is never held whole."""
    shape, fortran_order, dtype = _header(stream)
    _check_examples(shape, dtype)
    keep = np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)
    row = dtype.itemsize * int(np.prod(shape[1:]))
    if fortran_order:
        data = stream.read(row * shape[0])
        if len(data) < row * shape[0]:
            raise UploadError("file", "X.npy holds fewer bytes than its header declares")
        return np.frombuffer(data, dtype).reshape(shape, order="F").astype(keep)
    x = np.empty(shape, dtype=keep)
    step = max(1, CHUNK_BYTES // max(row, 1))
    for start in range(0, shape[0], step):
        rows = min(step, shape[0] - start)
        data = stream.read(rows * row)
        if len(data) < rows * row:
            raise UploadError("file", "X.npy holds fewer bytes than its header declares")
        x[start : start + rows] = np.frombuffer(data, dtype).reshape(rows, *shape[1:])
    return x


def _examples(x: np.ndarray) -> np.ndarray:
    """X as (n, d) vectors or (n, channels, height, width) images."""
    _check_examples(x.shape, x.dtype)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels last -> first
    if x.dtype != np.uint8:
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise UploadError("file", "X holds NaN or infinite values")
    return np.ascontiguousarray(x)


def parse_csv(raw: bytes, name: str) -> Prepared:
    """A time series: one numeric column, one value per line, an optional header line."""
    if raw.count(b"\n") > MAX_EXAMPLES + 1:
        raise UploadError("file", f"the series must hold 50..{MAX_EXAMPLES} values")
    try:
        lines = [line.strip() for line in raw.decode("utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise UploadError("file", "a CSV upload must be UTF-8 text") from exc
    values = []
    for number, line in enumerate(lines, start=1):
        cells = line.split(",")
        if len(cells) != 1:
            raise UploadError(
                "file", f"the CSV must have one column; line {number} has {len(cells)}"
            )
        try:
            values.append(float(cells[0]))
        except ValueError:
            if number == 1:
                continue  # a header
            raise UploadError("file", f"line {number} is not a number: {cells[0][:40]!r}") from None
    series = np.asarray(values, dtype=np.float64)
    if not 50 <= len(series) <= MAX_EXAMPLES:
        raise UploadError(
            "file", f"the series must hold 50..{MAX_EXAMPLES} values; it has {len(series)}"
        )
    if not np.isfinite(series).all():
        raise UploadError("file", "the series holds NaN or infinite values")
    info = DatasetInfo(
        name=PREFIX + name,
        kind="regression",
        input_shape=(30,),
        source="upload",
        description=f"uploaded series, {len(series)} values",
        target_dim=1,
        sequence=True,
        n_train=len(series),
        params=("lag",),
    )
    return _prepared(info, series.nbytes, series=series)


def _prepared(info: DatasetInfo, size: int, **arrays: np.ndarray) -> Prepared:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    return Prepared(info, data, size, hashlib.sha256(data).hexdigest())


def _owned(query: Select, owner: str | None) -> Select:
    return query.where(Upload.owner_id.is_(None) if owner is None else Upload.owner_id == owner)


def find(session: Session, name: str, owner: str | None) -> Upload | None:
    """The owner's upload of that name (None: the anonymous local user's)."""
    return session.scalar(_owned(select(Upload).where(Upload.name == name), owner))


def room(session: Session, name: str, owner: str | None, quota: int) -> tuple[int, int]:
    """(bytes the owner's uploads keep, quota), once sure the owner has no upload `name`."""
    if find(session, name, owner) is not None:
        raise UploadError("name", f"your dataset {name!r} exists already", 409)
    kept = session.scalar(_owned(select(func.coalesce(func.sum(Upload.size_bytes), 0)), owner))
    return kept, quota


def store(session: Session, prepared: Prepared, owner_id: str | None = None) -> Upload:
    info = prepared.info
    row = Upload(
        name=info.name,
        kind=info.kind,
        info=asdict(info),
        size_bytes=prepared.size_bytes,
        stored_bytes=len(prepared.data),
        sha256=prepared.sha256,
        owner_id=owner_id,
    )
    session.add(row)
    session.flush()
    session.add(UploadBlob(upload_id=row.id, data=prepared.data))
    session.flush()
    return row


def upload_infos(session: Session, names: list[str], owner: str | None) -> dict[str, DatasetInfo]:
    """The facts of the owner's uploads among `names` (metadata only, never the arrays)."""
    rows = session.scalars(_owned(select(Upload).where(Upload.name.in_(names)), owner))
    return {row.name: DatasetInfo.from_dict(row.info) for row in rows}


def digest(database_url: str, name: str, owner: str | None) -> str | None:
    """The sha256 of the owner's upload of that name (None: there is none)."""
    with sessionmaker_for(database_url, read_only=True)() as session:
        return session.scalar(_owned(select(Upload.sha256).where(Upload.name == name), owner))


@lru_cache(maxsize=4)
def read(
    database_url: str, name: str, owner: str | None, sha256: str | None = None
) -> tuple[DatasetInfo, dict[str, Any]]:
    """The owner's upload's facts and arrays, cached by `sha256` (an upload replaced under the
    same name is read again); read in a read-only session, which on SQLite holds no write lock
    while the blob is read."""
    with sessionmaker_for(database_url, read_only=True)() as session:
        row = find(session, name, owner)
        if row is None:
            raise DatasetUnavailable(f"no uploaded dataset {name!r}; see GET /datasets")
        info = DatasetInfo.from_dict(row.info)
        data = session.scalar(select(UploadBlob.data).where(UploadBlob.upload_id == row.id))
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return info, {key: archive[key] for key in archive.files}
