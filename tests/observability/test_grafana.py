"""deploy/grafana/kvraft.json: every panel query names only metrics our daemons export, read
from live ``/metrics`` pages (a member, the scheduler, the agent, the dashboard), and the
dashboard covers what an operator looks at first."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.observability.conftest import ROOT, Scrape, Stack, wait_for

DASHBOARD = ROOT / "deploy" / "grafana" / "kvraft.json"

# PromQL words that are not metric names (functions are recognised by the "(" after them)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\w+|\$\{[^}]*\}", "", text)  # Grafana variables
    text = re.sub(r"(?<![A-Za-z0-9_:])\d[\w.]*", "", text)  # numbers and durations (0.99, 5m)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(0), text[match.end():].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def _targets(doc: dict[str, object]) -> list[tuple[str, str]]:
    out = []
    panels = doc["panels"]
    assert isinstance(panels, list)
    for panel in panels:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                out.append((nested["title"], target["expr"]))
    return out


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (instance, le) (rate(etcd_disk_wal_fsync_duration_seconds_bucket'
            '{job="kvraft", le!="+Inf"}[$__rate_interval])))')
    assert metric_names(expr) == {"etcd_disk_wal_fsync_duration_seconds_bucket"}
    assert metric_names("max(etcd_server_quota_backend_bytes) - on (instance) up offset 5m") == {
        "etcd_server_quota_backend_bytes", "up"}


def test_every_query_names_exported_metrics(stack: Stack) -> None:
    doc = json.loads(Path(DASHBOARD).read_text())
    assert doc["uid"] and doc["title"] and doc["__inputs"][0]["pluginId"] == "prometheus"
    targets = _targets(doc)
    assert len(targets) >= 20
    # scrape once everything has been through a job (histograms, per-state gauges, per-result counters)
    wait_for(lambda: Scrape.of(stack.urls["scheduler"]).value("kvraft_scheduler_leader") == 1, what="a leader")
    exported: set[str] = set()
    for url in [stack.member_url(n) for n in stack.cluster.members] + [
            stack.urls["scheduler"], stack.urls["agent"], stack.urls["dashboard"]]:
        exported |= Scrape.of(url).names()
    used: set[str] = set()
    for title, expr in targets:
        names = metric_names(expr)
        assert names, (title, expr)
        missing = names - exported
        assert not missing, f"panel {title!r} queries {sorted(missing)}, which no daemon exports"
        used |= names
    # the panels the issue asks for: leader, proposals, fsync p99, db size, scheduler queue and
    # attempts, agent tasks (and the fence)
    for name in ("etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_proposals_committed_total",
                 "etcd_disk_wal_fsync_duration_seconds_bucket", "etcd_mvcc_db_total_size_in_bytes",
                 "scheduler_pending_jobs", "scheduler_schedule_attempts_total", "kvraft_agent_attempts",
                 "kvraft_agent_fenced"):
        assert name in used, name
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
