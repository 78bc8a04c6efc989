"""Preemption: evict whole lower-ranked gangs, choosing the set that loses the fewest GPU-hours."""

from scheduler.plugins.preemption.plugin import NAME, Preempt, PreemptionArgs, new

__all__ = ["NAME", "Preempt", "PreemptionArgs", "new"]
