"""``role add | delete | get | list | grant-permission | revoke-permission``."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, CommandError
from kvraft.cli.parsing import subcommands
from kvraft.client import prefix_range_end

__all__ = ["perm_range", "register"]

_PERMS = {"READ": "READ", "WRITE": "WRITE", "READWRITE": "READWRITE"}


def perm_range(ns: argparse.Namespace, keys: list[str]) -> tuple[str, str]:
    key = keys[0]
    if ns.prefix and ns.from_key:
        raise CommandError(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
    if len(keys) == 1:
        if ns.prefix:
            end = prefix_range_end(key.encode()).decode("utf-8", errors="surrogateescape") if key else "\0"
            return (key if key else "\0"), end
        if ns.from_key:
            return (key if key else "\0"), "\0"
        return key, ""
    if ns.prefix:
        raise CommandError(EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag")
    if ns.from_key:
        raise CommandError(EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag")
    return key, keys[1]


def _b(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


async def run_add(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "role add command requires role name as its argument")
    client = await ctx.client()
    ctx.printer.role_add(ns.args[0], await client.role_add(ns.args[0]))


async def run_delete(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "role delete command requires role name as its argument")
    client = await ctx.client()
    ctx.printer.role_delete(ns.args[0], await client.role_delete(ns.args[0]))


async def run_get(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "role get command requires role name as its argument")
    client = await ctx.client()
    ctx.printer.role_get(ns.args[0], await client.role_get(ns.args[0]))


async def run_list(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "role list command requires no arguments")
    client = await ctx.client()
    ctx.printer.role_list(await client.role_list())


async def run_grant(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) < 3:
        raise CommandError(EXIT_BAD_ARGS, "role grant command requires role name, permission type, and key [endkey] as its argument")
    perm = _PERMS.get(ns.args[1].upper())
    if perm is None:
        raise CommandError(EXIT_BAD_ARGS, f"invalid permission type: {ns.args[1]}")
    key, end = perm_range(ns, ns.args[2:])
    client = await ctx.client()
    ctx.printer.role_grant_permission(ns.args[0], await client.role_grant_permission(ns.args[0], perm, _b(key), _b(end)))


async def run_revoke(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) < 2:
        raise CommandError(EXIT_BAD_ARGS, "role revoke-permission command requires role name and key [endkey] as its argument")
    key, end = perm_range(ns, ns.args[1:])
    client = await ctx.client()
    resp = await client.role_revoke_permission(ns.args[0], _b(key), _b(end))
    ctx.printer.role_revoke_permission(ns.args[0], key, end, resp)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    role = sub.add_parser("role", help="Role related commands")
    role.set_defaults(help_parser=role)
    verbs = subcommands(role, "verb")
    for name, handler, text in (
        ("add", run_add, "Adds a new role"),
        ("delete", run_delete, "Deletes a role"),
        ("get", run_get, "Gets detailed information of a role"),
        ("list", run_list, "Lists all roles"),
        ("grant-permission", run_grant, "Grants a key to a role"),
        ("revoke-permission", run_revoke, "Revokes a key from a role"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*")
        p.set_defaults(handler=handler)
        if name in ("grant-permission", "revoke-permission"):
            p.add_argument("--prefix", action="store_true", help="a prefix permission")
            p.add_argument("--from-key", action="store_true",
                           help="a permission of keys that are greater than or equal to the given key using byte compare")
