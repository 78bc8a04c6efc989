"""``endpoint health | status | hashkv`` (``--cluster``: every member's client URLs)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_ERROR, CommandError, server_error_text
from kvraft.cli.goformat import format_duration
from kvraft.cli.parsing import int64, subcommands
from kvraft.cli.printers import EndpointHashKV, EndpointHealth, EndpointStatus
from kvraft.client import Client, ClientError, EndpointError, PermissionDeniedError, ServerError

__all__ = ["endpoints_from_cluster", "register"]


async def endpoints_from_cluster(ctx: Context, cluster: bool) -> list[str]:
    if not cluster:
        return list(ctx.options.endpoints)
    try:
        client = await ctx.client()
        members = await client.member_list()
    except ClientError as exc:
        raise CommandError(EXIT_ERROR, f"failed to fetch endpoints from etcd cluster member list: {exc}") from None
    return [url for m in members.members for url in m.client_urls]


async def _health_of(ctx: Context, endpoint: str) -> EndpointHealth:
    user, password = ctx.credentials()
    client = Client([endpoint], encoding=ctx.options.encoding, user=user, password=password,
                    dial_timeout_s=ctx.options.dial_timeout_s, request_timeout_s=ctx.options.command_timeout_s,
                    tls=ctx.options.tls())
    started = time.perf_counter()
    try:
        await client.open()
        started = time.perf_counter()
        await client.get("health")
        return EndpointHealth(endpoint, True, format_duration(time.perf_counter() - started))
    except PermissionDeniedError:
        return EndpointHealth(endpoint, True, format_duration(time.perf_counter() - started))
    except EndpointError:
        return EndpointHealth(endpoint, False, format_duration(time.perf_counter() - started),
                              "context deadline exceeded")
    except ClientError as exc:
        return EndpointHealth(endpoint, False, format_duration(time.perf_counter() - started), str(exc))
    finally:
        await client.close()


async def run_health(ctx: Context, ns: argparse.Namespace) -> None:
    endpoints = await endpoints_from_cluster(ctx, ns.cluster)
    results = await asyncio.gather(*(_health_of(ctx, ep) for ep in endpoints))
    ctx.printer.endpoint_health(list(results))
    if any(h.error for h in results):
        raise CommandError(EXIT_ERROR, "unhealthy cluster")


async def run_status(ctx: Context, ns: argparse.Namespace) -> None:
    endpoints = await endpoints_from_cluster(ctx, ns.cluster)
    client = await ctx.client()
    items, failed = [], False
    for ep in endpoints:
        try:
            items.append(EndpointStatus(ep, await client.status(endpoint=ep)))
        except ClientError as exc:
            failed = True
            ctx.stderr.write(f"Failed to get the status of endpoint {ep} ({_text(exc)})\n")
    ctx.printer.endpoint_status(items)
    if failed:
        raise CommandError(EXIT_ERROR, None)


async def run_hashkv(ctx: Context, ns: argparse.Namespace) -> None:
    endpoints = await endpoints_from_cluster(ctx, ns.cluster)
    client = await ctx.client()
    items, error = [], None
    for ep in endpoints:
        try:
            items.append(EndpointHashKV(ep, await client.hash_kv(ns.rev, endpoint=ep)))
        except ClientError as exc:
            error = _text(exc)
            ctx.stderr.write(f"Failed to get the hash of endpoint {ep} ({error})\n")
    ctx.printer.endpoint_hashkv(items)
    if error is not None:
        raise CommandError(EXIT_ERROR, error)


def _text(exc: ClientError) -> str:
    if isinstance(exc, EndpointError):
        return "context deadline exceeded"
    return server_error_text(exc.code, exc.message) if isinstance(exc, ServerError) else str(exc)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    endpoint = sub.add_parser("endpoint", help="Endpoint related commands")
    endpoint.set_defaults(help_parser=endpoint)
    verbs = subcommands(endpoint, "verb")
    for name, handler, text in (
        ("health", run_health, "Checks the healthiness of endpoints specified in `--endpoints` flag"),
        ("status", run_status, "Prints out the status of endpoints specified in `--endpoints` flag"),
        ("hashkv", run_hashkv, "Prints the KV history hash for each endpoint in --endpoints"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("--cluster", action="store_true", help="use all endpoints from the cluster member list")
        p.set_defaults(handler=handler)
        if name == "hashkv":
            p.add_argument("--rev", type=int64, default=0, help="maximum revision to hash (default: all revisions)")
