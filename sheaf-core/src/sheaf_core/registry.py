"""Plugin discovery and the registry of model types and backends it builds.

Each entry point of the ``sheaf`` group is loaded on its own: a plugin that fails to import
or whose hook raises is recorded (name, distribution, version, error) and the others keep
working. A backend name registered by two distributions is an error naming both; a spec that
needs a broken or ambiguous backend fails with the stored error when it is built.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any, Protocol, Union

import pluggy
from pydantic import BaseModel, Field, TypeAdapter

from sheaf_core import hookspecs
from sheaf_core.backend import Backend
from sheaf_core.codecs import JSON_MEDIA_TYPE, BodyCodec, is_json
from sheaf_core.combiner import Combiner
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import PluginError, UnsupportedPayload

DISABLE_ENV = "SHEAF_DISABLE_PLUGINS"
IN_PROCESS = "<in-process>"


@dataclass
class PluginInfo:
    """What one plugin is, where it came from, and what it registered or why it failed."""

    name: str
    distribution: str
    version: str
    module: str
    backends: list[str] = field(default_factory=list)
    model_types: list[str] = field(default_factory=list)
    combiners: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.name!r})"


@dataclass(frozen=True)
class BackendEntry:
    name: str
    cls: type[Backend[Any, Any]]
    plugin: PluginInfo


@dataclass(frozen=True)
class ContractEntry:
    model_type: str
    request: type[BaseRequest]
    response: type[BaseResponse]
    plugin: PluginInfo
    #: Body codecs by media type (`sheaf_core.codecs`); JSON needs none.
    codecs: Mapping[str, BodyCodec] = field(default_factory=dict)

    def codec(self, media_type: str) -> BodyCodec | None:
        """The codec for a body of `media_type`; None: read it as the contract's JSON.
        UnsupportedPayload for a media type that is neither."""
        if media_type in self.codecs:
            return self.codecs[media_type]
        if is_json(media_type):
            return self.codecs.get(JSON_MEDIA_TYPE)
        accepted = ", ".join([JSON_MEDIA_TYPE, *self.codecs])
        raise UnsupportedPayload(f"model type {self.model_type!r} does not read "
                                 f"{media_type!r} bodies; it reads {accepted}")


@dataclass(frozen=True)
class CombinerEntry:
    name: str
    cls: type[Combiner[Any, Any]]
    plugin: PluginInfo


class ContractRegistrar(Protocol):
    """`register(model_type, request, response, codecs=())` in `sheaf_register_contracts`."""

    def __call__(self, model_type: str, request: type[BaseRequest],
                 response: type[BaseResponse], codecs: Sequence[BodyCodec] = ()) -> None: ...


BackendRegistrar = Callable[[str, type[Backend[Any, Any]]], None]
CombinerRegistrar = Callable[[str, type[Combiner[Any, Any]]], None]


class Registry:
    """Everything discovery found. Built by `discover()`; read-only afterwards."""

    def __init__(self) -> None:
        self.plugins: list[PluginInfo] = []
        self.backends: dict[str, BackendEntry] = {}
        self.contracts: dict[str, ContractEntry] = {}
        self.combiners: dict[str, CombinerEntry] = {}
        #: backend, combiner or model-type name → why it cannot be used (duplicates, bad
        #: declarations)
        self.problems: dict[str, str] = {}

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def backend(self, name: str) -> type[Backend[Any, Any]]:
        """The backend class registered as `name`; PluginError says why it is unavailable."""
        if name in self.backends:
            return self.backends[name].cls
        if name in self.problems:
            raise PluginError(self.problems[name])
        for plugin in self.failed:
            if plugin.name == name:
                raise PluginError(f"backend {name!r} comes from plugin {plugin.label}, which "
                                  f"failed to load: {plugin.error}")
        raise PluginError(unknown_backend_message(name, sorted(self.backends), self.failed))

    def combiner(self, name: str) -> type[Combiner[Any, Any]]:
        """The combiner class registered as `name`; PluginError says why it is unavailable."""
        if name in self.combiners:
            return self.combiners[name].cls
        if name in self.problems:
            raise PluginError(self.problems[name])
        known = ", ".join(sorted(self.combiners)) or "none"
        raise PluginError(f"unknown combiner {name!r}; registered combiners: {known}")

    def contract(self, model_type: str) -> ContractEntry:
        if model_type in self.contracts:
            return self.contracts[model_type]
        if model_type in self.problems:
            raise PluginError(self.problems[model_type])
        known = ", ".join(sorted(self.contracts)) or "none"
        raise PluginError(f"unknown model type {model_type!r}; registered: {known}")

    @cached_property
    def request_adapter(self) -> TypeAdapter[Any]:
        """Validates a request of any registered type, discriminated on `model_type`."""
        members = tuple(entry.request for entry in self.contracts.values())
        if not members:
            raise PluginError("no model type is registered (is sheaf-core installed?)")
        if len(members) == 1:
            return TypeAdapter(members[0])
        union: Any = Union[members]  # noqa: UP007 - built at run time from the registry
        return TypeAdapter(Annotated[union, Field(discriminator="model_type")])


def discover(
    extra_plugins: Iterable[object] = (),
    *,
    group: str = hookspecs.ENTRY_POINT_GROUP,
    disabled: Iterable[str] | None = None,
) -> Registry:
    """Load every plugin of `group` (minus `disabled`) plus in-process `extra_plugins`.

    `disabled` defaults to the comma-separated names in $SHEAF_DISABLE_PLUGINS; a disabled
    plugin is not even imported. `extra_plugins` are modules or objects with hookimpls,
    registered as if installed (handy for tests and embedding).
    """
    if disabled is None:
        disabled = [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
    skip = set(disabled)
    registry = Registry()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}

    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if ep.name in skip or ep.name in infos:
            continue
        info = _entry_point_info(ep)
        registry.plugins.append(info)
        infos[ep.name] = info
        try:
            manager.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take the host down
            info.error = _describe(exc)

    for index, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        info = PluginInfo(name=name, distribution=IN_PROCESS, version="",
                          module=getattr(plugin, "__module__", None) or name)
        registry.plugins.append(info)
        infos[name] = info
        try:
            manager.register(plugin, name=name)
        except Exception as exc:
            info.error = _describe(exc)

    _flag_unknown_hooks(manager, infos)
    _collect_contracts(manager, infos, registry)
    _collect_backends(manager, infos, registry)
    _collect_combiners(manager, infos, registry)
    return registry


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of installed plugins, discovered on first use."""
    global _default
    if _default is None:
        _default = discover()
    return _default


def registry_with(plugins: Iterable[object] = ()) -> Registry:
    """Installed plugins plus in-process plugin objects (tests, embedding apps); the shared
    process-wide registry when there are none."""
    plugins = tuple(plugins)
    return discover(plugins) if plugins else default_registry()


def _entry_point_info(ep: EntryPoint) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(name=ep.name, distribution=dist.name if dist else "?",
                      version=dist.version if dist else "?", module=ep.value)


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _flag_unknown_hooks(manager: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """A misspelled hook name would otherwise be silently ignored (tox's check_pending)."""
    for hook_name, caller in vars(manager.hook).items():
        if not hook_name.startswith("sheaf_") or caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            info = infos[impl.plugin_name]
            info.error = info.error or (f"implements unknown hook {hook_name!r}; known hooks: "
                                        "sheaf_register_contracts, sheaf_register_backends, "
                                        "sheaf_register_combiners")


def _collect_contracts(manager: pluggy.PluginManager, infos: dict[str, PluginInfo],
                       registry: Registry) -> None:
    for impl in manager.hook.sheaf_register_contracts.get_hookimpls():
        info = infos[impl.plugin_name]
        if info.error:
            continue

        def register(model_type: str, request: type[BaseRequest], response: type[BaseResponse],
                     codecs: Sequence[BodyCodec] = (), info: PluginInfo = info) -> None:
            _check_contract(model_type, request, response)
            for codec in codecs:
                if not isinstance(codec, BodyCodec) or not codec.media_types:
                    raise TypeError(f"contract {model_type!r}: codec {codec!r} must be a "
                                    "BodyCodec instance with media_types")
            by_media_type = {media_type: codec for codec in codecs
                             for media_type in codec.media_types}
            if model_type in registry.contracts:
                other = registry.contracts.pop(model_type).plugin
                registry.problems[model_type] = (
                    f"model type {model_type!r} is registered by both {other.label} and "
                    f"{info.label}; uninstall one, or disable one with {DISABLE_ENV}")
                return
            if model_type not in registry.problems:
                registry.contracts[model_type] = ContractEntry(model_type, request, response,
                                                              info, by_media_type)
                info.model_types.append(model_type)

        try:
            impl.function(register=register)
        except Exception as exc:
            info.error = _describe(exc)


def _collect_backends(manager: pluggy.PluginManager, infos: dict[str, PluginInfo],
                      registry: Registry) -> None:
    _collect_named(manager.hook.sheaf_register_backends, infos, registry, "backend", Backend,
                   registry.backends, BackendEntry, lambda info: info.backends)


def _collect_combiners(manager: pluggy.PluginManager, infos: dict[str, PluginInfo],
                       registry: Registry) -> None:
    _collect_named(manager.hook.sheaf_register_combiners, infos, registry, "combiner",
                   Combiner, registry.combiners, CombinerEntry, lambda info: info.combiners)


def _collect_named(hook: Any, infos: dict[str, PluginInfo], registry: Registry, kind: str,
                   base: type, table: dict[str, Any], entry: Callable[..., Any],
                   listing: Callable[[PluginInfo], list[str]]) -> None:
    """Backends and combiners alike: a named subclass of `base` serving a registered model
    type; a name registered twice is a problem naming both plugins."""
    for impl in hook.get_hookimpls():
        info = infos[impl.plugin_name]
        if info.error:
            continue

        def register(name: str, cls: type, info: PluginInfo = info) -> None:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{kind} {name!r} must be a sheaf_core.{base.__name__} "
                                f"subclass, got {cls!r}")
            if name in table:
                other = table.pop(name).plugin
                registry.problems[name] = (
                    f"{kind} {name!r} is registered by both {other.label} and {info.label}; "
                    f"uninstall one, or disable one with {DISABLE_ENV}")
                return
            if name in registry.problems:
                return
            model_type = getattr(cls, "model_type", None)
            if model_type not in registry.contracts:
                registry.problems[name] = (
                    f"{kind} {name!r} from {info.label} declares model_type {model_type!r}, "
                    "which no installed plugin registers")
                return
            table[name] = entry(name, cls, info)
            listing(info).append(name)

        try:
            impl.function(register=register)
        except Exception as exc:
            info.error = _describe(exc)


def _check_contract(model_type: str, request: type[BaseModel], response: type[BaseModel]) -> None:
    for cls, base in ((request, BaseRequest), (response, BaseResponse)):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"contract {model_type!r}: {cls!r} must subclass {base.__name__}")
        declared = cls.model_fields.get("model_type")
        if declared is None or declared.default != model_type:
            raise TypeError(f"contract {model_type!r}: {cls.__name__}.model_type must be "
                            f"Literal[{model_type!r}] defaulting to {model_type!r}")


#: The backends Sheaf publishes, and the package that provides each: the only names an
#: install hint may suggest (a hint built from the user's typo would name a package that
#: does not exist — or one a squatter could publish).
KNOWN_BACKENDS = {"chronos": "sheaf-backend-chronos", "flux": "sheaf-backend-flux",
                  "sdxl": "sheaf-backend-sdxl", "graphcast": "sheaf-backend-graphcast"}


def unknown_backend_message(name: str, installed: list[str],
                            failed: list[PluginInfo]) -> str:
    """Why `name` is no backend: the nearest installed name, the package that provides it
    when it is one of Sheaf's own, what is installed, and which plugins failed to load."""
    import difflib

    close = difflib.get_close_matches(name, installed, n=1)
    message = f"unknown backend {name!r}."
    if close:
        message += f" Did you mean {close[0]!r}?"
    elif name in KNOWN_BACKENDS:
        message += (f" It is provided by {KNOWN_BACKENDS[name]}: "
                    f"`pip install {KNOWN_BACKENDS[name]}`.")
    message += (f" Installed backends: {', '.join(installed) or 'none'} (`sheaf-server "
                "plugins` lists them with their packages).")
    broken = "; ".join(f"{p.label}: {p.error}" for p in failed)
    return message + (f" Plugins that failed to load: {broken}" if broken else "")
