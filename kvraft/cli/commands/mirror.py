"""``make-mirror [--prefix P] [--dest-prefix D | --no-dest-prefix] [--rev N] <destination>``:
copy a prefix of this cluster to another one and keep it in sync, as etcdctl's make-mirror
does.

First the base: every key under the prefix at one revision R, page by page, each put on
the destination with the prefix replaced (``--dest-prefix``; default the same prefix;
``--no-dest-prefix`` strips it). Then the updates: a watch from R+1, each source revision's
events applied on the destination as one txn (so a source txn stays atomic there), split
into txns of at most ``--max-txn-ops`` (128, etcdctl 3.5's flag) when a revision has more.
With ``--rev N`` (etcdctl 3.5's) there is no base: the updates start at revision N, to
resume a mirror that stopped (etcdctl 3.6 then also leaves ``--dest-prefix`` empty, so keys
lose their prefix unless it is given; kvctl keeps the default, the same prefix). The running
count of keys written is printed every 30 seconds (``--report-interval``, kvctl only).
Values are copied, not leases (as etcdctl). It runs until interrupted; an error
(destination refuses a write, the source compacted past the watch) ends it with exit 2.

The destination takes ``--dest-cacert``, ``--dest-cert``, ``--dest-key`` for TLS and
``--dest-user`` (``name:password``) or ``--dest-user name --dest-password pw`` (etcdctl 3.5's
flags) for auth.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kvraft.aio import cancel_and_wait
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, CommandError, server_error_text
from kvraft.cli.parsing import duration, int64
from kvraft.client import (
    Client,
    ClientError,
    EndpointError,
    Op,
    ServerError,
    TLSConfig,
    WatchCompactedError,
)

__all__ = ["register"]

COMPACTED = "etcdserver: mvcc: required revision has been compacted"


class _Mirror:
    def __init__(self, ctx: Context, ns: argparse.Namespace, dest: Client) -> None:
        self.ctx = ctx
        self.prefix: str = ns.prefix
        self.dest_prefix: str = "" if ns.no_dest_prefix else (ns.dest_prefix or ns.prefix)
        self.dest = dest
        self.max_txn_ops: int = ns.max_txn_ops
        self.total = 0

    def _key(self, key: bytes) -> bytes:
        """etcdctl's ``modifyPrefix``: the first occurrence of the prefix replaced."""
        return key.replace(self.prefix.encode(), self.dest_prefix.encode(), 1)

    def _range(self) -> dict[str, Any]:
        return {"prefix": True} if self.prefix else {"from_key": True}

    async def base(self, source: Client) -> int:
        revision = (await source.get(self.prefix, limit=1, keys_only=True, **self._range())).header.revision
        async for kv in source.scan(self.prefix, revision=revision, **self._range()):
            await self.dest.put(self._key(kv.key), kv.value)
            self.total += 1
        return revision

    async def updates(self, source: Client, revision: int) -> None:
        async with source.watch(self.prefix, start_revision=revision + 1, reconnect_timeout_s=None,
                                **self._range()) as watcher:
            async for resp in watcher:
                ops: list[Op] = []
                last = 0
                for event in resp.events:
                    if (last and event.kv.mod_revision > last) or len(ops) == self.max_txn_ops:
                        await self.dest.txn().then(*ops).commit()
                        ops = []
                    last = event.kv.mod_revision
                    key = self._key(event.kv.key)
                    ops.append(Op.put(key, event.kv.value) if event.type == "PUT" else Op.delete(key))
                    self.total += 1
                if ops:
                    await self.dest.txn().then(*ops).commit()

    async def report(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.ctx.stdout.write(f"{self.total}\n")
            self.ctx.stdout.flush()


def _dest_tls(ns: argparse.Namespace) -> TLSConfig | None:
    if not (ns.dest_cacert or ns.dest_cert or ns.dest_key):
        return None
    return TLSConfig(ns.dest_cacert or None, ns.dest_cert or None, ns.dest_key or None)


async def run_make_mirror(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "make-mirror takes one destination argument")
    if ns.no_dest_prefix and ns.dest_prefix:
        raise CommandError(EXIT_BAD_ARGS, "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one")
    if ns.max_txn_ops < 1:
        raise CommandError(EXIT_BAD_ARGS, "--max-txn-ops must be at least 1")
    source = await ctx.client()
    user = password = None
    if ns.dest_user:
        user, colon, password = ns.dest_user.partition(":")
        if ns.dest_password:
            if colon:
                raise CommandError(EXIT_BAD_ARGS, "--dest-user option shouldn't include password when "
                                                  "--dest-password is set")
            password = ns.dest_password
    dest = Client([ns.args[0]], encoding=ctx.options.encoding, user=user, password=password or None,
                  dial_timeout_s=ctx.options.dial_timeout_s, request_timeout_s=ctx.options.command_timeout_s,
                  tls=_dest_tls(ns))
    mirror = _Mirror(ctx, ns, dest)
    reporter = asyncio.ensure_future(mirror.report(ns.report_interval))
    try:
        await dest.open()
        revision = ns.rev - 1 if ns.rev > 0 else await mirror.base(source)
        await mirror.updates(source, revision)
    except WatchCompactedError:
        raise CommandError(EXIT_BAD_CONNECTION, COMPACTED) from None
    except EndpointError as exc:
        raise CommandError(EXIT_BAD_CONNECTION, f"context deadline exceeded ({exc})") from None
    except ServerError as exc:
        raise CommandError(EXIT_BAD_CONNECTION, server_error_text(exc.code, exc.message)) from None
    except ClientError as exc:
        raise CommandError(EXIT_BAD_CONNECTION, str(exc)) from None
    finally:
        await cancel_and_wait(reporter)
        await dest.close()


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("make-mirror", parents=[parent], help="Makes a mirror at the destination etcd cluster")
    p.add_argument("args", nargs="*", metavar="<destination>")
    p.add_argument("--prefix", default="", help="Key-value prefix to mirror")
    p.add_argument("--dest-prefix", default="", help="destination prefix to mirror a prefix to a different prefix in the destination cluster")
    p.add_argument("--no-dest-prefix", action="store_true", help="mirror key-values to the root of the destination cluster")
    p.add_argument("--dest-cacert", default="", help="Verify certificates of TLS enabled secure servers using this CA bundle")
    p.add_argument("--dest-cert", default="", help="Identify secure client using this TLS certificate file for the destination cluster")
    p.add_argument("--dest-key", default="", help="Identify secure client using this TLS key file")
    p.add_argument("--dest-insecure-transport", action="store_true", help="accepted for etcdctl compatibility")
    p.add_argument("--dest-user", default="", help="Destination username[:password] for authentication (prompt if "
                                                   "password is not supplied; kvctl needs it given)")
    p.add_argument("--dest-password", default="", help="Destination password for authentication (if this option is "
                                                       "used, --dest-user option shouldn't include password)")
    p.add_argument("--rev", type=int64, default=0, help="Specify the kv revision to start to mirror")
    p.add_argument("--max-txn-ops", type=int64, default=128,
                   help="Maximum number of operations permitted in a transaction during syncing updates.")
    p.add_argument("--report-interval", type=duration, default=30.0,
                   help="how often the count of mirrored keys is printed (kvctl only; default 30s)")
    p.set_defaults(handler=run_make_mirror)
