"""The host-neutral request engine: parse → validate → batch → backend → encode."""

from sheaf_server.engine.batcher import DynamicBatcher
from sheaf_server.engine.engine import Engine
from sheaf_server.engine.errors import (
    BackendFailed,
    ClientGone,
    DeadlineExceeded,
    EngineError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RequestInvalid,
    ShuttingDown,
)
from sheaf_server.engine.model import ModelRuntime, ModelState
from sheaf_server.engine.served import ServedModel, ServingEngine

__all__ = [
    "BackendFailed",
    "ClientGone",
    "DeadlineExceeded",
    "DynamicBatcher",
    "Engine",
    "EngineError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRuntime",
    "ModelState",
    "Overloaded",
    "PayloadTooLarge",
    "RequestInvalid",
    "ServedModel",
    "ServingEngine",
    "ShuttingDown",
]
