"""Every daemon's ``/metrics`` parses with prometheus_client's text parser and carries the
names docs/observability.md lists, with values that follow what the cluster does: etcd's
names on kvraft members (leader, proposals, fsync and commit histograms with etcd's buckets,
db size, peer bytes), kube-scheduler's on the scheduler, node and task gauges on the agent."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from tests.observability.conftest import Scrape, Stack, get, wait_for

ETCD_BUCKETS = ["0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
                "1.024", "2.048", "4.096", "8.192", "+Inf"]

MEMBER_TYPES = {
    "etcd_server_has_leader": "gauge",
    "etcd_server_is_leader": "gauge",
    "etcd_server_is_learner": "gauge",
    "etcd_server_leader_changes_seen": "counter",
    "etcd_server_proposals_committed_total": "gauge",  # gauges in etcd too, despite the suffix
    "etcd_server_proposals_applied_total": "gauge",
    "etcd_server_proposals_pending": "gauge",
    "etcd_server_proposals_failed": "counter",
    "etcd_server_quota_backend_bytes": "gauge",
    "etcd_server_id": "gauge",
    "etcd_server_version": "gauge",
    "etcd_mvcc_db_total_size_in_bytes": "gauge",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "gauge",
    "etcd_debugging_mvcc_keys_total": "gauge",
    "etcd_debugging_mvcc_current_revision": "gauge",
    "etcd_debugging_mvcc_watcher_total": "gauge",
    "etcd_disk_wal_fsync_duration_seconds": "histogram",
    "etcd_disk_backend_commit_duration_seconds": "histogram",
    "etcd_debugging_snap_save_total_duration_seconds": "histogram",
    "etcd_debugging_snap_save_marshalling_duration_seconds": "histogram",
    "etcd_disk_wal_write_bytes_total": "gauge",  # as etcd
    "etcd_network_peer_sent_bytes": "counter",
    "etcd_network_peer_received_bytes": "counter",
    "etcd_network_peer_round_trip_time_seconds": "histogram",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds": "counter",
    "python_info": "gauge",
    "kvraft_driver_snapshots_applied": "counter",  # kvraft's own names stay (tests and docs use them)
    "kvraft_watch_victims": "counter",
}


def _put(url: str, key: str, value: str) -> None:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    request = urllib.request.Request(url + "/v3/kv/put", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 200


def _member_ids(stack: Stack) -> dict[str, str]:
    """name -> hex member id, from ``etcd_server_id``."""
    out = {}
    for name in stack.cluster.members:
        (sample,) = Scrape.of(stack.member_url(name)).labelled("etcd_server_id")
        out[name] = sample.labels["server_id"]
    return out


def test_members_export_etcd_names_with_sane_values(stack: Stack) -> None:
    names = list(stack.cluster.members)

    def settled() -> dict[str, Scrape] | None:  # every member knows a leader, exactly one leads
        pages = {n: Scrape.of(stack.member_url(n)) for n in names}
        ok = all(p.value("etcd_server_has_leader") == 1 for p in pages.values()) and sum(
            p.value("etcd_server_is_leader") for p in pages.values()) == 1
        return pages if ok else None
    pages = wait_for(settled, what="has_leader 1 on every member and one leader")
    for name, page in pages.items():
        for family, kind in MEMBER_TYPES.items():
            assert page.types.get(family) == kind, (name, family, page.types.get(family))
        assert page.value("etcd_server_version", server_version="3.4.0") == 1
        assert page.value("etcd_server_leader_changes_seen_total") >= 1  # the election was seen
        assert page.value("etcd_server_proposals_applied_total") <= page.value("etcd_server_proposals_committed_total")
        buckets = [s.labels["le"] for s in page.labelled("etcd_disk_wal_fsync_duration_seconds_bucket")]
        assert buckets == ETCD_BUCKETS, buckets
    leader = next(n for n, p in pages.items() if p.value("etcd_server_is_leader") == 1)
    follower = next(n for n in names if n != leader)
    before = {n: Scrape.of(stack.member_url(n)) for n in (leader, follower)}
    for i in range(20):
        _put(stack.member_url(leader), f"obs/key-{i:02d}", "x" * 100)

    def grown() -> bool:
        after = {n: Scrape.of(stack.member_url(n)) for n in (leader, follower)}
        return all(
            after[n].value("etcd_disk_wal_fsync_duration_seconds_count")
            > before[n].value("etcd_disk_wal_fsync_duration_seconds_count")
            and after[n].value("etcd_disk_backend_commit_duration_seconds_count")
            > before[n].value("etcd_disk_backend_commit_duration_seconds_count")
            and after[n].value("etcd_debugging_mvcc_keys_total") >= 20
            and after[n].value("etcd_disk_wal_write_bytes_total") >= before[n].value("etcd_disk_wal_write_bytes_total")
            + 20 * 100  # at least the values written
            for n in (leader, follower))
    wait_for(grown, what="fsync and backend commit counts to grow on the leader and a follower")
    page = Scrape.of(stack.member_url(leader))
    assert page.value("etcd_server_proposals_committed_total") >= 20
    assert page.value("etcd_disk_wal_fsync_duration_seconds_bucket", le="+Inf") == page.value(
        "etcd_disk_wal_fsync_duration_seconds_count")
    assert page.value("etcd_disk_wal_fsync_duration_seconds_sum") > 0
    size, in_use = page.value("etcd_mvcc_db_total_size_in_bytes"), page.value("etcd_mvcc_db_total_size_in_use_in_bytes")
    assert 0 < in_use <= size
    assert page.value("etcd_server_quota_backend_bytes") == 2 * 1024**3
    assert page.value("process_resident_memory_bytes") > 10 * 1024**2
    # peer traffic, labelled with the peers' ids as etcd does (To / From)
    ids = _member_ids(stack)
    others = {ids[n] for n in names if n != leader}
    assert {s.labels["To"] for s in page.labelled("etcd_network_peer_sent_bytes_total")} == others
    assert {s.labels["From"] for s in page.labelled("etcd_network_peer_received_bytes_total")} == others
    assert all(s.value > 0 for s in page.labelled("etcd_network_peer_sent_bytes_total"))
    # round trips, probed every 4 s: each peer's, in etcd's buckets
    wait_for(lambda: {s.labels["To"] for s in Scrape.of(stack.member_url(leader)).labelled(
        "etcd_network_peer_round_trip_time_seconds_count") if s.value > 0} == others, what="a round trip to each peer")
    page = Scrape.of(stack.member_url(leader))
    rtt = [s.labels["le"] for s in page.labelled("etcd_network_peer_round_trip_time_seconds_bucket")
           if s.labels["To"] == min(others)]
    assert rtt == [repr(0.0001 * 2**i) for i in range(14)] + ["+Inf"], rtt


def test_members_export_etcd_35_and_36_names(stack: Stack) -> None:
    """The metrics etcd 3.5 and 3.6 added that kvraft has the mechanism for: WAL write
    latency, open read views, the last compaction's time, known peers, every raised alarm
    per member, the auth store's revision, a snapshot being installed, the feature gates."""
    names = list(stack.cluster.members)
    ids = _member_ids(stack)
    url = stack.member_url(names[0])
    _put(url, "obs36/k", "v")
    page = Scrape.of(url)
    types = {
        "etcd_disk_wal_write_duration_seconds": "histogram",
        "etcd_mvcc_db_open_read_transactions": "gauge",
        "etcd_debugging_mvcc_db_compaction_last": "gauge",
        "etcd_network_known_peers": "gauge",
        "etcd_debugging_server_alarms": "gauge",
        "etcd_debugging_auth_revision": "gauge",
        "etcd_server_snapshot_apply_in_progress_total": "gauge",
        "etcd_server_feature_enabled": "gauge",
    }
    for family, kind in types.items():
        assert page.types.get(family) == kind, (family, page.types.get(family))
    assert page.value("etcd_disk_wal_write_duration_seconds_count") > 0
    buckets = [s.labels["le"] for s in page.labelled("etcd_disk_wal_write_duration_seconds_bucket")]
    assert buckets == ETCD_BUCKETS, buckets
    assert page.value("etcd_mvcc_db_open_read_transactions") >= 0  # (tests/storage/test_compaction_hash.py: values)
    assert page.value("etcd_debugging_mvcc_db_compaction_last") >= 0
    assert {s.labels["Remote"] for s in page.labelled("etcd_network_known_peers")} == \
        {ids[n] for n in names[1:]}
    assert page.value("etcd_debugging_auth_revision") >= 1
    assert page.value("etcd_server_snapshot_apply_in_progress_total") == 0
    assert page.value("etcd_server_feature_enabled", name="CompactHashCheck", stage="ALPHA") == 0
    assert page.value("etcd_server_feature_enabled", name="TxnModeWriteWithSharedBuffer", stage="BETA") == 1


def test_listen_metrics_urls_serves_the_same_registry(stack: Stack) -> None:
    on_client = Scrape.of(stack.member_url("m0"))
    on_metrics = Scrape.of(stack.metrics_url)
    assert set(MEMBER_TYPES) <= set(on_metrics.types)
    assert on_metrics.types == on_client.types
    assert on_metrics.value("etcd_server_id", server_id=on_client.labelled("etcd_server_id")[0].labels["server_id"]) == 1


def test_listen_metrics_urls_routes_are_etcds(stack: Stack) -> None:
    """etcd 3.4's metrics listener serves /metrics (any method) and /health (GET only; HEAD and
    POST are 405) and nothing else: it took HEAD /health (counted as a health check), refused
    POST /metrics and served /version, unlike both etcd and kvraft's own client URLs."""
    def status(base: str, method: str, path: str) -> int:
        request = urllib.request.Request(base + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    want = {("GET", "/metrics"): 200, ("POST", "/metrics"): 200, ("HEAD", "/metrics"): 200,
            ("GET", "/health"): 200, ("HEAD", "/health"): 405, ("POST", "/health"): 405,
            ("GET", "/version"): 404, ("GET", "/v3/kv/range"): 404}
    got = {(method, path): status(stack.metrics_url, method, path) for method, path in want}
    assert got == want
    on_client = {(method, path): status(stack.member_url("m0"), method, path) for method, path in want
                 if path != "/version" and path != "/v3/kv/range"}
    assert on_client == {key: code for key, code in want.items() if key in on_client}


def test_openmetrics_on_request(stack: Stack) -> None:
    request = urllib.request.Request(stack.member_url("m0") + "/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_scheduler_agent_and_dashboard_follow_a_job(stack: Stack) -> None:
    sched, agent, dash = stack.urls["scheduler"], stack.urls["agent"], stack.urls["dashboard"]
    wait_for(lambda: Scrape.of(sched).value("leader_election_master_status", name="kvraft-scheduler") == 1,
             what="the scheduler to lead")
    wait_for(lambda: Scrape.of(agent).value("kvraft_agent_registered") == 1, what="the agent registered")
    page = Scrape.of(agent)
    assert page.value("kvraft_agent_node_info", node=stack.node, runtime="process", rack="rack-0",
                      gpu_type="FAKE-H100") == 1
    assert page.value("kvraft_agent_node_capacity", resource="gpus") == 2
    assert page.value("kvraft_agent_fenced") == 0 and page.value("kvraft_agent_fences_total") == 0
    assert 0 <= page.value("kvraft_agent_lease_age_seconds") < 30
    spec = ("name: obs-job\ntasks:\n  - {name: worker, replicas: 1, command: [sleep, \"600\"], "
            "resources: {gpus: 1, cpu: \"100m\"}}\ngrace_s: 2\n")
    result = stack.jobctl("submit", "-f", "-", stdin=spec)
    assert result.returncode == 0, result.stderr
    try:
        wait_for(lambda: Scrape.of(agent).value("kvraft_agent_attempts", state="running") == 1,
                 120, "the task running on the agent")
        page = Scrape.of(sched)
        assert page.types["scheduler_schedule_attempts"] == "counter"
        assert page.value("scheduler_schedule_attempts_total", result="scheduled", profile="default") >= 1
        assert page.types["scheduler_e2e_scheduling_duration_seconds"] == "histogram"
        assert page.value("scheduler_e2e_scheduling_duration_seconds_count") >= 1
        assert page.value("scheduler_scheduling_algorithm_duration_seconds_count") >= 1
        assert page.types["scheduler_job_scheduling_duration_seconds"] == "histogram"
        assert page.value("scheduler_job_scheduling_duration_seconds_count") >= 1  # submit to bound
        assert 0 <= page.value("scheduler_job_scheduling_duration_seconds_sum") < 120
        for queue in ("active", "backoff", "unschedulable"):
            assert page.value("scheduler_pending_jobs", queue=queue) >= 0
            assert page.value("kvraft_scheduler_queue_depth", queue=queue) >= 0  # the dashboard reads these
        assert page.value("kvraft_scheduler_decisions_total") >= 1
        assert page.value("kvraft_scheduler_leader") in (0, 1)  # 1 unless its 3 s lease lapsed under load
        page = Scrape.of(agent)
        assert page.value("kvraft_agent_desired_tasks") == 1
        assert page.value("kvraft_agent_actions_total", kind="Start") >= 1
        assert page.types["kvraft_agent_reconcile_seconds"] == "summary"
        wait_for(lambda: (d := Scrape.of(dash)).value("kvraft_dashboard_synced") == 1
                 and d.value("kvraft_dashboard_objects", kind="jobs") >= 1
                 and d.value("kvraft_dashboard_scheduler_scrape_ok") == 1, what="the dashboard to see the job")
        assert "process_resident_memory_bytes" in Scrape.of(dash).names()
    finally:
        assert stack.jobctl("cancel", "obs-job").returncode == 0
    wait_for(lambda: Scrape.of(agent).value("kvraft_agent_attempts", state="running") == 0, 120,
             "the cancelled task stopped")
    wait_for(lambda: (r := get(agent + "/health"))[0] == 200 and json.loads(r[1])["fenced"] is False,
             what="the agent healthy, not fenced")


def test_an_accept_header_that_does_not_parse_gets_the_text_format() -> None:
    """``Accept: application/openmetrics-text; version=abc`` was a 500 on every daemon
    (TypeError out of prometheus_client's choose_encoder); now the text format, as Go's
    expfmt.Negotiate answers what it does not know. A good request still gets OpenMetrics."""
    from aiohttp.test_utils import make_mocked_request
    from prometheus_client.parser import text_string_to_metric_families

    from kvraft.client.observe import metrics_response, new_registry

    registry = new_registry()
    for accept in ("application/openmetrics-text; version=abc", "application/openmetrics-text; version=1.x.0",
                   "text/plain; version=x.y.z", "application/openmetrics-text;version=zz, text/plain;q=0.5"):
        resp = metrics_response(registry, make_mocked_request("GET", "/metrics", headers={"Accept": accept}))
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", accept
        assert resp.body is not None and list(text_string_to_metric_families(bytes(resp.body).decode()))
    resp = metrics_response(registry, make_mocked_request(
        "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}))
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
