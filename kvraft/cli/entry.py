"""What kvctl and kvutl share around one command line: the error handling that turns an
exception into etcdctl's ``Error: ...`` line and exit code, and the console entry point.

- ``CommandError``: its message (if any) and code, as etcdctl's ``ExitWithError``.
- ``EndpointError`` (no endpoint answered in time): "context deadline exceeded", exit 1.
- ``ServerError``: the server's error as etcdctl prints it (``server_error_text``), exit 1.
- Any other ``ClientError`` (cannot connect): its text, exit 2.
- Ctrl-C: exit 5.

stdout is flushed before an error is written, so a partial listing comes before the error.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from kvraft.cli.context import Context
from kvraft.cli.errors import (
    EXIT_BAD_CONNECTION,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    CommandError,
    server_error_text,
)
from kvraft.client import ClientError, EndpointError, ServerError

__all__ = ["console", "execute", "guarded"]

Runner = Callable[[Sequence[str], TextIO, TextIO, TextIO], int]


def guarded(body: Callable[[], int], stdout: TextIO, stderr: TextIO) -> int:
    """``body()``'s exit code, or the code and ``Error:`` line of what it raised."""
    try:
        return body()
    except CommandError as exc:
        stdout.flush()
        if exc.message:
            stderr.write(f"Error: {exc.message}\n")
        return exc.code
    except EndpointError as exc:
        stdout.flush()
        stderr.write(f"Error: context deadline exceeded\n{exc}\n")
        return EXIT_ERROR
    except ServerError as exc:
        stdout.flush()
        stderr.write(f"Error: {server_error_text(exc.code, exc.message)}\n")
        return EXIT_ERROR
    except ClientError as exc:
        stdout.flush()
        stderr.write(f"Error: {exc}\n")
        return EXIT_BAD_CONNECTION
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def execute(parser: argparse.ArgumentParser, ns: argparse.Namespace, context: Callable[[], Context],
            stdout: TextIO) -> int:
    """Run the parsed command line: the help of the command named without a verb, else its
    handler with the ``context`` made for it (an unsupported ``-w`` fails before anything is
    asked, as in etcdctl), its clients closed afterwards."""
    handler = getattr(ns, "handler", None)
    if handler is None:
        stdout.write((getattr(ns, "help_parser", None) or parser).format_help())
        return 0
    ctx = context()
    _ = ctx.printer

    async def dispatch() -> None:
        try:
            await handler(ctx, ns)
        finally:
            await ctx.close()

    asyncio.run(dispatch())
    return 0


def console(run: Runner, argv: Sequence[str] | None) -> int:
    """A console script's ``main``: ``run`` on the process's streams (UTF-8, bytes that are
    not kept as surrogates, each line written through at once)."""
    def wrap(stream: TextIO) -> TextIO:
        return io.TextIOWrapper(stream.buffer, encoding="utf-8", errors="surrogateescape", line_buffering=True,
                                write_through=True)

    stdout, stderr = wrap(sys.stdout), wrap(sys.stderr)
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    code = run(sys.argv[1:] if argv is None else argv, stdin, stdout, stderr)
    stdout.flush()
    stderr.flush()
    return code
