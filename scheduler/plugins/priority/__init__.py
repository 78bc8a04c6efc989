"""PrioritySort: higher priority first, then first come first served."""

from scheduler.plugins.priority.plugin import NAME, PriorityArgs, PrioritySort, new

__all__ = ["NAME", "PriorityArgs", "PrioritySort", "new"]
