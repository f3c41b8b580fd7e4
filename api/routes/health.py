"""Liveness that means something: the database answers, and a message goes through the
broker and back."""

import hmac
import time
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.auth import presented
from api.deps import SessionDep, SettingsDep, get_caller, key_schemes
from api.metrics import exposition
from api.routing import Route
from api.schemas import Health, Problem
from workers.celery_app import app as celery_app

router = APIRouter(route_class=Route, tags=["health"])


HEALTH_QUEUE = "annlab.health"


def _check_broker() -> str:
    """A message sent through the broker and read back: a broker that accepts connections but
    cannot store a message (a read-only SQLite file, a Redis out of memory) is not ok."""
    token = uuid.uuid4().hex
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=3)
        queue = connection.SimpleQueue(HEALTH_QUEUE, no_ack=True)
        try:
            queue.put({"token": token})
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # skip what an earlier check left behind
                message = queue.get(timeout=max(0.01, deadline - time.monotonic()))
                if message.payload.get("token") == token:
                    return "ok"
        finally:
            queue.close()
    return "error: the message sent to the broker did not come back"


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Whether the database answers and a message goes through the broker (no key needed)."""
    checks = {}
    for name, check in (
        ("database", lambda: session.execute(text("SELECT 1")) and "ok"),
        ("broker", _check_broker),
    ):
        try:
            checks[name] = check()
        except Exception as exc:  # noqa: BLE001 - report any failure as the component's state
            first_line = settings.redact((str(exc).splitlines() or [""])[0])[:300]
            checks[name] = f"error: {type(exc).__name__}: {first_line}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "degraded", **checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def metrics_reader(request: Request, settings: SettingsDep) -> None:
    """/metrics counts every owner's jobs: it is for an admin key, or for a scraper that sends
    ANNLAB_METRICS_KEY as its bearer token (a local caller with no keys made is an admin)."""
    key, wanted = presented(request), settings.metrics_key
    if key is not None and wanted is not None:
        if hmac.compare_digest(key.encode(), wanted.get_secret_value().encode()):
            return
    if not (await get_caller(request, settings)).admin:
        raise HTTPException(403, "GET /metrics needs an admin key or ANNLAB_METRICS_KEY")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(key_schemes), Depends(metrics_reader)],
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"model": Problem, "description": "no API key, or an unknown or revoked one"},
        403: {"model": Problem, "description": "a key that is neither admin nor the metrics key"},
        413: {"model": Problem},
    },
)
def read_metrics_text(session: SessionDep) -> Response:
    """Prometheus text format: HTTP requests and latency per route; jobs by status, the queue,
    running jobs and heartbeat age per worker, failures by reason, epoch seconds. Needs an admin
    key or ANNLAB_METRICS_KEY (a scraper sends it as a bearer token)."""
    body, content_type = exposition(session)
    return Response(body, media_type=content_type)
