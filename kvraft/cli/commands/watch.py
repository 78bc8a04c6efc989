"""``watch [--prefix] [--rev N] [--prev-kv] <key> [range_end] [-- exec-command args...]``
and ``watch -i`` (interactive: one ``watch ...`` line per watch on stdin).

Events print as responses arrive. The client resumes after disconnects; if the server
cancels the watch (compaction), kvctl prints ``watch was canceled (<reason>)`` on stderr
and exits 5 with ``watch is canceled by the server``, as etcdctl does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from kvraft.cli.commands.lock import run_forwarding
from kvraft.cli.commands.txn import argify
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED, CommandError
from kvraft.cli.goformat import go_quote
from kvraft.cli.parsing import GoArgumentParser, int64
from kvraft.client import ServerError, WatchCompactedError

__all__ = ["register", "split_exec"]


def split_exec(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``kvctl ... watch ... -- cmd args`` into (kvctl argv, exec argv)."""
    if "watch" not in argv or "--" not in argv[argv.index("watch"):]:
        return argv, None
    sep = argv.index("--", argv.index("watch"))
    return argv[:sep], argv[sep + 1 :]


def _add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="[key or prefix] [range_end]")
    p.add_argument("--prefix", action="store_true", help="Watch on a prefix if prefix is set")
    p.add_argument("--rev", type=int64, default=0, help="Revision to start watching")
    p.add_argument("--prev-kv", action="store_true", help="get the previous key-value pair before the event happens")


async def _watch(ctx: Context, args: list[str], ns: argparse.Namespace, exec_args: list[str] | None) -> None:
    if not args:
        raise CommandError(EXIT_BAD_ARGS, "bad number of arguments")
    options: dict[str, Any] = {"start_revision": ns.rev, "prev_kv": ns.prev_kv, "reconnect_timeout_s": None}
    if len(args) == 2:
        if ns.prefix:
            raise CommandError(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive")
        options["range_end"] = args[1]
    client = await ctx.client()
    async with client.watch(args[0], prefix=ns.prefix, **options) as watcher:
        try:
            async for resp in watcher:
                ctx.printer.watch(resp)
                ctx.stdout.flush()
                for event in resp.events if exec_args else ():
                    env = dict(os.environ)
                    env.update({"ETCD_WATCH_REVISION": str(resp.header.revision),
                                "ETCD_WATCH_EVENT_TYPE": go_quote(event.type),
                                "ETCD_WATCH_KEY": go_quote(event.kv.key),
                                "ETCD_WATCH_VALUE": go_quote(event.kv.value)})
                    assert exec_args is not None
                    code = await run_forwarding(ctx, exec_args, env)
                    if code != 0:
                        ctx.stderr.write(f"command {exec_args} error (exit status {code})\n")
                        raise CommandError(EXIT_ERROR, None)
        except WatchCompactedError as exc:
            ctx.stderr.write("watch was canceled (etcdserver: mvcc: required revision has been compacted)\n")
            if exc.response is not None:
                ctx.printer.watch(exc.response)
        except ServerError as exc:
            ctx.stderr.write(f"watch was canceled ({exc.message})\n")
    raise CommandError(EXIT_INTERRUPTED, "watch is canceled by the server")


async def _interactive(ctx: Context) -> None:
    parser = GoArgumentParser(prog="watch", add_help=False)
    _add_flags(parser)
    tasks = []
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, ctx.stdin.readline)
        if not line:
            break
        args = argify(line.rstrip("\n"))
        if not args:
            ctx.stderr.write(f"Invalid command: {line.rstrip()} (watch and progress supported)\n")
            continue
        if args[0] != "watch":
            ctx.stderr.write(f"Invalid command {line.rstrip()} (only support watch)\n")
            continue
        try:
            ns = parser.parse_args(args[1:])
        except CommandError as exc:
            ctx.stderr.write(f"Invalid command {line.rstrip()} ({exc.message})\n")
            continue
        tasks.append(asyncio.ensure_future(_watch(ctx, ns.args, ns, None)))
    if tasks:
        await asyncio.gather(*tasks)
    raise CommandError(EXIT_INTERRUPTED, "watch is canceled by the server")


async def run_watch(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.interactive:
        await _interactive(ctx)
        return
    args = list(ns.args)
    env_key, env_range = os.environ.get("ETCDCTL_WATCH_KEY", ""), os.environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not env_key and env_range:
        raise CommandError(EXIT_BAD_ARGS, f'ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END="{env_range}"')
    if env_key:
        if args:
            raise CommandError(EXIT_BAD_ARGS, "bad number of arguments (found conflicting environment key)")
        args = [env_key] + ([env_range] if env_range else [])
    exec_args = getattr(ns, "exec_args", None)
    if exec_args is not None and not exec_args:
        raise CommandError(EXIT_BAD_ARGS, "bad number of arguments (found separator --, but no commands)")
    await _watch(ctx, args, ns, exec_args)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("watch", parents=[parent], help="Watches events stream on keys or prefixes")
    _add_flags(p)
    p.add_argument("-i", "--interactive", action="store_true", help="Interactive mode")
    p.set_defaults(handler=run_watch)
