"""Idempotency-Key (IETF draft-ietf-httpapi-idempotency-key-header) on the POSTs that create
something: a client that retries after a dropped connection gets what its first request made,
not a second job or sweep. The key is stored with a hash of the request, in the transaction
that creates the resource; a key used again with another request is a 422."""

import hashlib
import json
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy.orm import Session

from api.auth import Caller
from api.errors import field_error
from core.db import IdempotencyKey

KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="retry-safe creation: the same key and request give the first answer again",
    ),
]


def scoped(caller: Caller, key: str | None) -> str | None:
    """Keys are the caller's own: another owner's same key is another key."""
    return None if key is None else f"{caller.owner or ''}/{key}"


def request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def earlier(session: Session, scope: str, key: str | None, payload: Any) -> str | None:
    """The id a request with this key created before, or None; a 422 if the key came with
    another request."""
    if key is None:
        return None
    row = session.get(IdempotencyKey, (scope, key))
    if row is None:
        return None
    if row.request_sha256 != request_hash(payload):
        raise field_error(
            422,
            "Idempotency-Key",
            "this Idempotency-Key was used with a different request; use a new key",
            "idempotency_key_reused",
        )
    return row.resource_id


def remember(session: Session, scope: str, key: str | None, payload: Any, resource: str) -> None:
    """Store the key in the caller's transaction (two racing requests: one commit fails)."""
    if key is not None:
        session.add(
            IdempotencyKey(
                scope=scope, key=key, request_sha256=request_hash(payload), resource_id=resource
            )
        )
