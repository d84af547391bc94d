"""The `Combiner` base class: the step of a pipeline that merges the answers of several
nodes (models or other combiners) into one response of the same model type.

Lifecycle, as a host drives it: ``Combiner(**kwargs)`` (cheap; bad kwargs fail at start-up),
``check_inputs(names)`` once with the pipeline's node names (e.g. weights must name them),
``validate_request(request)`` per request before any model runs (a 422 naming the field),
then ``combine(request, responses)`` with each input node's response by name.
Combiners are registered through the ``sheaf_register_combiners`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic

from pydantic import BaseModel

from sheaf_core.backend import NoSettings, RequestT, ResponseT


class Combiner(Generic[RequestT, ResponseT]):
    """Base class of pipeline combiners. Subclasses set `model_type` and usually
    `Settings`."""

    #: The model type of the inputs and of the result; must be a registered contract.
    model_type: ClassVar[str]
    #: Pydantic model of the accepted ``kwargs`` (extra="forbid" recommended).
    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self, **kwargs: Any) -> None:
        self.settings = self.Settings(**kwargs)

    def check_inputs(self, names: Sequence[str]) -> None:
        """Raise ValueError if the settings do not fit these input node names."""

    def validate_request(self, request: RequestT) -> None:
        """Raise `InvalidRequest` for a request this combiner cannot combine answers to."""

    def combine(self, request: RequestT, responses: Mapping[str, ResponseT]) -> ResponseT:
        """One response from the input nodes' responses (keyed by node name)."""
        raise NotImplementedError
