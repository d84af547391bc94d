"""Which Sheaf packages and plugins are installed, and their versions: what `--version`
prints, and what a bug report needs."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

from sheaf_core.hookspecs import ENTRY_POINT_GROUP

#: Sheaf's own distributions that are not plugins (plugins are found by entry point).
LIBRARIES = ("sheaf-core", "sheaf-server", "sheaf-batch", "sheaf-diffusers")


def installed() -> list[tuple[str, str]]:
    """(distribution, version) of every Sheaf library and every distribution that provides
    a `sheaf` plugin entry point, third-party ones included; sorted by name."""
    found: dict[str, str] = {}
    for name in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):  # not installed
            found[name] = version(name)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.dist is not None:
            found[point.dist.name] = point.dist.version
    return sorted(found.items())


def report(program: str, distribution: str) -> str:
    """`program`'s version line, then every installed Sheaf package, one per line."""
    own = dict(installed()).get(distribution, "unknown")
    lines = [f"{program} {own}"] + [f"  {name} {ver}" for name, ver in installed()]
    return "\n".join(lines)


class VersionAction(argparse.Action):
    """`--version` for a CLI: prints `report(program, distribution)` and exits 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, distribution: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions of every "
                         "installed Sheaf package and plugin, then exit")
        self.distribution = distribution

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(report(parser.prog, self.distribution))
        parser.exit()
