"""Writing what `sheaf-server build` generates: readable YAML, and a directory written
whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sheaf_core.errors import ConfigError


class _Dumper(yaml.SafeDumper):
    """Readable YAML for humans who edit it: no anchors, multi-line strings as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False)


def dump_all(documents: list[dict[str, Any]]) -> str:
    """Several YAML documents in one text (`---` between them), as kubectl reads them."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)


def write_files(directory: str | Path, files: dict[str, str], *, force: bool = False,
                executable: frozenset[str] = frozenset()) -> list[Path]:
    """Write `files` (relative name → text) into `directory`, creating it. A directory
    that already holds files other than these is refused (ConfigError naming them) unless
    `force`: generated files must not mix silently with someone's edits. Everything is
    rendered before this is called, so a refusal leaves nothing half-written."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output: {root} exists and is not a directory")
    if root.exists() and not force:
        others = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                        if p.is_file() and str(p.relative_to(root)) not in files)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ConfigError(f"output: {root} already holds other files ({shown}); choose "
                              "an empty directory, or pass --force to write beside them")
    written = []
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name in executable:
            os.chmod(path, 0o755)
        written.append(path)
    return written
