"""The host-neutral request engine. `request_path` is the request path, written once
(accept → decode → prepare → cache → batch → backend → stamp → encode); a `Call` carries
one request through it; `Engine` serves models in this process."""

from typing import Any

from sheaf_server.engine.batcher import DynamicBatcher
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import (
    STATUS,
    BackendFailed,
    ClientGone,
    DeadlineExceeded,
    EngineError,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RequestError,
    ShuttingDown,
    status_of,
)
from sheaf_server.engine.local import Engine
from sheaf_server.engine.runtime import ModelRuntime
from sheaf_server.engine.served import ServedModel, ServingEngine
from sheaf_server.engine.state import ModelState

__all__ = [
    "STATUS",
    "BackendFailed",
    "Call",
    "ClientGone",
    "DeadlineExceeded",
    "DynamicBatcher",
    "Engine",
    "EngineError",
    "InvalidRequest",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRuntime",
    "ModelState",
    "Overloaded",
    "PayloadTooLarge",
    "RequestError",
    "ServedModel",
    "ServingEngine",
    "ShuttingDown",
    "status_of",
]


def __getattr__(name: str) -> Any:
    """Former names (`RequestInvalid` …), with a deprecation warning: see engine.errors."""
    from sheaf_server.engine import errors

    return getattr(errors, name)
