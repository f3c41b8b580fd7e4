"""The OpenAPI document: FastAPI's, with each operation's shared error answers kept only where
the operation can give them."""

from typing import Any

from fastapi import FastAPI


def narrow(operation: dict[str, Any]) -> None:
    """413 needs a body to read, 422 something to validate, 404 a resource named in the path
    (or jobs named by `ids`)."""
    answers = operation["responses"]
    parameters = operation.get("parameters", [])
    body = "requestBody" in operation
    if not body:
        answers.pop("413", None)
    if not body and not parameters:
        answers.pop("422", None)
    if not any(p["in"] == "path" or p["name"] == "ids" for p in parameters):
        answers.pop("404", None)


def without_object_defaults(schema: dict[str, Any]) -> None:
    """A field whose value is a model (`train`, `model`, `optimizer`) states no default object:
    its model's own fields state theirs, and generators (openapi-python-client) refuse a model
    with a default. What the API fills in is unchanged."""
    for field in schema.get("properties", {}).values():
        if isinstance(field.get("default"), dict) and not field.get("additionalProperties"):
            if "$ref" in field or "oneOf" in field or "anyOf" in field or "allOf" in field:
                del field["default"]


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, narrowed; built once and kept, as FastAPI keeps its own."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                narrow(operation)
        for component in schema.get("components", {}).get("schemas", {}).values():
            without_object_defaults(component)
    return app.openapi_schema
