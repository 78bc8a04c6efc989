"""``move-leader <transferee-member-id>`` (hex), sent to the current leader's endpoint."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, CommandError
from kvraft.cli.parsing import GoNumError, go_parse_int

__all__ = ["register"]


async def run_move_leader(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "move-leader command needs 1 argument")
    try:
        target = go_parse_int(ns.args[0], 16, unsigned=True)
    except GoNumError as exc:
        raise CommandError(EXIT_BAD_ARGS, str(exc)) from None
    client = await ctx.client()
    leader_id, leader_ep = 0, None
    for ep in ctx.options.endpoints:
        status = await client.status(endpoint=ep)
        if status.header.member_id and status.leader == status.header.member_id:
            leader_id, leader_ep = status.leader, ep
            break
    if leader_ep is None:
        raise CommandError(EXIT_BAD_ARGS, f"no leader endpoint given at [{' '.join(ctx.options.endpoints)}]")
    leader_client = await ctx.client((leader_ep,))
    resp = await leader_client.move_leader(target)
    ctx.printer.move_leader(leader_id, target, resp)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("move-leader", parents=[parent], help="Transfers leadership to another etcd cluster member.")
    p.add_argument("args", nargs="*", metavar="<transferee-member-id>")
    p.set_defaults(handler=run_move_leader)
