"""Proving a loaded backend answers: a prediction over its own sample requests.

A load that returns is not proof that the model works — weights can load and still answer
NaN, or a library can leave a model half-initialised. Hosts call `warm_up` right after
`Backend.load` and serve the model only if it passes; the conformance suite runs it too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from sheaf_core.backend import Backend
from sheaf_core.contracts.base import BaseResponse
from sheaf_core.errors import InvalidRequest

log = logging.getLogger("sheaf.warmup")


class WarmupFailed(RuntimeError):
    """The loaded model could not answer its own sample requests."""


def warm_up(backend: Backend[Any, Any], response_type: type[BaseResponse]) -> None:
    """One `predict` over the backend's sample requests; every answer must be a valid,
    JSON-safe `response_type`. A backend without samples is only loaded (logged)."""
    requests: Sequence[Any] = list(backend.warmup_requests())
    name = type(backend).__name__
    if not requests:
        log.warning("backend %s has no warm-up requests: it is served once loaded, without "
                    "a first prediction to prove it answers", name)
        return
    try:
        for request in requests:
            backend.validate_request(request)
    except InvalidRequest as exc:
        raise WarmupFailed(f"warm-up: the model refused its own sample request ({exc})") from exc
    try:
        responses = backend.predict(requests)
    except ValidationError as exc:  # the backend built an invalid response (NaN, say)
        raise WarmupFailed(f"warm-up: the answer is not a valid {response_type.__name__}: "
                           f"{_brief(exc)}") from exc
    except Exception as exc:
        raise WarmupFailed(f"warm-up prediction failed: {type(exc).__name__}: {exc}") from exc
    if len(responses) != len(requests):
        raise WarmupFailed(f"warm-up: {name} answered {len(responses)} responses for "
                           f"{len(requests)} requests")
    for response in responses:
        if not isinstance(response, response_type):
            raise WarmupFailed(f"warm-up: {name} answered a {type(response).__name__}, not a "
                               f"{response_type.__name__}")
        try:
            response_type.model_validate_json(response.model_dump_json())
        except ValidationError as exc:
            raise WarmupFailed(f"warm-up: the answer is not a valid {response_type.__name__} "
                               f"once sent as JSON: {_brief(exc)}") from exc


def _brief(exc: ValidationError) -> str:
    """The first problem and how many there are: a reason short enough for /ready."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
