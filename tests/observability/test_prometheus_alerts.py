"""deploy/prometheus: the alerting rules and the scrape config pass ``promtool``; every
metric a rule reads is exported by our daemons (read from live ``/metrics`` pages); and a
real Prometheus scraping a real 3-member cluster raises the rules as an operator would see
them: with every member up nothing fires, a member killed makes ``etcdMembersDown`` pending
from its peers' send failures alone (the dead member is not a scrape target), and a CORRUPT
alarm fires ``KvraftCorruptAlarm``. Skipped without the ``prometheus``/``promtool`` binaries
(Debian's ``prometheus`` package; .ci/run installs it)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvraft.server.local import LocalCluster, free_port, post
from kvraft.testing.procs import stop_process
from tests.observability.conftest import FAST_FLAGS, ROOT, Scrape, Stack, wait_for
from tests.observability.test_grafana import metric_names

RULES = ROOT / "deploy" / "prometheus" / "kvraft-alerts.yml"
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

AVAILABILITY = {"etcdMembersDown", "etcdInsufficientMembers", "etcdNoLeader", "KvraftCorruptAlarm",
                "KvraftNoSpaceAlarm"}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (apt-get install prometheus; .ci/run does)")
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="prometheus not installed (apt-get install prometheus; .ci/run does)")


def rules(group: str | None = None) -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for g in doc["groups"] if group in (None, g["name"]) for rule in g["rules"]]


@needs_promtool
def test_promtool_accepts_the_rules_and_the_config() -> None:
    for args in (["check", "rules", str(RULES)], ["check", "config", str(CONFIG)]):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_is_complete_and_etcds_alerts_are_all_there() -> None:
    names = set()
    for rule in rules():
        names.add(rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    # the etcd mixin's alerts an etcd operator's runbooks name
    assert {"etcdMembersDown", "etcdInsufficientMembers", "etcdNoLeader", "etcdHighNumberOfLeaderChanges",
            "etcdHighNumberOfFailedGRPCRequests", "etcdGRPCRequestsSlow", "etcdMemberCommunicationSlow",
            "etcdHighNumberOfFailedProposals", "etcdHighFsyncDurations", "etcdHighCommitDurations",
            "etcdDatabaseQuotaLowSpace", "etcdExcessiveDatabaseGrowth",
            "etcdDatabaseHighFragmentationRatio"} <= names


def test_every_rule_reads_exported_metrics(stack: Stack) -> None:
    wait_for(lambda: Scrape.of(stack.urls["scheduler"]).value("kvraft_scheduler_leader") == 1, what="a leader")
    exported = {"up"}  # Prometheus' own
    for url in [stack.member_url(n) for n in stack.cluster.members] + [
            stack.urls["scheduler"], stack.urls["agent"], stack.urls["dashboard"]]:
        exported |= Scrape.of(url).names()
    # the histogram --metrics extensive adds (tests/observability/test_grpc_metrics_compat_etcd.py)
    exported.add("grpc_server_handling_seconds_bucket")
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        missing = names - exported
        assert not missing, f"{rule['alert']} reads {sorted(missing)}, which no daemon exports"


def api(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        doc = json.loads(response.read())
    assert doc["status"] == "success", doc
    return doc["data"]


def alerts(url: str) -> dict[str, str]:
    """alertname -> state (``pending`` or ``firing``) of the members' rules (no scheduler or
    agent runs here: their group's alerts are pending by design)."""
    members = {rule["alert"] for rule in rules("kvraft-members")}
    return {a["labels"]["alertname"]: a["state"] for a in api(url, "/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] in members}


@contextlib.contextmanager
def prometheus(base: Path, targets: list[str]) -> Iterator[str]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "kvraft", "static_configs": [{"targets": targets}]}],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = open(base / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'tsdb'}",
         f"--web.listen-address={url.removeprefix('http://')}", "--log.level=warn"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, 60, "prometheus ready")
        assert proc.poll() is None, (base / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        stop_process(proc)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@needs_prometheus
def test_a_real_prometheus_raises_the_rules_against_a_real_cluster(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path / "kv", extra_args=FAST_FLAGS)
    try:
        cluster.start(timeout_s=120)
        cluster.wait_ready(60)
        # m2 is not scraped: only its peers' send failures can tell that it is down
        targets = [cluster.url(name).removeprefix("http://") for name in ("m0", "m1")]
        with prometheus(tmp_path, targets) as url:
            def scraped() -> bool:
                active = api(url, "/api/v1/targets")["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            wait_for(scraped, 60, "both members scraped")
            time.sleep(5)  # a few evaluations over healthy members
            # (the performance rules, e.g. late heartbeats, may see a loaded test box)
            assert not set(alerts(url)) & AVAILABILITY, "nothing is wrong yet"

            cluster.stop_member("m2", signal.SIGKILL)
            wait_for(lambda: alerts(url).get("etcdMembersDown") == "pending", 60, "etcdMembersDown pending")
            assert "etcdInsufficientMembers" not in alerts(url)  # two of three still serve

            code, status = post(cluster.url("m0"), "/v3/maintenance/status", {})
            assert code == 200, status
            code, answer = post(cluster.url("m0"), "/v3/maintenance/alarm",
                                {"action": "ACTIVATE", "memberID": status["header"]["member_id"], "alarm": "CORRUPT"})
            assert code == 200, answer
            wait_for(lambda: alerts(url).get("KvraftCorruptAlarm") == "firing", 60, "KvraftCorruptAlarm firing")
    finally:
        cluster.stop()
