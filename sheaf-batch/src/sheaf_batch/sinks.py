"""Writing the sink: the finished chunks' parts joined in chunk order, as JSONL (a streaming
copy) or Parquet (one part in memory at a time).

Parquet needs one schema for the file before the first row: a first pass reads each part's
schema, unifies them (a struct such as `quantiles` gains the fields any row has; absent
ones are null), and a second pass writes each part cast to it.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec

from sheaf_batch.checkpoints import WorkDir
from sheaf_core.errors import SheafError


def write_sink(work: WorkDir, indices: list[int], sink: str,
               storage_options: dict[str, Any]) -> None:
    if sink.endswith(".parquet"):
        _write_parquet(work, indices, sink, storage_options)
        return
    with fsspec.open(sink, "wb", **storage_options) as target:
        work.copy_parts(indices, "jsonl", target)


def _write_parquet(work: WorkDir, indices: list[int], sink: str,
                   storage_options: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(index: int) -> pa.Table | None:
        with work.fs.open(work.part(index, "jsonl"), "rb") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return pa.Table.from_pylist(records) if records else None

    schemas = [t.schema for t in map(table, indices) if t is not None]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas \
            else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SheafError(f"sink {sink!r}: the responses do not share one Parquet schema "
                         f"({exc}); write a .jsonl sink instead") from None
    with fsspec.open(sink, "wb", **storage_options) as target, \
            pq.ParquetWriter(target, schema) as writer:
        for index in indices:
            part = table(index)
            if part is not None:
                writer.write_table(_widen(part, schema).cast(schema))


def _widen(part: Any, schema: Any) -> Any:
    """The part's columns in schema order, with the ones other parts have and this one
    lacks added as nulls."""
    import pyarrow as pa

    columns = [part.column(name) if name in part.schema.names
               else pa.nulls(part.num_rows, schema.field(name).type) for name in schema.names]
    return pa.Table.from_arrays(columns, schema=pa.schema(
        [part.schema.field(n) if n in part.schema.names else schema.field(n)
         for n in schema.names]))
