"""A name, tags and a note on a job (PATCH /jobs/{id}, migration 0014), and the listing's
filters: dataset, sweep, tag and words in the name, id, tags or note."""

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from core import keys
from core.db import engine_for, migrate, session_scope
from core.settings import Settings
from tests.conftest import ROOT, api_client


@pytest.fixture
def owners(db_settings: Settings) -> Iterator[tuple[TestClient, dict, dict]]:
    """The app over a database of its own, and the headers of two owners' keys."""
    migrate(db_settings.database_url)
    with session_scope(db_settings.database_url) as session:
        alice, bob = keys.create(session, "alice"), keys.create(session, "bob")
    with api_client(database_url=db_settings.database_url) as client:
        yield client, {"X-API-Key": alice}, {"Authorization": f"Bearer {bob}"}


def submit(client: TestClient, headers: dict, dataset: str = "digits") -> str:
    answer = client.post(
        "/jobs", json={"family": "mlp", "dataset": {"name": dataset}}, headers=headers
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def listed(client: TestClient, headers: dict, **params: str) -> list[str]:
    answer = client.get("/jobs", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json()["items"]]


def test_an_owner_tags_and_notes_a_job_and_finds_it(owners) -> None:
    client, alice, bob = owners
    first, second = submit(client, alice), submit(client, alice, "function1d")
    answer = client.patch(
        f"/jobs/{first}",
        json={"tags": ["baseline", "lr-sweep", "baseline"], "note": "The Adam run for Figure 2"},
        headers=alice,
    )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert (job["tags"], job["note"]) == (["baseline", "lr-sweep"], "The Adam run for Figure 2")
    assert client.get(f"/jobs/{second}", headers=alice).json()["tags"] == []
    # Only the fields given change.
    kept = client.patch(f"/jobs/{first}", json={"note": None}, headers=alice).json()
    assert (kept["tags"], kept["note"]) == (["baseline", "lr-sweep"], None)

    assert listed(client, alice, tag="baseline") == [first]
    assert listed(client, alice, tag="base") == []  # a whole tag, not a part
    assert listed(client, alice, q="LR-SW") == [first]  # any case, in tags
    client.patch(f"/jobs/{second}", json={"note": "100% of the data_set"}, headers=alice)
    assert listed(client, alice, q="100%") == [second]  # wildcards taken literally
    assert listed(client, alice, q="d_ta") == []  # "_" is no wildcard: no "data" found
    assert listed(client, alice, q=second[:10]) == [second]  # in the id
    assert listed(client, alice, dataset="function1d") == [second]
    assert listed(client, alice, dataset="digits", tag="baseline") == [first]
    assert listed(client, alice, sweep="nope") == []
    named = client.patch(f"/jobs/{second}", json={"name": "Adam, wide"}, headers=alice).json()
    assert named["name"] == "Adam, wide" and named["note"] == "100% of the data_set"
    assert listed(client, alice, q="adam, W") == [second]  # in the name
    cleared = client.patch(f"/jobs/{second}", json={"name": None}, headers=alice).json()
    assert cleared["name"] is None

    # Another owner's job is not there for bob, to change or to find.
    assert client.patch(f"/jobs/{first}", json={"tags": ["x"]}, headers=bob).status_code == 404
    assert listed(client, bob, tag="baseline") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": ["has space"]}, "tags.0"),
        ({"tags": [""]}, "tags.0"),
        ({"tags": ["t"] * 33}, "tags"),
        ({"note": "n" * 10_001}, "note"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"title": "x"}, "title"),
    ],
)
def test_bad_tags_and_notes_are_a_422_naming_the_field(owners, body: dict, field: str) -> None:
    client, alice, _ = owners
    job_id = submit(client, alice)
    answer = client.patch(f"/jobs/{job_id}", json=body, headers=alice)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["detail"]] == [field]
    assert client.get("/jobs", params={"tag": "has space"}, headers=alice).status_code == 422


def test_the_tags_migration_applies_and_reverts(db_settings: Settings) -> None:
    migrate(db_settings.database_url)

    def columns() -> set[str]:
        engine_for(db_settings.database_url).dispose()
        return {
            c["name"] for c in inspect(engine_for(db_settings.database_url)).get_columns("jobs")
        }

    assert {"name", "tags", "note"} <= columns()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = db_settings.database_url
    config.attributes["configure_logger"] = False
    command.downgrade(config, "0013")
    assert not {"name", "tags", "note"} & columns()
    command.upgrade(config, "head")
    assert {"name", "tags", "note"} <= columns()
