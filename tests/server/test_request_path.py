"""The request path (`sheaf_server.engine.request_path`) entered directly with `Call`s, as
every host enters it — no HTTP, a real engine over a real backend (the scripted baseline):
which id an answer and an error carry, the name a response is stamped with, one failing
request in a batch, a pipeline's typed model nodes, a batch job's rows, and the one status
table every host answers by."""

from __future__ import annotations

import asyncio
import json
import pickle
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from server_support import POISON, ScriptedPlugin

from sheaf_core import ModelSpec, PipelineSpec
from sheaf_core import errors as core_errors
from sheaf_core.contracts.time_series import TimeSeriesRequest, TimeSeriesResponse
from sheaf_core.errors import FieldProblem, InvalidRequest, RequestError
from sheaf_server.engine import Call, Engine, request_path
from sheaf_server.engine import errors as engine_errors
from sheaf_server.engine.errors import STATUS, BackendFailed, status_of

T = TypeVar("T")
BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
BOTH = PipelineSpec.model_validate({
    "name": "both", "output": "mix", "nodes": {
        "a": {"model": "a"}, "b": {"model": "b"},
        "mix": {"combiner": "weighted_ensemble", "inputs": ["a", "b"]}}})


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(test())


@asynccontextmanager
async def engine(*names: str, pipelines: tuple[PipelineSpec, ...] = ()) -> AsyncIterator[Engine]:
    served = Engine([ModelSpec(name=name, backend="test", warmup=False) for name in names],
                    plugins=[ScriptedPlugin()], pipelines=pipelines)
    await served.start()
    await served.wait_loaded()
    try:
        yield served
    finally:
        await served.stop()


def call(body: object, request_id: str = "host-1", *, generated: bool = False,
         model: str = "a") -> Call:
    return Call(model, request_id, json.dumps(body).encode(), id_generated=generated)


def test_an_answer_carries_the_hosts_id_unless_the_host_made_it_up_and_the_body_names_one() -> None:
    async def test() -> list[tuple[str, str | None, str]]:
        async with engine("a") as served:
            model = served.runtimes["a"]
            seen = []
            for body, generated in ((BODY, False), ({**BODY, "request_id": "body-1"}, False),
                                    ({**BODY, "request_id": "body-2"}, True), (BODY, True)):
                answer = await request_path.predict(model, call(body, generated=generated))
                response = json.loads(answer.body)
                seen.append((answer.request_id, response["request_id"], response["model_name"]))
            return seen

    assert run(test) == [("host-1", "host-1", "a"), ("host-1", "host-1", "a"),
                         ("body-2", "body-2", "a"), ("host-1", "host-1", "a")]


def test_an_error_carries_the_id_its_request_was_settled_on_and_names_the_field() -> None:
    async def test() -> tuple[RequestError, RequestError]:
        async with engine("a") as served:
            model = served.runtimes["a"]
            errors = []
            for body in ({**BODY, "horizon": "soon"},  # refused while decoding: host id
                         {**BODY, "request_id": "body-3", "past_covariates": {"t": [1] * 4}}):
                with pytest.raises(InvalidRequest) as refused:
                    await request_path.predict(model, call(body, generated=True))
                errors.append(refused.value)
            return errors[0], errors[1]

    undecodable, unanswerable = run(test)
    assert undecodable.request_id == "host-1" and status_of(undecodable) == 422
    assert [p.field for p in undecodable.problems] == ["horizon"]
    assert unanswerable.request_id == "body-3"  # the body was read: its id stands
    assert unanswerable.message == "this model cannot answer the request"
    assert unanswerable.problems and unanswerable.problems[0].field == "past_covariates"


def test_a_failing_request_fails_alone_with_its_own_id_and_its_batch_is_answered() -> None:
    async def test() -> list[object]:
        async with engine("a") as served:
            model = served.runtimes["a"]
            bodies = [BODY, {**BODY, "history": [1.0, 2.0, POISON]}, BODY]
            return await asyncio.gather(
                *(request_path.predict(model, call(body, f"r-{i}"))
                  for i, body in enumerate(bodies)), return_exceptions=True)

    first, failed, last = run(test)
    assert isinstance(failed, BackendFailed) and failed.request_id == "r-1"
    assert status_of(failed) == 500 and "secret" not in failed.message
    assert [json.loads(a.body)["request_id"] for a in (first, last)] == ["r-0", "r-2"]  # type: ignore[union-attr]


def test_a_pipeline_answers_under_its_own_name_through_typed_model_nodes() -> None:
    async def test() -> tuple[dict, TimeSeriesResponse]:
        async with engine("a", "b", pipelines=(BOTH,)) as served:
            answer = await served.models["both"].handle(call(BODY, "p-1", model="both"))
            node = await request_path.respond(served.runtimes["b"], Call.typed(
                "b", TimeSeriesRequest.model_validate(BODY), "p-1", budget_s=5))
            return json.loads(answer.body), node

    combined, node = run(test)
    assert (combined["request_id"], combined["model_name"]) == ("p-1", "both")
    assert isinstance(node, TimeSeriesResponse)  # typed both ways: no JSON between nodes
    assert (node.request_id, node.model_name) == ("p-1", "b")


def test_a_batch_jobs_rows_take_the_same_checks_and_failures_as_the_servers() -> None:
    # a batch worker's model: built and loaded, never started (no event loop, no batcher)
    model = Engine([ModelSpec(name="a", backend="test")], plugins=[ScriptedPlugin()]).runtimes["a"]
    model.backend.load()
    rows = [TimeSeriesRequest.model_validate(body) for body in (
        BODY, {**BODY, "history": [1.0, POISON]}, {**BODY, "request_id": "mine"},
        {**BODY, "past_covariates": {"t": [1] * 4}})]
    calls = [Call("a", f"line-{i}", request=row, id_generated=True) for i, row in enumerate(rows)]
    first, poisoned, named, refused = request_path.answer_rows(model, calls, batch_size=4)
    assert json.loads(first)["request_id"] == "line-0"  # type: ignore[arg-type]
    assert isinstance(poisoned, BackendFailed) and poisoned.request_id == "line-1"
    assert isinstance(poisoned.__cause__, RuntimeError)  # the job's errors file shows it
    assert json.loads(named)["request_id"] == "mine"  # type: ignore[arg-type]
    assert isinstance(refused, InvalidRequest) and refused.request_id == "line-3"


def test_every_request_outcome_has_a_status_in_the_one_table() -> None:
    outcomes = {cls for module in (core_errors, engine_errors) for cls in vars(module).values()
                if isinstance(cls, type) and issubclass(cls, RequestError)
                and cls is not engine_errors.EngineError}  # a base, as RequestError is
    assert {cls.code for cls in outcomes} <= set(STATUS)
    assert len({cls.code for cls in outcomes}) == len(outcomes)  # one class per concept


def test_a_call_and_an_error_cross_a_process_boundary_intact() -> None:
    sent = Call("a", "r-9", b"{}", id_generated=True, budget_s=1.5, media_type="x/y",
                trace={"traceparent": "00-abc-def-01"})
    assert pickle.loads(pickle.dumps(sent)) == sent
    error = InvalidRequest(FieldProblem("horizon", "too far"), message="summary")
    error.request_id = "r-9"
    back = pickle.loads(pickle.dumps(error))
    assert (back.message, back.problems, back.request_id) == ("summary", error.problems, "r-9")


def test_former_error_names_still_import_with_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from sheaf_server.engine import RequestInvalid  # type: ignore[attr-defined]
    assert RequestInvalid is InvalidRequest
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
