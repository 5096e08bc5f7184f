"""Plugin registry over Python entry points. Built-ins are registered the same way as third-party plugins.

Groups: ``pdscale.policies``, ``pdscale.forecasters``, ``pdscale.actuators``, ``pdscale.metrics_sources``.
Factories:
- policies: ``factory(params: Mapping[str, Any]) -> Policy``
- forecasters: ``factory(**params) -> Forecaster``
- actuators: ``factory(pools: Mapping[str, PoolSettings], params: Mapping[str, Any], env: PluginEnv) -> Actuator``
- metrics sources: same signature as actuators, returning a ``MetricsSource``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = [
    "DuplicatePluginError",
    "PluginEnv",
    "PluginError",
    "PluginGroup",
    "Registry",
    "UnknownPluginError",
]


class PluginGroup(StrEnum):
    """Entry-point groups pdscale loads plugins from."""

    POLICIES = "pdscale.policies"
    FORECASTERS = "pdscale.forecasters"
    ACTUATORS = "pdscale.actuators"
    METRICS_SOURCES = "pdscale.metrics_sources"


_SINGULAR = {
    PluginGroup.POLICIES: "policy",
    PluginGroup.FORECASTERS: "forecaster",
    PluginGroup.ACTUATORS: "actuator",
    PluginGroup.METRICS_SOURCES: "metrics source",
}


class PluginError(Exception):
    """A plugin could not be found, loaded or built."""


class UnknownPluginError(PluginError, LookupError):
    """No plugin of that name; the message lists the available ones."""


class DuplicatePluginError(PluginError):
    """Two distributions register the same name in one group."""


@dataclass(slots=True)
class PluginEnv:
    """Shared resources handed to actuator and metrics-source factories (e.g. the embedded simulator)."""

    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    value: str
    dist: str
    ep: EntryPoint | None
    obj: Any = None


class Registry:
    """Plugins by group and name, discovered from entry points (plus explicit registrations in tests)."""

    def __init__(self, eps: Iterable[EntryPoint] | None = None) -> None:
        self._entries: dict[PluginGroup, dict[str, _Entry]] = {g: {} for g in PluginGroup}
        found = list(eps) if eps is not None else [ep for g in PluginGroup for ep in entry_points(group=g.value)]
        for ep in found:
            group = PluginGroup(ep.group)
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            self._add(group, _Entry(name=ep.name, value=ep.value, dist=dist, ep=ep))

    def _add(self, group: PluginGroup, entry: _Entry) -> None:
        existing = self._entries[group].get(entry.name)
        if existing is not None:
            if (existing.value, existing.dist) == (entry.value, entry.dist):
                return  # the same distribution seen twice on sys.path (editable installs)
            raise DuplicatePluginError(
                f"{group.value}: plugin name {entry.name!r} is registered twice: by {existing.dist} "
                f"({existing.value}) and by {entry.dist} ({entry.value}); uninstall one or rename it"
            )
        self._entries[group][entry.name] = entry

    def register(self, group: PluginGroup, name: str, obj: Callable[..., Any], dist: str = "<local>") -> None:
        """Register a factory directly (tests, embedding)."""
        value = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"
        self._add(group, _Entry(name=name, value=value, dist=dist, ep=None, obj=obj))

    def names(self, group: PluginGroup) -> list[str]:
        """Registered names in a group, sorted (nothing is imported)."""
        return sorted(self._entries[group])

    def describe(self, group: PluginGroup) -> list[tuple[str, str, str]]:
        """(name, target, distribution) for every plugin in the group."""
        return [(e.name, e.value, e.dist) for _, e in sorted(self._entries[group].items())]

    def load(self, group: PluginGroup, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; UnknownPluginError lists the available names."""
        entry = self._entries[group].get(name)
        if entry is None:
            available = ", ".join(self.names(group)) or "(none)"
            raise UnknownPluginError(f"unknown {_SINGULAR[group]} {name!r}; available: {available}")
        if entry.obj is not None:
            return entry.obj  # type: ignore[no-any-return]
        assert entry.ep is not None
        try:
            obj = entry.ep.load()
        except Exception as exc:
            raise PluginError(
                f"{group.value}: plugin {name!r} ({entry.value} from {entry.dist}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not callable(obj):
            raise PluginError(f"{group.value}: plugin {name!r} ({entry.value}) is not callable")
        return obj  # type: ignore[no-any-return]

    def create(self, group: PluginGroup, name: str, *args: Any, **kwargs: Any) -> Any:
        """Load and call the factory; a constructor error is re-raised as PluginError naming the plugin."""
        factory = self.load(group, name)
        try:
            return factory(*args, **kwargs)
        except PluginError:
            raise
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{group.value}: cannot build {name!r}: {exc}") from exc
