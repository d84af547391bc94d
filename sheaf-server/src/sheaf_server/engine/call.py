"""`Call`: one request as it crosses every boundary — HTTP into the engine, the Ray ingress
to a model replica, a pipeline to its model nodes, a batch job's row — as one typed value.

Before it existed the same facts travelled as five loose parameters through a dozen
signatures (and once as an unnamed tuple read by index), and one of them was silently
dropped on the way to Ray. A `Call` is frozen: a host makes it once, and a step that learns
something (the id a body names) makes a new one with `replace`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sheaf_core.codecs import JSON_MEDIA_TYPE
from sheaf_core.contracts.base import BaseRequest
from sheaf_server.engine import tracing


@dataclass(frozen=True, slots=True)
class Call:
    """One request for one served model or pipeline.

    - `model`: the served name it is for.
    - `request_id`: the id it is answered under — unless `id_generated`: the host made the
      id up (the caller sent none), so a `request_id` in the body wins.
    - `body`: the bytes as sent, decoded by the request path by `media_type`; or `request`,
      already typed (a pipeline's model node, a row a batch driver parsed) — then `body`
      is unused.
    - `budget_s`: seconds left of the deadline when the call was made (a host that already
      spent some, as Ray's ingress does); None: the model's own `timeout_s`. Seconds, not a
      clock reading: the call may cross to another process or machine.
    - `trace`: the caller's trace context as W3C headers (empty when not traced), so spans
      in another process continue the request's trace.
    """

    model: str
    request_id: str
    body: bytes | str = b""
    request: BaseRequest | None = None
    id_generated: bool = False
    budget_s: float | None = None
    media_type: str = JSON_MEDIA_TYPE
    trace: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def typed(cls, model: str, request: BaseRequest, request_id: str,
              budget_s: float | None = None) -> Call:
        """A call with an already typed request (a pipeline's model node, a batch row)."""
        return cls(model, request_id, request=request, budget_s=budget_s)

    def settled(self, request: BaseRequest) -> Call:
        """This call under the id it is answered with, now that its body is decoded: the
        body's `request_id` when the host generated ours, else ours."""
        if self.id_generated and request.request_id:
            return replace(self, request_id=request.request_id, id_generated=False)
        return self

    def leaving(self, budget_s: float | None = None) -> Call:
        """This call as it leaves for another process: with the current trace context, and
        `budget_s` when the sender already spent part of the deadline."""
        return replace(self, trace=tracing.inject(),
                       budget_s=self.budget_s if budget_s is None else budget_s)
