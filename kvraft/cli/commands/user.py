"""``user add | delete | get | list | passwd | grant-role | revoke-role``."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context, ask_password
from kvraft.cli.errors import EXIT_BAD_ARGS, CommandError
from kvraft.cli.parsing import add_default_true_flag, subcommands
from kvraft.cli.printers.simple import SimplePrinter

__all__ = ["register"]


def _ask_password(ctx: Context, name: str, interactive: bool) -> str:
    if not interactive:
        words = ctx.stdin.readline().split()
        return words[0] if words else ""
    first = ask_password(f"Password of {name}: ")
    if not first:
        raise CommandError(EXIT_BAD_ARGS, "empty password")
    second = ask_password(f"Type password of {name} again for confirmation: ")
    if first != second:
        raise CommandError(EXIT_BAD_ARGS, "given passwords are different")
    return first


async def run_add(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "user add command requires user name as its argument")
    arg = ns.args[0]
    if ns.no_password:
        name, password = arg, ""
    elif ns.new_user_password:
        name, password = arg, ns.new_user_password
    elif ":" in arg:
        name, password = arg.split(":", 1)
        if not name:
            raise CommandError(EXIT_BAD_ARGS, "empty user name is not allowed")
    else:
        name, password = arg, _ask_password(ctx, arg, ns.interactive)
    client = await ctx.client()
    ctx.printer.user_add(name, await client.user_add(name, password, no_password=ns.no_password))


async def run_delete(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "user delete command requires user name as its argument")
    client = await ctx.client()
    ctx.printer.user_delete(ns.args[0], await client.user_delete(ns.args[0]))


async def run_get(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "user get command requires user name as its argument")
    name = ns.args[0]
    client = await ctx.client()
    resp = await client.user_get(name)
    if ns.detail and isinstance(ctx.printer, SimplePrinter):
        ctx.stdout.write(f"User: {name}\n")
        for role in resp.roles:
            ctx.stdout.write("\n")
            ctx.printer.role_get(role, await client.role_get(role))
        return
    ctx.printer.user_get(name, resp)


async def run_list(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "user list command requires no arguments")
    client = await ctx.client()
    ctx.printer.user_list(await client.user_list())


async def run_passwd(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "user passwd command requires user name as its argument")
    password = _ask_password(ctx, ns.args[0], ns.interactive)
    client = await ctx.client()
    ctx.printer.user_change_password(await client.user_change_password(ns.args[0], password))


async def run_grant_role(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 2:
        raise CommandError(EXIT_BAD_ARGS, "user grant command requires user name and role name as its argument")
    client = await ctx.client()
    ctx.printer.user_grant_role(ns.args[0], ns.args[1], await client.user_grant_role(ns.args[0], ns.args[1]))


async def run_revoke_role(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 2:
        raise CommandError(EXIT_BAD_ARGS, "user revoke-role requires user name and role name as its argument")
    client = await ctx.client()
    ctx.printer.user_revoke_role(ns.args[0], ns.args[1], await client.user_revoke_role(ns.args[0], ns.args[1]))


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    user = sub.add_parser("user", help="User related commands")
    user.set_defaults(help_parser=user)
    verbs = subcommands(user, "verb")
    for name, handler, text in (
        ("add", run_add, "Adds a new user"),
        ("delete", run_delete, "Deletes a user"),
        ("get", run_get, "Gets detailed information of a user"),
        ("list", run_list, "Lists all users"),
        ("passwd", run_passwd, "Changes password of user"),
        ("grant-role", run_grant_role, "Grants a role to a user"),
        ("revoke-role", run_revoke_role, "Revokes a role from a user"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*")
        p.set_defaults(handler=handler)
        if name in ("add", "passwd"):
            add_default_true_flag(p, "--interactive", "Read password from stdin instead of interactive terminal")
        if name == "add":
            p.add_argument("--new-user-password", default="", help="Supply password from the command line flag")
            p.add_argument("--no-password", action="store_true", help="Create a user without password (CN based auth only)")
        if name == "get":
            p.add_argument("--detail", action="store_true", help="Show permissions of roles granted to the user")
