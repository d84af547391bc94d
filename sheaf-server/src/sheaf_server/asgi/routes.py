"""The server's route table, read by everything that names a route — registration, the
unknown-model 404s, the model listing, metric labels and span names — so that they cannot
drift apart (they had: `POST /nope/stream` once answered a bare 404 while `/nope/predict`
named the served models, and the listing had no stream route).

A served model `NAME` answers `/{NAME}/{route}` for each of MODEL_ROUTES (`stream` only when
its backend streams, `jobs` only with a `jobs:` section). The server's own routes are the
names no model may take: sheaf-core's RESERVED_NAMES, which validates model names when a
config is read."""

from __future__ import annotations

from sheaf_core.names import RESERVED_NAMES

#: route → method, for every served model.
MODEL_ROUTES: dict[str, str] = {"predict": "POST", "stream": "POST", "jobs": "POST",
                                "health": "GET", "ready": "GET"}
#: The server's own top-level routes (also the reserved model names).
SERVER_ROUTES: frozenset[str] = frozenset(RESERVED_NAMES)


def model_paths(name: str, *, streams: bool, jobs: bool = False) -> dict[str, str]:
    """route → path of the routes model `name` serves, as the model listing shows them
    (`jobs` when the config has a `jobs:` section)."""
    return {route: f"/{name}/{route}" for route in MODEL_ROUTES
            if (route != "stream" or streams) and (route != "jobs" or jobs)}
