"""A request body larger than the settings allow is a 413 before the app reads it: by its
Content-Length when it declares one (a body longer than it declares is cut off by the server),
else as soon as the streamed body passes the limit. So a huge document or upload costs the API
neither its memory nor its parse time."""

import json
from typing import Any

from api.deps import settings_of

UPLOAD_OVERHEAD = 1024 * 1024  # multipart boundaries and fields around an upload's file
# POST /architectures/forward: its input and weights (at most 65,536 values each) fit in 4 MiB
# written out in full precision; a larger body would only cost the API the memory to parse it.
FORWARD_BODY_BYTES = 4 * 1024 * 1024


def limit_for(scope: dict[str, Any]) -> int:
    settings = settings_of(scope["app"])  # as the routes see them (tests override them)
    path = scope["path"].rstrip("/")
    if scope["method"] == "POST" and path == "/datasets":
        return settings.max_upload_bytes + UPLOAD_OVERHEAD
    if scope["method"] == "POST" and path == "/architectures/forward":
        return min(settings.max_request_bytes, FORWARD_BODY_BYTES)
    return settings.max_request_bytes


class BodyLimit:
    """Pure ASGI middleware. A body with a Content-Length passes through untouched; a chunked
    one is read here up to the limit and replayed to the app (which would read it whole
    anyway)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read the body here, up to the limit, then replay it.
        messages, seen, more = [], 0, True
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away; the app will see it
            seen += len(message.get("body", b""))
            more = message.get("more_body", False)
            if seen > limit:
                await _too_large(send, limit)
                return
        await self.app(scope, replaying(messages, receive), send)


def replaying(messages: list[dict[str, Any]], receive: Any) -> Any:
    """A receive() that gives the app the messages already read, then the client's."""
    pending = list(messages)

    async def replayed() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps(
        {
            "detail": [
                {
                    "field": "body",
                    "message": f"the request body is over the limit of {limit:,} bytes",
                    "type": "body_too_large",
                }
            ]
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
