"""``Registry``: plugin name -> factory, and ``Profile``: which plugins a scheduler runs.

The in-tree plugin list lives in ``scheduler/plugins/registry.py``, the only place plugin
names are listed. A factory takes the plugin's untyped args (from YAML or code) and the
framework ``Handle``, validates the args into the plugin's typed args dataclass and returns
the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.framework.interfaces import Handle

__all__ = ["PluginFactory", "PluginSpec", "Profile", "QueueOptions", "Registry"]

PluginFactory = Callable[[Mapping[str, Any], Handle], object]


class Registry:
    def __init__(self, factories: Mapping[str, PluginFactory] | None = None) -> None:
        self._factories: dict[str, PluginFactory] = dict(factories or {})

    def register(self, name: str, factory: PluginFactory) -> None:
        if name in self._factories:
            raise ValueError(f"plugin {name!r} registered twice")
        self._factories[name] = factory

    def new(self, name: str, args: Mapping[str, Any], handle: Handle) -> object:
        factory = self._factories.get(name)
        if factory is None:
            raise KeyError(f"unknown plugin {name!r}; known: {sorted(self._factories)}")
        return factory(args, handle)

    def names(self) -> list[str]:
        return sorted(self._factories)


@dataclass(frozen=True)
class PluginSpec:
    """One enabled plugin: ``weight`` scales its Score/ScoreDomain, ``args`` configure it."""

    name: str
    weight: int = 1
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueOptions:
    """``strict_fifo``: the first job that does not fit blocks every job behind it (Kueue
    StrictFIFO); otherwise later jobs may skip ahead. ``unschedulable_flush_s``: an
    unschedulable job is retried at least this often even without a helpful event."""

    strict_fifo: bool = False
    unschedulable_flush_s: float = 300.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 10.0


@dataclass(frozen=True)
class Profile:
    """A named scheduler configuration. Each plugin runs at every extension point it
    implements, in the order listed. ``nodes_to_score``: for gangs that fit in one node, stop
    filtering after this many feasible nodes (0 = all), like Kubernetes'
    percentageOfNodesToScore; candidates are enumerated tightest-first."""

    name: str
    plugins: tuple[PluginSpec, ...]
    queue: QueueOptions = QueueOptions()
    nodes_to_score: int = 64
