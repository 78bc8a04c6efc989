"""``elect <election-name> [proposal]`` and ``elect -l <election-name>``.

Campaign: print the leader key (as ``get`` prints it) once elected, hold until
SIGINT/SIGTERM, then resign. Listen: print every leadership change until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kvraft.cli.commands.lock import wait_for_signal
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.parsing import int64

__all__ = ["register"]


async def run_elect(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) not in (1, 2):
        raise CommandError(EXIT_BAD_ARGS, "elect takes one election name argument and an optional proposal argument")
    if ns.listen and len(ns.args) == 2:
        raise CommandError(EXIT_BAD_ARGS, "proposal given but -l is set")
    if not ns.listen and len(ns.args) == 1:
        raise CommandError(EXIT_BAD_ARGS, "no proposal argument but -l not set")
    client = await ctx.client()
    election = client.election(ns.args[0], ttl=ns.ttl)
    if ns.listen:
        async def observe() -> None:
            async for resp in election.observe():
                ctx.printer.get(resp)
                ctx.stdout.flush()

        task = asyncio.ensure_future(observe())
        try:
            if not await wait_for_signal(task):
                task.result()
                raise CommandError(EXIT_ERROR, "elect: observer lost")
        finally:
            task.cancel()
        return
    await election.campaign(ns.args[1])
    try:
        ctx.printer.get(await client.get(election.key))
        ctx.stdout.flush()
        lost = asyncio.ensure_future(election.lease.lost.wait())
        try:
            if not await wait_for_signal(lost):
                raise CommandError(EXIT_ERROR, "elect: session expired")
        finally:
            lost.cancel()
    finally:
        await election.resign()


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("elect", parents=[parent], help="Observes and participates in leader election")
    p.add_argument("args", nargs="*", metavar="<election-name> [proposal]")
    p.add_argument("-l", "--listen", action="store_true", help="observation mode")
    p.add_argument("--ttl", type=int64, default=60, help="timeout for session")
    p.set_defaults(handler=run_elect)
