"""OpenAPI with each model's typed request body.

The predict routes read raw bytes (so validation runs once, in pydantic's JSON parser, and
errors name fields our way); their request schemas are therefore added here, by reference,
from each contract's request class.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from sheaf_core.contracts.base import BaseRequest

REF = "#/components/schemas/{model}"


def request_body(request_cls: type[BaseRequest]) -> dict[str, Any]:
    """The `requestBody` of an operation taking `request_cls` as JSON."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=request_cls.__name__)}}}}}


def build_openapi(app: FastAPI, request_classes: list[type[BaseRequest]]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for cls in request_classes:
        body = TypeAdapter(cls).json_schema(ref_template=REF, mode="validation")
        for name, definition in body.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[cls.__name__] = body
    app.openapi_schema = schema
    return schema
