"""Trace-driven simulator: the real scheduler, a replayed trace, the slowdown model."""

from scheduler.sim.cluster import ClusterSpec, build_nodes
from scheduler.sim.engine import JobRecord, RunResult, Simulation
from scheduler.sim.estimate import Estimator
from scheduler.sim.metrics import summarize
from scheduler.sim.slowdown import SlowdownModel
from scheduler.sim.trace import NodeShape, TraceJob, read_nodes, read_trace

__all__ = [
    "ClusterSpec",
    "Estimator",
    "JobRecord",
    "NodeShape",
    "RunResult",
    "Simulation",
    "SlowdownModel",
    "TraceJob",
    "build_nodes",
    "read_nodes",
    "read_trace",
    "summarize",
]
