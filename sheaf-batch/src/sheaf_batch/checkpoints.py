"""The job's work directory: one checkpoint per finished chunk, so a job started again with
the same spec does only what is left.

A chunk's responses and errors are written first, its marker (`part-NNNNNN.done`, holding
its counts) last: a chunk counts as done only once its marker exists, so a worker killed
mid-write leaves a chunk that is simply run again. `job.json` records which job the
directory belongs to; another job refuses to use it.

With `on_invalid: fail`, a worker that finds an invalid row raises the job's flag
(`invalid`); chunks checked but not run after that leave their rejects and a `.checked`
marker, never a `.done` one.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec

from sheaf_core.errors import ConfigError


class WorkDir:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None) -> None:
        self.path = path.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.path, **self.storage_options)

    def _at(self, name: str) -> str:
        return f"{self.root}/{name}"

    def identity(self) -> dict[str, Any] | None:
        """The job these checkpoints belong to (`claim`'s record), if any."""
        manifest = self._at("job.json")
        if not self.fs.exists(manifest):
            return None
        with self.fs.open(manifest, "r") as f:
            recorded: dict[str, Any] = json.load(f)
        return recorded

    def claim(self, identity: dict[str, Any]) -> None:
        """Start or resume: the directory must be new, or hold this very job."""
        manifest = self._at("job.json")
        if self.fs.exists(manifest):
            with self.fs.open(manifest, "r") as f:
                existing = json.load(f)
            if existing != identity:
                changed = sorted(k for k in identity.keys() | existing.keys()
                                 if identity.get(k) != existing.get(k))
                raise ConfigError(f"work_dir {self.path!r} holds checkpoints of another job "
                                  f"(differs in: {', '.join(changed)}); delete it to start "
                                  "over, or set another sink or work_dir")
            return
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(manifest, "w") as f:
            json.dump(identity, f, indent=1, sort_keys=True)

    def done(self) -> dict[int, dict[str, int]]:
        """Finished chunks → their counts."""
        return self._markers("done")

    def _markers(self, kind: str) -> dict[int, dict[str, int]]:
        found: dict[int, dict[str, int]] = {}
        for path in self.fs.glob(self._at(f"part-*.{kind}")):
            index = int(path.rsplit("part-", 1)[1].removesuffix(f".{kind}"))
            with self.fs.open(path, "r") as f:
                found[index] = json.load(f)
        return found

    def part(self, index: int, kind: str) -> str:
        return self._at(f"part-{index:06d}.{kind}")

    def write_chunk(self, index: int, responses: list[bytes], errors: list[bytes],
                    rejects: list[bytes], counts: dict[str, int]) -> None:
        """A finished chunk: its parts, then its marker."""
        self._write_parts(index, [("jsonl", responses), ("errors.jsonl", errors),
                                  ("rejects.jsonl", rejects)])
        self._mark(index, "done", counts)

    def write_checked(self, index: int, rejects: list[bytes], counts: dict[str, int]) -> None:
        """A chunk whose rows were checked but not run (`on_invalid: fail` and an invalid
        row somewhere): its rejects, then its marker."""
        self._write_parts(index, [("rejects.jsonl", rejects)])
        self._mark(index, "checked", counts)

    def checked(self) -> dict[int, dict[str, int]]:
        """Chunks checked but not run → their counts."""
        return self._markers("checked")

    def _write_parts(self, index: int, parts: list[tuple[str, list[bytes]]]) -> None:
        for kind, lines in parts:
            with self.fs.open(self.part(index, kind), "wb") as f:
                for line in lines:
                    f.write(line + b"\n")

    def _mark(self, index: int, kind: str, counts: dict[str, int]) -> None:
        with self.fs.open(self.part(index, kind), "w") as f:
            json.dump(counts, f)

    def flag_invalid(self) -> None:
        """Say that the job has an invalid row (`on_invalid: fail`): workers stop running
        the model and only check their rows."""
        with self.fs.open(self._at("invalid"), "w") as f:
            f.write("an invalid row was found; see the rejects parts\n")

    def invalid_seen(self) -> bool:
        return bool(self.fs.exists(self._at("invalid")))

    def copy_parts(self, indices: list[int], kind: str, target: Any) -> None:
        """Append the parts of `kind`, in chunk order, to the open binary file `target`."""
        for index in indices:
            with self.fs.open(self.part(index, kind), "rb") as f:
                while block := f.read(1 << 20):
                    target.write(block)

    def remove(self) -> None:
        self.fs.rm(self.root, recursive=True)
