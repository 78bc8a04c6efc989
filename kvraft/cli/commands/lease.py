"""``lease grant | revoke | timetolive | list | keep-alive``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_ERROR,
    CommandError,
    server_error_text,
)
from kvraft.cli.parsing import GoNumError, go_parse_int, subcommands
from kvraft.cli.printers.simple import SimplePrinter
from kvraft.client import ClientError, ServerError

__all__ = ["lease_id_arg", "register"]


def lease_id_arg(text: str) -> int:
    try:
        return go_parse_int(text, 16)
    except GoNumError as exc:
        raise CommandError(EXIT_BAD_ARGS, f"bad lease ID arg ({exc}), expecting ID in Hex") from None


async def run_grant(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    try:
        ttl = go_parse_int(ns.args[0], 10)
    except GoNumError as exc:
        raise CommandError(EXIT_BAD_ARGS, f"bad TTL ({exc})") from None
    client = await ctx.client()
    try:
        resp = await client.lease_grant(ttl)
    except ServerError as exc:
        raise CommandError(EXIT_ERROR, f"failed to grant lease ({server_error_text(exc.code, exc.message)})") from None
    ctx.printer.lease_grant(resp)


async def run_revoke(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "lease revoke command needs 1 argument")
    lease_id = lease_id_arg(ns.args[0])
    client = await ctx.client()
    try:
        resp = await client.lease_revoke(lease_id)
    except ServerError as exc:
        raise CommandError(EXIT_ERROR, f"failed to revoke lease ({server_error_text(exc.code, exc.message)})") from None
    ctx.printer.lease_revoke(lease_id, resp)


async def run_timetolive(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument")
    lease_id = lease_id_arg(ns.args[0])
    client = await ctx.client()
    try:
        resp = await client.lease_time_to_live(lease_id, keys=ns.keys)
    except ServerError as exc:
        raise CommandError(EXIT_BAD_CONNECTION, server_error_text(exc.code, exc.message)) from None
    ctx.printer.lease_time_to_live(resp, ns.keys)


async def run_list(ctx: Context, _ns: argparse.Namespace) -> None:
    client = await ctx.client()
    try:
        resp = await client.lease_leases()
    except ServerError as exc:
        raise CommandError(EXIT_BAD_CONNECTION, server_error_text(exc.code, exc.message)) from None
    ctx.printer.lease_leases(resp)


async def run_keep_alive(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument")
    lease_id = lease_id_arg(ns.args[0])
    client = await ctx.client()
    while True:
        try:
            resp = await client.lease_keep_alive_once(lease_id)
        except ServerError as exc:
            raise CommandError(EXIT_BAD_CONNECTION, server_error_text(exc.code, exc.message)) from None
        except ClientError as exc:
            raise CommandError(EXIT_BAD_CONNECTION, str(exc)) from None
        if resp.ttl <= 0:
            if ns.once:
                raise CommandError(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found")
            if isinstance(ctx.printer, SimplePrinter):
                ctx.stdout.write(f"lease {lease_id:016x} expired or revoked.\n")
            return
        ctx.printer.lease_keep_alive(resp)
        ctx.stdout.flush()
        if ns.once:
            return
        await asyncio.sleep(max(resp.ttl / 3.0, 0.5))


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    lease = sub.add_parser("lease", help="Lease related commands")
    lease.set_defaults(help_parser=lease)
    verbs = subcommands(lease, "verb")
    for name, handler, text in (
        ("grant", run_grant, "Creates leases"),
        ("revoke", run_revoke, "Revokes leases"),
        ("timetolive", run_timetolive, "Get lease information"),
        ("list", run_list, "List all active leases"),
        ("keep-alive", run_keep_alive, "Keeps leases alive (renew)"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*")
        p.set_defaults(handler=handler)
        if name == "timetolive":
            p.add_argument("--keys", action="store_true", help="Get keys attached to this lease")
        if name == "keep-alive":
            p.add_argument("--once", action="store_true",
                           help="Resets the keep-alive time to its original value and exits immediately")
