"""``defrag [--cluster]``: defragment each endpoint's backend, one at a time."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.commands.endpoint import endpoints_from_cluster
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_ERROR, CommandError
from kvraft.client import ClientError, EndpointError, ServerError

__all__ = ["register"]


async def run_defrag(ctx: Context, ns: argparse.Namespace) -> None:
    endpoints = await endpoints_from_cluster(ctx, ns.cluster)
    client = await ctx.client()
    failed = False
    for ep in endpoints:
        try:
            await client.defragment(endpoint=ep)
        except ClientError as exc:
            failed = True
            text = "context deadline exceeded" if isinstance(exc, EndpointError) else (
                exc.message if isinstance(exc, ServerError) else str(exc))
            ctx.stderr.write(f"Failed to defragment etcd member[{ep}] ({text})\n")
            continue
        ctx.stdout.write(f"Finished defragmenting etcd member[{ep}]\n")
    if failed:
        raise CommandError(EXIT_ERROR, None)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("defrag", parents=[parent], help="Defragments the storage of the etcd members with given endpoints")
    p.add_argument("--cluster", action="store_true", help="use all endpoints from the cluster member list")
    p.set_defaults(handler=run_defrag)
