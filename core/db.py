"""The SQL schema (jobs, metrics, checkpoints) and the engine/session factory.

The schema is created by Alembic (migrations/); `metadata` here is what the migrations mirror.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    literal_column,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite keeps no zone; stored naive in UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


class Sweep(Base):
    """A grid (or random search) of job documents x repeats; its jobs carry its id."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the sweep document as given
    cells: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # path -> value, per cell
    # Its cells' families in the order of its cells, joined by commas (core.sweeps).
    family: Mapped[str] = mapped_column(String(255))
    owner_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Job(Base):
    __tablename__ = "jobs"
    # GET /jobs, newest first: unfiltered, or filtered by status, family or owner (any of
    # them). A page is a walk down one of these from the cursor (an offset skips index entries,
    # not rows); the other filter columns in each key let a second filter, and a count, read
    # the index alone. The single-column indexes stay for counts and lookups: on PostgreSQL
    # they are deduplicated, a fraction of the size, so a count over one is faster.
    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_listing", "status", "created_at", "id", "family", "owner_id"),
        Index("ix_jobs_family_listing", "family", "created_at", "id", "status", "owner_id"),
        Index("ix_jobs_owner_id_listing", "owner_id", "created_at", "id", "status", "family"),
        # A worker looks for the queued jobs it may train in one stack with the one it took.
        Index("ix_jobs_stack_key", "stack_key", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Per-user ownership arrives with API keys; jobs made before then have no owner.
    owner_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    n_params: Mapped[int | None] = mapped_column(Integer, default=None)
    # Jobs with the same key may train as one stack (core.spec.JobSpecBase.stack_key); None:
    # the job trains alone.
    stack_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # What serving needs to rebuild the model without reloading the dataset.
    data_info: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # What reproduces it: versions, the dataset's content hash, every seed (set when it runs).
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    rerun_of: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    # A sweep's job: its cell (index into the sweep's cells) and repeat; sent by core.sweeps.
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), index=True, default=None
    )
    sweep_cell: Mapped[int | None] = mapped_column(Integer, default=None)
    sweep_repeat: Mapped[int | None] = mapped_column(Integer, default=None)
    # The owner's name, labels and words for it (PATCH /jobs/{id}); None: none yet.
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    tags: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The lease: the worker holding lease_token owns the job until lease_expires_at.
    lease_token: Mapped[str | None] = mapped_column(String(64), default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Metric(Base):
    """One row per (job, fold, epoch): metrics by name, wall time, and the attempt that ran it.

    `fold` is 0 for a job without cross-validation.
    """

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "fold", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    fold: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    epoch: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    """A safetensors blob per (job, kind): `latest` to resume from, `final` to serve."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL and a busy timeout, and BEGIN IMMEDIATE so writers queue instead of failing on upgrade
    (but a read-only session's transactions begin deferred: see sessionmaker_for).

    pysqlite's own transaction handling is switched off, as the SQLAlchemy docs recommend.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_pragmas(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


@lru_cache
def engine_for(url: str) -> Engine:
    return make_engine(url)


READ_ONLY = "annlab_read_only"  # an execution option of the read-only sessions' engine


@lru_cache
def sessionmaker_for(url: str, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on `url`. A read-only session's transactions, on SQLite, begin deferred: they
    take no write lock, so readers never queue behind each other or behind a writer (WAL gives
    each its snapshot); a write in one could fail at once with "database is locked" instead of
    queueing, so it is for what only reads. On PostgreSQL both are the same."""
    engine = engine_for(url)
    if read_only:
        engine = engine.execution_options(**{READ_ONLY: True})
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with sessionmaker_for(url)() as session, session.begin():
        yield session


def migrate(url: str) -> None:
    """Apply the Alembic migrations of this checkout to `url`, as `alembic upgrade head` does
    (for the tests and benchmarks, which make their own databases)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(Path(__file__).resolve().parent.parent / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


class Upload(Base):
    """A dataset a user uploaded: its facts (a DatasetInfo) and sizes; its arrays are in
    UploadBlob, which listing and admission never read. Names are unique per owner."""

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16))
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)  # the arrays' bytes, uncompressed
    stored_bytes: Mapped[int] = mapped_column(Integer)  # the blob's bytes
    sha256: Mapped[str] = mapped_column(String(64))  # the blob's
    owner_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# One name per owner; the anonymous local user (owner NULL) is an owner too.
Index(
    "uq_uploads_owner_id_name",
    func.coalesce(Upload.owner_id, literal_column("''")),
    Upload.name,
    unique=True,
)


class UploadBlob(Base):
    """An upload's arrays as a compressed .npz (np.savez_compressed)."""

    __tablename__ = "upload_blobs"

    upload_id: Mapped[int] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Artifact(Base):
    """Tensors kept with an epoch's metric row (a GAN's samples at the epochs the job names),
    written in the same transaction, as an annlab checkpoint blob (safetensors)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "fold", "epoch", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    fold: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeatureNet(Base):
    """The small classifier whose features measure sample quality, trained once per dataset
    (keyed by dataset and recipe version) and shared by every worker."""

    __tablename__ = "feature_nets"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeatureNetTraining(Base):
    """A feature net's training (`training`) or its end (`ready`, the net in feature_nets): one
    worker at a time trains a key, under a lease it renews as it steps; an expired lease may be
    taken over by another (core/feature_nets.py)."""

    __tablename__ = "feature_net_trainings"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # training, ready
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    lease_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class IdempotencyKey(Base):
    """A client's Idempotency-Key on a POST that creates something, and what it created."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "jobs", "sweeps"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)  # owner/key
    request_sha256: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key: only its sha256 is kept. Its name is the owner of what it creates."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
