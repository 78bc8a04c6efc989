"""A member's ``/metrics``: one ``CollectorRegistry`` per ``Node`` whose collector reads the
member's live state at scrape time (docs/observability.md lists every name).

Names and types are etcd 3.4's where etcd has the same metric (``etcd_server_*``,
``etcd_mvcc_*``, ``etcd_debugging_mvcc_*``, ``etcd_disk_*``, ``etcd_network_*``), so an etcd
dashboard or alert works unchanged; etcd's quirks are kept too (``proposals_committed_total``
and ``proposals_applied_total`` are gauges holding the indexes). The kvraft-specific figures
(``kvraft_driver_*``, ``kvraft_transport_*``, ``kvraft_watch_*``, ``kvraft_lease_*``, ...) come
from ``Node.metrics()`` as before. ``process_*`` and ``python_*`` are prometheus_client's.
"""

from __future__ import annotations

import os
import resource
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kvraft import __version__
from kvraft.client.observe import new_registry
from kvraft.durations import DurationHistogram
from kvraft.raft.types import StateRole
from kvraft.server import etcd36
from kvraft.server.api.grpc_stats import CODE_NAMES
from kvraft.server.api.maintenance import ALARM_NAMES
from kvraft.server.api.misc import API_VERSION
from kvraft.server.crl import CRLError, read_crl
from kvraft.storage.schema import ALARM_CORRUPT, ALARM_NOSPACE

__all__ = ["MemberCollector", "histogram_family", "registry_for"]

_REGISTRIES: weakref.WeakKeyDictionary[Any, CollectorRegistry] = weakref.WeakKeyDictionary()


def registry_for(node: Any) -> CollectorRegistry:
    """The member's registry (made on first use; the client and ``--listen-metrics-urls``
    listeners share it)."""
    registry = _REGISTRIES.get(node)
    if registry is None:
        registry = new_registry()
        registry.register(MemberCollector(node))
        _REGISTRIES[node] = registry
    return registry


def histogram_family(name: str, help_text: str, hist: DurationHistogram | None) -> HistogramMetricFamily:
    """A ``DurationHistogram`` as a Prometheus histogram (all zero when the storage has none)."""
    hist = hist if hist is not None else DurationHistogram()
    return HistogramMetricFamily(name, help_text, buckets=hist.cumulative(), sum_value=hist.sum)


def _crl_next_updates(config: Any) -> GaugeMetricFamily:
    """When each CRL file passes its next update (read at scrape time: the file is what the
    operator renews). Past it OpenSSL refuses every certificate the list checks, so the
    alert rules warn a week ahead (deploy/prometheus, KvraftCRLExpiresSoon)."""
    family = GaugeMetricFamily(
        "kvraft_server_crl_next_update_timestamp_seconds",
        "When the CRL file passes its next update (unix time); after it every certificate it checks is "
        "refused. No sample without the flag, or while the file cannot be read.", labels=["flag"])
    for flag, path in (("client-crl-file", getattr(config, "client_crl_file", "")),
                       ("peer-crl-file", getattr(config, "peer_crl_file", ""))):
        if not path:
            continue
        try:
            crl = read_crl(path)
        except CRLError:
            continue
        if crl.next_update is not None:
            family.add_metric([flag], crl.next_update.timestamp())
    return family


def _descriptors() -> tuple[int | None, int]:
    """(descriptors open, the soft limit) of this process (etcd's ``os_fd_*``)."""
    try:
        used: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = None
    return used, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _bare_counter(name: str, help_text: str, value: float) -> Metric:
    """A counter etcd names without ``_total`` (prometheus_client would add it to a
    counter): exported untyped under etcd's exact name."""
    metric = Metric(name, help_text, "unknown")
    metric.add_sample(name, {}, value)
    return metric


def _bare_per_peer(name: str, help_text: str, label: str, values: dict[int, int]) -> Metric:
    """``_bare_counter`` per peer (etcd's counters named without ``_total``)."""
    metric = Metric(name, help_text, "unknown")
    for peer, value in sorted(values.items()):
        metric.add_sample(name, {label: f"{peer:x}"}, value)
    return metric


def _per_peer(name: str, help_text: str, label: str, values: dict[int, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for peer, value in sorted(values.items()):
        family.add_metric([f"{peer:x}"], value)
    return family


class MemberCollector(Collector):
    """Collects one member; every figure is read when Prometheus scrapes."""

    def __init__(self, node: Any) -> None:
        self._node = weakref.ref(node)

    def collect(self) -> Iterator[Metric]:
        node = self._node()
        if node is None:
            return
        legacy = list(node.metrics())
        by_name = {name: value for name, _kind, _help, value in legacy}
        yield from self._server(node)
        yield from self._mvcc(node, by_name)
        yield from self._disk(node)
        yield from self._network(node)
        yield from self._grpc(node)
        yield from self._maintenance(node)
        yield from self._probes(node)
        for name, kind, help_text, value in legacy:
            yield _counter(name, help_text, value) if kind == "counter" else _gauge(name, help_text, value)
        info = GaugeMetricFamily("kvraft_build_info", "kvraft's version; always 1.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    @staticmethod
    def _grpc(node: Any) -> Iterator[Metric]:
        """go-grpc-prometheus's counters, as etcd registers them, over the gateway's calls
        (``kvraft.server.api.grpc_stats``)."""
        stats = node.grpc_stats
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily("grpc_server_started_total",
                                      "Total number of RPCs started on the server.", labels=labels)
        for method, count in sorted(stats.started.items()):
            started.add_metric(list(method), count)
        yield started
        handled = CounterMetricFamily("grpc_server_handled_total",
                                      "Total number of RPCs completed on the server, regardless of success or failure.",
                                      labels=[*labels, "grpc_code"])
        for (kind, service, name, code), count in sorted(stats.handled.items()):
            code_name = CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else "Unknown"
            handled.add_metric([kind, service, name, code_name], count)
        yield handled
        # etcd's interceptors count every call by client version (gRPC metadata the gateway
        # does not set: "unknown") and kind; no series before the first call, as etcd
        kinds: dict[str, int] = {}
        for (grpc_type, _service, _name), count in stats.started.items():
            kind = "unary" if grpc_type == "unary" else "stream"
            kinds[kind] = kinds.get(kind, 0) + count
        requests = CounterMetricFamily("etcd_server_client_requests_total", "The total number of client requests "
                                       "per client version.", labels=["client_api_version", "type"])
        for kind, count in sorted(kinds.items()):
            requests.add_metric(["unknown", kind], count)
        yield requests
        if stats.timed:
            handling = HistogramMetricFamily(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                labels=labels)
            for method, hist in sorted(stats.handling.items()):
                handling.add_metric(list(method), hist.cumulative(), hist.sum)
            yield handling

    @staticmethod
    def _probes(node: Any) -> Iterator[Metric]:
        """/livez and /readyz checks (kvraft.server.api.health): no series before the first."""
        counters = node.counters
        last = GaugeMetricFamily("etcd_server_healthcheck", "The result of each kind of healthcheck.",
                                 labels=["type", "name"])
        for (kind, name), passed in sorted(counters.checks.items()):
            last.add_metric([kind, name], 1.0 if passed else 0.0)
        yield last
        total = CounterMetricFamily("etcd_server_healthchecks_total", "The total number of each kind of healthcheck.",
                                    labels=["type", "name", "status"])
        for (kind, name, status), count in sorted(counters.checks_total.items()):
            total.add_metric([kind, name, status], count)
        yield total

    @staticmethod
    def _maintenance(node: Any) -> Iterator[Metric]:
        """Health checks, hashes, snapshots, defragmentation, compaction, descriptors: one
        row per family (how it is made, etcd's name and help, the value)."""
        counters, timings = node.counters, node.state.store.timings
        used, limit = _descriptors()
        rows: list[tuple[Callable[[str, str, Any], Metric], str, str, Any]] = [
            (_bare_counter, "etcd_server_health_success", "The total number of successful health checks",
             counters.health_success),
            (_bare_counter, "etcd_server_health_failures", "The total number of failed health checks",
             counters.health_failures),
            (_bare_counter, "etcd_server_learner_promote_successes",
             "The total number of successful learner promotions while this member is leader.",
             counters.learner_promotions),
            (histogram_family, "etcd_mvcc_hash_duration_seconds",
             "The latency distribution of storage hash operation.", counters.hash_seconds),
            (histogram_family, "etcd_mvcc_hash_rev_duration_seconds",
             "The latency distribution of storage hash by revision operation.", counters.hash_rev_seconds),
            (histogram_family, "etcd_disk_backend_snapshot_duration_seconds",
             "The latency distribution of backend snapshots.", timings.snapshot_seconds),
            (histogram_family, "etcd_disk_backend_defrag_duration_seconds",
             "The latency distribution of backend defragmentation.", timings.defrag_seconds),
            (_gauge, "etcd_disk_defrag_inflight",
             "Whether or not defrag is active on the member. 1 means active, 0 means not.", timings.defrag_inflight),
            (_counter, "etcd_debugging_mvcc_db_compaction_keys_total", "Total number of db keys compacted.",
             timings.db_compaction_keys),
            (histogram_family, "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
             "Bucketed histogram of db compaction pause duration.", timings.db_compaction_pause_ms),
            (histogram_family, "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
             "Bucketed histogram of db compaction total duration.", timings.db_compaction_total_ms),
            (histogram_family, "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds",
             "Bucketed histogram of index compaction pause duration.", timings.index_compaction_pause_ms),
            (_gauge, "etcd_debugging_mvcc_db_compaction_last",
             "The unix time of the last db compaction. Resets to 0 on start.", timings.db_compaction_last),
            (_gauge, "etcd_mvcc_db_open_read_transactions", "The number of currently open read transactions",
             node.state.store.gate.readers),
            (_gauge, "os_fd_limit", "The file descriptor limit.", limit),
        ]
        if used is not None:
            rows.append((_gauge, "os_fd_used", "The number of used file descriptors.", used))
        lessor = getattr(node, "lessor", None)  # etcd's lessor counters (with the lease feature)
        if lessor is not None:
            rows += [
                (_counter, "etcd_debugging_lease_granted_total", "The total number of granted leases.",
                 lessor.granted),
                (_counter, "etcd_debugging_lease_revoked_total", "The total number of revoked leases.",
                 lessor.revoked),
                (_counter, "etcd_debugging_lease_renewed_total", "The number of renewed leases seen by the leader.",
                 lessor.renewed),
                (histogram_family, "etcd_debugging_lease_ttl_total", "Bucketed histogram of lease TTLs.",
                 lessor.ttls),
                (_counter, "etcd_debugging_server_lease_expired_total", "The total number of expired leases.",
                 lessor.expired_revoked),
            ]
        for make, name, help_text, value in rows:
            yield make(name, help_text, value)

    def _server(self, node: Any) -> Iterator[Metric]:
        driver = node.driver
        stats = driver.stats
        status = node.raw.status()
        yield _gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
                     int(driver.leader != 0))
        yield _gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                     int(driver.role == StateRole.LEADER))
        yield _gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                     int(node.member_id in status.conf_state.learners))
        yield _counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.",
                       stats.leader_changes)
        yield _gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.",
                     status.commit)
        yield _gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
                     driver.applied.applied)
        yield _gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.",
                     len(driver._waiters))  # registered, not yet applied (nor expired)
        yield _counter("etcd_server_proposals_failed_total", "The total number of failed proposals seen.",
                       stats.proposals_failed)
        yield _counter("etcd_server_slow_apply_total", "The total number of slow apply requests (likely "
                       "overloaded from slow disk).", node.state.slow_applies)
        applies = HistogramMetricFamily("etcd_server_apply_duration_seconds",
                                        "The latency distributions of v2 apply called by backend.",
                                        labels=["version", "op", "success"])
        for (op, ok), hist in sorted(node.state.apply_seconds.items()):
            applies.add_metric(["v3", op, str(ok).lower()], hist.cumulative(), hist.sum)
        yield applies
        ranges = HistogramMetricFamily("etcd_server_range_duration_seconds", "The latency distributions of txn.Range",
                                       labels=["success"])
        for ok, hist in sorted(node.state.range_seconds.items()):
            if hist.count:
                ranges.add_metric([str(ok).lower()], hist.cumulative(), hist.sum)
        yield ranges
        yield _counter("etcd_server_slow_read_indexes_total", "The total number of pending read indexes not in "
                       "sync with leader's or timed out read index requests.", stats.slow_read_indexes)
        yield _counter("etcd_server_read_indexes_failed_total", "The total number of failed read indexes seen.",
                       stats.read_indexes_failed)
        yield _counter("etcd_server_heartbeat_send_failures_total", "The total number of leader heartbeat send "
                       "failures (likely overloaded from slow disk).", stats.heartbeat_send_failures)
        yield _gauge("etcd_server_snapshot_apply_in_progress_total", "1 if the server is applying the incoming "
                     "snapshot. 0 if none.", node.driver.stage.applying_snapshot)
        yield _gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
                     node.config.quota_bytes())
        version = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for 'server_version' "
                                    "label with current version.", labels=["server_version"])
        version.add_metric([API_VERSION], 1)
        yield version
        cluster = GaugeMetricFamily("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' "
                                    "label with current cluster version", labels=["cluster_version"])
        cluster.add_metric([API_VERSION.rsplit(".", 1)[0]], 1)
        yield cluster
        raised = node.state.alarms()
        alarms = GaugeMetricFamily("kvraft_server_alarms", "Alarms raised in the cluster (as every member "
                                   "replicates them), by type: NOSPACE makes it refuse writes, CORRUPT too.",
                                   labels=["alarm"])
        for number in (ALARM_NOSPACE, ALARM_CORRUPT):
            alarms.add_metric([ALARM_NAMES[number]], sum(1 for _member, kind in raised if kind == number))
        yield alarms
        each = GaugeMetricFamily("etcd_debugging_server_alarms", "Alarms for every member in cluster. 1 for "
                                 "'server_id' label with current ID. 2 for 'alarm_type' label with type of this "
                                 "alarm", labels=["server_id", "alarm_type"])
        for member_id, kind in sorted(raised):
            each.add_metric([f"{member_id:x}", ALARM_NAMES.get(kind, str(kind))], 1)
        yield each
        yield _crl_next_updates(node.config)
        refused = CounterMetricFamily("kvraft_server_tls_handshake_failures",
                                      "TLS handshakes that failed on this member's listeners, by listener "
                                      "(client, peer, metrics) and reason (OpenSSL's, or timeout / "
                                      "connection_lost).", labels=["listener", "reason"])
        for (listener, reason), count in sorted(node.handshake_failures.counts.items()):
            refused.add_metric([listener, reason], count)
        yield refused
        features = GaugeMetricFamily("etcd_server_feature_enabled", "Whether or not a feature is enabled. 1 is "
                                     "enabled, 0 is not.", labels=["name", "stage"])
        for name, enabled in etcd36.enabled_gates(etcd36.parse_feature_gates(node.config.feature_gates)).items():
            features.add_metric([name, etcd36.GATES[name].stage], int(enabled))
        yield features
        member = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal format. 1 for "
                                   "'server_id' label with current ID.", labels=["server_id"])
        member.add_metric([f"{node.member_id:x}"], 1)
        yield member

    def _mvcc(self, node: Any, by_name: dict[str, Any]) -> Iterator[Metric]:
        size, in_use = node.state.db_sizes()
        store = node.state.store
        yield _gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically "
                     "allocated in bytes.", size)
        yield _gauge("etcd_debugging_mvcc_db_total_size_in_bytes", "Total size of the underlying database "
                     "physically allocated in bytes.", size)  # etcd 3.4 keeps the old name too
        yield _gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically "
                     "in use in bytes.", in_use)
        counts = store.counts
        ranges = counts.ranges + by_name.get("kvraft_watch_prev_kv_reads_total", 0)
        for prefix in ("etcd_mvcc", "etcd_debugging_mvcc"):  # etcd 3.4 exports both names
            yield _counter(f"{prefix}_range_total", "Total number of ranges seen by this member.", ranges)
            yield _counter(f"{prefix}_put_total", "Total number of puts seen by this member.", counts.puts)
            yield _counter(f"{prefix}_delete_total", "Total number of deletes seen by this member.",
                           counts.deletes)
            yield _counter(f"{prefix}_txn_total", "Total number of txns seen by this member.", counts.txns)
        yield _gauge("etcd_debugging_mvcc_total_put_size_in_bytes", "The total size of put kv pairs seen by "
                     "this member.", counts.put_bytes)
        yield _gauge("etcd_debugging_mvcc_keys_total", "Total number of keys (in the index; a deleted key "
                     "counts until a compaction drops it).", len(store.index))
        yield _gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", store.rev)
        yield _gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                     store.compact_revision)
        if "kvraft_watch_streams" in by_name:  # the watch hub is attached (kvraft.server.features)
            yield _gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.",
                         by_name["kvraft_watch_streams"])
            slow = by_name["kvraft_watch_unsynced_watchers"] + by_name["kvraft_watch_victim_watchers"]
            yield _gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.",
                         by_name["kvraft_watch_synced_watchers"] + slow)
            yield _gauge("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", slow)
            yield _counter("etcd_debugging_mvcc_events_total", "Total number of events sent by this member.",
                           by_name["kvraft_watch_events_sent_total"])
            yield _gauge("etcd_debugging_mvcc_pending_events_total", "Total number of pending events to be sent.",
                         by_name["kvraft_watch_events_pending"])

    def _disk(self, node: Any) -> Iterator[Metric]:
        yield histogram_family(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            getattr(node.raft_log, "fsync_seconds", None))
        if hasattr(node.raft_log, "write_seconds"):  # (the WAL; etcd 3.5's)
            yield histogram_family("etcd_disk_wal_write_duration_seconds",
                                   "The latency distributions of write called by WAL.", node.raft_log.write_seconds)
        written = getattr(node.raft_log, "bytes_written", None)
        if written is not None:  # the WAL (not the LMDB log of old data dirs); a gauge in etcd too
            yield _gauge("etcd_disk_wal_write_bytes_total", "Total number of bytes written in WAL.", written)
        yield histogram_family(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            getattr(node.state.store.backend, "commit_seconds", None))
        yield histogram_family("etcd_debugging_snap_save_total_duration_seconds",
                               "The total latency distributions of save called by snapshot.",
                               node.driver.snap_save_seconds)
        yield histogram_family("etcd_debugging_snap_save_marshalling_duration_seconds",
                               "The marshalling cost distributions of save called by snapshot.",
                               node.driver.snap_marshal_seconds)

    def _network(self, node: Any) -> Iterator[Metric]:
        stats = node.transport.stats
        yield _per_peer("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", "To",
                        stats.bytes_sent)
        yield _per_peer("etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.",
                        "From", stats.bytes_received)
        yield _per_peer("etcd_network_peer_sent_failures_total", "The total number of send failures from peers.",
                        "To", stats.sent_failures)
        yield _per_peer("etcd_network_peer_received_failures_total",
                        "The total number of receive failures from peers.", "From", stats.received_failures)
        local = f"{node.member_id:x}"
        active = GaugeMetricFamily("etcd_network_active_peers", "The current number of active peer connections.",
                                   labels=["Local", "Remote"])
        for peer, up in sorted(stats.active.items()):
            active.add_metric([local, f"{peer:x}"], int(up))
        yield active
        known = GaugeMetricFamily("etcd_network_known_peers", "The current number of known peers.",
                                  labels=["Local", "Remote"])
        for peer in sorted(node.membership.members):
            if peer != node.member_id:
                known.add_metric([local, f"{peer:x}"], 1)
        yield known
        lost = CounterMetricFamily("etcd_network_disconnected_peers_total", "The total number of disconnected peers.",
                                   labels=["Local", "Remote"])
        for peer, count in sorted(stats.disconnects.items()):
            lost.add_metric([local, f"{peer:x}"], count)
        yield lost
        snapshots = node.driver.snapshots_out
        yield _bare_per_peer("etcd_network_snapshot_send_success", "Total number of successful snapshot sends", "To",
                             snapshots.send_success)
        yield _bare_per_peer("etcd_network_snapshot_send_failures", "Total number of snapshot send failures", "To",
                             snapshots.send_failures)
        sends = HistogramMetricFamily("etcd_network_snapshot_send_total_duration_seconds",
                                      "Total latency distributions of v3 snapshot sends", labels=["To"])
        for peer, hist in sorted(snapshots.send_seconds.items()):
            sends.add_metric([f"{peer:x}"], hist.cumulative(), hist.sum)
        yield sends
        yield _bare_per_peer("etcd_network_snapshot_receive_success", "Total number of successful snapshot receives",
                             "From", stats.snapshot_receive_success)
        yield _bare_per_peer("etcd_network_snapshot_receive_failures", "Total number of snapshot receive failures",
                             "From", stats.snapshot_receive_failures)
        inflight = GaugeMetricFamily("etcd_network_snapshot_receive_inflights_total",
                                     "Total number of inflight snapshot receives", labels=["From"])
        for peer, count in sorted(stats.snapshot_receive_inflight.items()):
            inflight.add_metric([f"{peer:x}"], count)
        yield inflight
        receives = HistogramMetricFamily("etcd_network_snapshot_receive_total_duration_seconds",
                                         "Total latency distributions of v3 snapshot receives", labels=["From"])
        for peer, hist in sorted(stats.snapshot_receive_seconds.items()):
            receives.add_metric([f"{peer:x}"], hist.cumulative(), hist.sum)
        yield receives
        rtt = HistogramMetricFamily("etcd_network_peer_round_trip_time_seconds",
                                    "Round-Trip-Time histogram between peers", labels=["To"])
        for peer, hist in sorted(stats.round_trip_seconds.items()):
            rtt.add_metric([f"{peer:x}"], hist.cumulative(), hist.sum)
        yield rtt
