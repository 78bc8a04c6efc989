"""Member configuration: etcd's flag names and meanings, or the same keys in a YAML file.

``parse_config(argv)`` reads ``--config-file`` first when given (etcd's YAML keys are the
flag names without dashes), then applies the command-line flags on top. With no flags it
describes a working single-member cluster on 127.0.0.1:2379/2380 in ``./default.kvraft``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from kvraft.client.srv import DiscoveryError, system_address
from kvraft.durations import parse_go_duration_s
from kvraft.logrotate import DEFAULT_ROTATION_JSON, parse_rotation
from kvraft.server import etcd36
from kvraft.server.compactor import parse_retention_s
from kvraft.server.crl import CRLError, read_crl
from kvraft.server.flag_help import FLAG_HELP, GROUPS
from kvraft.server.log_levels import parse_package_levels
from kvraft.server.tls_policy import TLSPolicyError, check_tls_policy
from kvraft.urls import go_quote, parse_peer_urls

__all__ = ["Config", "ConfigError", "member_id_for", "parse_config", "cluster_id_for", "urls_resolve_alike"]

DEFAULT_CLIENT_URL = "http://127.0.0.1:2379"
DEFAULT_PEER_URL = "http://127.0.0.1:2380"


class ConfigError(ValueError):
    """A flag or config file value that cannot be used."""


DEFAULT_SNAPSHOT_COUNT = 100_000
"""etcd's default; 10,000 cost a loaded follower 6-10% (docs/benchmarks.md, Server)."""
DEFAULT_BACKEND_BATCH_INTERVAL_S = 0.1
DEFAULT_BACKEND_BATCH_LIMIT = 10_000
DEFAULT_COMPACTION_BATCH_LIMIT = 1000
"""etcd's defaults for ``--backend-batch-interval``, ``--backend-batch-limit`` and
``--experimental-compaction-batch-limit``."""


@dataclass
class Config:
    name: str = "default"
    data_dir: str = ""
    listen_client_urls: list[str] = field(default_factory=lambda: [DEFAULT_CLIENT_URL])
    listen_client_http_urls: list[str] = field(default_factory=list)
    """etcd 3.5's flag: more URLs to serve the HTTP client API on. In etcd they take the HTTP
    services off ``--listen-client-urls``, which keep gRPC; kvraft's API is HTTP alone, so both
    lists serve all of it."""
    advertise_client_urls: list[str] = field(default_factory=lambda: [DEFAULT_CLIENT_URL])
    listen_peer_urls: list[str] = field(default_factory=lambda: [DEFAULT_PEER_URL])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: [DEFAULT_PEER_URL])
    listen_metrics_urls: list[str] = field(default_factory=list)
    """Extra listeners serving only ``/metrics``, ``/health`` and ``/version`` (etcd's flag): an
    ``http://127.0.0.1:2381`` one lets monitoring in without a client certificate."""
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    snapshot_count: int = DEFAULT_SNAPSHOT_COUNT
    snapshot_catchup_entries: int = 5000
    max_snapshots: int = 5
    """etcd's: snapshot files kept (0: unlimited). kvraft's log directory holds one snapshot
    file and one segment at a time (``kvraft.storage.wal``: older ones are deleted when a
    new segment is written), so every limit holds; the flag is validated and kept."""
    max_wals: int = 5
    """etcd's: WAL files kept (0: unlimited); one segment at a time here (``max_snapshots``)."""
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    quota_backend_bytes: int = 0
    max_request_bytes: int = 1572864
    max_txn_ops: int = 128
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    log_level: str = "info"
    logger: str = "zap"
    """etcd's ``--logger``: ``zap`` writes one JSON object per line (etcd 3.5's default; see
    docs/observability.md), ``capnslog`` the plain text lines."""
    log_format: str = "json"
    """etcd 3.6's flag, for ``--logger zap``: ``json`` lines or zap's ``console`` (tab-separated)
    lines."""
    log_outputs: list[str] = field(default_factory=lambda: ["default"])
    enable_log_rotation: bool = False
    log_rotation_config_json: str = DEFAULT_ROTATION_JSON
    """etcd 3.5's flags: the one file in ``--log-outputs`` rotates (``kvraft.logrotate``: its
    maxsize MiB, maxage days, maxbackups, localtime, compress)."""
    """etcd's ``--log-outputs``: ``default`` or ``stderr``, ``stdout``, or file paths (appended to)."""
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    client_crl_file: str = ""
    """etcd's flag: a PEM CRL; a client certificate it lists is refused (on the client and
    https metrics URLs). Read again when the file changes (kvraft.server.crl)."""
    auto_tls: bool = False
    peer_secret_file: str = ""
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_crl_file: str = ""
    """The same for peer certificates: checked by the peer dialer, and by the peer listener
    when it asks for a certificate (``--peer-client-cert-auth``)."""
    peer_auto_tls: bool = False
    client_cert_allowed_hostname: str = ""
    peer_cert_allowed_cn: str = ""
    peer_cert_allowed_hostname: str = ""
    """etcd's flags: a verified certificate must also carry this CN, or be valid for this
    hostname (kvraft/server/cert_names.py)."""
    cipher_suites: list[str] = field(default_factory=list)
    """etcd's flag: Go's names of the TLS 1.2 suites allowed, comma-separated (a list in YAML;
    kvraft/server/tls_policy.py)."""
    tls_min_version: str = "TLS1.2"
    tls_max_version: str = ""
    """etcd 3.5's flags: TLS1.2 or TLS1.3; no maximum by default."""
    auto_promote_learners: bool = True
    pre_vote: bool = True
    """etcd's flag (3.5's default, true; 3.4's was false): a member that lost its leader asks
    for a pre-vote before it campaigns, so one partitioned member cannot depose a working
    leader when it comes back."""
    debug: bool = False
    """etcd 3.4's flag: the same as ``--log-level debug``."""
    enable_v2: bool = False
    """etcd 3.4's flag; kvraft serves the v3 API only, so only false is accepted."""
    experimental_enable_v2v3: str = ""
    """etcd 3.4's v2 API emulated on v3 under a prefix: none here, so only empty is accepted."""
    discovery: str = ""
    discovery_fallback: str = "proxy"
    discovery_proxy: str = ""
    """etcd's bootstrap through a v2 discovery service: kvraft has none, so these are
    accepted only at etcd's defaults (off)."""
    discovery_srv: str = ""
    """etcd's DNS bootstrap: a new member's ``--initial-cluster`` from the domain's
    ``_etcd-server-ssl._tcp`` and ``_etcd-server._tcp`` SRV records
    (kvraft/server/srv_bootstrap.py)."""
    discovery_srv_name: str = ""
    """A suffix of those records' service names: ``_etcd-server-NAME._tcp``."""
    discovery_token: str = ""
    discovery_endpoints: list[str] = field(default_factory=list)
    """etcd 3.6's v3 discovery (kvraft.server.v3discovery): a new member registers under
    ``/_etcd/registry/<token>/members/`` of the cluster at these endpoints (etcd or kvraft) and
    waits for ``_config/size`` members; the first ones registered are ``--initial-cluster``.
    The rest are that client's settings, with etcd's defaults."""
    discovery_dial_timeout: str = "2s"
    discovery_request_timeout: str = "5s"
    discovery_keepalive_time: str = "2s"
    discovery_keepalive_timeout: str = "6s"
    discovery_insecure_transport: bool = True
    discovery_insecure_skip_tls_verify: bool = False
    discovery_cert: str = ""
    discovery_key: str = ""
    discovery_cacert: str = ""
    discovery_user: str = ""
    discovery_password: str = ""
    proxy: str = "off"
    proxy_failure_wait: int = 5000
    proxy_refresh_interval: int = 30000
    proxy_dial_timeout: int = 1000
    proxy_write_timeout: int = 5000
    proxy_read_timeout: int = 0
    """etcd's v2 proxy mode: kvraft has none, so ``--proxy`` is accepted only as ``off``; the
    timings, which only a proxy uses, are checked as etcd's unsigned integers."""
    wal_dir: str = ""
    """etcd's flag: the Raft log (WAL) in this directory instead of ``<data-dir>/raft.wal``,
    e.g. on a dedicated disk (kvraft/server/wal_dir.py)."""
    force_new_cluster: bool = False
    """etcd's flag: start as a one-member cluster that keeps this member's data, the others
    removed (recovery from a lost quorum; kvraft/server/force_new.py). Remove it afterwards."""
    strict_reconfig_check: bool = True
    """etcd's flag (default on): refuse a member add, remove or promote that would leave the
    cluster without a working quorum (kvraft/server/reconfig.py)."""
    max_learners: int = 1
    auth_token: str = "simple"
    """``simple`` or ``jwt,sign-method=HS256|RS256|ES256|EdDSA,priv-key=FILE[,pub-key=FILE][,ttl=5m]``."""
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10
    experimental_watch_progress_notify_interval: str = "10m"
    cors: list[str] = field(default_factory=lambda: ["*"])
    """etcd's ``--cors``: the origins answered with CORS headers (``*`` or none: every origin;
    kvraft/server/api/access.py)."""
    host_whitelist: list[str] = field(default_factory=lambda: ["*"])
    """etcd's ``--host-whitelist``: the Host names a plain-http request may name (``*`` or none:
    any; refused with 421 otherwise, against DNS rebinding)."""
    grpc_keepalive_min_time: str = "5s"
    """The shortest heartbeat interval a client's stream is granted (``Kvraft-Keepalive``;
    etcd: the shortest ping interval a client may use)."""
    grpc_keepalive_interval: str = "2h"
    """How long a client connection may be silent before the server's kernel probes it
    (TCP keepalive; etcd: its HTTP/2 ping interval); 0s: never."""
    grpc_keepalive_timeout: str = "20s"
    """How long an unanswered probe (or unacknowledged data) may wait before the connection is
    closed; 0s: the kernel's defaults."""
    metrics: str = "basic"
    """etcd's ``--metrics``: ``extensive`` adds ``grpc_server_handling_seconds`` (histograms
    of each call's handling time)."""
    metrics_auth: bool = False
    """With auth enabled, ``/metrics`` (client and metrics URLs) answers only root and the
    ``kvraft-monitoring`` role (kvraft/server/api/metrics_auth.py); etcd's is open."""
    gateway_emit_defaults: bool = False
    """JSON answers carry every field of their message, zero values included (etcd's gateway
    leaves them out); a request's ``Kvraft-Emit-Defaults`` header overrides it
    (kvraft/server/api/defaults.py)."""
    experimental_initial_corrupt_check: bool = False
    """Compare this member's hash with its peers' before serving; refuse to start on a
    mismatch (``kvraft.server.corruption``)."""
    experimental_corrupt_check_time: str = "0s"
    """How often the leader compares every member's hash (a Go duration; 0s: never); a
    mismatch raises the CORRUPT alarm, which stops writes."""
    initial_election_tick_advance: bool = True
    """etcd's flag: once enough peers are connected, fast-forward the election timer so the
    first election comes two ticks early instead of a whole timeout after start, and a member
    that led its last term campaigns at once; a member that is the only voter campaigns at
    once either way (kvraft/server/tick_advance.py)."""
    backend_batch_interval: str = ""
    """etcd's flag: the longest applied ops are held before their commit to the store (a Go
    duration; empty or 0: 100ms)."""
    backend_batch_limit: int = 0
    """etcd's flag: the most ops held before a commit (0: 10,000)."""
    experimental_compaction_batch_limit: int = 1000
    experimental_compaction_sleep_interval: str = "10ms"
    """etcd 3.5's flag: the pause between two of a compaction's delete batches, no lock held, so
    applies and reads go on between them (a Go duration; 0s: none)."""
    experimental_bootstrap_defrag_threshold_megabytes: int = 0
    """etcd 3.5's flag: at start, before serving, defragment the store when that frees at
    least this many megabytes (0: never)."""
    experimental_stop_grpc_service_on_defrag: bool = False
    """etcd 3.5's flag: stop serving while defragmenting. kvraft's defragmentation does not
    stop reads or writes, so there is nothing to fail over from: noted at start."""
    """etcd's flag: the most revisions a compaction deletes in one write transaction (0: 1,000)."""
    experimental_warning_apply_duration: str = "100ms"
    """etcd's flag: an apply (or a read) slower than this is logged as "apply request took too
    long" and counted in ``etcd_server_slow_apply_total``."""
    experimental_enable_lease_checkpoint: bool = True
    """etcd's flag (false there): a lease's remaining TTL is replicated, so a leader change does
    not give it a whole TTL again. kvraft always checkpoints; false only logs that it does."""
    experimental_backend_bbolt_freelist_type: str = "array"
    """etcd's bbolt tuning ('array' or 'map'); validated and kept: LMDB keeps its own freelist."""
    backend_bbolt_freelist_type: str = "map"
    """etcd 3.5's name of the flag above (its default 'map'); validated and kept likewise."""
    enable_grpc_gateway: bool = True
    """etcd 3.5's flag: kvraft's client API is the gateway's JSON (and msgpack) over HTTP, so
    only true is accepted (false would leave the member without a client API)."""
    v2_deprecation: str = "not-yet"
    """etcd 3.5's phase of v2 store deprecation; validated: kvraft has no v2 store, so every
    phase already holds."""
    experimental_enable_lease_checkpoint_persist: bool = False
    """etcd 3.5's flag (needs --experimental-enable-lease-checkpoint, as there): kvraft always
    keeps leases' remaining TTL in its store."""
    experimental_txn_mode_write_with_shared_buffer: bool = True
    """etcd 3.5's bbolt read-buffer knob for write txns; validated: kvraft's txns read their own
    view of the store either way."""
    experimental_downgrade_check_time: str = "5s"
    """etcd 3.5's interval of downgrade status checks; a Go duration, validated: kvraft has no
    downgrade process to watch (its storage version moves forward only)."""
    experimental_enable_distributed_tracing: bool = False
    experimental_distributed_tracing_address: str = "localhost:4317"
    experimental_distributed_tracing_service_name: str = "etcd"
    experimental_distributed_tracing_instance_id: str = ""
    experimental_distributed_tracing_sampling_rate: int = 0
    """etcd 3.5's OpenTelemetry tracing: kvraft exports no traces, so it is refused when
    enabled; the other settings are validated."""
    experimental_memory_mlock: bool = False
    """etcd 3.5's flag: keep the member's pages in RAM once touched (``mlockall`` with
    MCL_ONFAULT: the store's map and the heap are never swapped out); the start fails when the
    kernel refuses (RLIMIT_MEMLOCK: systemd's LimitMEMLOCK=infinity, or CAP_IPC_LOCK)."""
    unsafe_no_fsync: bool = False
    """etcd 3.5's flag: no fsync of the Raft log or the store: a power cut can lose
    acknowledged writes and break the consensus guarantees. For tests and benchmarks only."""
    raft_read_timeout: str = "0s"
    """etcd 3.5's flag: an accepted peer connection that sends nothing this long is closed, and
    the peers' probes come at least three times as often (a Go duration). etcd's default is
    5s; kvraft's is 0s, never: a member sends only on the connections it dials, so a silent
    accepted one costs nothing, and each dialer notices its own dead connections."""
    raft_write_timeout: str = "10s"
    """etcd 3.5's flag: a peer that takes no bytes for this long is given up on and redialed
    (etcd's default 5s; kvraft's 10s, the value its robustness runs were tuned with)."""
    socket_reuse_port: bool = False
    """etcd 3.5's flag: SO_REUSEPORT on the client, peer and metrics listeners."""
    socket_reuse_address: bool = False
    """etcd 3.5's flag: SO_REUSEADDR on the listeners. kvraft's listeners set it always, as Go's
    do, so this changes nothing."""
    self_signed_cert_validity: int = 1
    """etcd 3.5's flag: years the ``--auto-tls``/``--peer-auto-tls`` certificates are valid."""
    client_cert_file: str = ""
    client_key_file: str = ""
    """etcd 3.5's flags: the certificate etcd's gateway presents to its own gRPC port. kvraft
    serves the API directly and never dials its client URLs: checked and not used."""
    peer_client_cert_file: str = ""
    peer_client_key_file: str = ""
    """etcd 3.5's flags: the certificate this member presents when it dials a peer (default:
    ``--peer-cert-file``), for a CA that issues client and server certificates apart."""
    experimental_peer_skip_client_san_verification: bool = False
    """etcd's flag: do not compare a peer certificate's subject alternative names with the
    address the peer connected from (kvraft/server/cert_names.py, ``san_refusal``)."""
    enable_pprof: bool = False
    """etcd's flag: serve ``/debug/pprof/`` on the client URLs: thread and task stacks, a
    sampled CPU profile, the heap by type (kvraft/server/api/pprof.py)."""
    log_package_levels: str = ""
    """etcd's ``pkg=LEVEL,...`` (capnslog levels): a level per logger, kvraft's names or etcd's
    package names (kvraft/server/log_levels.py)."""
    max_concurrent_streams: int = 4294967295
    """etcd's flag (gRPC streams per connection). An HTTP/1.1 connection carries one request or
    stream at a time, so any limit of 1 or more holds; 0 is refused."""

    # -- etcd 3.6's names (kvraft.server.etcd36: the experimental names set one of these) -
    feature_gates: str = ""
    """etcd 3.6's ``Name=bool,...`` (``kvraft.server.etcd36.GATES``); ``Config.feature`` reads it."""
    experimental_compact_hash_check_enabled: bool = False
    """etcd 3.5's name of ``--feature-gates=CompactHashCheck=true``."""
    compact_hash_check_time: str = "1m"
    experimental_compact_hash_check_time: str = "1m"
    """With CompactHashCheck, how often the leader compares the hashes its members took at
    their last compactions (kvraft.server.corruption)."""
    corrupt_check_time: str = "0s"
    compaction_batch_limit: int = DEFAULT_COMPACTION_BATCH_LIMIT
    compaction_sleep_interval: str = "10ms"
    watch_progress_notify_interval: str = "10m"
    warning_apply_duration: str = "100ms"
    bootstrap_defrag_threshold_megabytes: int = 0
    memory_mlock: bool = False
    experimental_snapshot_catchup_entries: int = 5000
    downgrade_check_time: str = "5s"
    peer_skip_client_san_verification: bool = False
    enable_distributed_tracing: bool = False
    distributed_tracing_address: str = "localhost:4317"
    distributed_tracing_service_name: str = "etcd"
    distributed_tracing_instance_id: str = ""
    distributed_tracing_sampling_rate: int = 0
    """etcd 3.6's names of the ``experimental_`` settings of the same meaning."""
    warning_unary_request_duration: str = "0s"
    experimental_warning_unary_request_duration: str = "0s"
    """A client request slower than this is logged as etcd's "request stats" warning (0s: 300ms)."""

    # -- derived ------------------------------------------------------------------------
    @property
    def id_token(self) -> str:
        """What member and cluster ids are hashed with: the v3 discovery token when there is
        one (etcd bootstraps such a cluster with it as the cluster token), else
        ``--initial-cluster-token``. The peers' HMAC key stays on the latter."""
        return self.discovery_token or self.initial_cluster_token

    def initial_members(self) -> dict[str, list[str]]:
        """``--initial-cluster`` as name -> peer URLs (a name may appear several times)."""
        text = self.initial_cluster or f"{self.name}={','.join(self.initial_advertise_peer_urls)}"
        members: dict[str, list[str]] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, url = item.partition("=")
            if not sep or not name or not url:
                raise ConfigError(f"--initial-cluster: cannot parse {item!r} (want name=url)")
            _check_url(url, "--initial-cluster")
            members.setdefault(name, []).append(url)
        if self.name not in members:
            raise ConfigError(f"--initial-cluster has no entry for --name {self.name!r}")
        urls = [url for member_urls in members.values() for url in member_urls]
        if len(set(urls)) != len(urls):
            raise ConfigError(f"--initial-cluster {text} has duplicate url (as etcd)")
        return members

    def check_advertise_matches_cluster(self, resolve: Callable[[str], str] | None = None) -> None:
        """etcd's rule: this member's ``--initial-cluster`` URLs are its
        ``--initial-advertise-peer-urls``, as written or, as etcd compares them, once their
        host names are resolved (``resolve``: host -> IP address; the system's by default).
        The founding members' ids come from the ``--initial-cluster`` URLs, so a mismatch
        makes a member the cluster does not know."""
        mine = self.initial_members()[self.name]
        detail = ""
        try:
            if urls_resolve_alike(mine, self.initial_advertise_peer_urls,
                                  resolve or system_address):
                return
        except DiscoveryError as exc:
            detail = f" (failed to resolve: {exc})"
        raise ConfigError(
            f"--initial-cluster has {self.name}={','.join(mine)} but missing from "
            f"--initial-advertise-peer-urls={','.join(self.initial_advertise_peer_urls)}{detail}"
        )

    def data_path(self) -> Path:
        return Path(self.data_dir or f"{self.name}.kvraft")

    def snapshot_entries(self) -> int:
        """Applied entries between snapshots: ``--snapshot-count``, etcd's default for 0 (as etcd
        3.4: "set snapshot count to default 100000"; 0 taken literally snapshotted the whole
        store after every entry)."""
        return self.snapshot_count or DEFAULT_SNAPSHOT_COUNT

    def quota_bytes(self) -> int:
        """The backend quota: 2 GiB for 0; a negative value disables it (as etcd: no write is
        refused for size, a raised NOSPACE alarm still refuses them)."""
        return self.quota_backend_bytes if self.quota_backend_bytes != 0 else 2 * 1024**3

    def election_ticks(self) -> int:
        return max(2, round(self.election_timeout / self.heartbeat_interval))

    def backend_batch(self) -> tuple[float, int]:
        """``(seconds, ops)``: how long and how many applied ops are held before the store's
        commit (``--backend-batch-interval``, ``--backend-batch-limit``; etcd's defaults for 0)."""
        interval_s = parse_go_duration_s(self.backend_batch_interval) if self.backend_batch_interval else 0.0
        return (interval_s or DEFAULT_BACKEND_BATCH_INTERVAL_S, self.backend_batch_limit or DEFAULT_BACKEND_BATCH_LIMIT)

    def compaction_batch(self) -> int:
        return self.compaction_batch_limit or DEFAULT_COMPACTION_BATCH_LIMIT

    def warn_apply_s(self) -> float:
        return parse_go_duration_s(self.warning_apply_duration)

    def warn_request_s(self) -> float:
        """``--warning-unary-request-duration`` in seconds (etcd's 300ms for 0)."""
        return parse_go_duration_s(self.warning_unary_request_duration) or etcd36.DEFAULT_WARNING_UNARY_REQUEST_S

    def feature(self, name: str) -> bool:
        """Whether etcd 3.6's feature gate ``name`` is on (``--feature-gates``, the defaults)."""
        return etcd36.enabled_gates(etcd36.parse_feature_gates(self.feature_gates))[name]

    def validate(self) -> None:
        for name in ("listen_client_urls", "listen_client_http_urls", "advertise_client_urls", "listen_peer_urls",
                     "initial_advertise_peer_urls", "listen_metrics_urls"):
            for url in getattr(self, name):
                _check_url(url, "--" + name.replace("_", "-"))
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError("--initial-cluster-state must be 'new' or 'existing'")
        for name in ("heartbeat_interval", "election_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >0 (set to {getattr(self, name)}ms)")
        if self.election_timeout < 5 * self.heartbeat_interval:
            raise ConfigError("--election-timeout should be at least 5 times --heartbeat-interval")
        if self.election_timeout > 50000:
            raise ConfigError(f"--election-timeout[{self.election_timeout}ms] is too long, and should be set "
                              "less than 50000ms (as etcd)")
        for name in _UNSIGNED:  # etcd's uint flags: a negative value is a parse error there
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if self.auto_compaction_mode not in ("periodic", "revision"):
            raise ConfigError("--auto-compaction-mode must be 'periodic' or 'revision'")
        try:
            if self.auto_compaction_mode == "revision":
                if int(self.auto_compaction_retention) < 0:
                    raise ValueError("negative")
            else:
                parse_retention_s(self.auto_compaction_retention)
        except ValueError:
            raise ConfigError(
                f"--auto-compaction-retention {self.auto_compaction_retention!r} does not fit mode "
                f"{self.auto_compaction_mode!r}"
            ) from None
        if self.max_request_bytes <= 0:
            raise ConfigError("--max-request-bytes must be positive")
        try:
            check_tls_policy(self)
        except TLSPolicyError as exc:
            raise ConfigError(str(exc)) from None
        if self.peer_cert_allowed_cn and self.peer_cert_allowed_hostname:
            raise ConfigError("--peer-cert-allowed-cn and --peer-cert-allowed-hostname are mutually exclusive (as in etcd)")
        if (self.peer_cert_allowed_cn or self.peer_cert_allowed_hostname) and not self.peer_trusted_ca_file:
            raise ConfigError("--peer-cert-allowed-cn/--peer-cert-allowed-hostname need --peer-trusted-ca-file "
                              "(only a verified certificate has names to check)")
        if self.client_cert_allowed_hostname and not self.trusted_ca_file:
            raise ConfigError("--client-cert-allowed-hostname needs --trusted-ca-file "
                              "(only a verified certificate has names to check)")
        if self.enable_v2:
            raise ConfigError("--enable-v2: kvraft serves etcd's v3 API only (its JSON gateway); there is no v2 store")
        if self.experimental_enable_v2v3:
            raise ConfigError("--experimental-enable-v2v3: kvraft has no v2 API to emulate; use the v3 API")
        for name in ("discovery", "discovery_proxy"):
            if getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')}: kvraft does not bootstrap through a v2 discovery "
                                  "service; name the members in --initial-cluster, in DNS SRV records "
                                  "(--discovery-srv), or use v3 discovery (--discovery-token, --discovery-endpoints)")
        if sum(map(bool, (self.initial_cluster, self.discovery_srv, self.discovery_endpoints))) > 1:
            raise ConfigError('multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", '
                              '"discovery", "discovery-endpoints" or "discovery-srv"')
        if bool(self.discovery_token) != bool(self.discovery_endpoints):
            raise ConfigError("both --discovery-token and --discovery-endpoints must be set")
        if bool(self.discovery_cert) != bool(self.discovery_key):
            raise ConfigError("--discovery-cert and --discovery-key go together")
        if self.discovery_srv_name and not self.discovery_srv:
            raise ConfigError("--discovery-srv-name needs --discovery-srv (the domain whose SRV records it names)")
        if self.discovery_fallback not in ("exit", "proxy"):
            raise ConfigError(f"--discovery-fallback: unexpected value {self.discovery_fallback!r} (want exit or proxy)")
        if self.proxy != "off":
            if self.proxy not in ("on", "readonly"):
                raise ConfigError(f"--proxy: unexpected value {self.proxy!r} (want off, readonly or on)")
            raise ConfigError(f"--proxy={self.proxy}: kvraft has no v2 proxy mode; run a member (a learner serves "
                              "reads without voting) or point clients at every member")
        if self.debug:
            self.log_level = "debug"
        if self.log_level not in ("debug", "info", "warn", "error", "panic", "fatal"):
            raise ConfigError("--log-level must be debug, info, warn, error, panic or fatal")
        if self.logger not in ("zap", "capnslog"):
            raise ConfigError("--logger must be 'zap' (JSON lines) or 'capnslog' (text)")
        if self.log_format not in ("json", "console"):  # (etcd's ConvertToZapFormat)
            raise ConfigError(f"unsupported log format: {self.log_format} (--log-format: json or console)")
        for name in ("experimental_corrupt_check_time", "experimental_watch_progress_notify_interval",
                     "grpc_keepalive_min_time", "grpc_keepalive_interval", "grpc_keepalive_timeout",
                     "backend_batch_interval", "experimental_warning_apply_duration", "discovery_dial_timeout",
                     "experimental_downgrade_check_time", "experimental_compaction_sleep_interval",
                     "raft_read_timeout", "raft_write_timeout",
                     "discovery_request_timeout", "discovery_keepalive_time", "discovery_keepalive_timeout",
                     "experimental_compact_hash_check_time", "compact_hash_check_time", "corrupt_check_time",
                     "compaction_sleep_interval", "watch_progress_notify_interval", "warning_apply_duration",
                     "downgrade_check_time", "experimental_warning_unary_request_duration",
                     "warning_unary_request_duration"):
            if name == "backend_batch_interval" and not self.backend_batch_interval:
                continue  # (etcd's default: empty)
            try:
                if parse_go_duration_s(getattr(self, name)) < 0:
                    raise ValueError(f"{getattr(self, name)!r} is negative")
            except ValueError as exc:
                raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
        if self.cors != ["*"]:  # etcd's flag is a URL list (types.NewURLs), "*" alone excepted
            try:
                self.cors = parse_peer_urls(self.cors) if self.cors else []
            except ValueError as exc:
                raise ConfigError(f"invalid value {go_quote(','.join(self.cors))} for flag -cors: {exc}") from None
        for name in ("backend_batch_limit", "experimental_compaction_batch_limit", "compaction_batch_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative (0: the default)")
        if not 1 <= self.max_concurrent_streams <= 0xFFFFFFFF:
            raise ConfigError("--max-concurrent-streams must be between 1 and 4294967295 "
                              "(a limit of 0 would refuse every stream)")
        if self.backend_bbolt_freelist_type not in ("array", "map"):
            raise ConfigError("--backend-bbolt-freelist-type must be 'array' or 'map'")
        if not self.enable_grpc_gateway:
            raise ConfigError("--enable-grpc-gateway=false: kvraft's client API is the gateway (JSON and msgpack "
                              "over HTTP); without it the member would serve no clients")
        if self.v2_deprecation not in ("not-yet", "write-only", "write-only-drop-data", "gone"):
            raise ConfigError(f"--v2-deprecation: unknown value {self.v2_deprecation!r} (want not-yet, write-only, "
                              "write-only-drop-data or gone)")
        try:
            given = etcd36.parse_feature_gates(self.feature_gates)
        except ValueError as exc:
            raise ConfigError(f'invalid value "{self.feature_gates}" for flag -feature-gates: {exc}') from None
        if given.get("LeaseCheckpointPersist") and not etcd36.enabled_gates(given)["LeaseCheckpoint"]:
            raise ConfigError("enabling feature gate LeaseCheckpointPersist requires enabling feature gate "
                              "LeaseCheckpoint (kvraft always checkpoints leases: leave both on)")
        for name in ("experimental_enable_distributed_tracing", "enable_distributed_tracing"):
            if getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')}: kvraft exports no OpenTelemetry traces; its "
                                  "request timings are in /metrics and its slow requests in the log")
        for name in ("experimental_distributed_tracing_sampling_rate", "distributed_tracing_sampling_rate"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1000000")
        for name in ("experimental_compact_hash_check_time", "compact_hash_check_time"):
            if parse_go_duration_s(getattr(self, name)) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >0 (set to {getattr(self, name)})")
        if parse_go_duration_s(self.raft_write_timeout) <= 0:
            raise ConfigError("--raft-write-timeout must be positive")
        if self.self_signed_cert_validity <= 0:
            raise ConfigError("--self-signed-cert-validity must be at least 1 (years)")
        for cert, key, name in ((self.client_cert_file, self.client_key_file, "client"),
                                (self.peer_client_cert_file, self.peer_client_key_file, "peer-client")):
            if bool(cert) != bool(key):
                raise ConfigError(f"--{name}-cert-file and --{name}-key-file go together")
        for path in (self.client_cert_file, self.client_key_file):
            if path and not Path(path).is_file():
                raise ConfigError(f"open {path}: no such file or directory")
        if self.peer_client_cert_file and not (self.peer_cert_file or self.peer_auto_tls):
            raise ConfigError("--peer-client-cert-file needs peer TLS (--peer-cert-file or --peer-auto-tls)")
        if self.experimental_backend_bbolt_freelist_type not in ("array", "map"):
            raise ConfigError("--experimental-backend-bbolt-freelist-type must be 'array' or 'map'")
        try:
            parse_package_levels(self.log_package_levels)
        except ValueError as exc:
            raise ConfigError(f"--log-package-levels: {exc}") from None
        if self.metrics not in ("basic", "extensive"):
            raise ConfigError("--metrics must be 'basic' or 'extensive'")
        if self.enable_log_rotation:  # (etcd's setupLogRotation)
            files = [o for o in self.log_outputs if o not in ("default", "stderr", "stdout")]
            if not files or len(files) > 1:
                raise ConfigError("--log-outputs requires a single file path when --log-rotate-config-json is defined")
            try:
                parse_rotation(self.log_rotation_config_json)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not self.log_outputs:
            raise ConfigError("--log-outputs must name at least one output (default, stderr, stdout or a file)")
        self.initial_members()
        self.check_advertise_matches_cluster()
        self._validate_tls()

    def validate_peer_schemes(self) -> bool:
        """Whether the peers speak https; ``ConfigError`` when the peer URLs mix schemes."""
        peer_urls = [*self.listen_peer_urls, *self.initial_advertise_peer_urls]
        peer_urls += [u for urls in self.initial_members().values() for u in urls]
        schemes = {urlsplit(u).scheme for u in peer_urls}
        if len(schemes) > 1:
            raise ConfigError("peer URLs mix http:// and https:// (--listen-peer-urls, "
                              "--initial-advertise-peer-urls, --initial-cluster must agree)")
        return schemes == {"https"}

    def _validate_tls(self) -> None:
        """etcd's rules, stricter where etcd would silently serve plain text: an ``https://``
        URL needs a certificate (or auto TLS), a certificate needs an ``https://`` URL."""
        client_https = any(urlsplit(u).scheme == "https" for u in (*self.listen_client_urls, *self.listen_client_http_urls))
        metrics_https = any(urlsplit(u).scheme == "https" for u in self.listen_metrics_urls)
        if (client_https or metrics_https) and not (self.cert_file or self.auto_tls):
            raise ConfigError("--listen-client-urls/--listen-metrics-urls have https:// but no "
                              "--cert-file/--key-file (or --auto-tls)")
        if (self.cert_file or self.client_cert_auth) and not (client_https or metrics_https):
            raise ConfigError("--cert-file/--client-cert-auth set but no https:// URL in --listen-client-urls")
        _check_pair("", self.cert_file, self.key_file)
        if self.client_cert_auth and not self.trusted_ca_file:
            raise ConfigError("--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)")
        peer_https = self.validate_peer_schemes()
        if peer_https and not (self.peer_cert_file or self.peer_auto_tls):
            raise ConfigError("peer URLs are https:// but no --peer-cert-file/--peer-key-file (or --peer-auto-tls)")
        if (self.peer_cert_file or self.peer_client_cert_auth) and not peer_https:
            raise ConfigError("--peer-cert-file/--peer-client-cert-auth set but the peer URLs are http://")
        _check_pair("peer-", self.peer_cert_file, self.peer_key_file)
        if self.peer_client_cert_auth and not self.peer_trusted_ca_file:
            raise ConfigError("--peer-client-cert-auth needs --peer-trusted-ca-file")
        for flag in ("trusted_ca_file", "peer_trusted_ca_file"):
            path = getattr(self, flag)
            if path and not Path(path).is_file():
                raise ConfigError(f"--{flag.replace('_', '-')}: {path} is not a readable file")
        if self.client_crl_file and not (client_https or metrics_https):
            raise ConfigError("--client-crl-file set but no https:// URL in --listen-client-urls or "
                              "--listen-metrics-urls (a CRL checks TLS client certificates)")
        if self.client_crl_file and not self.trusted_ca_file:
            raise ConfigError("--client-crl-file needs --trusted-ca-file (only certificates verified "
                              "against that CA are checked against the CRL)")
        if self.peer_crl_file and not peer_https:
            raise ConfigError("--peer-crl-file set but the peer URLs are http://")
        if self.peer_crl_file and not self.peer_trusted_ca_file:
            raise ConfigError("--peer-crl-file needs --peer-trusted-ca-file")
        for flag in ("client_crl_file", "peer_crl_file"):
            path = getattr(self, flag)
            if not path:
                continue
            try:
                crl = read_crl(path)
            except CRLError as exc:
                raise ConfigError(f"--{flag.replace('_', '-')}: {exc}") from None
            if crl.expired(time.time()):
                raise ConfigError(f"--{flag.replace('_', '-')}: {path} is past its next update ({crl.describe()}); "
                                  "every certificate would be refused: write a new one (deploy/make-certs.sh -l)")


def _check_pair(prefix: str, cert: str, key: str) -> None:
    if bool(cert) != bool(key):
        raise ConfigError(f"--{prefix}cert-file and --{prefix}key-file go together")
    for flag, path in (("cert-file", cert), ("key-file", key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"--{prefix}{flag}: {path} is not a readable file")


def _check_url(url: str, flag: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range, a bad IPv6 literal
        raise ConfigError(f"{flag}: {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ConfigError(f"{flag}: {url!r} is not a scheme://host:port URL")
    if parts.path:
        raise ConfigError(f"{flag}: URL must not contain a path: {url}")


def urls_resolve_alike(a: list[str], b: list[str], resolve: Callable[[str], str]) -> bool:
    """etcd's ``URLStringsEqual``: the same URLs in any order, or else the same schemes, ports
    and addresses once host names are resolved. ``DiscoveryError`` when a host name does not
    resolve (only asked when the strings differ)."""
    if sorted(a) == sorted(b):
        return True
    if len(a) != len(b):
        return False

    def key(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url)
        return parts.scheme, resolve(parts.hostname or ""), parts.port

    return sorted(map(key, a)) == sorted(map(key, b))


def member_id_for(peer_urls: list[str], token: str) -> int:
    """etcd-like: a member's id is a hash of its sorted peer URLs and the cluster token."""
    digest = hashlib.sha256(("|".join(sorted(peer_urls)) + "|" + token).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def cluster_id_for(member_ids: list[int], token: str) -> int:
    text = ",".join(str(m) for m in sorted(member_ids)) + "|" + token
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") or 1


_LISTS = {"listen_client_urls", "listen_client_http_urls", "advertise_client_urls", "listen_peer_urls", "initial_advertise_peer_urls",
          "listen_metrics_urls", "log_outputs", "cipher_suites", "cors", "host_whitelist", "discovery_endpoints"}


_UNSIGNED = ("self_signed_cert_validity", "experimental_bootstrap_defrag_threshold_megabytes",
             "bootstrap_defrag_threshold_megabytes", "experimental_snapshot_catchup_entries", "snapshot_count", "snapshot_catchup_entries", "max_snapshots", "max_wals", "max_txn_ops", "max_learners",
             "auth_token_ttl", "proxy_failure_wait", "proxy_refresh_interval", "proxy_dial_timeout",
             "proxy_write_timeout", "proxy_read_timeout")

_TRUE = ("1", "t", "true", "yes", "on")
_FALSE = ("0", "f", "false", "no", "off")


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Config(), name)
    if name == "feature_gates" and isinstance(value, dict):  # (YAML: a mapping of gate -> bool)
        return ",".join(f"{gate}={str(on).lower() if isinstance(on, bool) else on}" for gate, on in value.items())
    if name in _LISTS:  # (an entry given twice counts once: a listen URL twice is one listener, as etcd)
        if isinstance(value, list):
            return list(dict.fromkeys(str(v) for v in value))
        return list(dict.fromkeys(u.strip() for u in str(value).split(",") if u.strip()))
    if isinstance(default, bool):
        if isinstance(value, str):
            word = value.lower()
            if word not in _TRUE + _FALSE:  # Go's strconv.ParseBool, and YAML's words
                raise ConfigError(f"{name.replace('_', '-')}: {value!r} is not true or false")
            return word in _TRUE
        return bool(value)
    if isinstance(default, int):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name.replace('_', '-')}: {value!r} is not an integer") from None
        # etcd's flags are Go int64s, its uint flags uint64s: a value beyond is its "value out of range"
        if not -(1 << 63) <= number < (1 << 64 if name in _UNSIGNED else 1 << 63):
            raise ConfigError(f"{name.replace('_', '-')}: {value!r} is out of range")
        return number
    return str(value)


_SECURITY_KEYS = ("cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "auto-tls", "crl-file")


def _flatten_transport_security(loaded: dict[Any, Any]) -> dict[Any, Any]:
    """etcd's YAML nests TLS: ``client-transport-security: {cert-file: ...}`` and
    ``peer-transport-security: {...}``; both become the flat flag names here (``crl-file``:
    ``client-crl-file``, ``peer-crl-file``)."""
    out = dict(loaded)
    for section, prefix in (("client-transport-security", ""), ("peer-transport-security", "peer-")):
        nested = out.pop(section, None)
        if nested is None:
            continue
        if not isinstance(nested, dict):
            raise ConfigError(f"--config-file: {section} must be a mapping")
        for key, value in nested.items():
            if key not in _SECURITY_KEYS:
                raise ConfigError(f"--config-file: {section}.{key} is not supported "
                                  f"(supported: {', '.join(_SECURITY_KEYS)})")
            out[(prefix or "client-") + key if key == "crl-file" else prefix + key] = value
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvraft", description="kvraft: an etcd-compatible Raft key-value store member",
        epilog="Each flag may also be set by etcd's environment variable ETCD_<FLAG> (ETCD_INITIAL_CLUSTER "
               "for --initial-cluster); a flag wins over its variable; with a config file the variables "
               "are ignored.")
    parser.add_argument("--config-file", default=None,
                        help="Path to a YAML file with the flags' names as keys (flags win over it).")
    parser.add_argument("--version", nargs="?", const="true", default=None, metavar="true|false",
                        help="Print the version and exit (kvraft.server.main reads it first).")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    defaults = Config()
    for item in fields(Config):
        flag = "--" + item.name.replace("_", "-")
        group, text = FLAG_HELP[item.name]
        default = getattr(defaults, item.name)
        shown = ",".join(default) if isinstance(default, list) else str(default).lower() \
            if isinstance(default, bool) else str(default)
        text = f"{text} (default: {shown})" if shown else text
        target = groups[group]
        if isinstance(default, bool):
            target.add_argument(flag, dest=item.name, nargs="?", const="true", default=None, metavar="true|false",
                                help=text)
        else:
            kind = "list" if isinstance(default, list) else "int" if isinstance(default, int) else "string"
            target.add_argument(flag, dest=item.name, default=None, metavar=kind, help=text)
    return parser


ENV_PREFIX = "ETCD_"
CONFIG_FILE_ENV = ENV_PREFIX + "CONFIG_FILE"  # --config-file's variable: read before the rest


def _from_environment(config: Config, args: argparse.Namespace, environ: Mapping[str, str]) -> set[str]:
    """etcd's ``ETCD_<FLAG>`` variables (``ETCD_INITIAL_CLUSTER`` for ``--initial-cluster``), so
    an etcd unit's EnvironmentFile configures a kvraft member as it did the etcd one: a
    variable applies where its flag is not given (a flag wins: the variable is reported as
    shadowed, as etcd warns), an empty one is unset, a bad value is an error naming the
    variable, and an ``ETCD_`` variable kvraft does not know is reported (etcd: "unrecognized
    environment variable")."""
    known = {ENV_PREFIX + f.name.upper(): f.name for f in fields(Config)}
    applied = set()
    for key in sorted(k for k in environ if k.startswith(ENV_PREFIX)):
        value, name = environ[key], known.get(key)
        if key == CONFIG_FILE_ENV:
            continue
        if name is None:
            print(f"kvraft: warning: unrecognized environment variable {key}={value}", file=sys.stderr)
        elif getattr(args, name) is not None:
            print(f"kvraft: warning: recognized environment variable {key}, but unused: shadowed by "
                  f"corresponding flag --{name.replace('_', '-')}", file=sys.stderr)
        elif value != "":
            try:
                setattr(config, name, _coerce(name, value))
            except ConfigError as exc:
                raise ConfigError(f"invalid value {value!r} for {key}: {exc}") from None
            applied.add(name)
    return applied


def parse_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The member's settings: defaults, then ``--config-file`` (or ``ETCD_CONFIG_FILE``) or,
    without one, the ``ETCD_*`` environment variables as etcd reads them, then the flags."""
    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    if not args.config_file and environ.get(CONFIG_FILE_ENV):
        args.config_file = environ[CONFIG_FILE_ENV]
    config = Config()
    explicit: set[str] = set()  # (what etcd calls FlagsExplicitlySet: etcd 3.6's renames need it)
    if not args.config_file:
        explicit |= _from_environment(config, args, environ)
    elif any(k.startswith(ENV_PREFIX) and k != CONFIG_FILE_ENV for k in environ):
        print(f"kvraft: warning: --config-file {args.config_file}: the ETCD_* environment variables are ignored "
              "(as etcd ignores them with a config file)", file=sys.stderr)
    if args.config_file:
        try:
            loaded = yaml.safe_load(Path(args.config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config-file: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError("--config-file must hold a mapping")
        known = {f.name for f in fields(Config)}
        loaded = _flatten_transport_security(loaded)
        if "experimental-snapshot-catch-up-entries" in loaded:  # (etcd 3.6's YAML name of the flag, as there)
            loaded["experimental-snapshot-catchup-entries"] = loaded.pop("experimental-snapshot-catch-up-entries")
        ignored = []
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in known:
                ignored.append(str(key))
            elif value is not None:
                setattr(config, name, _coerce(name, value))
                explicit.add(name)
        if ignored:
            # etcd ignores keys it does not know too, but a key kvraft skips is a setting the
            # operator thinks is in force: say so where the unit's journal shows it
            print(f"kvraft: warning: --config-file {args.config_file}: ignoring {', '.join(sorted(ignored))} "
                  "(not kvraft settings; `kvraft --help` lists them)", file=sys.stderr)
    for item in fields(Config):
        value = getattr(args, item.name)
        if value is not None:
            setattr(config, item.name, _coerce(item.name, value))
            explicit.add(item.name)
    try:
        for warning in etcd36.resolve(config, explicit):
            print(f"kvraft: warning: {warning}", file=sys.stderr)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.initial_cluster is not None and not args.initial_cluster.strip():
        # (an unset variable in a unit's ExecStart): with it empty the member would found a
        # cluster of its own instead of joining its peers; etcd refuses it too
        raise ConfigError(f"--initial-cluster is empty: couldn't find local name {config.name!r} "
                          "in the initial cluster configuration")
    if not config.data_dir:
        config.data_dir = str(Path(f"{config.name}.kvraft"))
    if Path(config.data_dir).exists() and not Path(config.data_dir).is_dir():
        raise ConfigError(f"--data-dir {config.data_dir} exists and is not a directory")
    if Path(config.data_dir).is_symlink() and not Path(config.data_dir).exists():  # dangling, or a loop
        raise ConfigError(f"--data-dir {config.data_dir} is a symbolic link that leads to no directory "
                          f"({os.readlink(config.data_dir)}); point it at one or remove it")
    config.validate()
    return config
