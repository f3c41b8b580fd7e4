"""GET /jobs at scale: keyset (cursor) pagination besides offset, on SQLite and PostgreSQL, and
the migration that gives the listing its indexes."""

import base64
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import insert, inspect

from core import keys
from core.db import Job, engine_for, session_scope, utcnow
from core.settings import Settings
from tests.conftest import ROOT, api_client

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def add_jobs(settings: Settings, n: int, *, newest: bool = False) -> list[dict[str, Any]]:
    """n jobs in a mix of families, statuses and owners, an hour apart going back from now
    (or from now on, with `newest`); every third shares the created_at of the one before, so
    the id has to break ties."""
    now = utcnow()
    rows = []
    for k in range(n):
        hours = (k - (k % 3 == 1)) * (1 if newest else -1)  # k = 1, 4, 7...: as k - 1
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "family": ("mlp", "cnn")[k % 2],
                "status": STATUSES[k % 5],
                "spec": {"family": ("mlp", "cnn")[k % 2], "dataset": {"name": "digits"}},
                "owner_id": ("alice", None)[k % 4 == 0],
                "progress": {"epoch": 0},
                "cancel_requested": False,
                "attempts": 0,
                "created_at": now + timedelta(hours=hours, seconds=1 if newest else 0),
                "updated_at": now,
            }
        )
    with session_scope(settings.database_url) as session:
        session.execute(insert(Job), rows)
    return rows


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)]


@pytest.fixture
def keyed(db_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """The app over a fresh database of either backend, and headers with an admin key and
    with alice's (a user's) key."""
    with session_scope(db_settings.database_url) as session:
        admin = {"Authorization": f"Bearer {keys.create(session, 'root', admin=True)}"}
        alice = {"Authorization": f"Bearer {keys.create(session, 'alice')}"}
    with api_client(database_url=db_settings.database_url) as client:
        yield client, admin, alice


def walk(client: TestClient, headers: dict, params: dict, during: Any = None) -> list[dict]:
    """Every page by cursor (running `during` after the first); the pages."""
    pages = [client.get("/jobs", params=params, headers=headers).json()]
    if during is not None:
        during()
    while pages[-1]["next_cursor"] is not None:
        cursor = pages[-1]["next_cursor"]
        response = client.get("/jobs", params={**params, "cursor": cursor}, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
    return pages


@pytest.mark.parametrize(
    ("params", "who"),
    [
        ({}, "admin"),
        ({"family": "cnn"}, "admin"),
        ({"status": "queued", "family": "mlp"}, "admin"),
        ({}, "alice"),
        ({"status": "failed"}, "alice"),
    ],
)
def test_a_cursor_walk_gives_every_job_once_newest_first_while_jobs_arrive(
    db_settings: Settings, keyed: Any, params: dict, who: str
) -> None:
    client, admin, alice = keyed
    rows = add_jobs(db_settings, 40)

    def matches(row: dict) -> bool:
        return all(row[k] == v for k, v in params.items()) and (
            who == "admin" or row["owner_id"] == "alice"
        )

    expected = newest_first([r for r in rows if matches(r)])
    headers = admin if who == "admin" else alice
    pages = walk(
        client,
        headers,
        {**params, "limit": 3},
        during=lambda: add_jobs(db_settings, 9, newest=True),  # newer than every page
    )
    seen = [j["id"] for page in pages for j in page["items"]]
    assert seen == expected
    assert all(len(p["items"]) == 3 for p in pages[:-1]) and 0 < len(pages[-1]["items"]) <= 3
    assert pages[0]["total"] == len(expected), "the first page counts"
    assert all(p["total"] is None for p in pages[1:]), "cursor pages do not count by default"
    # The same listing by offset, now, starts with the jobs that arrived meanwhile.
    everything = client.get("/jobs", params={**params, "limit": 200}, headers=headers).json()
    assert everything["total"] == len(everything["items"]) >= len(expected)
    assert [j["id"] for j in everything["items"]][-len(expected) :] == expected
    assert everything["next_cursor"] is None


def test_count_true_counts_a_cursor_page_and_false_skips_the_first(
    db_settings: Settings, keyed: Any
) -> None:
    client, admin, _ = keyed
    add_jobs(db_settings, 10)
    first = client.get("/jobs", params={"limit": 4, "count": False}, headers=admin).json()
    assert first["total"] is None and len(first["items"]) == 4
    params = {"limit": 4, "cursor": first["next_cursor"], "count": True}
    second = client.get("/jobs", params=params, headers=admin).json()
    assert second["total"] == 10 and len(second["items"]) == 4
    # An offset page gives a cursor too: from it, the next page of the same walk.
    by_offset = client.get("/jobs", params={"limit": 4, "offset": 4}, headers=admin).json()
    assert by_offset["items"] == second["items"]
    assert by_offset["next_cursor"] == second["next_cursor"]


def encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        encoded(b"\xff\xfe"),
        encoded(b'{"a": 1}'),
        encoded(b'["2026-01-01T00:00:00+00:00"]'),
        encoded(b'["yesterday", "abc"]'),
        encoded(b'["2026-01-01T00:00:00", "abc"]'),  # no time zone
        encoded(b'["2026-01-01T00:00:00+00:00", 5]'),
        encoded(b'["0001-01-01T00:00:00+05:00", "abc"]'),  # before year 1 in UTC
        "x" * 201,
    ],
)
def test_a_bad_cursor_is_a_422_naming_cursor(cursor: str) -> None:
    with api_client() as client:
        response = client.get("/jobs", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == ["cursor"]


def test_the_listing_migration_applies_and_reverts(db_settings: Settings) -> None:
    """The migrated database has the indexes core.db declares, on both backends; downgrading
    to 0008 and upgrading again works."""

    def indexes() -> dict[str, list[str]]:
        found = inspect(engine_for(db_settings.database_url)).get_indexes("jobs")
        return {ix["name"]: ix["column_names"] for ix in found}

    declared = {ix.name: [c.name for c in ix.columns] for ix in Job.__table__.indexes}
    assert indexes() == declared
    assert declared["ix_jobs_status_listing"][:3] == ["status", "created_at", "id"]

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = db_settings.database_url
    config.attributes["configure_logger"] = False
    command.downgrade(config, "0008")
    engine_for(db_settings.database_url).dispose()
    assert "ix_jobs_created_at" in indexes() and "ix_jobs_family_listing" not in indexes()
    command.upgrade(config, "head")
    engine_for(db_settings.database_url).dispose()
    assert indexes() == declared
