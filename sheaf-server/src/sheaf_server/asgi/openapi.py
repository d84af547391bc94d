"""OpenAPI with each model's typed request body.

The predict routes read raw bytes (so validation runs once, in pydantic's JSON parser, and
errors name fields our way); their request schemas are therefore added here, by reference,
from each contract's request class — with the other body formats its codecs read (e.g.
NetCDF for weather), which are answered in the same format.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter

from sheaf_core.codecs import JSON_MEDIA_TYPE
from sheaf_core.registry import ContractEntry

REF = "#/components/schemas/{model}"
BINARY = {"type": "string", "format": "binary"}


def request_body(contract: ContractEntry) -> dict[str, Any]:
    """The `requestBody` of an operation taking the contract's request: JSON (or the JSON
    alternative a codec reads), and each binary format of its codecs."""
    schema: dict[str, Any] = {"$ref": REF.format(model=contract.request.__name__)}
    json_codec = contract.codecs.get(JSON_MEDIA_TYPE)
    if json_codec is not None and json_codec.json_schema is not None:
        schema = {"oneOf": [schema, {"$ref": REF.format(
            model=json_codec.json_schema.__name__)}]}
    content: dict[str, Any] = {JSON_MEDIA_TYPE: {"schema": schema}}
    content.update({media_type: {"schema": BINARY} for media_type in _binary(contract)})
    return {"requestBody": {"required": True, "content": content}}


def answer_formats(contract: ContractEntry) -> dict[int | str, Any]:
    """The 200 response's other media types (a body in a codec's format is answered so)."""
    media_types = _binary(contract)
    if not media_types:
        return {}
    return {200: {"content": {media_type: {"schema": BINARY} for media_type in media_types},
                  "description": "JSON, or the format the request body was sent in ("
                  + "; ".join(f"{media_type}: {contract.codecs[media_type].summary}"
                              for media_type in media_types) + ")"}}


def body_models(contract: ContractEntry) -> list[type[BaseModel]]:
    """The models a contract's request bodies follow, for the schema components."""
    codec = contract.codecs.get(JSON_MEDIA_TYPE)
    alternative = codec.json_schema if codec is not None else None
    return [contract.request] + ([alternative] if alternative is not None else [])


def _binary(contract: ContractEntry) -> list[str]:
    """The canonical media type of each codec of binary bodies."""
    return [codec.media_types[0] for codec in dict.fromkeys(contract.codecs.values())
            if codec.media_types[0] != JSON_MEDIA_TYPE]


def build_openapi(app: FastAPI, models: list[type[BaseModel]]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for cls in models:
        body = TypeAdapter(cls).json_schema(ref_template=REF, mode="validation")
        for name, definition in body.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[cls.__name__] = body
    if getattr(app.state, "api_keys", False):  # server.auth: say how to send a key
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "An API key (SHEAF_API_KEYS, docs/security.md)"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
    app.openapi_schema = schema
    return schema
