"""``kvraft-dashboard --endpoints URLS --listen-url http://127.0.0.1:8080``.

Flags as jobctl's: ``--user --password`` (the dashboard's own identity when kvraft auth is
on: it needs read access to ``/registry/`` and ``/jobs/``), ``--cacert --cert --key
--insecure-skip-tls-verify``; ``--allow-writes`` (cancel and cordon buttons when kvraft auth
is off; with auth they follow each user's rights); ``--scheduler-url`` (repeatable; the
scheduler daemons' HTTP, for queue depth and decisions/s). Once it listens it prints
``dashboard: http://HOST:PORT/`` on stdout (port 0 picks a free one). Exit 0 on SIGTERM/SIGINT,
1 when kvraft cannot be reached, 2 on bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
from urllib.parse import urlsplit

from aiohttp import web

from agent.confcheck import check_url, discovered_endpoints
from kvraft.client import ClientError, TLSConfig
from kvraft.client.observe import configure_logging
from scheduler.dashboard.app import DashboardConfig, make_app

__all__ = ["build_parser", "main"]

log = logging.getLogger("kvraft.dashboard")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="kvraft-dashboard", description="the live web dashboard of a kvraft cluster")
    p.add_argument("--endpoints", default=env("JOBCTL_ENDPOINTS", "127.0.0.1:2379"))
    p.add_argument("-d", "--discovery-srv", default=env("JOBCTL_DISCOVERY_SRV", ""),
                   help="domain whose _etcd-client(-ssl)._tcp SRV records give the endpoints (at start)")
    p.add_argument("--discovery-srv-name", default=env("JOBCTL_DISCOVERY_SRV_NAME", ""),
                   help="service name suffix of those records (_etcd-client-NAME._tcp)")
    p.add_argument("--auto-sync-interval-s", type=float, default=60.0,
                   help="take the members' client URLs as the endpoints this often (default 60; 0: never)")
    p.add_argument("--listen-url", default="http://127.0.0.1:8080")
    p.add_argument("--user", default=env("KVRAFT_DASHBOARD_USER"))
    p.add_argument("--password", default=env("KVRAFT_DASHBOARD_PASSWORD"))
    p.add_argument("--allow-writes", action="store_true", help="without kvraft auth: allow cancel and cordon")
    p.add_argument("--scheduler-url", action="append", default=[], help="a kvraft-scheduler's HTTP URL (repeatable)")
    p.add_argument("--poll-s", type=float, default=1.5, help="member status and scheduler metrics poll interval")
    p.add_argument("--usage-poll-s", type=float, default=60.0,
                   help="how often this month's GPU-time accounting (/accounting/) is read (default 60)")
    p.add_argument("--request-timeout-s", type=float, default=10.0)
    p.add_argument("--cacert", default=env("JOBCTL_CACERT"), help="CA bundle for kvraft's https")
    p.add_argument("--cert", default=env("JOBCTL_CERT"), help="client certificate")
    p.add_argument("--key", default=env("JOBCTL_KEY"), help="the client certificate's key")
    p.add_argument("--insecure-skip-tls-verify", action="store_true")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=["json", "console", "text"], default="json",
                   help="log lines as JSON objects (default), zap's console lines or text")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """A ``ValueError`` naming the first bad flag: the listen URL (port 0 picks a free one),
    each ``--scheduler-url``, and the intervals (finite and > 0)."""
    try:
        url = urlsplit(args.listen_url)
        url.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ValueError(f"--listen-url {args.listen_url!r}: {exc}") from None
    if url.scheme != "http" or not url.hostname or url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"--listen-url {args.listen_url!r}: expected http://HOST:PORT")
    for scheduler in args.scheduler_url:
        check_url("--scheduler-url", scheduler, default_port=80)
    for name in ("poll_s", "usage_poll_s", "request_timeout_s"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')}: must be a number > 0, not {value!r}")
    if not math.isfinite(args.auto_sync_interval_s) or args.auto_sync_interval_s < 0:
        raise ValueError(f"--auto-sync-interval-s: must be a number >= 0 (0: never), not {args.auto_sync_interval_s!r}")


async def run(config: DashboardConfig, listen_url: str) -> int:
    url = urlsplit(listen_url)
    app, dashboard = make_app(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def unreachable(exc: ClientError, delay_s: float) -> None:
        log.warning("kvraft at %s unreachable, retrying in %.1f s: %s", ",".join(config.endpoints), delay_s, exc)

    runner = web.AppRunner(app, access_log=None)
    try:  # kvraft not answering yet is waited for (the scheduler does so too); a refused login is not
        if not await dashboard.client.open_when_reachable(stop, on_retry=unreachable, probe=dashboard.client.auth_status):
            await dashboard.client.close()
            return 0
        await runner.setup()
    except (ClientError, OSError) as exc:
        print(f"kvraft-dashboard: kvraft at {','.join(config.endpoints)}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    site = web.TCPSite(runner, url.hostname, url.port if url.port is not None else 8080)
    try:
        await site.start()
    except OSError as exc:
        print(f"kvraft-dashboard: cannot listen on {listen_url}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    host, port = runner.addresses[0][:2]
    print(f"dashboard: http://{url.hostname}:{port}/", flush=True)
    log.info("listening on %s:%s", host, port)
    await stop.wait()
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tls = TLSConfig.from_flags(args.cacert, args.cert, args.key, args.insecure_skip_tls_verify)
    except ValueError as exc:
        print(f"kvraft-dashboard: {exc}", file=sys.stderr)
        return 2
    try:
        check_flags(args)
        endpoints = discovered_endpoints(args.discovery_srv, args.discovery_srv_name,
                                         [e for e in args.endpoints.split(",") if e.strip()])
    except ValueError as exc:
        print(f"kvraft-dashboard: {exc}", file=sys.stderr)
        return 2
    try:
        configure_logging(args.log_level, args.log_format, static={"dashboard": args.listen_url})
    except ValueError as exc:
        print(f"kvraft-dashboard: {exc}", file=sys.stderr)
        return 2
    config = DashboardConfig(endpoints, tls=tls, user=args.user,
                             password=args.password, allow_writes=args.allow_writes,
                             scheduler_urls=list(args.scheduler_url), poll_s=args.poll_s,
                             request_timeout_s=args.request_timeout_s, usage_poll_s=args.usage_poll_s,
                             auto_sync_interval_s=args.auto_sync_interval_s)
    return asyncio.run(run(config, args.listen_url))


if __name__ == "__main__":
    sys.exit(main())
