"""Entry point module: registers the `graphcast` backend. Light: no torch at import."""

from __future__ import annotations

from sheaf_core import hookimpl
from sheaf_core.registry import BackendRegistrar


@hookimpl
def sheaf_register_backends(register: BackendRegistrar) -> None:
    from sheaf_backend_graphcast.backend import GraphCastBackend

    register("graphcast", GraphCastBackend)
