"""``compaction <revision> [--physical]``."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.parsing import GoNumError, go_parse_int

__all__ = ["register"]


async def run_compaction(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "compaction command needs 1 argument")
    try:
        revision = go_parse_int(ns.args[0], 10)
    except GoNumError as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None
    client = await ctx.client()
    await client.compact(revision, physical=ns.physical)
    ctx.stdout.write(f"compacted revision {revision}\n")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compaction", parents=[parent], help="Compacts the event history in etcd")
    p.add_argument("args", nargs="*", metavar="<revision>")
    p.add_argument("--physical", action="store_true",
                   help="'true' to wait for compaction to physically remove all old revisions")
    p.set_defaults(handler=run_compaction)
