"""Defragment: move small gangs out of the way of a gang that fits only in total."""

from scheduler.plugins.defrag.plugin import NAME, DefragArgs, Defragment, new

__all__ = ["NAME", "DefragArgs", "Defragment", "new"]
