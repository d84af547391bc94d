"""Pluggy hook specifications. Plugins implement them with `sheaf_core.hookimpl`.

A plugin is a light module (no heavy imports at module level) named by an entry point in
the ``sheaf`` group. Hook implementations may import their backend classes inside the hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sheaf_core.registry import BackendRegistrar, CombinerRegistrar, ContractRegistrar

PROJECT = "sheaf"
ENTRY_POINT_GROUP = "sheaf"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sheaf_register_contracts(register: ContractRegistrar) -> None:
    """Register model types: ``register("weather", WeatherRequest, WeatherResponse)``, with
    ``codecs=[...]`` for bodies other than JSON (`sheaf_core.codecs`)."""


@hookspec
def sheaf_register_backends(register: BackendRegistrar) -> None:
    """Register backends: ``register("chronos", ChronosBackend)``."""


@hookspec
def sheaf_register_combiners(register: CombinerRegistrar) -> None:
    """Register pipeline combiners: ``register("weighted_ensemble", WeightedEnsemble)``."""
