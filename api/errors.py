"""The one shape of a 4xx that blames a field: {"detail": [{"field", "type", "message"}]}, and
the clipping that keeps any answer from repeating more than a few hundred bytes of a request
(a field name may be a user's key, a message may quote a value)."""

from typing import Any

from fastapi import HTTPException
from pydantic_core import PydanticKnownError

MAX_FIELD = 200  # characters of a field's dotted name
MAX_MESSAGE = 400  # characters of one message
MAX_QUOTED = 60  # characters of a value a validation message quotes
MAX_ERRORS = 20  # fields listed in one answer
# What pydantic's messages quote from the schema rather than the request.
_FROM_SCHEMA = {"expected", "expected_tags", "discriminator", "pattern"}


def field_error(status: int, field: str, message: str, type_: str = "value_error") -> HTTPException:
    return HTTPException(status, [{"field": field, "type": type_, "message": message}])


def clip(text: str, limit: int) -> str:
    """`text`, or its start and end around a note of how many characters were left out."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    head = limit - tail
    return f"{text[:head]}...({len(text) - head - tail} characters left out)...{text[-tail:]}"


def validation_message(error: dict[str, Any]) -> str:
    """pydantic's message for `error`, written again with the values it quotes clipped (the tag
    a discriminated union did not know, a literal it was not, ...)."""
    ctx = error.get("ctx") or {}
    quoted = {k for k, v in ctx.items() if isinstance(v, str) and len(v) > MAX_QUOTED}
    if quoted - _FROM_SCHEMA:
        short = {
            k: clip(v, MAX_QUOTED) if k in quoted - _FROM_SCHEMA else v for k, v in ctx.items()
        }
        try:
            return clip(PydanticKnownError(error["type"], short).message(), MAX_MESSAGE)
        except (KeyError, TypeError, ValueError):  # a custom error: its message as written
            pass
    return clip(str(error.get("msg", "")), MAX_MESSAGE)


def field_problems(errors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The first MAX_ERRORS of `errors` ({"field", "message", "type"}, clipped), and the line
    that lists them (and says how many were left out)."""
    shown = [
        {
            "field": clip(str(e["field"]), MAX_FIELD),
            "message": clip(str(e["message"]), MAX_MESSAGE),
            "type": clip(str(e["type"]), MAX_FIELD),
        }
        for e in errors[:MAX_ERRORS]
    ]
    message = "; ".join(f"{e['field']}: {e['message']}" for e in shown)
    if len(errors) > MAX_ERRORS:
        message += f"; and {len(errors) - MAX_ERRORS} more"
    return shown, message


def clipped_detail(detail: Any) -> tuple[Any, str | None]:
    """An HTTPException's detail as it is answered (a sentence clipped, or fields clipped as in
    field_problems), and the one line that lists the fields (None for a sentence)."""
    if isinstance(detail, list):
        return field_problems(detail)
    if isinstance(detail, str):
        return clip(detail, MAX_MESSAGE), None
    return detail, None
