"""A conformance suite every backend must pass, like LangChain's standard tests.

Subclass it in your plugin's tests and supply the backend::

    from sheaf_core.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend_name = "mine"                      # as registered by your plugin

        @pytest.fixture(scope="class")
        def backend_kwargs(self, tmp_path_factory):
            return {"model_id": str(build_tiny_model(tmp_path_factory.mktemp("m")))}

        @pytest.fixture
        def sample_requests(self):
            return [MyRequest(...), MyRequest(...)]  # at least two, different from each other

        @pytest.fixture
        def invalid_requests(self):                  # optional: what validate_request refuses
            return [(MyRequest(horizon=10_000), "horizon")]

It checks what hosts rely on: registration through entry points, a cheap constructor,
settings that reject unknown kwargs, batch-first predict (one answer per request, in
order), answers that do not depend on batch composition, responses that validate against
the registered contract and survive JSON, an empty batch, warm-up requests
(`Backend.warmup_requests`) that the loaded model answers — hosts serve a model only once
it has —, a stream of progress events then exactly one response equal to `predict`'s (and
one closed early stops without error), `validate_request` refusals that name the field,
`deterministic()` requests answered the same twice, a `preflight()` that returns a list,
and a `close()` that may be called twice.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from sheaf_core.backend import Backend, ProgressEvent
from sheaf_core.errors import InvalidRequest
from sheaf_core.registry import Registry, discover
from sheaf_core.warmup import warm_up


class BackendConformance:
    """Pytest mix-in; see the module docstring. Override `rtol`/`atol` for noisy models."""

    backend_name: ClassVar[str]
    rtol: ClassVar[float] = 1e-4
    atol: ClassVar[float] = 1e-4

    @pytest.fixture(scope="class")
    def registry(self) -> Registry:
        return discover()

    @pytest.fixture(scope="class")
    def backend_kwargs(self) -> dict[str, Any]:
        return {}

    @pytest.fixture(scope="class")
    def backend_class(self, registry: Registry) -> type[Backend[Any, Any]]:
        return registry.backend(self.backend_name)

    @pytest.fixture(scope="class")
    def loaded_backend(self, backend_class: type[Backend[Any, Any]],
                       backend_kwargs: dict[str, Any]) -> Backend[Any, Any]:
        backend = backend_class(**backend_kwargs)
        backend.load()
        return backend

    @pytest.fixture
    def sample_requests(self) -> list[BaseModel]:
        raise NotImplementedError("supply at least two different requests")

    @pytest.fixture
    def invalid_requests(self) -> list[tuple[BaseModel, str]]:
        """(request, field) pairs the loaded model must refuse in `validate_request`, with a
        problem naming `field` (a prefix of it: `quantile_levels` names
        `quantile_levels.2`). Default: none."""
        return []

    def test_is_registered_through_entry_points(self, registry: Registry) -> None:
        assert self.backend_name in registry.backends, registry.problems or registry.failed

    def test_model_type_is_a_registered_contract(self, registry: Registry,
                                                 backend_class: type[Backend[Any, Any]]) -> None:
        assert backend_class.model_type in registry.contracts

    def test_constructor_only_stores_settings(self, backend_class: type[Backend[Any, Any]],
                                              backend_kwargs: dict[str, Any]) -> None:
        backend = backend_class(**backend_kwargs)
        assert backend.loaded is False

    def test_unknown_kwarg_is_rejected_naming_it(self, backend_class: type[Backend[Any, Any]],
                                                backend_kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="definitely_not_a_setting"):
            backend_class(**backend_kwargs, definitely_not_a_setting=1)

    def test_load_marks_loaded(self, loaded_backend: Backend[Any, Any]) -> None:
        assert loaded_backend.loaded is True

    def test_empty_batch_gives_empty_list(self, loaded_backend: Backend[Any, Any]) -> None:
        assert list(loaded_backend.predict([])) == []

    def test_one_response_per_request_of_the_contract_type(
            self, registry: Registry, loaded_backend: Backend[Any, Any],
            sample_requests: list[BaseModel]) -> None:
        contract = registry.contract(loaded_backend.model_type)
        for request in sample_requests:
            loaded_backend.validate_request(request)
        responses = loaded_backend.predict(sample_requests)
        assert len(responses) == len(sample_requests)
        for response in responses:
            assert isinstance(response, contract.response)
            assert getattr(response, "model_type", None) == loaded_backend.model_type

    def test_answers_do_not_depend_on_the_batch(self, loaded_backend: Backend[Any, Any],
                                                sample_requests: list[BaseModel]) -> None:
        together = loaded_backend.predict(sample_requests)
        backwards = loaded_backend.predict(list(reversed(sample_requests)))[::-1]
        for request, batched, reversed_ in zip(sample_requests, together, backwards,
                                               strict=True):
            alone = loaded_backend.predict([request])[0]
            self.assert_same(_payload(alone), _payload(batched))
            self.assert_same(_payload(alone), _payload(reversed_))

    def test_responses_survive_json(self, registry: Registry, loaded_backend: Backend[Any, Any],
                                    sample_requests: list[BaseModel]) -> None:
        contract = registry.contract(loaded_backend.model_type)
        for response in loaded_backend.predict(sample_requests):
            again = contract.response.model_validate_json(response.model_dump_json())
            self.assert_same(_payload(response), _payload(again))

    def test_warmup_requests_are_answered(self, registry: Registry,
                                          loaded_backend: Backend[Any, Any]) -> None:
        assert list(loaded_backend.warmup_requests()), "warmup_requests() returns none"
        warm_up(loaded_backend, registry.contract(loaded_backend.model_type).response)

    def test_describe_is_json(self, loaded_backend: Backend[Any, Any]) -> None:
        json.dumps(loaded_backend.describe(), default=str)

    def test_a_stream_is_progress_then_exactly_one_response_equal_to_predict(
            self, registry: Registry, loaded_backend: Backend[Any, Any],
            sample_requests: list[BaseModel]) -> None:
        """What the SSE route relays: progress events only while working, then the answer
        `predict` gives; a backend that does not stream yields the answer alone."""
        contract = registry.contract(loaded_backend.model_type)
        request = sample_requests[0]
        events = list(loaded_backend.stream(request))
        *progress, last = events
        assert isinstance(last, contract.response), f"the stream ended with {last!r}"
        assert all(isinstance(e, ProgressEvent) for e in progress), progress
        if not loaded_backend.supports_streaming:
            assert progress == [], "supports_streaming is False but progress was sent"
        self.assert_same(_payload(loaded_backend.predict([request])[0]), _payload(last))

    def test_a_stream_closed_early_stops_quietly(self, loaded_backend: Backend[Any, Any],
                                                 sample_requests: list[BaseModel]) -> None:
        """A client that disconnects closes the generator after its first event: the
        backend's cleanup runs and nothing is raised (hosts close it, then serve on)."""
        events = loaded_backend.stream(sample_requests[0])
        next(iter(events))
        close = getattr(events, "close", None)
        if close is not None:
            close()
        loaded_backend.predict(sample_requests[:1])  # still answers afterwards

    def test_refusals_name_the_field(self, loaded_backend: Backend[Any, Any],
                                     invalid_requests: list[tuple[BaseModel, str]]) -> None:
        for request, field in invalid_requests:
            with pytest.raises(InvalidRequest) as refused:
                loaded_backend.validate_request(request)
            fields = [problem.field for problem in refused.value.problems]
            assert any(f == field or f.startswith(f"{field}.") for f in fields), \
                f"refusal of {request!r} names {fields}, not {field!r}"

    def test_deterministic_requests_are_answered_the_same_twice(
            self, loaded_backend: Backend[Any, Any],
            sample_requests: list[BaseModel]) -> None:
        """What the response cache relies on: it serves a stored answer only for requests
        `deterministic()` says are."""
        for request in sample_requests:
            if loaded_backend.deterministic(request):
                first, second = (loaded_backend.predict([request])[0] for _ in range(2))
                self.assert_same(_payload(first), _payload(second))

    def test_preflight_returns_problems_as_a_list(self, loaded_backend: Backend[Any, Any]
                                                  ) -> None:
        assert loaded_backend.preflight() == []  # the loaded model's files exist

    def test_close_may_be_called_twice(self, backend_class: type[Backend[Any, Any]],
                                       backend_kwargs: dict[str, Any]) -> None:
        """Hosts close a backend on shutdown and after a hot swap; either may come twice."""
        backend = backend_class(**backend_kwargs)
        backend.load()
        backend.close()
        backend.close()

    def assert_same(self, a: Any, b: Any, where: str = "response") -> None:
        """Structural equality with float tolerance (`rtol`, `atol`)."""
        if isinstance(a, float) or isinstance(b, float):
            assert math.isclose(a, b, rel_tol=self.rtol, abs_tol=self.atol), f"{where}: {a}!={b}"
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                self.assert_same(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list):
            assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                self.assert_same(x, y, f"{where}[{i}]")
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"


def _payload(response: BaseModel) -> Any:
    return response.model_dump(mode="json", exclude={"request_id", "model_name"})
