"""A third-party plugin adding a new modality (`echo`) and a backend for it."""

from collections.abc import Sequence
from typing import Literal

from sheaf_core import Backend, BaseRequest, BaseResponse, hookimpl


class EchoRequest(BaseRequest):
    model_type: Literal["echo"] = "echo"
    text: str


class EchoResponse(BaseResponse):
    model_type: Literal["echo"] = "echo"
    text: str


class EchoBackend(Backend[EchoRequest, EchoResponse]):
    model_type = "echo"

    def predict(self, requests: Sequence[EchoRequest]) -> list[EchoResponse]:
        return [EchoResponse(text=r.text[::-1]) for r in requests]


@hookimpl
def sheaf_register_contracts(register):
    register("echo", EchoRequest, EchoResponse)


@hookimpl
def sheaf_register_backends(register):
    register("echo", EchoBackend)
