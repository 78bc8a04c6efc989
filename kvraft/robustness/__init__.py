"""Robustness runs: real member processes, real faults, checked histories (``python -m kvraft.robustness``).

A real 3- or 5-member cluster on 127.0.0.1 (``cluster``), concurrent KV, watch and lease
traffic with a recorded history (``workload``), a nemesis per named scenario (``scenarios``:
SIGKILL, SIGSTOP, symmetric/asymmetric/partial partitions through ``netfault``, membership
changes, snapshot catch-up), then heal, convergence (same ``hashkv`` on every member) and
the checks (``checks``: linearizability, watch guarantees, leases). See docs/robustness.md.
"""

from kvraft.robustness.checks import check_all, check_linearizable, check_watches
from kvraft.robustness.runner import RunResult, check_saved, run_scenario
from kvraft.robustness.scenarios import SCENARIOS, Scenario

__all__ = [
    "SCENARIOS",
    "RunResult",
    "Scenario",
    "check_all",
    "check_linearizable",
    "check_saved",
    "check_watches",
    "run_scenario",
]
