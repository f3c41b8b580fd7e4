"""How uploads are kept: checked by their headers before anything is decompressed (size cap and
the owner's quota), stored compressed apart from the rows that listing and admission read,
written in a short transaction, and named per owner."""

import hashlib
import io
import sqlite3
import tracemalloc
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import JSON, LargeBinary, column, event, insert, select, table, text

from core import keys, uploads
from core.db import Job, Upload, engine_for, session_scope, utcnow
from core.settings import Settings
from tests.conftest import ROOT, api_client
from workers.runner import run_job


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def zeros_npz(rows: int, columns: int) -> bytes:
    """An .npz whose X.npy declares and holds rows x columns float64 zeros (a few KB of zip
    per MB of array)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": (rows, columns)}
            np.lib.format.write_array_header_1_0(member, header)
            left = rows * columns * 8
            chunk = bytes(min(left, 8 * 1024 * 1024))
            while left > 0:
                member.write(chunk[:left])
                left -= len(chunk)
        with archive.open("y.npy", "w") as member:
            np.save(member, np.zeros(rows, dtype=np.int64))
    return out.getvalue()


def post(client: TestClient, name: str, content: bytes, headers: dict | None = None) -> Any:
    return client.post(
        "/datasets",
        data={"name": name},
        files={"file": ("data.npz", content)},
        headers=headers or {},
    )


def detail(response: Any, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    (error,) = response.json()["detail"]
    return error


def blobs(features: int, n: int = 60, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, features)) + 3.0 * y[:, None]
    return npz(X=x.astype(np.float32), y=y)


@pytest.fixture
def keyed(db_settings: Settings) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """The API over a fresh database (SQLite, then PostgreSQL) with keys alice, bob, carol."""
    made = {}
    with session_scope(db_settings.database_url) as session:
        for name in ("alice", "bob", "carol"):
            made[name] = {"Authorization": f"Bearer {keys.create(session, name)}"}
    with api_client(database_url=db_settings.database_url) as client:
        yield client, made


def test_an_npz_over_the_owners_quota_is_refused_before_it_is_decompressed(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """The quota was checked after decompressing (the API grew by GBs for a 1 MB file)."""
    quota = {"database_url": settings.database_url, "max_upload_bytes_per_owner": 3_000_000}
    with api_client(**quota) as client:
        assert post(client, "quota-first", zeros_npz(1_000, 200)).status_code == 201  # 1.6 MB
        inflated = []  # bytes read out of zip members
        read = zipfile.ZipExtFile.read
        monkeypatch.setattr(
            zipfile.ZipExtFile, "read", lambda self, n=-1: inflated.append(r := read(self, n)) or r
        )
        error = detail(post(client, "quota-second", zeros_npz(1_000, 200)), 413)
        assert error["field"] == "file" and "per owner" in error["message"], error
        assert sum(map(len, inflated)) < 1_000  # the headers of X and y only
        error = detail(post(client, "quota-third", zeros_npz(200_000, 1)), 413)
        assert "per owner" in error["message"]
        assert sum(map(len, inflated)) < 1_000
        monkeypatch.undo()
        assert post(client, "quota-fourth", zeros_npz(100, 100)).status_code == 201  # 80 KB


def test_object_arrays_are_refused_by_their_header() -> None:
    content = npz(X=np.array([[{"a": 1}]] * 20, dtype=object), y=np.zeros(20, dtype=int))
    with pytest.raises(uploads.UploadError, match="only numeric arrays") as caught:
        uploads.check_archive(content, 10**9)
    assert caught.value.field == "file"


def test_an_upload_holds_no_write_lock_while_it_is_checked_and_compressed(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """A job's heartbeat (another connection's write) failed with "database is locked" while
    an upload was read and checked: the request's write transaction was open all along."""
    with api_client(database_url=settings.database_url) as client:
        database = engine_for(settings.database_url).url.database
        written = []
        parse = uploads.parse_npz

        def heartbeat_meanwhile(*args: Any, **kwargs: Any) -> Any:
            prepared = parse(*args, **kwargs)
            other = sqlite3.connect(database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # no wait: fails while a writer holds the lock
                other.execute("UPDATE jobs SET updated_at = updated_at WHERE id = 'none'")
                other.execute("COMMIT")
                written.append(True)
            finally:
                other.close()
            return prepared

        monkeypatch.setattr(uploads, "parse_npz", heartbeat_meanwhile)
        response = post(client, "locked", zeros_npz(2_000, 100))
        assert response.status_code == 201, response.text
        assert written == [True]


def test_listing_and_admission_never_read_the_arrays(db_settings: Settings) -> None:
    """GET /datasets read every stored upload's arrays (37-72 s, 4-5 GB after a large one)."""
    statements: list[str] = []
    with api_client(database_url=db_settings.database_url) as client:
        assert post(client, "listed", blobs(5)).status_code == 201
        engine = engine_for(db_settings.database_url)

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        try:
            names = {d["name"] for d in client.get("/datasets").json()["items"]}
            job = client.post("/jobs", json={"family": "mlp", "dataset": {"name": "upload:listed"}})
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert "upload:listed" in names and job.status_code == 202, job.text
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert any("uploads" in s for s in reads)
    touching = [s for s in reads if "upload_blobs" in s or "uploads.data" in s]
    assert not touching, touching


def test_a_stored_upload_is_compressed_with_its_size_and_sha256(db_settings: Settings) -> None:
    from core.db import UploadBlob

    with api_client(database_url=db_settings.database_url) as client:
        content = zeros_npz(2_000, 100)  # 1.6 MB of arrays
        assert post(client, "zeros", content).status_code == 201
    with session_scope(db_settings.database_url) as session:
        row = session.scalar(select(Upload).where(Upload.name == "upload:zeros"))
        data = session.scalar(select(UploadBlob.data).where(UploadBlob.upload_id == row.id))
    assert row.size_bytes >= 1_600_000 and row.stored_bytes == len(data) < 100_000
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    info, arrays = uploads.read(db_settings.database_url, "upload:zeros", None)
    assert arrays["X"].shape == (2_000, 100) and not arrays["X"].any()


def test_upload_names_are_per_owner(keyed: Any, db_settings: Settings) -> None:
    """One namespace before: bob's `foo` was a 409 that told him alice had one."""
    client, key = keyed
    assert post(client, "foo", blobs(5), key["alice"]).status_code == 201
    assert post(client, "foo", blobs(7, seed=1), key["bob"]).status_code == 201
    error = detail(post(client, "foo", blobs(5), key["alice"]), 409)
    assert error["field"] == "name"

    def shapes(who: str) -> list[list[int]]:
        items = client.get("/datasets", headers=key[who]).json()["items"]
        return [d["input_shape"] for d in items if d["name"] == "upload:foo"]

    assert shapes("alice") == [[5]] and shapes("bob") == [[7]] and shapes("carol") == []

    document = {"family": "mlp", "dataset": {"name": "upload:foo"}, "train": {"epochs": 1}}
    refused = client.post("/jobs", json=document, headers=key["carol"])
    assert detail(refused, 422)["field"] == "dataset.name"
    trained = {}
    for who in ("alice", "bob"):
        job = client.post("/jobs", json=document, headers=key[who])
        assert job.status_code == 202, job.text
        assert run_job(job.json()["id"], settings=db_settings, worker="w") == "succeeded"
        with session_scope(db_settings.database_url) as session:
            trained[who] = session.get(Job, job.json()["id"]).data_info["input_shape"]
    assert trained == {"alice": [5], "bob": [7]}


def test_the_migration_moves_and_compresses_stored_uploads(db_settings: Settings) -> None:
    from core.db import UploadBlob

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = db_settings.database_url
    config.attributes["configure_logger"] = False
    command.downgrade(config, "0009")
    engine_for(db_settings.database_url).dispose()
    old = npz(X=np.zeros((500, 50), dtype=np.float32), y=np.arange(500) % 3)
    info = {"name": "upload:old", "kind": "classification", "input_shape": [50]}
    before = table(
        "uploads",
        *(column(name) for name in ("name", "kind", "size_bytes", "owner_id", "created_at")),
        column("info", JSON),
        column("data", LargeBinary),
    )
    with engine_for(db_settings.database_url).begin() as connection:
        connection.execute(
            insert(before).values(
                name="upload:old",
                kind="classification",
                info=info,
                data=old,
                size_bytes=len(old),
                owner_id="alice",
                created_at=utcnow(),
            )
        )
    command.upgrade(config, "head")
    engine_for(db_settings.database_url).dispose()
    with session_scope(db_settings.database_url) as session:
        row = session.scalar(select(Upload).where(Upload.name == "upload:old"))
        data = session.scalar(select(UploadBlob.data).where(UploadBlob.upload_id == row.id))
        assert row.stored_bytes == len(data) < len(old) // 10
        assert row.sha256 == hashlib.sha256(data).hexdigest() and row.size_bytes == len(old)
        session.execute(
            insert(Upload).values(
                name="upload:old",
                kind="regression",
                info=info,
                size_bytes=1,
                stored_bytes=1,
                sha256="0" * 64,
                owner_id="bob",
            )
        )  # names are per owner now
    with np.load(io.BytesIO(data)) as archive:
        assert archive["X"].shape == (500, 50) and list(archive["y"][:4]) == [0, 1, 2, 0]
    with session_scope(db_settings.database_url) as session:
        session.execute(text("DELETE FROM uploads WHERE owner_id = 'bob'"))
    command.downgrade(config, "0009")
    engine_for(db_settings.database_url).dispose()
    with engine_for(db_settings.database_url).connect() as connection:
        back = connection.execute(text("SELECT data FROM uploads")).scalar_one()
    with np.load(io.BytesIO(back)) as archive:
        assert archive["X"].shape == (500, 50)
    command.upgrade(config, "head")
    engine_for(db_settings.database_url).dispose()


def test_a_float64_upload_is_never_held_whole() -> None:
    """X is converted to float32 a few rows at a time: the 16,000 x 8,192 float64 zeros took
    the API from 1.1 to 2.7 GB (the float64 array and its float32 copy side by side)."""
    content = zeros_npz(5_000, 2_000)  # 80 MB of float64 once decompressed
    declared = sum(m.file_size for m in zipfile.ZipFile(io.BytesIO(content)).infolist())
    tracemalloc.start()
    try:
        uploads.parse_npz(content, "wide", None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.8 * declared, f"{peak:,} bytes at the peak for {declared:,} declared"


@pytest.mark.parametrize("order", ["C", "F"])
def test_examples_read_in_chunks_keep_their_values(
    monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    monkeypatch.setattr(uploads, "CHUNK_BYTES", 1_000)
    x = np.asarray(np.random.default_rng(0).normal(size=(50, 4, 5, 3)), dtype=">f8", order=order)
    prepared = uploads.parse_npz(npz(X=x, y=np.arange(50) % 2), "chunks", None)
    with np.load(io.BytesIO(prepared.data)) as archive:
        stored = archive["X"]
    assert stored.dtype == np.float32 and stored.shape == (50, 3, 4, 5)  # channels first
    np.testing.assert_array_equal(stored, x.astype(np.float32).transpose(0, 3, 1, 2))
