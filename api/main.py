"""Builds the FastAPI app: routers, the model cache, and errors that name the failing field."""

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.limits import BodyLimit
from api.routes import datasets, health, jobs, models, sweeps, tools
from api.schemas import Problem, ValidationProblem
from api.serving import ModelCache
from core.settings import get_settings
from models.specs import FAMILY_NAMES

_SOURCES = {"body", "query", "path", "header"}
# The answers every route may give besides its own; routers add 404 and 409 where they apply.
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "the request body is over the size limit"},
    422: {"model": ValidationProblem, "description": "fields that failed, each by name"},
}


def field_name(loc: tuple[Any, ...], error_type: str, ctx: dict[str, Any] | None = None) -> str:
    """`train.optimizer.lr` from pydantic's ('body', 'mlp', 'train', 'optimizer', 'lr');
    an error raised with core.spec.error_at adds its path below the validated field."""
    if error_type.startswith("union_tag"):
        return "family"
    if error_type == "json_invalid":  # its loc holds a character offset, not a field
        return "body"
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        parts = parts[1:]
    if parts and parts[0] in FAMILY_NAMES:  # the discriminated union's branch
        parts = parts[1:]
    if ctx and "at" in ctx:
        parts.append(ctx["at"])
    return ".".join(str(p) for p in parts) or "body"


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="annlab",
        version="0.1.0",
        description="Queue neural-network training jobs, follow them, and use the trained models.",
    )
    app.state.models = ModelCache(settings)
    app.add_middleware(BodyLimit)
    for module in (jobs, sweeps, models, datasets, tools, health):
        app.include_router(module.router, responses=ERRORS)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": field_name(tuple(e["loc"]), e["type"], e.get("ctx")),
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": errors, "message": message}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        body: dict[str, Any] = {"detail": exc.detail}
        if isinstance(exc.detail, list):
            body["message"] = "; ".join(f"{e['field']}: {e['message']}" for e in exc.detail)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    return app


app = create_app()
