"""Conformance suites for the other two things a plugin can register: a contract (a new
modality, `sheaf_register_contracts`) and a pipeline combiner (`sheaf_register_combiners`).
Backends have `BackendConformance`. Subclass and supply the fixtures::

    class TestMyContract(ContractConformance):
        model_type = "point_cloud"

        @pytest.fixture
        def sample_requests(self):            # JSON bodies a client would send
            return [{"points": [[0, 0, 0]]}]

    class TestMyCombiner(CombinerConformance):
        combiner_name = "median"
        combiner_kwargs = {}

        @pytest.fixture
        def request_and_inputs(self):         # a request and each input node's response
            return TimeSeriesRequest(...), {"a": TimeSeriesResponse(...), "b": ...}

They check what hosts rely on: registration through entry points; a contract's request and
response derive from the base classes the hosts stamp (`request_id`, `model_name`), have
JSON schemas (the OpenAPI document is built from them), refuse unknown fields naming them,
and round-trip JSON; a combiner rejects unknown kwargs, answers the contract's response
type, does not depend on the order its inputs arrive in, and refuses with
`InvalidRequest` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from sheaf_core.combiner import Combiner
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import InvalidRequest
from sheaf_core.registry import ContractEntry, Registry, discover


class ContractConformance:
    """What a registered contract (model type) promises the hosts."""

    model_type: ClassVar[str]

    @pytest.fixture(scope="class")
    def registry(self) -> Registry:
        return discover()

    @pytest.fixture
    def contract(self, registry: Registry) -> ContractEntry:
        return registry.contract(self.model_type)

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, Any]]:
        raise NotImplementedError("supply JSON request bodies as the sample_requests fixture")

    def test_is_registered_through_entry_points(self, contract: ContractEntry) -> None:
        assert contract.model_type == self.model_type

    def test_request_and_response_carry_what_hosts_stamp(self, contract: ContractEntry) -> None:
        assert issubclass(contract.request, BaseRequest)
        assert issubclass(contract.response, BaseResponse)
        assert {"request_id", "model_name"} <= set(contract.response.model_fields)
        assert "request_id" in contract.request.model_fields

    def test_schemas_are_json(self, contract: ContractEntry) -> None:
        json.dumps(contract.request.model_json_schema())
        json.dumps(contract.response.model_json_schema(mode="serialization"))

    def test_sample_requests_round_trip_json(self, contract: ContractEntry,
                                             sample_requests: list[dict[str, Any]]) -> None:
        assert sample_requests, "supply at least one sample request"
        for body in sample_requests:
            request = contract.request.model_validate_json(json.dumps(body))
            again = contract.request.model_validate_json(request.model_dump_json())
            assert again == request

    def test_unknown_fields_are_refused_naming_them(
            self, contract: ContractEntry, sample_requests: list[dict[str, Any]]) -> None:
        with pytest.raises(ValidationError) as refused:
            contract.request.model_validate({**sample_requests[0], "no_such_field": 1})
        assert any("no_such_field" in map(str, error["loc"]) for error in refused.value.errors())


class CombinerConformance:
    """What a registered pipeline combiner promises the hosts."""

    combiner_name: ClassVar[str]
    combiner_kwargs: ClassVar[Mapping[str, Any]] = {}

    @pytest.fixture(scope="class")
    def registry(self) -> Registry:
        return discover()

    @pytest.fixture
    def combiner(self, registry: Registry) -> Combiner[Any, Any]:
        return registry.combiner(self.combiner_name)(**self.combiner_kwargs)

    @pytest.fixture
    def request_and_inputs(self) -> tuple[BaseModel, dict[str, BaseModel]]:
        raise NotImplementedError("supply (request, {node name: response}) as the "
                                  "request_and_inputs fixture")

    @pytest.fixture
    def invalid_requests(self) -> list[tuple[BaseModel, str]]:
        """(request, field) pairs `validate_request` refuses; none by default."""
        return []

    def test_is_registered_through_entry_points(self, registry: Registry) -> None:
        assert self.combiner_name in registry.combiners

    def test_model_type_is_a_registered_contract(self, registry: Registry,
                                                 combiner: Combiner[Any, Any]) -> None:
        registry.contract(type(combiner).model_type)

    def test_unknown_kwarg_is_rejected_naming_it(self, registry: Registry) -> None:
        with pytest.raises(ValidationError, match="no_such_setting"):
            registry.combiner(self.combiner_name)(**self.combiner_kwargs, no_such_setting=1)

    def test_answers_the_contracts_response_whatever_the_input_order(
            self, registry: Registry, combiner: Combiner[Any, Any],
            request_and_inputs: tuple[BaseModel, dict[str, BaseModel]]) -> None:
        request, inputs = request_and_inputs
        combiner.check_inputs(list(inputs))
        combiner.validate_request(request)
        response_type = registry.contract(type(combiner).model_type).response
        forward = combiner.combine(request, dict(inputs))
        backward = combiner.combine(request, dict(reversed(list(inputs.items()))))
        assert isinstance(forward, response_type)
        assert forward.model_dump(mode="json") == backward.model_dump(mode="json")

    def test_refusals_name_the_field(self, combiner: Combiner[Any, Any],
                                     invalid_requests: list[tuple[BaseModel, str]]) -> None:
        for request, field in invalid_requests:
            with pytest.raises(InvalidRequest) as refused:
                combiner.validate_request(request)
            assert any(p.field.startswith(field) for p in refused.value.problems), field
