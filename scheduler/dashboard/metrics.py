"""The dashboard's ``/metrics``: a registry of its own (``kvraft.client.observe``) whose
collector reads the live state at scrape time (docs/observability.md)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kvraft.client.observe import new_registry

__all__ = ["DashboardCollector", "dashboard_registry"]


def dashboard_registry(dashboard: Any) -> CollectorRegistry:
    registry = new_registry()
    registry.register(DashboardCollector(dashboard))
    return registry


class DashboardCollector(Collector):
    def __init__(self, dashboard: Any) -> None:
        self._dashboard = weakref.ref(dashboard)

    def collect(self) -> Iterator[Metric]:
        d = self._dashboard()
        if d is None:
            return
        live = d.live
        yield GaugeMetricFamily("kvraft_dashboard_synced", "1 once the dashboard has listed the registry.",
                                value=int(live.informer.synced.is_set()))
        yield GaugeMetricFamily("kvraft_dashboard_revision", "The kvraft revision the dashboard's view is at.",
                                value=live.view.revision)
        yield GaugeMetricFamily("kvraft_dashboard_subscribers", "Open pages (Server-Sent Events streams).",
                                value=len(live.subscribers))
        now = time.time()  # an expired session stays until its cookie comes back: not counted
        yield GaugeMetricFamily("kvraft_dashboard_sessions", "Logged-in sessions (kvraft auth on).",
                                value=sum(1 for s in d.sessions.values() if s.expires >= now))
        yield CounterMetricFamily("kvraft_dashboard_rebuilds_total", "Times the page state was recomputed.",
                                  value=live.rebuilds)
        yield CounterMetricFamily("kvraft_dashboard_updates_total", "State changes pushed to the pages.",
                                  value=live.seq)
        yield CounterMetricFamily("kvraft_dashboard_informer_relists_total", "Registry lists after the first.",
                                  value=live.informer.relists)
        objects = GaugeMetricFamily("kvraft_dashboard_objects", "Objects in the dashboard's view, by kind.",
                                    labels=["kind"])
        objects.add_metric(["nodes"], len(live.view.nodes))
        objects.add_metric(["jobs"], len(live.view.jobs))
        yield objects
        yield GaugeMetricFamily("kvraft_dashboard_scheduler_scrape_ok", "1 when the last scrape of a scheduler's "
                                "/metrics succeeded (0 also when no --scheduler-url is given).",
                                value=int(live.metrics is not None))
