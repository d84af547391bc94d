"""Raise pydantic errors located at a field, from checks that span several fields.

A model validator that raises ValueError reports the error at the model root; clients then
can't tell which field is wrong. These helpers keep the location.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


def field_errors(title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise one ValidationError with an entry per (location, message, input); no-op if empty."""
    if not problems:
        return
    details: list[InitErrorDetails] = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{reason}", {"reason": message}),
            loc=loc,
            input=value,
        )
        for loc, message, value in problems
    ]
    raise ValidationError.from_exception_data(title, details)
