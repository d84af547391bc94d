"""Reading requests: JSONL or Parquet, local or any fsspec URL (s3://...).

The driver scans the source once (`scan`), row by row, never holding it: it validates each
row and cuts the source into `Chunk`s — what a worker reads, runs and checkpoints at once.
A worker then reads just its chunk (`rows`): a byte range of a JSONL file (seek), or a
Parquet row group. Rows are numbered as a person counts them: the physical line of a JSONL
file (blank lines skipped but counted), the 1-based row of a Parquet file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from sheaf_batch.spec import source_format


@dataclass(frozen=True)
class Chunk:
    index: int
    first_line: int  # line (JSONL) or row (Parquet) number of its first row, 1-based
    lines: int  # lines (JSONL, blank ones included) or rows (Parquet) it spans
    rows: int  # requests in it
    offset: int  # JSONL: byte offset of its first line; Parquet: its row group


class Source:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None) -> None:
        self.path = path
        self.format = source_format(path)
        self.storage_options = storage_options or {}

    def open(self) -> Any:
        return fsspec.open(self.path, "rb", **self.storage_options).open()

    def estimate_rows(self, sample_bytes: int = 1 << 16) -> int:
        """About how many rows the source holds, without reading it: a JSONL file's size
        over the mean length of its first lines; a Parquet file's row count."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            with self.open() as f:
                return int(pq.ParquetFile(f).metadata.num_rows)
        size = int(self.fingerprint()["size"] or 0)
        with self.open() as f:
            head = f.read(sample_bytes)
        lines = head.count(b"\n") or 1
        return max(1, round(size * lines / max(1, len(head))))

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this version of the source (size, and mtime or ETag)."""
        fs, path = fsspec.core.url_to_fs(self.path, **self.storage_options)
        info = fs.info(path)
        return {"path": self.path, "size": info.get("size"),
                "version": str(info.get("mtime") or info.get("ETag") or info.get("LastModified"))}

    def scan(self, chunk_rows: int, on_row: Callable[[int, str], None]) -> list[Chunk]:
        """Call `on_row(line, json_text)` for every row in order; the chunks."""
        if self.format == "jsonl":
            return self._scan_jsonl(chunk_rows, on_row)
        return self._scan_parquet(on_row)

    def rows(self, chunk: Chunk) -> Iterator[tuple[int, str]]:
        """(line, json_text) of each row of `chunk`, in order."""
        if self.format == "jsonl":
            with self.open() as f:
                f.seek(chunk.offset)
                for i in range(chunk.lines):
                    text = f.readline().decode()
                    if text.strip():
                        yield chunk.first_line + i, text
        else:
            import pyarrow.parquet as pq

            with self.open() as f:
                table = pq.ParquetFile(f).read_row_group(chunk.offset)
                for i, row in enumerate(table.to_pylist()):
                    yield chunk.first_line + i, _row_json(row)

    def _scan_jsonl(self, chunk_rows: int, on_row: Callable[[int, str], None]) -> list[Chunk]:
        chunks: list[Chunk] = []
        start_line, start_offset, rows = 1, 0, 0
        line, offset = 0, 0
        with self.open() as f:
            for raw in iter(f.readline, b""):
                line += 1
                text = raw.decode()
                if text.strip():
                    on_row(line, text)
                    rows += 1
                offset += len(raw)
                if rows == chunk_rows:
                    chunks.append(Chunk(len(chunks), start_line, line - start_line + 1, rows,
                                        start_offset))
                    start_line, start_offset, rows = line + 1, offset, 0
        if rows:
            chunks.append(Chunk(len(chunks), start_line, line - start_line + 1, rows,
                                start_offset))
        return chunks

    def _scan_parquet(self, on_row: Callable[[int, str], None]) -> list[Chunk]:
        import pyarrow.parquet as pq

        chunks: list[Chunk] = []
        first = 1
        with self.open() as f:
            parquet = pq.ParquetFile(f)
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group)
                for i, row in enumerate(table.to_pylist()):
                    on_row(first + i, _row_json(row))
                if table.num_rows:
                    chunks.append(Chunk(len(chunks), first, table.num_rows, table.num_rows,
                                        group))
                first += table.num_rows
        return chunks


def _row_json(row: dict[str, Any]) -> str:
    """A Parquet row as the JSON request it stands for: null columns are absent fields."""
    return json.dumps({k: v for k, v in row.items() if v is not None}, default=str)
