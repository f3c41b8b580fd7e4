"""Liveness that means something: the database and the broker both answer."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SessionDep
from api.schemas import Health
from workers.celery_app import app as celery_app

router = APIRouter(tags=["health"])


def _check_broker() -> str:
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=3)
    return "ok"


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(session: SessionDep) -> JSONResponse:
    checks = {}
    for name, check in (
        ("database", lambda: session.execute(text("SELECT 1")) and "ok"),
        ("broker", _check_broker),
    ):
        try:
            checks[name] = check()
        except Exception as exc:  # noqa: BLE001 - report any failure as the component's state
            checks[name] = f"error: {type(exc).__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "degraded", **checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
