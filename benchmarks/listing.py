"""GET /jobs at scale: fills a scratch database with 100,000 jobs (and 100 sweeps of 20 of them)
and times the listing through the real app (FastAPI's TestClient: routing, auth, the query,
serialization), on SQLite and on a scratch PostgreSQL database (127.0.0.1:5432, or
ANNLAB_BENCH_PG; skipped if it does not answer). The migrations run first, so the indexes are
the ones a deployment has. Prints one line per case:

    listing <backend> <case> p50 <ms> p99 <ms>

Cases: no filter; each filter (status, family, owner: a non-admin key sees only its jobs) and
two together, first pages (which count `total`); a deep offset; cursor pages as deep (if the
API has cursors); GET /sweeps. PostgreSQL is vacuumed after the insert, as autovacuum soon
would (without it, counts read the table instead of an index: see the README).

Run: .venv/bin/python benchmarks/listing.py [--jobs 100000] [--repeats 30]
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["ANNLAB_HOME"] = tempfile.mkdtemp(prefix="annlab-bench-")
for name in ("DATABASE_URL", "BROKER_URL", "ANNLAB_DATABASE_URL", "ANNLAB_BROKER_URL"):
    os.environ.pop(name, None)

from sqlalchemy import insert  # noqa: E402

from core import keys  # noqa: E402
from core.db import Job, Sweep, engine_for, migrate, session_scope  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402
from models.specs import parse_job_spec  # noqa: E402

PG_ADMIN_URL = os.environ.get("ANNLAB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
STATUSES = {"succeeded": 60, "failed": 12, "cancelled": 10, "queued": 12, "running": 6}
FAMILIES = {"mlp": 35, "cnn": 25, "lstm": 10, "vit": 4, "ae": 8, "vae": 6, "gan": 6, "rbm": 6}
OWNERS = [None] + [f"user{k}" for k in range(20)]


def fill(url: str, n_jobs: int) -> None:
    """n_jobs jobs over 90 days, newest last, in a realistic mix; 100 sweeps of 20 jobs."""
    rng = random.Random(0)
    specs = {
        f: parse_job_spec({"family": f, "dataset": {"name": "digits"}}).model_dump(mode="json")
        for f in FAMILIES
    }
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=90) / n_jobs
    sweeps = [
        {
            "id": uuid.uuid4().hex,
            "spec": {"base": specs["mlp"], "grid": {"train.optimizer.lr": [0.1, 0.01]}},
            "cells": [{"train.optimizer.lr": lr} for lr in (0.1, 0.01)],
            "family": "mlp",
            "owner_id": None,
            "cancel_requested": False,
            "created_at": start + k * timedelta(days=0.9),
        }
        for k in range(100)
    ]
    rows = []
    for k in range(n_jobs):
        status = rng.choices(list(STATUSES), weights=list(STATUSES.values()))[0]
        family = rng.choices(list(FAMILIES), weights=list(FAMILIES.values()))[0]
        created = start + k * step
        ran = status in ("succeeded", "failed", "running")
        sweep = sweeps[k % 100] if k < 2000 else None
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "family": "mlp" if sweep else family,
                "status": status,
                "spec": specs["mlp" if sweep else family],
                "owner_id": rng.choice(OWNERS),
                "n_params": 10_000 if ran else None,
                "progress": {"epoch": 20 if ran else 0, "epochs": 20, "percent": 100.0 * ran},
                "result": {"test_accuracy": rng.random(), "test_loss": rng.random()}
                if status == "succeeded"
                else None,
                "error": "training diverged" if status == "failed" else None,
                "provenance": {"torch": "2.14.1", "device": "cpu", "seed": 0} if ran else None,
                "cancel_requested": status == "cancelled",
                "attempts": 1 if ran else 0,
                "sweep_id": sweep["id"] if sweep else None,
                "sweep_cell": (k // 100) % 2 if sweep else None,
                "sweep_repeat": k // 200 if sweep else None,
                "created_at": created,
                "started_at": created + timedelta(seconds=1) if ran else None,
                "finished_at": created + timedelta(seconds=60) if ran else None,
                "updated_at": created,
            }
        )
    with session_scope(url) as session:
        session.execute(insert(Sweep), sweeps)
        for i in range(0, n_jobs, 5000):
            session.execute(insert(Job), rows[i : i + 5000])


def timed(client, path: str, params: dict, repeats: int, headers: dict) -> tuple[float, float]:
    times = []
    for _ in range(repeats + 2):
        t = time.perf_counter()
        response = client.get(path, params=params, headers=headers)
        times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, response.text
    times = sorted(times[2:])  # the first two warm the caches
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def run(backend: str, url: str, n_jobs: int, repeats: int) -> None:
    from fastapi.testclient import TestClient

    from api.main import app

    migrate(url)
    began = time.perf_counter()
    fill(url, n_jobs)
    filled = time.perf_counter() - began
    if url.startswith("postgresql"):  # what autovacuum does soon after a bulk insert
        with engine_for(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE jobs")
    with session_scope(url) as session:
        admin = {"Authorization": f"Bearer {keys.create(session, 'bench-admin', admin=True)}"}
        owner = {"Authorization": f"Bearer {keys.create(session, 'user3')}"}
    settings = Settings(home=get_settings().home, database_url=url, log_level="WARNING")
    app.dependency_overrides[get_settings] = lambda: settings
    print(f"listing {backend}: {n_jobs} jobs inserted in {filled:.1f} s", flush=True)
    try:
        with TestClient(app) as client:
            deep = int(n_jobs * 0.9)
            cases = [
                ("no filter", {}, admin),
                ("status=running", {"status": "running"}, admin),
                ("status=succeeded", {"status": "succeeded"}, admin),
                ("family=mlp", {"family": "mlp"}, admin),
                ("family=mlp count=false", {"family": "mlp", "count": False}, admin),
                ("family=vit", {"family": "vit"}, admin),
                ("owner (a user's key)", {}, owner),
                ("owner+status=failed", {"status": "failed"}, owner),
                ("status+family", {"status": "succeeded", "family": "cnn"}, admin),
                (f"offset={deep}", {"offset": deep}, admin),
            ]
            page = client.get("/jobs", params={"offset": deep - 50}, headers=admin).json()
            if page.get("next_cursor"):  # an API with cursors
                cases.append((f"cursor at {deep}", {"cursor": page["next_cursor"]}, admin))
                params = {"family": "mlp", "offset": int(deep * 0.36) - 50}
                page = client.get("/jobs", params=params, headers=admin).json()
                params = {"family": "mlp", "cursor": page["next_cursor"]}
                cases.append(("family=mlp, cursor deep", params, admin))
            for name, params, headers in cases:
                p50, p99 = timed(client, "/jobs", params, repeats, headers)
                print(f"listing {backend} {name:24s} p50 {p50:6.1f} ms p99 {p99:6.1f} ms")
            p50, p99 = timed(client, "/sweeps", {}, repeats, admin)
            print(
                f"listing {backend} {'GET /sweeps (50 of 100)':24s} p50 {p50:6.1f} ms "
                f"p99 {p99:6.1f} ms",
                flush=True,
            )
    finally:
        app.dependency_overrides.pop(get_settings, None)
        engine_for(url).dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    run(
        "sqlite",
        f"sqlite:///{tempfile.mkdtemp(prefix='annlab-bench-')}/jobs.db",
        args.jobs,
        args.repeats,
    )

    import psycopg

    name = f"annlab_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"listing postgresql: skipped, {PG_ADMIN_URL} does not answer: {exc}")
        return
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        run("postgresql", f"{base}/{name}", args.jobs, args.repeats)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
