"""What ``kvraft --help`` says about each flag, grouped as ``etcd --help`` groups them.

Every ``Config`` field has an entry (``tests/server/test_config.py`` checks), so a new flag
cannot ship undocumented. The wording follows etcd's where the flag is etcd's; what kvraft
does differently is said in the text (and in docs/design/server.md).
"""

from __future__ import annotations

from kvraft.server.etcd36 import RENAMED

__all__ = ["FLAG_HELP", "GROUPS"]

GROUPS = ("Member", "Clustering", "Proxy", "Security", "Auth", "Logging", "Profiling and monitoring", "Experimental",
          "Unsafe")

FLAG_HELP: dict[str, tuple[str, str]] = {
    # Member
    "name": ("Member", "Human-readable name for this member."),
    "data_dir": ("Member", "Path to the data directory (default: <name>.kvraft)."),
    "wal_dir": ("Member", "Path to a dedicated Raft log (WAL) directory, e.g. on a disk of its own; "
                          "the data directory then records it and a restart must name it."),
    "listen_client_urls": ("Member", "List of URLs to listen on for client traffic (http:// or https://)."),
    "listen_client_http_urls": ("Member", "More URLs to serve the HTTP client API on (etcd 3.5's HTTP-only "
                                          "listeners; kvraft's API is HTTP on both lists)."),
    "listen_peer_urls": ("Member", "List of URLs to listen on for peer traffic."),
    "listen_metrics_urls": ("Member", "List of additional URLs to serve /metrics and /health on."),
    "snapshot_count": ("Member", "Number of committed entries that trigger a snapshot (and log compaction)."),
    "snapshot_catchup_entries": ("Member", "Number of entries kept after a snapshot for slow followers to catch up."),
    "max_snapshots": ("Member", "Maximum number of snapshot files to retain (0 is unlimited); kvraft keeps one."),
    "max_wals": ("Member", "Maximum number of wal files to retain (0 is unlimited); kvraft keeps one segment."),
    "heartbeat_interval": ("Member", "Time (in milliseconds) of a heartbeat interval."),
    "election_timeout": ("Member", "Time (in milliseconds) for an election to timeout."),
    "quota_backend_bytes": ("Member", "Raise the NOSPACE alarm when the backend size exceeds this (0: the default 2 GiB)."),
    "max_request_bytes": ("Member", "Maximum client request size in bytes the server will accept."),
    "max_txn_ops": ("Member", "Maximum number of operations permitted in a transaction."),
    "auto_compaction_mode": ("Member", "Interpret --auto-compaction-retention as 'periodic' (a duration) or "
                                       "'revision' (a number of revisions)."),
    "auto_compaction_retention": ("Member", "Auto compaction retention for the MVCC key value store (0: off), "
                                            "e.g. 1h, 30m, or a revision count."),
    "pre_vote": ("Member", "Run a pre-vote before campaigning, so a rejoining member cannot depose a working leader."),
    "max_learners": ("Member", "The maximum number of learner members at once."),
    # Clustering
    "initial_advertise_peer_urls": ("Clustering", "This member's peer URLs to advertise to the rest of the cluster."),
    "initial_cluster": ("Clustering", "Initial cluster configuration for bootstrapping (name=peer-url,...)."),
    "initial_cluster_state": ("Clustering", "Initial cluster state ('new' or 'existing')."),
    "initial_cluster_token": ("Clustering", "Initial cluster token, unique per cluster: it seeds member and cluster "
                                            "ids and the peers' handshake key."),
    "advertise_client_urls": ("Clustering", "This member's client URLs to advertise to the rest of the cluster."),
    "strict_reconfig_check": ("Clustering", "Reject reconfiguration requests that would cause quorum loss."),
    "auto_promote_learners": ("Clustering", "Promote a learner once its log has caught up with the leader's."),
    "force_new_cluster": ("Clustering", "Force to create a new one-member cluster from this member's data (recovery "
                                        "from a lost quorum); remove the flag afterwards."),
    # Security
    "cert_file": ("Security", "Path to the client server TLS cert file."),
    "key_file": ("Security", "Path to the client server TLS key file."),
    "client_cert_auth": ("Security", "Enable client cert authentication (a request without a certificate is "
                                     "answered only with a kvraft scoped token)."),
    "client_crl_file": ("Security", "Path to the client certificate revocation list file (read again when it "
                                    "changes)."),
    "client_cert_allowed_hostname": ("Security", "Allowed TLS hostname for client cert authentication."),
    "trusted_ca_file": ("Security", "Path to the client server TLS trusted CA cert file."),
    "auto_tls": ("Security", "Client TLS using generated certificates."),
    "peer_cert_file": ("Security", "Path to the peer server TLS cert file."),
    "peer_key_file": ("Security", "Path to the peer server TLS key file."),
    "peer_client_cert_auth": ("Security", "Enable peer client cert authentication."),
    "peer_trusted_ca_file": ("Security", "Path to the peer server TLS trusted CA file."),
    "peer_crl_file": ("Security", "Path to the peer certificate revocation list file (read again when it changes)."),
    "peer_cert_allowed_cn": ("Security", "Allowed CN for inter peer authentication."),
    "peer_cert_allowed_hostname": ("Security", "Allowed TLS hostname for inter peer authentication."),
    "peer_auto_tls": ("Security", "Peer TLS using generated certificates."),
    "peer_secret_file": ("Security", "File holding the cluster secret every peer proves it knows (kvraft's own "
                                     "flag; default: derived from the cluster token)."),
    "cipher_suites": ("Security", "Comma-separated list of supported TLS 1.2 cipher suites, Go's names "
                                  "(default: OpenSSL's)."),
    "tls_min_version": ("Security", "Minimum TLS version supported: TLS1.2 or TLS1.3."),
    "tls_max_version": ("Security", "Maximum TLS version supported: TLS1.2 or TLS1.3 (default: no maximum)."),
    # Auth
    "auth_token": ("Auth", "Specify auth token type and its options ('simple' or 'jwt,sign-method=...,priv-key=...')."),
    "auth_token_ttl": ("Auth", "The lifetime in seconds of the simple auth token."),
    "bcrypt_cost": ("Auth", "Specify bcrypt algorithm cost factor for auth password hashing."),
    # Logging
    "logger": ("Logging", "'zap' for JSON lines, 'capnslog' for text lines."),
    "log_outputs": ("Logging", "Where to write logs: 'default' (stderr), 'stderr', 'stdout', or file paths."),
    "enable_log_rotation": ("Logging", "Enable log rotation of a single log-outputs file target."),
    "log_rotation_config_json": ("Logging", "Configures log rotation if enabled with a JSON logger config. "
                                            "MaxSize(MB), MaxAge(days,0=no limit), MaxBackups(0=no limit), "
                                            "LocalTime(use computers local time), Compress(gzip)."),
    "log_level": ("Logging", "Configures log level: debug, info, warn, error, panic or fatal."),
    "debug": ("Logging", "Enable debug-level logging (the same as --log-level debug)."),
    # Profiling and monitoring
    "gateway_emit_defaults": ("Member", "JSON answers carry every field, zero values included (\"watch_id\":\"0\", "
                                        "\"succeeded\":false); per request: header Kvraft-Emit-Defaults: true|false."),
    "metrics_auth": ("Profiling and monitoring", "With auth enabled, /metrics answers only users with the root or the "
                                             "kvraft-monitoring role (basic auth, a token or a client certificate)."),
    "metrics": ("Profiling and monitoring", "Set level of detail for exported metrics: 'basic' or 'extensive'."),
    # Experimental (and compatibility)
    "experimental_initial_corrupt_check": ("Experimental", "Check data corruption against the peers before "
                                                           "serving client traffic."),
    "enable_v2": ("Experimental", "etcd's v2 API: kvraft has none, so only false is accepted."),
    "experimental_enable_v2v3": ("Experimental", "etcd's v2 API emulated on v3: kvraft has none, so only empty "
                                                 "is accepted."),
    "discovery": ("Clustering", "etcd's v2 discovery URL: kvraft has no v2, so only empty is accepted (v3 "
                                "discovery: --discovery-token, --discovery-endpoints)."),
    "discovery_fallback": ("Clustering", "etcd's behaviour when discovery fails ('exit' or 'proxy'); unused "
                                         "without --discovery."),
    "discovery_proxy": ("Clustering", "HTTP proxy for the discovery service: only empty is accepted."),
    "discovery_srv": ("Clustering", "DNS domain used to bootstrap initial cluster (its _etcd-server-ssl._tcp "
                                    "and _etcd-server._tcp SRV records; $KVRAFT_DNS_SERVER names a DNS server)."),
    "discovery_srv_name": ("Clustering", "Service name to query when using DNS discovery "
                                         "(_etcd-server-NAME._tcp)."),
    "discovery_token": ("Clustering", "V3 discovery: discovery token for the etcd cluster to be bootstrapped."),
    "discovery_endpoints": ("Clustering", "V3 discovery: List of endpoints of the discovery service (an etcd or "
                                            "kvraft cluster)."),
    "discovery_dial_timeout": ("Clustering", "V3 discovery: dial timeout for client connections."),
    "discovery_request_timeout": ("Clustering", "V3 discovery: timeout for discovery requests (excluding dial "
                                                  "timeout)."),
    "discovery_keepalive_time": ("Clustering", "V3 discovery: keepalive time for client connections."),
    "discovery_keepalive_timeout": ("Clustering", "V3 discovery: keepalive timeout for client connections."),
    "discovery_insecure_transport": ("Clustering", "V3 discovery: disable transport security for client "
                                                     "connections."),
    "discovery_insecure_skip_tls_verify": ("Clustering", "V3 discovery: skip server certificate verification "
                                                           "(CAUTION: this option should be enabled only for testing "
                                                           "purposes)."),
    "discovery_cert": ("Clustering", "V3 discovery: identify secure client using this TLS certificate file."),
    "discovery_key": ("Clustering", "V3 discovery: identify secure client using this TLS key file."),
    "discovery_cacert": ("Clustering", "V3 discovery: verify certificates of TLS-enabled secure servers using "
                                         "this CA bundle."),
    "discovery_user": ("Clustering", "V3 discovery: username[:password] for authentication (prompt if password "
                                       "is not supplied)."),
    "discovery_password": ("Clustering", "V3 discovery: password for authentication (if this option is used, "
                                           "--user option shouldn't include password)."),
    "proxy": ("Proxy", "etcd's v2 proxy mode ('off', 'readonly' or 'on'): kvraft has none, so only 'off' is "
                       "accepted."),
    "proxy_failure_wait": ("Proxy", "Time (in milliseconds) an endpoint is held in a failed state (a proxy's; unused)."),
    "proxy_refresh_interval": ("Proxy", "Time (in milliseconds) of the endpoints refresh interval (unused)."),
    "proxy_dial_timeout": ("Proxy", "Time (in milliseconds) for a dial to timeout (unused)."),
    "proxy_write_timeout": ("Proxy", "Time (in milliseconds) for a write to timeout (unused)."),
    "proxy_read_timeout": ("Proxy", "Time (in milliseconds) for a read to timeout (unused)."),
    # Security (etcd lists these two there)
    "cors": ("Security", "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, "
                         "(empty or * means allow all)."),
    "host_whitelist": ("Security", "Acceptable hostnames from HTTP client requests, if server is not secure "
                                   "(empty or * means allow all)."),
    # Member: client connections' keepalive
    "grpc_keepalive_min_time": ("Member", "Shortest heartbeat interval a client's stream may ask for "
                                          "(Kvraft-Keepalive; etcd: minimum client ping interval)."),
    "grpc_keepalive_interval": ("Member", "Silence on a client connection before the server probes it "
                                          "(TCP keepalive; 0s to disable)."),
    "grpc_keepalive_timeout": ("Member", "Wait for an unanswered probe or unacknowledged data before closing "
                                         "the connection (0s: the kernel's defaults)."),
    "initial_election_tick_advance": ("Member", "Whether to fast-forward initial election ticks on boot for faster "
                                                "election (a lone voter campaigns at once either way)."),
    "backend_batch_interval": ("Member", "The maximum time applied ops are held before the store's commit "
                                         "(empty or 0: 100ms)."),
    "backend_batch_limit": ("Member", "The maximum number of applied ops held before the store's commit (0: 10000)."),
    "max_concurrent_streams": ("Member", "Maximum concurrent streams that each client can open at a time (an HTTP/1.1 "
                                         "connection carries one, so any limit of 1 or more holds)."),
    "experimental_enable_lease_checkpoint": ("Experimental", "Replicate leases' remaining TTL so a leader change does "
                                                             "not renew them; kvraft always does (false only logs so)."),
    "experimental_backend_bbolt_freelist_type": ("Experimental", "etcd's bbolt freelist type, 'array' or 'map'; "
                                                                 "kvraft's LMDB keeps its own freelist."),
    "backend_bbolt_freelist_type": ("Member", "etcd's bbolt freelist type, 'array' or 'map'; kvraft's store is LMDB, "
                                              "which keeps its own: validated, nothing changes."),
    "enable_grpc_gateway": ("Member", "Enable the gateway: kvraft's client API is the gateway's JSON (and msgpack) "
                                      "over HTTP, so only true is accepted."),
    "v2_deprecation": ("Clustering", "Phase of v2store deprecation (not-yet, write-only, write-only-drop-data, gone): "
                                     "kvraft has no v2 store, so every phase holds."),
    "experimental_enable_lease_checkpoint_persist": ("Experimental", "Persist leases' remaining TTL (needs "
                                                                     "--experimental-enable-lease-checkpoint): kvraft "
                                                                     "always does."),
    "experimental_txn_mode_write_with_shared_buffer": ("Experimental", "etcd's bbolt read buffer for write txns: "
                                                                       "validated, nothing changes in kvraft."),
    "unsafe_no_fsync": ("Unsafe", "Disables fsync of the Raft log and the store: unsafe, will cause data loss "
                                  "on a power cut."),
    "raft_read_timeout": ("Member", "Close an accepted peer connection silent this long, probing peers at least "
                                    "three times as often (etcd's default 5s; kvraft's 0s: never)."),
    "raft_write_timeout": ("Member", "Redial a peer that takes no bytes for this long (etcd's default 5s)."),
    "socket_reuse_port": ("Member", "Set SO_REUSEPORT on the client, peer and metrics listeners."),
    "socket_reuse_address": ("Member", "Set SO_REUSEADDR on the listeners (kvraft's always set it, as Go's do)."),
    "self_signed_cert_validity": ("Security", "Years the --auto-tls and --peer-auto-tls certificates are valid."),
    "client_cert_file": ("Security", "etcd's certificate for its gateway's own gRPC dial: kvraft serves the API "
                                     "directly, so it is checked and not used."),
    "client_key_file": ("Security", "The key of --client-cert-file (checked, not used)."),
    "peer_client_cert_file": ("Security", "The certificate this member presents when it dials a peer (default: "
                                          "--peer-cert-file)."),
    "peer_client_key_file": ("Security", "The key of --peer-client-cert-file."),
    "experimental_stop_grpc_service_on_defrag": ("Experimental", "Stop serving while defragmenting: kvraft's "
                                                                 "defragmentation does not stop serving (noted)."),
    "enable_pprof": ("Profiling and monitoring", "Serve profiling data at the client URLs' /debug/pprof/ (thread and "
                                                 "task stacks, a sampled CPU profile, the heap by type)."),
    "log_package_levels": ("Logging", "A log level per package or logger, e.g. 'etcdmain=CRITICAL,raft=DEBUG' or "
                                      "'kvraft.storage=DEBUG'."),
    # etcd 3.6's names (kvraft.server.etcd36); the experimental ones are deprecated there
    "feature_gates": ("Member", "A set of key=value pairs for etcd 3.6's feature gates: CompactHashCheck, "
                                "InitialCorruptCheck, SetMemberLocalAddr, StopGRPCServiceOnDefrag, "
                                "TxnModeWriteWithSharedBuffer, LeaseCheckpoint, LeaseCheckpointPersist, AllAlpha, "
                                "AllBeta (e.g. 'CompactHashCheck=true,InitialCorruptCheck=true')."),
    "experimental_compact_hash_check_enabled": ("Experimental", "Enable the leader's periodic check of its members' "
                                                                "compaction hashes. Deprecated in v3.6: use "
                                                                "--feature-gates=CompactHashCheck=true."),
    "compact_hash_check_time": ("Member", "Duration between the leader's checks of its members' compaction hashes."),
    "corrupt_check_time": ("Member", "Duration between cluster corruption check passes (0s: off)."),
    "compaction_batch_limit": ("Member", "The maximum revisions deleted in each compaction batch (0: 1000)."),
    "compaction_sleep_interval": ("Member", "The pause between two of a compaction's delete batches, no lock held "
                                            "(0s: none)."),
    "watch_progress_notify_interval": ("Member", "Duration of periodic watch progress notifications."),
    "warning_apply_duration": ("Member", "Log a warning (and count it) when an apply or a read takes longer than "
                                         "this."),
    "bootstrap_defrag_threshold_megabytes": ("Member", "At start, defragment when that frees at least this many "
                                                       "megabytes (0: never)."),
    "memory_mlock": ("Member", "Keep the member's pages in RAM once touched (mlockall, MCL_ONFAULT); the start fails "
                               "if the kernel refuses."),
    "downgrade_check_time": ("Member", "Duration of time between two downgrade status checks (kvraft has no "
                                       "downgrade process: validated)."),
    "peer_skip_client_san_verification": ("Security", "Skip the check of a peer certificate's subject alternative "
                                                      "names against its address."),
    "enable_distributed_tracing": ("Profiling and monitoring", "OpenTelemetry tracing: kvraft exports none, so only "
                                                                "false is accepted."),
    "distributed_tracing_address": ("Profiling and monitoring", "Distributed tracing collector address (unused)."),
    "distributed_tracing_service_name": ("Profiling and monitoring", "Distributed tracing service name (unused)."),
    "distributed_tracing_instance_id": ("Profiling and monitoring", "Distributed tracing instance ID (unused)."),
    "distributed_tracing_sampling_rate": ("Profiling and monitoring", "Samples per million spans, 0 to 1000000 "
                                                                       "(unused)."),
    "log_format": ("Logging", "Configures log format (with --logger zap): json or console (zap's tab-separated "
                              "lines)."),
    "warning_unary_request_duration": ("Logging", "Log etcd's 'request stats' warning for a client request that takes "
                                                  "longer than this (0s: 300ms)."),
    "experimental_warning_unary_request_duration": ("Experimental", "Deprecated in v3.6: use "
                                                                    "--warning-unary-request-duration."),
}
for _old, _new in RENAMED.items():  # (etcd 3.6's help says the same of each old name)
    FLAG_HELP[_old] = ("Experimental", f"Deprecated in v3.6: use --{_new.replace('_', '-')}. {FLAG_HELP[_new][1]}")
