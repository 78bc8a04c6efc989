"""``auth enable | disable | status`` (``status`` is etcd 3.5's; 3.4 servers answer 404)."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, CommandError
from kvraft.cli.parsing import subcommands
from kvraft.client import FailedPreconditionError

__all__ = ["register"]


async def run_enable(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "auth enable command does not accept any arguments")
    client = await ctx.client()
    while True:
        try:
            await client.auth_enable()
            break
        except FailedPreconditionError as exc:
            if "root user does not have root role" not in exc.message:
                raise
            await client.role_add("root")  # as etcdctl: create the root role, grant it, retry
            await client.user_grant_role("root", "root")
    ctx.stdout.write("Authentication Enabled\n")


async def run_disable(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "auth disable command does not accept any arguments")
    client = await ctx.client()
    await client.auth_disable()
    ctx.stdout.write("Authentication Disabled\n")


async def run_status(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "auth status command does not accept any arguments")
    client = await ctx.client()
    resp = await client.auth_status()
    ctx.stdout.write(f"Authentication Status: {'true' if resp.enabled else 'false'}\n")
    ctx.stdout.write(f"AuthRevision: {resp.auth_revision}\n")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    auth = sub.add_parser("auth", help="Enable or disable authentication")
    auth.set_defaults(help_parser=auth)
    verbs = subcommands(auth, "verb")
    for name, handler, text in (
        ("enable", run_enable, "Enables authentication"),
        ("disable", run_disable, "Disables authentication"),
        ("status", run_status, "Returns authentication status"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
        p.set_defaults(handler=handler)
