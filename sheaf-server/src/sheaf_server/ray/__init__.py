"""The Ray Serve host: the same engine and HTTP API as the ASGI tier, on a Ray cluster.

Needs `pip install 'sheaf-server[ray]'`. `build_app` is imported lazily: Ray Serve reads its
environment flags (throughput mode, HAProxy) when first imported, so `runner` must be able
to set them before that happens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sheaf_server.ray.app import build_app

__all__ = ["build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from sheaf_server.ray.app import build_app

        return build_app
    raise AttributeError(name)
