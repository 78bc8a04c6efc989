"""The scheduling framework: extension points, Status, CycleState, registry, runtime."""

from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import (
    MAX_SCORE,
    CapacityPlugin,
    Domain,
    EnqueueExtensions,
    FilterPlugin,
    Handle,
    PassPlugin,
    PermitPlugin,
    Plugin,
    PostFilterPlugin,
    PostFilterResult,
    PreFilterPlugin,
    QueueSortPlugin,
    ScoreDomainPlugin,
    ScorePlugin,
)
from scheduler.framework.registry import PluginFactory, PluginSpec, Profile, QueueOptions, Registry
from scheduler.framework.runtime import Attempt, Framework
from scheduler.framework.status import SUCCESS, Code, Status

__all__ = [
    "MAX_SCORE",
    "SUCCESS",
    "Attempt",
    "CapacityPlugin",
    "Code",
    "CycleState",
    "Domain",
    "EnqueueExtensions",
    "FilterPlugin",
    "Framework",
    "Handle",
    "PassPlugin",
    "PermitPlugin",
    "Plugin",
    "PluginFactory",
    "PluginSpec",
    "PostFilterPlugin",
    "PostFilterResult",
    "PreFilterPlugin",
    "Profile",
    "QueueOptions",
    "QueueSortPlugin",
    "Registry",
    "ScoreDomainPlugin",
    "ScorePlugin",
    "Status",
]
