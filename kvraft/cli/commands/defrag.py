"""``defrag [--cluster]``: defragment each endpoint's backend, one at a time.
``defrag --data-dir D``: defragment a STOPPED member's backend (``D/mvcc.lmdb``) in place,
offline, as etcdctl does for an etcd data dir (and, like it, print nothing on success). A
member that is running holds LMDB's lock on the environment; kvctl tests that lock first
and refuses, where etcdctl blocks on bbolt's file lock."""

from __future__ import annotations

import argparse
import fcntl
import os
from pathlib import Path
from typing import Any

from kvraft.cli.commands.endpoint import endpoints_from_cluster
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_ERROR, CommandError, server_error_text
from kvraft.client import ClientError, EndpointError, ServerError

__all__ = ["defrag_data_dir", "in_use", "register"]


def in_use(lock_file: Path) -> bool:
    """Whether another process has the LMDB environment open (LMDB holds a shared fcntl
    lock on the first byte of its lock file for as long as a process has it open)."""
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


def defrag_data_dir(data_dir: str) -> None:
    from kvraft.storage.mvcc import MVCCStore  # offline only: the storage layer itself

    path = Path(data_dir) / "mvcc.lmdb"
    if not path.is_dir():
        raise CommandError(EXIT_ERROR, f"cannot open database at {path} (open {path}: no such file or directory)")
    if any(in_use(lock) for lock in [*path.glob("*-lock"), *Path(data_dir).glob("*-lock")]):
        raise CommandError(EXIT_ERROR, f"cannot defragment {data_dir}: a running member has it open (stop it first)")
    with MVCCStore(path, sync=True) as store:
        store.defragment()


async def run_defrag(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.data_dir:
        defrag_data_dir(ns.data_dir)
        return
    endpoints = await endpoints_from_cluster(ctx, ns.cluster)
    client = await ctx.client()
    failed = False
    for ep in endpoints:
        try:
            await client.defragment(endpoint=ep)
        except ClientError as exc:
            failed = True
            text = "context deadline exceeded" if isinstance(exc, EndpointError) else (
                server_error_text(exc.code, exc.message) if isinstance(exc, ServerError) else str(exc))
            ctx.stderr.write(f"Failed to defragment etcd member[{ep}] ({text})\n")
            continue
        ctx.stdout.write(f"Finished defragmenting etcd member[{ep}]\n")
    if failed:
        raise CommandError(EXIT_ERROR, None)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("defrag", parents=[parent], help="Defragments the storage of the etcd members with given endpoints")
    p.add_argument("--cluster", action="store_true", help="use all endpoints from the cluster member list")
    p.add_argument("--data-dir", default="", help="Optional. If present, defragments a data directory not in use by a member")
    p.set_defaults(handler=run_defrag)
