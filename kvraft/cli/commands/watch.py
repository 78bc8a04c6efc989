"""``watch [--prefix] [--rev N] [--prev-kv] [--progress-notify] <key> [range_end] [-- exec-command
args...]`` and ``watch -i`` (interactive: ``watch ...`` and ``progress`` lines on stdin, every
watch on one stream).

Events print as responses arrive. The client resumes after disconnects; if the server
cancels the watch (compaction), kvctl prints ``watch was canceled (<reason>)`` on stderr
and exits 5 with ``watch is canceled by the server``, as etcdctl does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import threading
from typing import Any

from kvraft.cli.commands.lock import run_forwarding
from kvraft.cli.commands.txn import argify
from kvraft.cli.context import Context
from kvraft.cli.errors import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    CommandError,
)
from kvraft.cli.goformat import go_quote
from kvraft.cli.parsing import GoArgumentParser, int64
from kvraft.client import ServerError, WatchCompactedError, WatchResponse, WatchSession

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
    p.add_argument("--progress-notify", action="store_true",
                   help="get periodic watch progress notification from server (as etcdctl 3.5)")


def _watch_options(args: list[str], ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """etcdctl's ``getWatchArgs``: (key, watch options) or a CommandError."""
    if not args:
        raise CommandError(EXIT_BAD_ARGS, "bad number of arguments")
    options: dict[str, Any] = {"start_revision": ns.rev, "prev_kv": ns.prev_kv, "prefix": ns.prefix,
                               "progress_notify": ns.progress_notify}
    if len(args) == 2:
        if ns.prefix:
            raise CommandError(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive")
        options["range_end"] = args[1]
    elif len(args) > 2:
        raise CommandError(EXIT_BAD_ARGS, "bad number of arguments")
    return args[0], options


async def _exec_per_event(ctx: Context, resp: WatchResponse, exec_args: list[str]) -> None:
    for event in resp.events:
        env = dict(os.environ)
        env.update({"ETCD_WATCH_REVISION": str(resp.header.revision),
                    "ETCD_WATCH_EVENT_TYPE": go_quote(event.type),
                    "ETCD_WATCH_KEY": go_quote(event.kv.key),
                    "ETCD_WATCH_VALUE": go_quote(event.kv.value)})
        code = await run_forwarding(ctx, exec_args, env)
        if code != 0:
            ctx.stderr.write(f"command {exec_args} error (exit status {code})\n")
            raise CommandError(EXIT_ERROR, None)


def _show(ctx: Context, resp: WatchResponse) -> None:
    """etcdctl's ``printWatchCh`` body: the progress line, then the response."""
    if resp.is_progress_notify:
        ctx.stdout.write(f"progress notify: {resp.header.revision}\n")
    ctx.printer.watch(resp)
    ctx.stdout.flush()


async def _watch(ctx: Context, args: list[str], ns: argparse.Namespace, exec_args: list[str] | None) -> None:
    key, options = _watch_options(args, ns)
    client = await ctx.client()
    async with client.watch(key, reconnect_timeout_s=None, **options) as watcher:
        try:
            async for resp in watcher:
                _show(ctx, resp)
                if exec_args:
                    await _exec_per_event(ctx, resp, exec_args)
        except WatchCompactedError as exc:
            ctx.stderr.write(f"watch was canceled ({COMPACTED})\n")
            if exc.response is not None:
                ctx.printer.watch(exc.response)
        except ServerError as exc:
            ctx.stderr.write(f"watch was canceled ({exc.message})\n")
    raise CommandError(EXIT_INTERRUPTED, "watch is canceled by the server")


COMPACTED = "etcdserver: mvcc: required revision has been compacted"


class _Interactive:
    """``watch -i``: ``watch ...`` and ``progress`` lines from stdin, every watch on one
    stream (``client.watch_session()``, which resumes on another member after a lost
    stream, as clientv3 does), as etcdctl does; a ``progress`` answer is shown once per
    open watch (clientv3 hands it to every watcher of the stream). EOF on stdin ends the
    command with etcdctl's ``Error reading watch request line: EOF`` (exit 3); a stream
    error the session cannot recover from (a server error) ends it at once (exit 1)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session: WatchSession | None = None
        self.active: set[int] = set()
        self.pending_exec: list[list[str] | None] = []
        self.exec_for: dict[int, list[str]] = {}
        self.printer: asyncio.Task[None] | None = None
        self.stop = threading.Event()

    async def run(self) -> None:
        parser = GoArgumentParser(prog="watch", add_help=False)
        _add_flags(parser)
        lines = self._stdin_lines(asyncio.get_running_loop())
        try:
            while True:
                reading: asyncio.Future[Any] = asyncio.ensure_future(lines.get())
                if self.printer is not None:  # a stream that fails ends the session at once
                    await asyncio.wait({reading, self.printer}, return_when=asyncio.FIRST_COMPLETED)
                    if self.printer.done():
                        reading.cancel()
                        self.printer.result()  # raises the stream's error (EndpointError, ServerError)
                line = await reading
                if not line:
                    raise CommandError(EXIT_INVALID_INPUT, "Error reading watch request line: EOF")
                await self._line(parser, line.rstrip("\n"))
        finally:
            self.stop.set()
            if self.printer is not None:
                self.printer.cancel()
            if self.session is not None:
                await self.session.close()

    def _stdin_lines(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
        """stdin's lines ("" at EOF), read by a daemon thread that must never hold up the
        end of the process: on a real file descriptor it waits with ``select`` and reads
        with ``os.read`` (no buffered-reader lock held at interpreter shutdown) and stops
        when ``self.stop`` is set; a file object without one (tests) is read by lines."""
        queue: asyncio.Queue[str] = asyncio.Queue()

        def deliver(line: str) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the command ended
                loop.call_soon_threadsafe(queue.put_nowait, line)

        def pump() -> None:
            try:
                fd = self.ctx.stdin.fileno()
            except (AttributeError, OSError, ValueError):
                while line := self.ctx.stdin.readline():
                    deliver(line)
                deliver("")
                return
            pending = b""
            while not self.stop.is_set():
                if not select.select([fd], [], [], 0.2)[0]:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    if pending:
                        deliver(pending.decode("utf-8", "surrogateescape"))
                    deliver("")
                    return
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    deliver(raw.decode("utf-8", "surrogateescape") + "\n")

        threading.Thread(target=pump, name="kvctl-watch-stdin", daemon=True).start()
        return queue

    async def _line(self, parser: GoArgumentParser, line: str) -> None:
        args = argify(line)
        if not args:
            self.ctx.stderr.write(f"Invalid command: {line} (watch and progress supported)\n")
        elif args[0] == "watch":
            await self._create(parser, line, args[1:])
        elif args[0] == "progress":
            if self.session is not None:  # no stream yet: nothing to ask (as clientv3)
                await self.session.request_progress()
        else:
            self.ctx.stderr.write(f"Invalid command {line} (only support watch)\n")

    async def _create(self, parser: GoArgumentParser, line: str, words: list[str]) -> None:
        if not words:
            self.ctx.stderr.write(f"Invalid command {line} (command type or key is not provided)\n")
            return
        exec_args = None
        if "--" in words:
            cut = words.index("--")
            words, exec_args = words[:cut], words[cut + 1 :]
            if not exec_args:
                self.ctx.stderr.write(f"Invalid command {line} (bad number of arguments (found separator --, but no commands))\n")
                return
        try:
            ns = parser.parse_args(words)
            key, options = _watch_options(ns.args, ns)
        except CommandError as exc:
            self.ctx.stderr.write(f"Invalid command {line} ({exc.message})\n")
            return
        if self.session is None:
            client = await self.ctx.client()
            self.session = client.watch_session(reconnect_timeout_s=None)  # etcdctl retries forever
            await self.session.__aenter__()
            self.printer = asyncio.ensure_future(self._print(self.session))
        self.pending_exec.append(exec_args)
        await self.session.create(key, **options)

    async def _print(self, session: WatchSession) -> None:
        ctx = self.ctx
        async for resp in session:
            if resp.created and not resp.canceled:
                self.active.add(resp.watch_id)
                exec_args = self.pending_exec.pop(0) if self.pending_exec else None
                if exec_args:
                    self.exec_for[resp.watch_id] = exec_args
                continue
            if resp.canceled:
                if resp.created and self.pending_exec:
                    self.pending_exec.pop(0)
                self.active.discard(resp.watch_id)
                reason = COMPACTED if resp.compact_revision else resp.cancel_reason
                ctx.stderr.write(f"watch was canceled ({reason})\n")
                ctx.printer.watch(resp)
                continue
            if resp.is_progress_notify and resp.watch_id == PROGRESS_WATCH_ID:
                for _ in sorted(self.active):
                    _show(ctx, resp)
                continue
            _show(ctx, resp)
            exec_args = self.exec_for.get(resp.watch_id)
            if exec_args:
                await _exec_per_event(ctx, resp, exec_args)


PROGRESS_WATCH_ID = -1


async def run_watch(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.interactive:
        await _Interactive(ctx).run()
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
