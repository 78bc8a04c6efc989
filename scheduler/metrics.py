"""The scheduler daemon's ``/metrics``: a registry of its own (``kvraft.client.observe``) with
a collector that reads the daemon's counters, its core's queue and its view at scrape time,
plus two histograms the scheduling pass observes.

Names (docs/observability.md): kube-scheduler's where it has the same figure, with ``jobs``
for ``pods`` (``scheduler_schedule_attempts_total{result}``,
``scheduler_e2e_scheduling_duration_seconds``, ``scheduler_scheduling_algorithm_duration_seconds``,
``scheduler_pending_jobs{queue}``, ``scheduler_preemption_attempts_total``), client-go's
``leader_election_master_status``, and the ``kvraft_scheduler_*`` names the dashboard and
tests read (``kvraft_scheduler_queue_depth``, ``kvraft_scheduler_decisions_total``, ...).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kvraft.client.observe import new_registry
from scheduler.decode import EVICTION_REASONS

__all__ = ["BIND_BUCKETS_S", "KUBE_LATENCY_BUCKETS_S", "SchedulerCollector", "SchedulerMetrics", "cumulative"]

KUBE_LATENCY_BUCKETS_S = tuple(0.001 * 2**i for i in range(15))
"""kube-scheduler's ``metrics.ExponentialBuckets(0.001, 2, 15)`` for its scheduling latencies."""

JOB_WAIT_BUCKETS_S = tuple(0.01 * 2**i for i in range(24))
"""``scheduler_job_scheduling_duration_seconds``: kube's ``ExponentialBuckets(0.01, 2, 20)``
carried four doublings further (10 ms to 23 h), since a training job may wait for hours."""

QUEUES = ("active", "backoff", "unschedulable")

BIND_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of ``kvraft_scheduler_bind_latency_seconds`` (the daemon counts per bucket)."""


class SchedulerMetrics:
    """The daemon's registry and the histograms its pass observes."""

    def __init__(self, daemon: Any) -> None:
        self.registry = new_registry()
        self.e2e = Histogram(
            "scheduler_e2e_scheduling_duration_seconds",
            "E2e scheduling latency in seconds (a pass that bound jobs: scheduling algorithm + binding)",
            buckets=KUBE_LATENCY_BUCKETS_S, registry=self.registry)
        self.algorithm = Histogram(
            "scheduler_scheduling_algorithm_duration_seconds", "Scheduling algorithm latency in seconds (one pass)",
            buckets=KUBE_LATENCY_BUCKETS_S, registry=self.registry)
        self.job_wait = Histogram(
            "scheduler_job_scheduling_duration_seconds",
            "E2e latency for a job being scheduled: from when it became pending (submitted, or requeued after "
            "a preemption or a lost node) to its binding (kube-scheduler's pod_scheduling_duration_seconds)",
            buckets=JOB_WAIT_BUCKETS_S, registry=self.registry)
        self.registry.register(SchedulerCollector(daemon))


def cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last one past every bound) -> Prometheus cumulative buckets."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=False):
        total += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return out


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


class SchedulerCollector(Collector):
    def __init__(self, daemon: Any) -> None:
        self._daemon = weakref.ref(daemon)

    def collect(self) -> Iterator[Metric]:
        d = self._daemon()
        if d is None:
            return
        q = d.core.queue.statistics() if d.core is not None else None
        depth = {"active": q.active, "backoff": q.backoff, "unschedulable": q.unschedulable} if q else dict.fromkeys(QUEUES, 0)
        core = d.core.statistics() if d.core is not None else None
        attempts = core.attempts if core is not None else 0
        # kube-scheduler's ``result``: scheduled (binding written), error (the write was
        # refused), unschedulable (the rest of the attempts: no fit, or a preemption nominated)
        results = {"scheduled": d.bindings, "error": d.bind_failures,
                   "unschedulable": max(0, attempts - d.bindings - d.bind_failures)}
        family = CounterMetricFamily("scheduler_schedule_attempts_total", "Number of attempts to schedule jobs, by "
                                     "the result.", labels=["result", "profile"])
        for result, n in results.items():
            family.add_metric([result, d.config.profile], n)
        yield family
        pending = GaugeMetricFamily("scheduler_pending_jobs", "Number of pending jobs, by the queue type.",
                                    labels=["queue"])
        legacy = GaugeMetricFamily("kvraft_scheduler_queue_depth", "jobs waiting, by sub-queue", labels=["queue"])
        for queue in QUEUES:
            pending.add_metric([queue], depth[queue])
            legacy.add_metric([queue], depth[queue])
        yield pending
        yield legacy
        yield _counter("scheduler_preemption_attempts_total", "Total preemption attempts in the cluster till now "
                       "(gangs evicted for a preemptor).", d.preemptions)
        status = GaugeMetricFamily("leader_election_master_status", "Gauge of if the reporting system is master of "
                                   "the relevant lease, 0 indicates backup, 1 indicates master.", labels=["name"])
        status.add_metric(["kvraft-scheduler"], int(bool(d.leader)))
        yield status
        yield _gauge("kvraft_scheduler_leader", "1 when this replica leads", int(bool(d.leader)))
        yield _counter("kvraft_scheduler_leader_terms_total", "times this replica became leader", d.terms)
        yield _counter("kvraft_scheduler_passes_total", "scheduling passes", d.passes)
        yield _counter("kvraft_scheduler_decisions_total", "bindings written", d.bindings)
        yield _counter("kvraft_scheduler_bind_failures_total", "bindings refused by a revision compare",
                       d.bind_failures)
        yield _counter("kvraft_scheduler_preemptions_total", "gangs evicted for a preemptor", d.preemptions)
        evicted = CounterMetricFamily("kvraft_scheduler_evictions_total", "runs evicted (stopped with their grace "
                                      "period, then requeued), by reason: preemption, drain (jobctl drain --requeue), "
                                      "requeue (jobctl requeue)", labels=["reason"])
        for reason in ("preemption", *EVICTION_REASONS):
            evicted.add_metric([reason], d.preemptions if reason == "preemption" else d.evictions[reason])
        yield evicted
        releases = CounterMetricFamily("kvraft_scheduler_releases_total", "runs ended, by kind", labels=["kind"])
        for kind, n in sorted(d.releases.items()):
            releases.add_metric([kind], n)
        yield releases
        used = CounterMetricFamily("kvraft_scheduler_gpu_seconds", "GPU-seconds of the runs this replica released "
                                   "as leader, by tenant and outcome (completed, failed, preempted, cancelled); the "
                                   "same figures as the /accounting/ records jobctl report reads",
                                   labels=["tenant", "outcome"])
        for (tenant, outcome), seconds in sorted(d.gpu_seconds.items()):
            used.add_metric([tenant, outcome], seconds)
        yield used
        reasons = GaugeMetricFamily("kvraft_scheduler_pending_jobs", "pending jobs by reason", labels=["reason"])
        for reason, n in sorted(d.pending_by_reason.items()):
            reasons.add_metric([reason], n)
        yield reasons
        yield HistogramMetricFamily("kvraft_scheduler_bind_latency_seconds", "bind txn latency",
                                    buckets=cumulative(BIND_BUCKETS_S, d.bind_hist), sum_value=d.bind_sum_s)
        yield _counter("kvraft_scheduler_informer_relists_total", "lists after the first (compaction, errors)",
                       d.informer.relists)
        yield _counter("kvraft_scheduler_txn_conflicts_total", "txns whose compares failed", d.binder.conflicts)
        yield _counter("kvraft_scheduler_jobs_collected_total", "finished jobs deleted after their TTL",
                       getattr(d, "collected", 0))
        yield _gauge("kvraft_scheduler_nodes", "nodes known", len(d.view.nodes))
