"""``auth enable | disable | status`` (``status`` is etcd 3.5's; 3.4 servers answer 404), and
kvraft's ``auth token grant | revoke | list`` (scoped tokens, docs/design/auth.md)."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.commands.lease import lease_id_arg
from kvraft.cli.commands.role import perm_range
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, CommandError
from kvraft.cli.parsing import subcommands
from kvraft.cli.printers.json import go_json
from kvraft.cli.printers.simple import text as shown
from kvraft.cli.printers.table import render_table
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


_PERMS = ("READ", "WRITE", "READWRITE")


async def run_token_grant(ctx: Context, ns: argparse.Namespace) -> None:
    """Print only the token, so that ``TOKEN=$(kvctl auth token grant ...)`` works."""
    if len(ns.args) not in (2, 3):
        raise CommandError(EXIT_BAD_ARGS, "auth token grant command requires a name, a key and an optional range end")
    if ns.lease is None:
        raise CommandError(EXIT_BAD_ARGS, "auth token grant command requires --lease (the token ends with it)")
    perm = ns.perm.upper()
    if perm not in _PERMS:
        raise CommandError(EXIT_BAD_ARGS, f"bad permission type {ns.perm!r}: READ, WRITE or READWRITE")
    key, end = perm_range(ns, ns.args[1:])
    client = await ctx.client()
    token = await client.scoped_token_grant(ns.args[0], key, end, lease=lease_id_arg(ns.lease), perm_type=perm)
    ctx.stdout.write(token + "\n")


async def run_token_revoke(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "auth token revoke command requires the token's name as its argument")
    client = await ctx.client()
    await client.scoped_token_revoke(ns.args[0])
    ctx.stdout.write(f"Token {ns.args[0]} revoked\n")


async def run_token_list(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "auth token list command does not accept any arguments")
    client = await ctx.client()
    tokens = await client.scoped_token_list()
    fmt = ctx.options.write_out
    if fmt == "json":
        ctx.stdout.write(go_json({"tokens": [
            {"id": t.id, "user": t.user, "name": t.name, "permType": t.perm_type, "key": shown(t.key),
             "range_end": shown(t.range_end), "lease": f"{t.lease:x}"} for t in tokens]}) + "\n")
        return
    rows = [[t.user, t.name, t.perm_type, shown(t.key), shown(t.range_end), f"{t.lease:x}"] for t in tokens]
    if fmt == "table":
        ctx.stdout.write(render_table(["user", "name", "permission", "key", "range_end", "lease"], rows))
        return
    for row in rows:
        ctx.stdout.write(", ".join(row) + "\n")


def _add_verbs(verbs: Any, parent: argparse.ArgumentParser, table: tuple[tuple[str, Any, str], ...]) -> dict[str, Any]:
    parsers = {}
    for name, handler, help_text in table:
        p = verbs.add_parser(name, parents=[parent], help=help_text)
        p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
        p.set_defaults(handler=handler)
        parsers[name] = p
    return parsers


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    auth = sub.add_parser("auth", help="Enable or disable authentication")
    auth.set_defaults(help_parser=auth)
    verbs = subcommands(auth, "verb")
    _add_verbs(verbs, parent, (
        ("enable", run_enable, "Enables authentication"),
        ("disable", run_disable, "Disables authentication"),
        ("status", run_status, "Returns authentication status"),
    ))
    token = verbs.add_parser("token", help="kvraft's scoped tokens: a part of your permissions for someone else")
    token.set_defaults(help_parser=token)
    grant = _add_verbs(subcommands(token, "token_verb"), parent, (
        ("grant", run_token_grant, "Grants a token with your own permission on a key or range, bound to a lease"),
        ("revoke", run_token_revoke, "Revokes one of your tokens by name"),
        ("list", run_token_list, "Lists the tokens (root: all; others: their own), never their secrets"),
    ))["grant"]
    grant.add_argument("--lease", help="lease ID (hex) the token is bound to")
    grant.add_argument("--perm", default="READWRITE", help="READ, WRITE or READWRITE (default)")
    grant.add_argument("--prefix", action="store_true", help="the key is a prefix")
    grant.add_argument("--from-key", action="store_true", help="every key greater than or equal to the key")
