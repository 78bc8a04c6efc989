"""Gang: all or nothing. A gang is only ever placed whole."""

from scheduler.plugins.gang.plugin import NAME, Gang, GangArgs, new

__all__ = ["NAME", "Gang", "GangArgs", "new"]
