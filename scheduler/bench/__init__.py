"""Scheduler throughput benchmark: the real core, YAML workloads, decisions per second."""

from scheduler.bench.runner import BenchResult, run_workload
from scheduler.bench.workloads import Workload, load, load_all

__all__ = ["BenchResult", "Workload", "load", "load_all", "run_workload"]
