"""Who is calling: an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) names its
owner; jobs, sweeps and uploads belong to the owner that made them, another owner gets 404,
and an admin key sees everything.

What a key names is looked up in the database and kept for ANNLAB_KEY_CACHE_SECONDS (1 s), so
a caller's requests in a row cost one lookup a second, not one each (a predict call costs the
API little else): a revoked key stops working within that second. Only keys found are kept; an
unknown key is looked up each time it is presented, so a new key works at once.

Without any key made yet, a development server answers requests from this machine (loopback)
as an anonymous admin, so that `make run` works on a laptop with no set-up; once a key exists,
every request needs one. In production the API does not start without a key.
"""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy import Select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core import keys
from core.db import Job, sessionmaker_for
from core.settings import Settings

# Peers that are this machine; "testclient" is Starlette's in-process test client, which no
# network peer can claim (the server gives their IP addresses).
LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


@dataclass(frozen=True)
class Caller:
    owner: str | None  # None: the anonymous local user
    admin: bool

    def sees(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner

    def mine(self, owner_column: Any = Job.owner_id) -> Any:
        """The clause "owned by this caller" (the anonymous user owns what has no owner)."""
        return owner_column.is_(None) if self.owner is None else owner_column == self.owner

    def only_own(self, query: Select, owner_column: object = Job.owner_id) -> Select:
        return query if self.admin else query.where(owner_column == self.owner)


def presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def identify(request: Request, session: Session, settings: Settings) -> Caller:
    key = presented(request)
    if key is not None:
        row = keys.find(session, key[:200])
        if row is None:
            raise HTTPException(
                401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        return Caller(owner=row.name, admin=row.admin)
    local = request.client is not None and request.client.host in LOOPBACK
    if settings.environment == "development" and local and not keys.any_active(session):
        return Caller(owner=None, admin=True)
    raise HTTPException(
        401,
        "an API key is needed: Authorization: Bearer <key> or X-API-Key: <key> "
        "(an admin makes one with `annlab key create NAME`)",
        headers={"WWW-Authenticate": "Bearer"},
    )


class Callers:
    """The callers that identify() found, by the key presented (None: a key-less request from
    this machine), for settings.key_cache_seconds each; at most `size` of them, the least
    recently used dropped first."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._found: OrderedDict[str | None, tuple[float, Caller]] = OrderedDict()
        self._lock = threading.Lock()

    async def identify(self, request: Request, settings: Settings) -> Caller:
        """identify(), answered from the cache while its entry is fresh; a lookup runs on the
        threadpool with a session of its own."""
        key = presented(request)
        if key is None and not (request.client is not None and request.client.host in LOOPBACK):
            key = ""  # a key-less request from elsewhere: always refused, never cached
        now = time.monotonic()
        with self._lock:
            entry = self._found.get(key)
            if entry is not None and entry[0] > now:
                self._found.move_to_end(key)
                return entry[1]
        caller = await run_in_threadpool(self._look_up, request, settings)
        if settings.key_cache_seconds > 0:
            with self._lock:
                self._found[key] = (now + settings.key_cache_seconds, caller)
                self._found.move_to_end(key)
                while len(self._found) > self.size:
                    self._found.popitem(last=False)
        return caller

    @staticmethod
    def _look_up(request: Request, settings: Settings) -> Caller:
        with sessionmaker_for(settings.database_url, read_only=True)() as session:
            return identify(request, session, settings)
