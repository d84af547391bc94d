"""Whether a served model or pipeline serves now, and the refusal while it does not."""

from __future__ import annotations

from enum import StrEnum

from sheaf_server.engine.errors import ModelFailed, ModelNotReady


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


def ensure_serving(what: str, state: ModelState, reason: str | None) -> None:
    """Refuse a request to a model or pipeline that is not ready: 503 with Retry-After
    while it loads; 503 without one when its load failed (waiting will not heal it)."""
    if state is ModelState.LOADING:
        raise ModelNotReady(f"{what} is not ready: {reason}", retry_after=5)
    if state is ModelState.FAILED:
        raise ModelFailed(f"{what} cannot serve: {reason}; it serves again after a "
                          "successful update (hot swap) or a restart")
