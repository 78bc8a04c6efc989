"""The in-tree plugins: the only place their names are listed."""

from __future__ import annotations

from scheduler.framework.registry import Registry
from scheduler.plugins import (
    backfill,
    defrag,
    elastic,
    endtime,
    gang,
    gputype,
    las,
    preemption,
    priority,
    quota,
    remaining,
    resources,
    sjf,
    topology,
)

__all__ = ["in_tree_registry"]


def in_tree_registry() -> Registry:
    return Registry({
        priority.NAME: priority.new,
        las.NAME: las.new,
        sjf.NAME: sjf.new,
        remaining.NAME: remaining.new,
        resources.NAME: resources.new,
        gputype.NAME: gputype.new,
        gang.NAME: gang.new,
        topology.NAME: topology.new,
        quota.NAME: quota.new,
        preemption.NAME: preemption.new,
        backfill.NAME: backfill.new,
        defrag.NAME: defrag.new,
        endtime.NAME: endtime.new,
        elastic.NAME: elastic.new,
    })
