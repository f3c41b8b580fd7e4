"""API keys: made and revoked by an admin command (`annlab key ...`), stored as sha256 hashes
(a key is 256 random bits, so a plain hash is enough), looked up by hash on every request."""

import hashlib
import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import ApiKey, utcnow

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
PREFIX = "annlab_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(session: Session, name: str, *, admin: bool = False) -> str:
    """A new key for `name`; the key itself is returned once and kept nowhere."""
    if not NAME.match(name):
        raise ValueError("a key name is 1-64 letters, digits, '_', '.', '@' or '-'")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ValueError(f"a key named {name!r} exists; revoke it first or pick another name")
    key = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_sha256=digest(key), admin=admin))
    return key


def revoke(session: Session, name: str) -> bool:
    row = session.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
    if row is None:
        return False
    row.revoked_at = utcnow()
    row.name = f"{name}~revoked~{row.id}"  # the name may be given to a new key
    return True


def find(session: Session, key: str) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == digest(key)))
    return row if row is not None and row.revoked_at is None else None


def any_active(session: Session) -> bool:
    count = session.scalar(select(func.count(ApiKey.id)).where(ApiKey.revoked_at.is_(None)))
    return bool(count)


def active(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))))


def ensure_admin(session: Session, key: str, name: str = "admin") -> None:
    """The key `name` is an admin key with exactly this value (made, or its value replaced)."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        session.add(ApiKey(name=name, key_sha256=digest(key), admin=True))
    else:
        row.key_sha256, row.admin, row.revoked_at = digest(key), True, None
