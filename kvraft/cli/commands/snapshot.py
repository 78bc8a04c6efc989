"""``snapshot save <file>`` (with a progress bar on stderr) and ``snapshot status <file>``.

``save`` streams one member's backend to ``<file>.part``, fsyncs it and renames it into
place, so an interrupted save never leaves a file that looks complete. ``status`` reads an
etcd (bbolt) snapshot file (``kvraft.cli.bbolt``); kvraft's snapshot blob has no stable
file format yet, so ``status`` reports it as not a bbolt database.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from kvraft.cli.bbolt import BoltError, snapshot_status
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.parsing import subcommands
from kvraft.cli.printers import DBStatus
from kvraft.cli.progress import ProgressBar

__all__ = ["register"]


async def run_save(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "snapshot save expects one argument")
    if len(ctx.options.endpoints) != 1:
        raise CommandError(EXIT_BAD_ARGS, f"snapshot must be requested to one selected node, not multiple {list(ctx.options.endpoints)}")
    path = ns.args[0]
    partial = path + ".part"
    client = await ctx.client()
    bar = ProgressBar(ctx.stderr, 0)
    written = 0
    try:
        with open(partial, "wb") as out:
            async for chunk in client.snapshot(endpoint=ctx.options.endpoints[0]):
                out.write(chunk.blob)
                written += len(chunk.blob)
                bar.update(written, written + chunk.remaining_bytes)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    bar.finish()
    if written == 0:
        os.unlink(partial)
        raise CommandError(EXIT_ERROR, "snapshot stream ended without data")
    os.replace(partial, path)
    ctx.stdout.write(f"Snapshot saved at {path}\n")


async def run_status(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    try:
        status = snapshot_status(ns.args[0])
    except (OSError, BoltError) as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None
    ctx.printer.db_status(DBStatus(status.hash, status.revision, status.total_key, status.total_size))


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    snapshot = sub.add_parser("snapshot", help="Manages etcd node snapshots")
    snapshot.set_defaults(help_parser=snapshot)
    verbs = subcommands(snapshot, "verb")
    for name, handler, text in (
        ("save", run_save, "Stores an etcd node backend snapshot to a given file"),
        ("status", run_status, "Gets backend snapshot status of a given file"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*", metavar="<filename>")
        p.set_defaults(handler=handler)
