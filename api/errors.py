"""The one shape of a 4xx that blames a field: {"detail": [{"field", "type", "message"}]}."""

from fastapi import HTTPException


def field_error(status: int, field: str, message: str, type_: str = "value_error") -> HTTPException:
    return HTTPException(status, [{"field": field, "type": type_, "message": message}])
