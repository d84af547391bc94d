"""sheaf-server: serve Sheaf models over HTTP.

`build_app` is imported lazily so that `sheaf_server.engine` (used by other hosts such as the
batch runner) never pulls FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["build_app"]

if TYPE_CHECKING:
    from sheaf_server.asgi.app import build_app


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from sheaf_server.asgi.app import build_app

        return build_app
    raise AttributeError(name)
