"""End-time-aware packing: give a job that fits in one node to a node whose running gangs are
expected to end around when it is expected to end, so a node's GPUs come free together."""

from scheduler.plugins.endtime.plugin import NAME, EndTimeArgs, EndTimeFit, new

__all__ = ["EndTimeArgs", "EndTimeFit", "NAME", "new"]
