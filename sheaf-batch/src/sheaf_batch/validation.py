"""Validation against the model type's contract. With `on_invalid: fail` every row is
checked on the driver, streaming, before any work starts (nothing may run if one is
invalid); with `skip` the driver only cuts chunks and each worker checks its rows as it
parses them — one parse per row, where the work is. Invalid rows go to the rejects file
with their line and the fields at fault (`reject_record`, the same either way); the checks
that need the model's weights (its own refusals) run on the workers and land in the errors
file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fsspec

from sheaf_batch.sources import Chunk, Source
from sheaf_core.errors import InvalidRequest, SheafError
from sheaf_server.engine import ModelRuntime, request_path

#: How many invalid rows an `InvalidRows` message lists (all of them are in the file).
SHOWN = 20


class InvalidRows(SheafError):
    """The source has invalid rows and `on_invalid` is `fail`: nothing was run."""

    def __init__(self, count: int, shown: list[str], rejects: str) -> None:
        self.count = count
        more = f"\n  … and {count - len(shown)} more" if count > len(shown) else ""
        super().__init__(f"{count} invalid rows; nothing was run. All are listed in "
                         f"{rejects}:\n  " + "\n  ".join(shown) + more +
                         "\nFix them, or set on_invalid: skip to run the valid rows.")


@dataclass
class Plan:
    chunks: list[Chunk]
    rows: int = 0
    rejected: int = 0
    shown: list[str] = field(default_factory=list)


def reject_record(line: int, text: str, exc: InvalidRequest) -> dict[str, Any]:
    """A rejects-file record: the line, the fields at fault, the row as it was."""
    return {"line": line, "fields": [{"field": p.field, "message": p.message}
                                     for p in exc.problems], "row": text.rstrip("\n")}


def plan(source: Source, runtime: ModelRuntime, chunk_rows: int, rejects: str,
         storage_options: dict[str, Any]) -> Plan:
    """Scan `source`: validate each row, write rejects, cut the chunks."""
    result = Plan(chunks=[])
    with fsspec.open(rejects, "w", **storage_options) as out:

        def check(line: int, text: str) -> None:
            result.rows += 1
            try:
                request_path.parse(runtime.contract.request.model_validate_json, text)
            except InvalidRequest as exc:
                result.rejected += 1
                record = reject_record(line, text, exc)
                out.write(json.dumps(record) + "\n")
                if len(result.shown) < SHOWN:
                    result.shown.append(f"line {line}: " + "; ".join(
                        f"{p['field']}: {p['message']}" for p in record["fields"]))

        result.chunks = source.scan(chunk_rows, check)
    return result


def chunks(source: Source, chunk_rows: int) -> Plan:
    """Scan `source` for its chunks only (`on_invalid: skip`: the workers validate)."""
    result = Plan(chunks=[])

    def count(line: int, text: str) -> None:
        result.rows += 1

    result.chunks = source.scan(chunk_rows, count)
    return result
