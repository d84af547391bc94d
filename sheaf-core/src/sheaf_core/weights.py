"""Where a model's weights come from — a local directory, a file, or a hub id — checked
before any load, so that a mistyped path reads as a missing path ("/x/y is neither a local
directory nor a hub id") rather than as the hub's complaint about an id's format, minutes
later, from inside the model library. Backends call these from `Backend.preflight()`."""

from __future__ import annotations

import re
from pathlib import Path

from sheaf_core.errors import FieldProblem

#: `name` or `org/name`, as hubs spell repository ids; a path with more parts, a leading
#: `/`, `.` or `~`, or `..` cannot be one.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def model_dir_problem(value: str, field: str) -> FieldProblem | None:
    """None when `value` is an existing directory or could be a hub id (the hub itself is
    only asked at load); else what is wrong, naming `field`."""
    path = Path(value).expanduser()
    if path.is_dir():
        return None
    if path.exists():
        return FieldProblem(field, f"{value} is a file; expected a model directory (as "
                            "saved by save_pretrained) or a hub id (org/name)")
    if HUB_ID.fullmatch(value) and ".." not in value:
        return None
    return FieldProblem(field, f"{value} is neither a local directory nor a hub id "
                        "(org/name): no such directory on this machine")


def file_problem(value: str, field: str, what: str) -> FieldProblem | None:
    """None when `value` is an existing file or a URL (`scheme://`, read by the library);
    else what is wrong, naming `field`."""
    if "://" in value:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return None
    state = "is a directory" if path.is_dir() else "does not exist on this machine"
    return FieldProblem(field, f"{value} {state}; expected the {what} file")


def raise_problems(problems: list[FieldProblem]) -> None:
    """For `load()`: fail with the same words `preflight()` gives `validate`."""
    if problems:
        raise ValueError("; ".join(f"backend_kwargs.{p.field}: {p.message}" for p in problems))
