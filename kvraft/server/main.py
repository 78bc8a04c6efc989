"""``kvraft``: run one member (etcd's flags; see ``kvraft.server.config``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from kvraft.client.observe import configure_logging
from kvraft.client.srv import DiscoveryError
from kvraft.logrotate import parse_rotation
from kvraft.server.api import make_app, misc
from kvraft.server.api.fast import FastTCPSite
from kvraft.server.api.gate import certificate_name_middleware, certificate_required_middleware
from kvraft.server.api.metrics_auth import METRICS_AUTH, MetricsAuth
from kvraft.server.api.state import SERVER
from kvraft.server.cert_names import CertRule
from kvraft.server.config import Config, ConfigError, parse_config
from kvraft.server.corruption import CorruptionError
from kvraft.server.crl import CRLError
from kvraft.server.driver import REQUEST_TIMEOUT_S
from kvraft.server.force_new import ForceNewClusterError
from kvraft.server.handover import hand_over
from kvraft.server.join import JoinError
from kvraft.server.log_levels import apply_package_levels, parse_package_levels
from kvraft.server.mlock import MlockError, lock_memory
from kvraft.server.node import Node, join_cluster, must_join
from kvraft.server.srv_bootstrap import bootstrap_from_srv
from kvraft.server.tls import AutoTLSError, apply_auto_tls, client_ssl_context
from kvraft.server.tls_accept import AcceptingTCPSite
from kvraft.server.v3discovery import bootstrap_from_discovery
from kvraft.server.wal_dir import DataDirError
from kvraft.storage.errors import StorageCorruptionError

__all__ = ["main", "serve"]

GC_THRESHOLDS = (10_000, 50, 50)
REFUSE_DAMAGED = ("refusing to start (restore this member from a snapshot, or remove it from the cluster and add it "
                  "again with an empty data dir)")
"""What a member whose stores are damaged says to do (messages that say it themselves keep theirs)."""
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
           "panic": logging.CRITICAL, "fatal": logging.CRITICAL}


class _RefusedRequests(logging.Filter):
    """aiohttp logs each request its HTTP parser refuses (answered 400: a duplicate or bad
    Content-Length, a bad chunk, a bad header) as an error with a traceback. A client's
    malformed request is no fault of the member (Go's server, under etcd, says nothing):
    one info line names it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code == 400:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "refused a malformed HTTP request from %s: %s", (remote, _first_line(exc.message))
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def _first_line(message: object) -> str:
    lines = str(message).strip().splitlines()
    return lines[0].rstrip(":") if lines else ""


_REFUSED_REQUESTS = _RefusedRequests()


async def serve(config: Config, stop: asyncio.Event | None = None) -> int:
    """Run a member until ``stop`` is set (or SIGTERM/SIGINT). Returns the exit status: 1
    when the member stopped on a fatal error (a failed log write or apply: it must not go on,
    and a supervisor such as systemd's ``Restart=on-failure`` should see a failure), else 0."""
    stop = stop or asyncio.Event()
    server_log = logging.getLogger("aiohttp.server")
    if _REFUSED_REQUESTS not in server_log.filters:
        server_log.addFilter(_REFUSED_REQUESTS)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config.memory_mlock:  # (before the store maps its file: every page it touches stays)
        lock_memory()
    if config.discovery_srv:  # (blocking lookups, before anything else runs)
        await loop.run_in_executor(None, bootstrap_from_srv, config)
    if config.discovery_endpoints:  # (waits until the other members have registered)
        await bootstrap_from_discovery(config)
    apply_auto_tls(config)
    client_ssl = client_ssl_context(config)
    node = Node(config, await join_cluster(config) if must_join(config) else None)
    app = make_app(node)
    # (tcp_keepalive off: the fast path set each connection's keepalive from --grpc-keepalive-*;
    # at a stop, requests still being served are waited for etcd's request timeout, as its
    # graceful stop of the gRPC server, not aiohttp's 60 s: the long-lived ones end at once,
    # api/open_streams.py)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, tcp_keepalive=False,
                           shutdown_timeout=REQUEST_TIMEOUT_S)
    await runner.setup()  # (starts the member: its peers, its Raft loop, its stores)
    sites = []
    client_urls = (*config.listen_client_urls, *config.listen_client_http_urls)
    try:
        for url in client_urls:
            parts = urlsplit(url)
            site = FastTCPSite(runner, parts.hostname, parts.port, reuse_address=True, backlog=1024,
                               reuse_port=config.socket_reuse_port or None,
                               ssl_context=client_ssl if parts.scheme == "https" else None)
            await site.start()
            sites.append(site)
        metrics_runner = await _serve_metrics(config, node, client_ssl, app.get(METRICS_AUTH))
    except BaseException:
        # e.g. a client URL already in use: stop the started member before the error ends
        # the process. (Left to asyncio.run's cancellation, a peer sender could swallow it and
        # the member ran on without clients and without taking part in Raft: a 3-member
        # cluster whose third member was like this lost its quorum with the first.)
        await runner.cleanup()
        raise
    main_log = logging.getLogger("kvraft.main")
    main_log.info(
        "member %s (%x) serving clients on %s, peers on %s",
        config.name, node.member_id, ",".join(client_urls), ",".join(config.listen_peer_urls),
    )
    main_log.info("ready to serve client requests")  # (etcd's lines, which scripts wait for)
    for url in client_urls:
        parts = urlsplit(url)
        address = {"address": f"{parts.hostname}:{parts.port}"}
        if parts.scheme == "https":
            main_log.info("serving client traffic securely", extra={"fields": address})
        else:
            main_log.info("serving client traffic insecurely; this is strongly discouraged!", extra={"fields": address})
    for note in compatibility_notes(config):
        main_log.info("%s", note)
    gc.freeze()  # what start-up built (modules, the recovered store) is never collected: skip it
    fatal = loop.create_task(_watch_fatal(node, stop))
    try:
        await stop.wait()
        if node.driver.fatal is None:  # (a leader stopping gracefully: its successor first, as etcd)
            await hand_over(node)
    finally:
        fatal.cancel()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
    if node.driver.fatal is not None:
        logging.getLogger("kvraft.main").critical("member %s stopped on a fatal error: %r", config.name, node.driver.fatal)
        return 1
    return 0


def compatibility_notes(config: Config) -> list[str]:
    """What an etcd flag kvraft takes but does not need changes, said once at start."""
    notes = []
    if not config.feature("LeaseCheckpoint"):
        notes.append("--feature-gates=LeaseCheckpoint=false (--experimental-enable-lease-checkpoint=false): kvraft always "
                     "replicates leases' remaining TTL (a leader change does not renew them); nothing changes")
    if config.experimental_backend_bbolt_freelist_type != "array":
        notes.append(f"--experimental-backend-bbolt-freelist-type={config.experimental_backend_bbolt_freelist_type}: "
                     "kvraft's store is LMDB, which keeps its own freelist; nothing changes")
    if config.backend_bbolt_freelist_type != "map":
        notes.append(f"--backend-bbolt-freelist-type={config.backend_bbolt_freelist_type}: kvraft's store is LMDB, "
                     "which keeps its own freelist; nothing changes")
    if not config.feature("LeaseCheckpointPersist"):
        notes.append("--feature-gates=LeaseCheckpointPersist=false (--experimental-enable-lease-checkpoint-persist=false): "
                     "kvraft always keeps leases' remaining TTL in its store; nothing changes")
    if not config.feature("TxnModeWriteWithSharedBuffer"):
        notes.append("--feature-gates=TxnModeWriteWithSharedBuffer=false (--experimental-txn-mode-write-with-shared-buffer"
                     "=false): kvraft's write txns read their own view of the store; nothing changes")
    if config.v2_deprecation != "not-yet":
        notes.append(f"--v2-deprecation={config.v2_deprecation}: kvraft has no v2 store; nothing changes")
    if config.socket_reuse_address:
        notes.append("--socket-reuse-address: kvraft's listeners always set SO_REUSEADDR (as Go's); nothing changes")
    if config.feature("StopGRPCServiceOnDefrag"):
        notes.append("--feature-gates=StopGRPCServiceOnDefrag=true (--experimental-stop-grpc-service-on-defrag): kvraft's "
                     "defragmentation does not stop reads or writes, so the member keeps serving during one; nothing "
                     "changes")
    if config.client_cert_file:
        notes.append("--client-cert-file: etcd's gateway presents it to its own gRPC port; kvraft serves the API "
                     "directly and never dials its client URLs, so it is not used")
    return notes


async def _serve_metrics(config: Config, node: Node, client_ssl: ssl.SSLContext | None,
                         metrics_auth: MetricsAuth | None) -> web.AppRunner | None:
    """``--listen-metrics-urls``: ``/metrics`` and ``/health`` alone (https ones with the client
    URLs' TLS settings, as etcd); ``/metrics`` behind the client URLs' ``--metrics-auth``."""
    if not config.listen_metrics_urls:
        return None
    # the handshake lets a client without a certificate through (CERT_OPTIONAL, for the
    # ranks' scoped tokens on the client URLs): here it is refused, as etcd refuses it
    middlewares = [certificate_required_middleware] if config.client_cert_auth else []
    if config.client_cert_allowed_hostname:
        middlewares.append(certificate_name_middleware(CertRule("client", allowed_hostname=config.client_cert_allowed_hostname)))
    app = web.Application(middlewares=middlewares)
    app[SERVER] = node
    if metrics_auth is not None:
        app[METRICS_AUTH] = metrics_auth
    misc.add_routes(app.router, ("/metrics", "/health"))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    for url in config.listen_metrics_urls:
        parts = urlsplit(url)
        await AcceptingTCPSite(runner, parts.hostname, parts.port, reuse_address=True,
                               reuse_port=config.socket_reuse_port or None,
                               ssl_context=client_ssl if parts.scheme == "https" else None,
                               listener="metrics", failures=node.handshake_failures).start()
    return runner


async def _watch_fatal(node: Node, stop: asyncio.Event) -> None:
    while node.driver.fatal is None and not node.removed:
        await asyncio.sleep(0.1)  # (a removed member stops within 0.1 s, as etcd)
    stop.set()


def version_text() -> str:
    """What ``kvraft --version`` prints, in the shape of ``etcd --version``."""
    import platform

    from kvraft import __version__
    from kvraft.server.api.misc import API_VERSION

    return (f"kvraft Version: {__version__}\nAPI Version: {API_VERSION} (etcd's v3 API)\n"
            f"Python Version: {platform.python_version()}\nOS/Arch: {sys.platform}/{platform.machine()}\n")


def _wants_version(argv: list[str]) -> bool:
    """etcd's ``--version`` (a Go bool flag: ``-version``, ``--version=true`` as well)."""
    for arg in argv:
        name, _, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "version" and value.lower() in ("", "1", "t", "true"):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _wants_version(argv):
        sys.stdout.write(version_text())
        return 0
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"kvraft: {exc}", file=sys.stderr)
        return 2
    try:  # etcd's --logger zap: JSON (or --log-format console) lines; capnslog: text; --log-outputs: where
        configure_logging(_LEVELS[config.log_level], config.log_format if config.logger == "zap" else "text",
                          config.log_outputs, static={"member": config.name},
                          text_format=f"%(asctime)s %(levelname)s {config.name} %(name)s: %(message)s",
                          rotation=parse_rotation(config.log_rotation_config_json) if config.enable_log_rotation else None)
    except OSError as exc:
        print(f"kvraft: --log-outputs: {exc}", file=sys.stderr)
        return 2
    apply_package_levels(parse_package_levels(config.log_package_levels))  # (validated with the config)
    # The cyclic GC: with CPython's default gen-0 threshold (700 allocations) a member under
    # load runs a young collection every few requests, and the growing key index keeps
    # promoting objects, so full collections (~130 ms each at 100,000 keys) recur. Measured
    # in-process (100-put applies): 35 % of the apply's CPU was the collector; with these
    # thresholds 0.17 s instead of 1.26 s in the same run (docs/benchmarks.md "Server").
    # Reference counting still frees everything acyclic at once; cycles wait a little longer.
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        pass
    try:
        return asyncio.run(serve(config))
    except (AutoTLSError, CRLError, ssl.SSLError) as exc:  # (CRLError: a CRL file changed since validation)
        print(f"kvraft: TLS: {exc}", file=sys.stderr)
        return 2
    except StorageCorruptionError as exc:
        advice = "" if "refusing" in str(exc) else f"; {REFUSE_DAMAGED}"
        print(f"kvraft: {exc}{advice}", file=sys.stderr)
        return 1
    except (CorruptionError, ForceNewClusterError, DataDirError, JoinError, DiscoveryError, ConfigError,
            MlockError) as exc:
        print(f"kvraft: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a URL's port taken, a data dir it may not write: etcd's one line, not a traceback
        print(f"kvraft: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
