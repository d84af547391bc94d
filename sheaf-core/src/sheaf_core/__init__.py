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
    AutoscalingPolicy,
    BatchingPolicy,
    CachePolicy,
    FeatureStoreSpec,
    ModelSpec,
    RayActorOptions,
    RayPolicy,
    RayServeSettings,
    ResourcePolicy,
    ServerSettings,
    SheafConfig,
    build_backend,
    load_config,
    parse_config,
)

__version__ = "0.1.0"

__all__ = [
    "AutoscalingPolicy",
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
    "RayActorOptions",
    "RayPolicy",
    "RayServeSettings",
    "Registry",
    "ResourcePolicy",
    "ServerSettings",
    "SheafConfig",
    "SheafError",
    "TimeSeriesRequest",
    "TimeSeriesResponse",
    "UpdateFailed",
    "build_backend",
    "default_registry",
    "discover",
    "hookimpl",
    "load_config",
    "parse_config",
]
