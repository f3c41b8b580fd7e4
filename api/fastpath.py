"""POST /models/{id}/predict answered below the framework, for the calls that need none of it.

A predict call to a cached model is what an API gets most of, and much of what it costs the
event loop (the one thread every call goes through) is FastAPI's routing, dependency solving,
body validation and response path, not the model, whose pass runs on the batcher's thread
(api/serving.py). So a call takes this path when nothing about it needs the route: a JSON
body, a model already in the cache, a caller the key cache knows (api/auth.py) and who may see
the job, a family with predict, a body that validates. It is the route's
work done in the same order with the same pieces (Callers.identify, PredictRequest, the route's
own `answer`, PredictResponse serialized as FastAPI serializes a response model), so the answer
is the route's answer, byte for byte.

Anything else goes on to the route untouched, the body read here replayed to it: a model not
loaded yet, an unknown key (401), another owner's job (404), a family without predict, a body
that does not validate or inputs the model refuses (the route's 422 names the field). The route
stays the documented operation in /openapi.json, and the one place each rule is written; this
path only declines. ANNLAB_FAST_PREDICT=false sends every call to the route.

It sits inside the request-metrics and body-limit middleware (api/main.py), so its calls are
counted, timed and logged under the route's template, and oversized bodies never reach it.
"""

import re
from typing import Any

import pydantic_core
from fastapi import HTTPException
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request

from api.deps import settings_of
from api.limits import replaying
from api.routes.models import answer
from models.configs.verbs import PredictRequest, PredictResponse

_PREDICT = re.compile(r"^/models/([^/]{1,64})/predict$")
_JSON = re.compile(rb"^application/(?:[\w.+-]*\+)?json\s*(?:;|$)", re.IGNORECASE)
_ANSWER = TypeAdapter(PredictResponse)


class RouteTemplate:
    """What the request-metrics middleware reads of the route that answered (its template)."""

    path = "/models/{job_id}/predict"


class FastPredict:
    """Pure ASGI middleware: answers the predict calls it can, passes on the rest."""

    def __init__(self, app: Any):
        self.app = app
        self.answered = 0  # calls answered here; the rest went to the route

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = _PREDICT.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = RouteTemplate  # the router sets its own if the route answers
        body, messages = await _read_body(receive)
        answer = None if body is None else await self._answer(scope, match.group(1), body)
        if answer is None:
            await self.app(scope, replaying(messages, receive), send)
            return
        self.answered += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _answer(self, scope: dict[str, Any], job_id: str, body: bytes) -> bytes | None:
        """The route's answer to this call, or None where the route must give it."""
        app = scope["app"]
        settings = settings_of(app)
        if not settings.fast_predict:
            return None
        loaded = app.state.models.find(job_id)
        if loaded is None:
            return None
        try:
            caller = await app.state.callers.identify(Request(scope), settings)
        except HTTPException:
            return None
        if not caller.sees(loaded.owner_id):
            return None
        try:
            request = PredictRequest.model_validate(pydantic_core.from_json(body))
        except (ValueError, ValidationError):  # not JSON, or not a predict request
            return None
        try:
            outputs = await answer(loaded, "predict", request)
        except HTTPException:  # 404 (no predict) or 422: the route gives it
            return None
        return _ANSWER.dump_json(_ANSWER.validate_python(outputs), exclude_none=True)


def _json_body(scope: dict[str, Any]) -> bool:
    """The request says its body is JSON (the route parses no other)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return _JSON.match(value) is not None
    return False


async def _read_body(receive: Any) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The whole body (None if the client went away first), and the messages it came in."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), messages
