"""Shipped test helpers: simulated clock, network and disk, Raft safety checkers,
fault-injection sites (the ``buggify`` module) and a linearizability checker (see
docs/testing.md)."""

from kvraft.testing import buggify
from kvraft.testing.checkers import ClusterCheckers, Violation
from kvraft.testing.clock import ManualClock
from kvraft.testing.linearizability import (
    UNKNOWN,
    CheckResult,
    KvInput,
    Operation,
    Verdict,
    check_operations,
)
from kvraft.testing.simdisk import SimDisk
from kvraft.testing.simnet import NetFaults, SimNetwork

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "ClusterCheckers",
    "KvInput",
    "ManualClock",
    "NetFaults",
    "Operation",
    "SimDisk",
    "SimNetwork",
    "Verdict",
    "Violation",
    "buggify",
    "check_operations",
]
