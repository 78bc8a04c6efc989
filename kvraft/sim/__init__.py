"""The deterministic whole-cluster Raft simulator: ``python -m kvraft.sim``
(see docs/testing.md)."""

from kvraft.sim.plan import SimPlan
from kvraft.sim.runner import SeedResult, run_seed

__all__ = ["SeedResult", "SimPlan", "run_seed"]
