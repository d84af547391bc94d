"""Typed request/response contracts, one module per model type."""

from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.contracts.time_series import OutputMode, TimeSeriesRequest, TimeSeriesResponse

__all__ = [
    "BaseRequest",
    "BaseResponse",
    "OutputMode",
    "TimeSeriesRequest",
    "TimeSeriesResponse",
]
