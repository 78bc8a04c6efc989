"""Learned remaining time first: rank jobs by the run time they are expected still to need,
given the service they received, from the run times of finished jobs."""

from scheduler.plugins.remaining.plugin import NAME, RemainingArgs, RemainingTimeFirst, new

__all__ = ["NAME", "RemainingArgs", "RemainingTimeFirst", "new"]
