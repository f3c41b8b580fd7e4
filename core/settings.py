"""One settings object, read once from the environment (upper-case names)."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_KEY_LENGTH = 24
SINGLE_THREAD_FLOPS = 100_000_000


class Settings(BaseSettings):
    # Errors name the setting but never print what it was given (a key, a URL's password).
    model_config = SettingsConfigDict(
        env_prefix="ANNLAB_", extra="ignore", hide_input_in_errors=True, populate_by_name=True
    )

    environment: Literal["development", "production"] = "development"
    # Where the embedded database, broker and data live.
    home: Path = Path(".annlab")
    # Either may hold a password: kept out of the settings' repr.
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "ANNLAB_DATABASE_URL"), repr=False
    )
    broker_url: str | None = Field(
        None, validation_alias=AliasChoices("BROKER_URL", "ANNLAB_BROKER_URL"), repr=False
    )
    queue: str = "annlab"
    # Logs: one JSON object per line (with the job id) for machines, or "text" for people.
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The embedded (SQLAlchemy) broker's polling interval: the wait a job may have to start.
    broker_poll_seconds: float = Field(0.02, gt=0, le=10)
    data_dir: Path | None = None
    # Debian's dataset-fashion-mnist package installs the idx files here.
    fashion_mnist_system_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    allow_download: bool = False

    # Worker leases: a job whose lease is not renewed for lease_seconds is taken up again.
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(2.0, gt=0)
    reaper_seconds: float = Field(2.0, gt=0)
    # A queued job whose message may have been lost (broker restart) is re-sent after this long.
    redispatch_seconds: float = Field(600.0, gt=0)
    # A job not marked sent for this long (its sender died, or the broker was down) is sent by
    # the reaper, at every round until the broker takes it.
    unsent_seconds: float = Field(3.0, gt=0)
    # Mid-epoch checkpoints at most this far apart.
    checkpoint_seconds: float = Field(60.0, gt=0)
    # Ended epochs' rows are written together with the checkpoint after them at most this far
    # apart (and at every fold's end, stop, cancel and failure); 0: at every epoch's end.
    record_seconds: float = Field(1.0, ge=0)
    max_attempts: int = Field(3, ge=1)
    # Sweeps: how many of a sweep's jobs may wait in the broker at once (core/sweeps.py), and
    # how many jobs one sweep may have.
    sweep_window: int = Field(2, ge=1)
    max_sweep_jobs: int = Field(1000, ge=1)
    model_cache_size: int = Field(8, ge=1)
    # Loaded dataset splits a process keeps for its next jobs (core/datasets.py); 0: none.
    dataset_cache_bytes: int = Field(2 * 1024**3, ge=0)
    # Dynamic batching of predict calls (api/serving.py): calls for the same model that arrive
    # within batch_window_ms of the first waiting one run as one forward pass of at most
    # max_batch inputs. 0 ms: every call runs alone.
    batch_window_ms: float = Field(2.0, ge=0, le=1000)
    max_batch: int = Field(64, ge=1, le=10_000)
    # Predict calls to a cached model answered below the framework (api/fastpath.py); false
    # sends every call through the FastAPI route (the same answers, more CPU per call).
    fast_predict: bool = True
    # How long the API trusts what it found for an API key (api/auth.py): a revoked key stops
    # working within this many seconds. 0: every request looks its key up.
    key_cache_seconds: float = Field(1.0, ge=0, le=60)
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # What an uploaded .npz may hold once decompressed (checked before decompressing); the API
    # holds about 1.5x this while it checks and compresses an upload.
    max_upload_uncompressed_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # Any other request body (a predict call with 10,000 Fashion-MNIST images is ~50 MB).
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Memory budgets, in bytes or with a unit ("4GiB"). A worker's: what one job may hold at
    # once in any phase (training step, evaluation, sampling, quality scoring; estimated),
    # checked at submission and again in the worker. The API's: what its verb calls may hold
    # at once, all of them together, besides the cached models' weights.
    worker_memory_bytes: ByteSize = Field(
        ByteSize(4 * 1024**3),
        ge=1024**2,
        validation_alias=AliasChoices("ANNLAB_WORKER_MEMORY", "ANNLAB_WORKER_MEMORY_BYTES"),
    )
    api_memory_bytes: ByteSize = Field(
        ByteSize(2 * 1024**3),
        ge=1024**2,
        validation_alias=AliasChoices("ANNLAB_API_MEMORY", "ANNLAB_API_MEMORY_BYTES"),
    )
    # Per owner (API key): jobs waiting at once, and bytes of uploads kept.
    # A deployment's first key: the API makes sure an admin key "admin" with this value exists
    # (a container cannot run `annlab key create` before its API starts).
    admin_key: SecretStr | None = None
    # What a Prometheus scraper sends (a bearer token) to read GET /metrics without an admin
    # key; unset, /metrics needs an admin key.
    metrics_key: SecretStr | None = None
    max_queued_jobs: int = Field(1000, ge=1)
    max_running_jobs: int = Field(100, ge=1)  # a worker leaves an owner's job beyond it queued
    max_upload_bytes_per_owner: int = Field(1024**3, ge=1024)
    # Torch's threads in a worker process; unset: the cores this process may use divided by
    # workers_per_machine (the workers that share those cores).
    torch_threads: int | None = Field(None, ge=1)
    workers_per_machine: int = Field(1, ge=1)
    # A job whose forward pass of one training batch counts fewer FLOPs than this trains on one
    # thread: on a 2-core machine, two threads were no faster for a CNN at 8e7 FLOPs per batch
    # and several times slower for smaller models, or on a loaded machine. 0: never.
    single_thread_flops: int = Field(SINGLE_THREAD_FLOPS, ge=0)
    # Jobs a worker trains as one stack at most (models/stack.py): the one it was sent and
    # queued jobs with the same stack key. 1: every job trains alone.
    stack_max: int = Field(64, ge=1, le=1024)

    @field_validator("admin_key", "metrics_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"a key must be {MIN_KEY_LENGTH} characters or more")
        return key

    @model_validator(mode="after")
    def _fill_and_refuse_unsafe(self) -> "Settings":
        if self.environment == "production":
            missing = [n for n in ("database_url", "broker_url") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    f"ANNLAB_ENVIRONMENT=production needs {', '.join(m.upper() for m in missing)}; "
                    "the embedded SQLite defaults are for development only"
                )
            if self.database_url.startswith("sqlite"):
                raise ValueError("DATABASE_URL must not be SQLite in production")
        self.home = self.home.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'annlab.db'}"
        if self.broker_url is None:
            self.broker_url = f"sqla+sqlite:///{self.home / 'broker.db'}"
        if self.data_dir is None:
            self.data_dir = self.home / "data"
        return self

    def worker_threads(self) -> int:
        """Torch's threads for a worker: torch_threads, else its share of the cores."""
        if self.torch_threads is not None:
            return self.torch_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // self.workers_per_machine)

    def redact(self, text: str) -> str:
        """`text` with every secret of these settings (the keys, the URLs' passwords) replaced
        by ***, for a message that quotes what a library said about a connection."""
        secrets = [k.get_secret_value() for k in (self.admin_key, self.metrics_key) if k]
        for url in (self.database_url, self.broker_url):
            try:
                password = urlsplit(url or "").password
            except ValueError:
                password = None
            if password:
                secrets += [password, unquote(password)]
        for secret in sorted(set(secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def ensure_dirs(self) -> None:
        """ANNLAB_HOME and its data folder, readable by this user alone (0700), and the
        embedded database and broker files created 0600 before SQLite opens them (SQLite
        gives its -wal and -shm files the database file's mode)."""
        for folder in (self.home, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if folder.stat().st_uid == os.getuid():
                folder.chmod(0o700)
        for url in (self.database_url, self.broker_url):
            path = sqlite_path(url)
            if path is not None and path.parent.is_dir():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                if path.stat().st_uid == os.getuid():
                    path.chmod(0o600)


def sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite URL (sqlite:///..., sqla+sqlite:///...), else None."""
    if url is None or "sqlite:///" not in url or ":memory:" in url:
        return None
    return Path(url.split("sqlite:///", 1)[1].split("?", 1)[0])


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.ensure_dirs()
    return settings
