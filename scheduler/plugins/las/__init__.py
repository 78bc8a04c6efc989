"""LeastAttainedService: Tiresias" discretised two-dimensional LAS."""

from scheduler.plugins.las.plugin import NAME, LasArgs, LeastAttainedService, new

__all__ = ["NAME", "LasArgs", "LeastAttainedService", "new"]
