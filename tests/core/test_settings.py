"""Settings never print a secret: not in a refusal to start, not in their repr, not in a
message that quotes a library's error about a connection."""

import pytest
from pydantic import ValidationError

from core.settings import Settings

KEY = "k3y-" + "s" * 12  # too short for an admin key
PASSWORD = "pa55-w0rd-secret"
PRODUCTION = {
    "ANNLAB_ENVIRONMENT": "production",
    "DATABASE_URL": f"postgresql+psycopg://annlab:{PASSWORD}@db:5432/annlab",
    "BROKER_URL": f"redis://:{PASSWORD}@redis:6379/0",
}


def refusal(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    return str(refused.value)


def test_a_short_admin_key_is_refused_without_being_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, {**PRODUCTION, "ANNLAB_ADMIN_KEY": KEY})
    assert "admin_key" in message and "24 characters" in message
    assert KEY not in message and PASSWORD not in message


def test_a_refused_production_setup_prints_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    long_key = KEY * 3
    message = refusal(
        monkeypatch,
        {**PRODUCTION, "DATABASE_URL": "sqlite:///x.db", "ANNLAB_ADMIN_KEY": long_key},
    )
    assert "SQLite" in message
    for secret in (long_key, long_key[-20:], PASSWORD):
        assert secret not in message


def test_secrets_stay_out_of_repr_and_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    settings = Settings(admin_key=KEY * 2, metrics_key=KEY * 3)
    shown = repr(settings) + str(settings)
    for secret in (KEY * 2, KEY * 3, PASSWORD):
        assert secret not in shown
    said = f"could not connect to {settings.database_url}: password {PASSWORD!r} refused"
    assert PASSWORD not in settings.redact(said) and "***" in settings.redact(said)
