"""sheaf-core: typed contracts, ModelSpec, the Backend base class and plugin discovery.

Light by design: importing it pulls pydantic, pluggy and PyYAML, never torch, Ray or FastAPI.
"""

from sheaf_core.backend import Backend, NoSettings, ProgressEvent
from sheaf_core.combiner import Combiner
from sheaf_core.contracts import (
    BaseRequest,
    BaseResponse,
    OutputMode,
    TimeSeriesRequest,
    TimeSeriesResponse,
)
from sheaf_core.errors import (
    ConfigError,
    FieldProblem,
    InvalidRequest,
    PluginError,
    SheafError,
    UpdateFailed,
)
from sheaf_core.hookspecs import hookimpl
from sheaf_core.pipeline_spec import PipelineNode, PipelineSpec
from sheaf_core.registry import Registry, default_registry, discover
from sheaf_core.spec import (
    MOVED_TO_SERVER,
    BatchingPolicy,
    CachePolicy,
    FeatureStoreSpec,
    ModelSpec,
    ResourcePolicy,
    build_backend,
    moved,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Host settings moved to `sheaf_server.settings`; the old names warn (one release)."""
    if name in MOVED_TO_SERVER:
        return moved(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Backend",
    "BaseRequest",
    "BaseResponse",
    "BatchingPolicy",
    "CachePolicy",
    "Combiner",
    "ConfigError",
    "FeatureStoreSpec",
    "FieldProblem",
    "InvalidRequest",
    "ModelSpec",
    "NoSettings",
    "OutputMode",
    "PipelineNode",
    "PipelineSpec",
    "PluginError",
    "ProgressEvent",
    "Registry",
    "ResourcePolicy",
    "SheafError",
    "TimeSeriesRequest",
    "TimeSeriesResponse",
    "UpdateFailed",
    "build_backend",
    "default_registry",
    "discover",
    "hookimpl",
]
