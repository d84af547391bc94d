"""sheaf-server: serve Sheaf models over HTTP.

`build_app` and `ModelServer` are imported lazily so that `sheaf_server.engine` (used by
other hosts such as the batch runner) never pulls FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["ModelServer", "build_app"]

if TYPE_CHECKING:
    from sheaf_server.asgi.app import build_app
    from sheaf_server.model_server import ModelServer


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from sheaf_server.asgi.app import build_app

        return build_app
    if name == "ModelServer":
        from sheaf_server.model_server import ModelServer

        return ModelServer
    raise AttributeError(name)
