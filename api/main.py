"""Builds the FastAPI app: routers, the model cache, and errors that name the failing field."""

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from api.auth import Callers
from api.deps import get_caller, key_schemes, settings_of
from api.errors import clipped_detail, field_problems, validation_message
from api.fastpath import FastPredict
from api.limits import BodyLimit
from api.metrics import RequestMetrics
from api.openapi import document
from api.routes import datasets, health, jobs, models, sweeps, tools, ui
from api.schemas import Problem, ValidationProblem
from api.serving import ModelCache
from core import keys, logs
from core.db import session_scope
from core.settings import get_settings
from models.specs import FAMILY_NAMES

log = logging.getLogger(__name__)
_SOURCES = {"body", "query", "path", "header"}
# The answers a route with a key may give besides its own (api/openapi.py keeps 413 where a
# body is read, 422 where anything is); routes add 404, 409 and 429 where they give them.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no API key, or an unknown or revoked one"},
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Production refuses to start without an API key; development says how it is open."""
    settings = settings_of(app)
    logs.configure(settings.log_format, settings.log_level)
    # A batched forward pass (api/serving.py) runs on a thread of its own while the event loop
    # reads requests: after each torch op it needs the GIL back, and by default waits up to
    # 5 ms for the loop to let go of it (a wide MLP's pass then took 74 ms instead of 30 beside
    # a busy Python thread; 44 ms at 1 ms).
    sys.setswitchinterval(0.001)
    with session_scope(settings.database_url) as session:
        if settings.admin_key:
            keys.ensure_admin(session, settings.admin_key.get_secret_value())
        protected = keys.any_active(session)
    if not protected:
        if settings.environment == "production":
            raise RuntimeError(
                "ANNLAB_ENVIRONMENT=production needs an API key: annlab key create NAME"
            )
        log.warning(
            "annlab: no API keys yet, so requests from this machine are served without one "
            "(anonymous, admin) and all others are refused; make one with "
            "`annlab key create NAME` to require keys"
        )
    jobs.warm_up(settings)  # torch and the families, before the first request, not in it
    yield


def _api_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, from the vendored copies (no network needed)."""
    vendor = "/ui/static/vendor"

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = base(request)
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{vendor}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{vendor}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{vendor}/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc_html(request: Request) -> HTMLResponse:
        root = base(request)
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{vendor}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{vendor}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        lifespan=lifespan,
        # Operation ids are the handlers' names (create_job, sample...): what generated
        # clients call their methods.
        generate_unique_id_function=lambda route: route.name,
        title="annlab",
        version="0.1.0",
        description="Queue neural-network training jobs, follow them, and use the trained models.",
        # /docs and /redoc below serve Swagger UI and ReDoc from api/static/vendor, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.models = ModelCache(settings)
    app.state.callers = Callers()
    app.add_middleware(FastPredict)  # innermost: under the body limit and the metrics
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestMetrics)  # outermost: times and counts every answer
    for module in (jobs, sweeps, models, datasets, tools):
        app.include_router(
            module.router,
            responses=ERRORS,
            dependencies=[Depends(key_schemes), Depends(get_caller)],
        )
    # LoadedDep identifies the caller itself; key_schemes states the keys in the document.
    app.include_router(models.verbs, responses=ERRORS, dependencies=[Depends(key_schemes)])
    app.include_router(health.router)  # no key: monitoring must reach it
    # The dashboard's pages and files hold no data and need no key; their scripts send one.
    app.include_router(ui.router)
    app.mount("/ui/static", ui.static_files, name="ui-static")
    _api_docs(app)
    app.openapi = lambda: document(app)  # type: ignore[method-assign]

    # Answers name the failing fields but quote no more than a few hundred characters of the
    # request (api/errors.py): a field may be a user's key, a message may quote a value.
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": field_name(tuple(e["loc"]), e["type"], e.get("ctx")),
                "message": validation_message(e),
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        detail, message = field_problems(errors)
        return JSONResponse({"detail": detail, "message": message}, status_code=422)

    # Starlette's class: its own 404, 405 and body-parsing errors come here too.
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail, message = clipped_detail(exc.detail)
        body: dict[str, Any] = {"detail": detail}
        if message is not None:
            body["message"] = message
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    return app


app = create_app()
