"""``lock <lockname> [exec-command arg1 arg2 ...] [--ttl N]``.

Without a command: print the held key (as ``get`` prints it) and hold the lock until
SIGINT/SIGTERM. With a command: run it holding the lock (``ETCD_LOCK_KEY`` in its
environment), release, and exit with its status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.parsing import GoNumError, go_parse_int, int64

__all__ = ["register", "run_forwarding", "wait_for_signal"]


async def wait_for_signal(*others: asyncio.Future[Any]) -> bool:
    """Wait for SIGINT/SIGTERM (True) or for one of ``others`` to finish (False)."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[bool] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        done, _ = await asyncio.wait([stop, *others], return_when=asyncio.FIRST_COMPLETED)
        return stop in done
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_forwarding(ctx: Context, command: list[str], env: dict[str, str]) -> int:
    """Run ``command``, copying its output to kvctl's stdout/stderr; returns its status."""
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    ctx.stdout.write(out.decode("utf-8", "surrogateescape"))
    ctx.stderr.write(err.decode("utf-8", "surrogateescape"))
    ctx.stdout.flush()
    return process.returncode if process.returncode is not None else 1


def _interspersed_ttl(ttl: int, args: list[str]) -> tuple[int, list[str]]:
    """pflag parses ``--ttl`` anywhere before ``--``; everything else is name and command."""
    rest: list[str] = []
    tokens = list(args)
    while tokens:
        token = tokens.pop(0)
        if token == "--":
            return ttl, rest + tokens
        if token == "--ttl" and tokens:
            value = tokens.pop(0)
        elif token.startswith("--ttl="):
            value = token.split("=", 1)[1]
        else:
            rest.append(token)
            continue
        try:
            ttl = go_parse_int(value, 0)
        except GoNumError as exc:
            raise CommandError(EXIT_ERROR, f'invalid argument "{value}" for "--ttl" flag: {exc}') from None
    return ttl, rest


async def run_lock(ctx: Context, ns: argparse.Namespace) -> None:
    if not ns.args:
        raise CommandError(EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute")
    ttl, rest = _interspersed_ttl(ns.ttl, ns.args)
    if not rest:
        raise CommandError(EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute")
    name, command = rest[0], rest[1:]
    client = await ctx.client()
    mutex = client.lock(name, ttl=ttl)
    await mutex.acquire()
    try:
        if command:
            env = {"ETCD_LOCK_KEY": mutex.key.decode("utf-8", "surrogateescape"),
                   "ETCD_LOCK_REV": str(mutex.revision), **os.environ}
            code = await run_forwarding(ctx, command, env)
            if code != 0:
                raise CommandError(EXIT_ERROR, f"exit status {code}")
            return
        resp = await client.get(mutex.key)
        if not resp.kvs:
            raise CommandError(EXIT_ERROR, "lock lost on init")
        ctx.printer.get(resp)
        ctx.stdout.flush()
        lost = asyncio.ensure_future(mutex.lease.lost.wait())
        try:
            if not await wait_for_signal(lost):
                raise CommandError(EXIT_ERROR, "session expired")
        finally:
            lost.cancel()
    finally:
        await mutex.release()


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lock", parents=[parent], help="Acquires a named lock")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="<lockname> [exec-command arg1 arg2 ...]")
    p.add_argument("--ttl", type=int64, default=10, help="timeout for session")
    p.set_defaults(handler=run_lock)
