"""``member add | remove | update | list | promote``."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR, CommandError
from kvraft.cli.goformat import go_quote
from kvraft.cli.parsing import GoNumError, go_parse_int, subcommands
from kvraft.cli.printers.simple import SimplePrinter

__all__ = ["member_id_arg", "register"]


def member_id_arg(args: list[str]) -> int:
    if not args:
        raise CommandError(EXIT_BAD_ARGS, "member ID is not provided")
    try:
        return go_parse_int(args[0], 16, unsigned=True)
    except GoNumError as exc:
        raise CommandError(EXIT_BAD_ARGS, f"bad member ID arg ({exc}), expecting ID in Hex") from None


async def run_add(ctx: Context, ns: argparse.Namespace) -> None:
    if not ns.args:
        raise CommandError(EXIT_BAD_ARGS, "member name not provided")
    if len(ns.args) > 1:
        message = "too many arguments"
        for arg in ns.args:
            if arg.lower().startswith("http"):
                message += f", did you mean --peer-urls={arg}"
        raise CommandError(EXIT_BAD_ARGS, message)
    name = ns.args[0]
    if not ns.peer_urls:
        raise CommandError(EXIT_BAD_ARGS, "member peer urls not provided")
    urls = ns.peer_urls.split(",")
    client = await ctx.client()
    try:
        resp = await client.member_add(urls, is_learner=ns.learner)
    except ValueError as exc:  # the client's check of the URLs, as clientv3's
        raise CommandError(EXIT_ERROR, str(exc)) from None
    ctx.printer.member_add(resp)
    if isinstance(ctx.printer, SimplePrinter):
        conf = []
        for member in resp.members:
            for url in member.peer_urls:
                conf.append(f"{name if member.id == resp.member.id else member.name}={url}")
        out = ctx.stdout
        out.write("\n")
        out.write(f"ETCD_NAME={go_quote(name)}\n")
        out.write(f"ETCD_INITIAL_CLUSTER={go_quote(','.join(conf))}\n")
        out.write(f"ETCD_INITIAL_ADVERTISE_PEER_URLS={go_quote(ns.peer_urls)}\n")
        out.write('ETCD_INITIAL_CLUSTER_STATE="existing"\n')


async def run_remove(ctx: Context, ns: argparse.Namespace) -> None:
    member_id = member_id_arg(ns.args)
    client = await ctx.client()
    ctx.printer.member_remove(member_id, await client.member_remove(member_id))


async def run_update(ctx: Context, ns: argparse.Namespace) -> None:
    member_id = member_id_arg(ns.args)
    if not ns.peer_urls:
        raise CommandError(EXIT_BAD_ARGS, "member peer urls not provided")
    client = await ctx.client()
    try:
        resp = await client.member_update(member_id, ns.peer_urls.split(","))
    except ValueError as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None
    ctx.printer.member_update(member_id, resp)


async def run_list(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.consistency not in ("l", "s"):  # (etcdctl's IsSerializable)
        raise CommandError(EXIT_BAD_FEATURE, f'unknown consistency flag "{ns.consistency}"')
    client = await ctx.client()
    ctx.printer.member_list(await client.member_list(linearizable=ns.consistency == "l"))


async def run_promote(ctx: Context, ns: argparse.Namespace) -> None:
    member_id = member_id_arg(ns.args)
    client = await ctx.client()
    ctx.printer.member_promote(member_id, await client.member_promote(member_id))


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    member = sub.add_parser("member", help="Membership related commands")
    member.set_defaults(help_parser=member)
    verbs = subcommands(member, "verb")
    for name, handler, text in (
        ("add", run_add, "Adds a member into the cluster"),
        ("remove", run_remove, "Removes a member from the cluster"),
        ("update", run_update, "Updates a member in the cluster"),
        ("list", run_list, "Lists all members in the cluster"),
        ("promote", run_promote, "Promotes a non-voting member in the cluster"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*")
        p.set_defaults(handler=handler)
        if name in ("add", "update"):
            p.add_argument("--peer-urls", default="", help="comma separated peer URLs for the member.")
        if name == "add":
            p.add_argument("--learner", action="store_true", help="indicates if the new member is raft learner")
        if name == "list":
            p.add_argument("--consistency", default="l", help="Linearizable(l) or Serializable(s)")
