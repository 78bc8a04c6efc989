"""The agent's ``/metrics``: a registry of its own (``kvraft.client.observe.new_registry``) with
one collector reading ``Agent.statistics()`` and the node record at scrape time.

Names (docs/observability.md): ``kvraft_agent_*`` for the node, its lease, the fence and its
tasks; ``process_*`` and ``python_*`` from prometheus_client.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from agent.reconcile import AttemptState
from kvraft.client.observe import new_registry

__all__ = ["AgentCollector", "agent_registry"]


def agent_registry(agent: Any) -> CollectorRegistry:
    registry = new_registry()
    registry.register(AgentCollector(agent))
    return registry


def _labelled(family: GaugeMetricFamily | CounterMetricFamily, items: dict[str, Any]) -> GaugeMetricFamily | CounterMetricFamily:
    for label, value in sorted(items.items()):
        family.add_metric([str(label)], value)
    return family


class AgentCollector(Collector):
    def __init__(self, agent: Any) -> None:
        self._agent = weakref.ref(agent)

    def collect(self) -> Iterator[Metric]:
        agent = self._agent()
        if agent is None:
            return
        st = agent.statistics()
        node = agent.node_doc
        info = GaugeMetricFamily("kvraft_agent_node_info", "The node this agent runs; always 1.",
                                 labels=["node", "runtime", "rack", "gpu_type"])
        info.add_metric([agent.name, agent.runtime.name, str(node.get("rack", "")), str(node.get("gpu_type", ""))], 1)
        yield info
        capacity = node.get("capacity", {})
        yield _labelled(GaugeMetricFamily("kvraft_agent_node_capacity", "The node's capacity, by resource "
                                          "(cpus, memory_mib, gpus, rdma).", labels=["resource"]), capacity)
        yield GaugeMetricFamily("kvraft_agent_node_ready", "1 while the node's Ready condition is True.",
                                value=int(bool(node.get("healthy", False))))
        yield GaugeMetricFamily("kvraft_agent_registered", "1 while the node is registered under a live lease.",
                                value=int(st.registered))
        yield GaugeMetricFamily("kvraft_agent_fenced", "1 while the node is fenced: out of touch with kvraft past "
                                "the lease TTL plus --lease-loss-grace-s, every task stopped, nothing started.",
                                value=int(st.fenced))
        yield CounterMetricFamily("kvraft_agent_fences_total", "Times the node was fenced.", value=st.fences)
        yield GaugeMetricFamily("kvraft_agent_lease_age_seconds", "Seconds since the last successful lease renewal.",
                                value=st.lease_age_s)
        yield CounterMetricFamily("kvraft_agent_lease_grants_total", "Leases granted to this node.", value=st.lease_grants)
        yield CounterMetricFamily("kvraft_agent_scoped_tokens_total", "Scoped tokens granted to tasks' ranks "
                                  "(auth on: docs/design/auth.md).", value=st.tokens_granted)
        yield CounterMetricFamily("kvraft_agent_scoped_token_failures_total", "Task starts whose scoped token "
                                  "kvraft refused (the ranks cannot reach kvraft).", value=st.token_failures)
        yield CounterMetricFamily("kvraft_agent_lease_losses_total", "Leases found expired or revoked.",
                                  value=st.lease_losses)
        yield CounterMetricFamily("kvraft_agent_keepalive_failures_total", "Lease renewals that failed.",
                                  value=st.keepalive_failures)
        yield GaugeMetricFamily("kvraft_agent_desired_tasks", "Tasks assigned to this node.", value=st.desired)
        attempts = GaugeMetricFamily("kvraft_agent_attempts", "Task attempts the runtime holds, by state.",
                                     labels=["state"])
        for state in AttemptState:
            attempts.add_metric([state.value], st.observed.get(state.value, 0))
        yield attempts
        yield _labelled(CounterMetricFamily("kvraft_agent_actions_total", "Runtime actions taken, by kind.",
                                            labels=["kind"]), st.actions)
        yield _labelled(CounterMetricFamily("kvraft_agent_status_writes_total", "Task status writes, by result.",
                                            labels=["result"]), st.status_writes)
        yield SummaryMetricFamily("kvraft_agent_reconcile_seconds", "Reconcile passes and the time they took.",
                                  count_value=st.reconcile_passes, sum_value=st.reconcile_seconds_total)
        yield CounterMetricFamily("kvraft_agent_watch_relists_total", "Assignment lists after the first.",
                                  value=st.watch_relists)
        yield CounterMetricFamily("kvraft_agent_orphans_swept_total", "Orphaned tasks cleaned at start.",
                                  value=st.orphans_swept)
