"""``txn``: etcdctl's transaction input, interactive (``-i``) or from stdin.

Three sections, each ended by an empty line: compares (``value("k") = "v"``,
``mod("k") > "5"``, ``ver``/``version``, ``c``/``create``, ``m``/``mod``, ``val``/``value``,
``lease``), then success requests, then failure requests (``get``/``put``/``del`` command
lines with their flags). Reaching end of input inside a section fails with ``EOF``, as
etcdctl does.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, TypeVar

from kvraft.cli.commands.kv import (
    DeleteOptions,
    GetOptions,
    PutOptions,
    add_del_flags,
    add_get_flags,
    add_put_flags,
)
from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_INVALID_INPUT, CommandError
from kvraft.cli.goformat import go_unquote
from kvraft.cli.parsing import GoArgumentParser, go_parse_int, subcommands
from kvraft.client import Compare, Op

__all__ = ["argify", "parse_compare", "parse_request", "register"]

T = TypeVar("T")

_ARG = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^'\"\s]\S*[^'\"\s]?")
_COMPARE = re.compile(r'^(?P<target>[^(]*)\((?P<key>"(?:[^"\\]|\\.)*"|`[^`]*`)\) (?P<op>\S+) (?P<val>"(?:[^"\\]|\\.)*"|`[^`]*`)')


def _invalid(message: str) -> CommandError:
    return CommandError(EXIT_INVALID_INPUT, message)


def argify(line: str) -> list[str]:
    """etcdctl's argument splitting: whitespace, "double" (Go-unquoted) and 'single' quotes."""
    args = []
    for arg in _ARG.findall(line):
        if arg.startswith("'"):
            arg = arg[1:-1]
        elif arg.startswith('"'):
            try:
                arg = go_unquote(arg)
            except ValueError as exc:
                raise _invalid(str(exc)) from None
        args.append(arg)
    return args


def parse_compare(line: str) -> Compare:
    if "(" not in line:
        raise _invalid(f"malformed comparison: {line}")
    match = _COMPARE.match(line)
    if match is None:
        raise _invalid(f"malformed comparison: {line}")
    target, op = match["target"], match["op"]
    key, value = go_unquote(match["key"]), go_unquote(match["val"])
    if op not in ("=", "!=", ">", "<"):
        raise _invalid(f"malformed comparison: {line} (unknown op {op})")
    try:
        if target in ("ver", "version"):
            return Compare.version(key, op, go_parse_int(value, 10))
        if target in ("c", "create"):
            return Compare.create(key, op, go_parse_int(value, 10))
        if target in ("m", "mod"):
            return Compare.mod(key, op, go_parse_int(value, 10))
        if target in ("val", "value"):
            return Compare.value(key, op, value.encode("utf-8", errors="surrogateescape"))
        if target == "lease":
            return Compare.lease(key, op, int(value, 16))
    except ValueError:
        raise _invalid(f"invalid txn compare request: {line}") from None
    raise _invalid(f"malformed comparison: {line} (unknown target {target})")


def _request_parser() -> argparse.ArgumentParser:
    parser = GoArgumentParser(prog="txn", add_help=False)
    sub = subcommands(parser, "op")
    add_get_flags(sub.add_parser("get", add_help=False))
    add_put_flags(sub.add_parser("put", add_help=False))
    add_del_flags(sub.add_parser("del", add_help=False))
    return parser


def parse_request(line: str) -> Op:
    args = argify(line)
    if len(args) < 2:
        raise _invalid(f"invalid txn compare request: {line}")
    try:
        ns = _request_parser().parse_args(args)
        if ns.op == "get":
            return GetOptions.from_args(ns).op()
        if ns.op == "put":
            return PutOptions.from_args(ns).op()
        if ns.op == "del":
            return DeleteOptions.from_args(ns).op()
    except CommandError:
        pass
    raise _invalid(f"invalid txn request: {line}")


def _read_section(ctx: Context, parse: Callable[[str], T]) -> list[T]:
    """Parse lines as they are read (an early bad line fails before a later EOF)."""
    items: list[T] = []
    while True:
        line = ctx.stdin.readline()
        if not line.endswith("\n"):
            raise _invalid("EOF")
        line = line.strip()
        if not line:
            return items
        items.append(parse(line))


async def run_txn(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "txn command does not accept argument")

    def prompt(text: str) -> None:
        if ns.interactive:
            ctx.stdout.write(text + "\n")
            ctx.stdout.flush()

    client = await ctx.client()
    txn = client.txn()
    prompt("compares:")
    txn.if_(*_read_section(ctx, parse_compare))
    prompt("success requests (get, put, del):")
    txn.then(*_read_section(ctx, parse_request))
    prompt("failure requests (get, put, del):")
    txn.else_(*_read_section(ctx, parse_request))
    ctx.printer.txn(await txn.commit())


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("txn", parents=[parent], help="Txn processes all the requests in one transaction")
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("-i", "--interactive", action="store_true", help="Input transaction in interactive mode")
    p.set_defaults(handler=run_txn)
