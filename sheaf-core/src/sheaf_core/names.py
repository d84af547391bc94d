"""What a served model or pipeline may be called: its name is a route prefix."""

from __future__ import annotations

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
RESERVED_NAMES = {"health", "ready", "models", "metrics", "docs", "redoc", "openapi.json",
                  "invocations", "ping", "execution-parameters", "jobs"}


def check_not_reserved(name: str) -> None:
    if name in RESERVED_NAMES:
        raise ValueError(f"name {name!r} is reserved for a server route; pick another")
