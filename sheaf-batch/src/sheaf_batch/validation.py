"""Validation against the model type's contract, where the rows are parsed: on the workers,
each row once. The driver only cuts the source into chunks.

Invalid rows go to the rejects file with their line and the fields at fault
(`reject_record`). With `on_invalid: skip` the rest runs. With `fail` (the default) the job
writes no output and lists every invalid row: the worker that finds one flags the job
(`WorkDir.flag_invalid`), and from then on every worker only checks its chunks, without
running the model, so that all invalid rows are still found. The checks that need the
model's weights (its own refusals) land in the errors file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec

from sheaf_batch.sources import Chunk, Source
from sheaf_core.errors import InvalidRequest, SheafError

#: How many invalid rows an `InvalidRows` message lists (all of them are in the file).
SHOWN = 20


class InvalidRows(SheafError):
    """The source has invalid rows and `on_invalid` is `fail`: no output was written."""

    def __init__(self, count: int, shown: list[str], rejects: str) -> None:
        self.count = count
        more = f"\n  … and {count - len(shown)} more" if count > len(shown) else ""
        super().__init__(f"{count} invalid rows; no output was written. All are listed in "
                         f"{rejects}:\n  " + "\n  ".join(shown) + more +
                         "\nFix them, or set on_invalid: skip to run the valid rows.")

    @classmethod
    def listed_in(cls, count: int, rejects: str,
                  storage_options: dict[str, Any]) -> InvalidRows:
        """The error for the `count` invalid rows of the joined rejects file `rejects`,
        showing the first `SHOWN`."""
        shown: list[str] = []
        with fsspec.open(rejects, "r", **storage_options) as f:
            for text in f:
                if len(shown) == SHOWN:
                    break
                record = json.loads(text)
                shown.append(f"line {record['line']}: " + "; ".join(
                    f"{p['field']}: {p['message']}" for p in record["fields"]))
        return cls(count, shown, rejects)


@dataclass
class Plan:
    chunks: list[Chunk]
    rows: int = 0


def reject_record(line: int, text: str, exc: InvalidRequest) -> dict[str, Any]:
    """A rejects-file record: the line, the fields at fault, the row as it was."""
    return {"line": line, "fields": [{"field": p.field, "message": p.message}
                                     for p in exc.problems], "row": text.rstrip("\n")}


def chunks(source: Source, chunk_rows: int) -> Plan:
    """Scan `source` for its chunks (the workers parse and validate the rows)."""
    result = Plan(chunks=[])

    def count(line: int, text: str) -> None:
        result.rows += 1

    result.chunks = source.scan(chunk_rows, count)
    return result
