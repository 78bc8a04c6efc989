"""Topology: keep gangs inside the tightest domain, and pack to keep big domains whole."""

from scheduler.plugins.topology.plugin import NAME, TopologyArgs, TopologyPlugin, new

__all__ = ["NAME", "TopologyArgs", "TopologyPlugin", "new"]
