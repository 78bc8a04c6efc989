"""``get``, ``put``, ``del``: flags, checks and messages as etcdctl's."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_BAD_FEATURE, CommandError
from kvraft.cli.parsing import GoNumError, go_parse_int, int64
from kvraft.cli.printers.fields import FieldsPrinter
from kvraft.cli.printers.simple import SimplePrinter
from kvraft.client import DeleteResponse, GetResponse, Op, PutResponse, ServerError
from kvraft.client.kv import UNIMPLEMENTED

__all__ = ["DeleteOptions", "GetOptions", "PutOptions", "add_get_flags", "add_put_flags", "add_del_flags", "register"]

_ORDERS = {"ASCEND": "ASCEND", "DESCEND": "DESCEND", "": "NONE"}
_TARGETS = {"CREATE": "CREATE", "KEY": "KEY", "MODIFY": "MOD", "VALUE": "VALUE", "VERSION": "VERSION", "": "KEY"}


def _bad(message: str) -> CommandError:
    return CommandError(EXIT_BAD_ARGS, message)


@dataclass(frozen=True)
class GetOptions:
    args: tuple[str, ...]
    consistency: str = "l"
    order: str = ""
    sort_by: str = ""
    limit: int = 0
    prefix: bool = False
    from_key: bool = False
    rev: int = 0
    keys_only: bool = False
    print_value_only: bool = False
    count_only: bool = False
    min_create_rev: int = 0
    max_create_rev: int = 0
    min_mod_rev: int = 0
    max_mod_rev: int = 0

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> GetOptions:
        return cls(tuple(ns.args), ns.consistency, ns.order, ns.sort_by, ns.limit, ns.prefix,
                   ns.from_key, ns.rev, ns.keys_only, ns.print_value_only, ns.count_only, ns.min_create_rev,
                   ns.max_create_rev, ns.min_mod_rev, ns.max_mod_rev)

    def op(self) -> Op:
        if not self.args:
            raise _bad("get command needs one argument as key and an optional argument as range_end")
        if self.prefix and self.from_key:
            raise _bad("`--prefix` and `--from-key` cannot be set at the same time, choose one")
        if self.keys_only and self.count_only:
            raise _bad("`--keys-only` and `--count-only` cannot be set at the same time, choose one")
        if self.consistency not in ("l", "s"):
            raise CommandError(EXIT_BAD_FEATURE, f'unknown consistency flag "{self.consistency}"')
        options: dict[str, Any] = {"serializable": self.consistency == "s", "limit": self.limit}
        if len(self.args) > 1:
            if self.prefix or self.from_key:
                raise _bad("too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
            options["range_end"] = self.args[1]
        if self.rev > 0:
            options["revision"] = self.rev
        if self.order.upper() not in _ORDERS:
            raise CommandError(EXIT_BAD_FEATURE, f"bad sort order {self.order}")
        if self.sort_by.upper() not in _TARGETS:
            raise CommandError(EXIT_BAD_FEATURE, f"bad sort target {self.sort_by}")
        for low, high, name in ((self.min_create_rev, self.max_create_rev, "CreateRev"),
                                (self.min_mod_rev, self.max_mod_rev, "ModRev")):  # (etcdctl 3.5's filters)
            if high > 0 and low > high:
                raise CommandError(EXIT_BAD_FEATURE, f"getMin{name}(={low}) > getMax{name}(={high})")
        for key, value in (("min_create_revision", self.min_create_rev), ("max_create_revision", self.max_create_rev),
                           ("min_mod_revision", self.min_mod_rev), ("max_mod_revision", self.max_mod_rev)):
            if value > 0:
                options[key] = value
        if self.count_only:
            options["count_only"] = True
        options["sort_order"] = _ORDERS[self.order.upper()]
        options["sort_target"] = _TARGETS[self.sort_by.upper()]
        if options["sort_order"] == "NONE" and options["sort_target"] != "KEY":
            options["sort_order"] = "ASCEND"  # clientv3.WithSort: a target without order ascends
        return Op.get(self.args[0], prefix=self.prefix, from_key=self.from_key, keys_only=self.keys_only, **options)


@dataclass(frozen=True)
class PutOptions:
    args: tuple[str, ...]
    lease: str = "0"
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> PutOptions:
        return cls(tuple(ns.args), ns.lease, ns.prev_kv, ns.ignore_value, ns.ignore_lease)

    def op(self, stdin_value: str | None = None) -> Op:
        usage = "put command needs 1 argument and input from stdin or 2 arguments"
        if not self.args:
            raise _bad(usage)
        if self.ignore_value and len(self.args) > 1:
            raise _bad("put command needs only 1 argument when 'ignore-value' is set")
        value = ""
        if not self.ignore_value:
            if len(self.args) > 1:
                value = self.args[1]
            elif stdin_value:
                value = stdin_value
            else:
                raise _bad(usage)
        try:
            lease_id = go_parse_int(self.lease, 16)
        except GoNumError as exc:
            raise _bad(f"bad lease ID ({exc}), expecting ID in Hex") from None
        raw = value.encode("utf-8", errors="surrogateescape")
        return Op.put(self.args[0], raw, lease=lease_id, prev_kv=self.prev_kv,
                      ignore_value=self.ignore_value, ignore_lease=self.ignore_lease)


@dataclass(frozen=True)
class DeleteOptions:
    args: tuple[str, ...]
    prefix: bool = False
    prev_kv: bool = False
    from_key: bool = False

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> DeleteOptions:
        return cls(tuple(ns.args), ns.prefix, ns.prev_kv, ns.from_key)

    def op(self) -> Op:
        if not self.args or len(self.args) > 2:
            raise _bad("del command needs one argument as key and an optional argument as range_end")
        if self.prefix and self.from_key:
            raise _bad("`--prefix` and `--from-key` cannot be set at the same time, choose one")
        range_end = None
        if len(self.args) > 1:
            if self.prefix or self.from_key:
                raise _bad("too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
            range_end = self.args[1]
        return Op.delete(self.args[0], range_end=range_end, prefix=self.prefix, from_key=self.from_key,
                         prev_kv=self.prev_kv)


def add_get_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="<key> [range_end]")
    p.add_argument("--consistency", default="l", help="Linearizable(l) or Serializable(s)")
    p.add_argument("--order", default="", help="Order of results; ASCEND or DESCEND (ASCEND by default)")
    p.add_argument("--sort-by", default="", help="Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION")
    p.add_argument("--limit", type=int64, default=0, help="Maximum number of results")
    p.add_argument("--prefix", action="store_true", help="Get keys with matching prefix")
    p.add_argument("--from-key", action="store_true", help="Get keys that are greater than or equal to the given key using byte compare")
    p.add_argument("--rev", type=int64, default=0, help="Specify the kv revision")
    p.add_argument("--keys-only", action="store_true", help="Get only the keys")
    p.add_argument("--print-value-only", action="store_true", help='Only write values when using the "simple" output format')
    p.add_argument("--count-only", action="store_true", help="Get only the count")
    p.add_argument("--min-create-rev", type=int64, default=0, help="Minimum create revision")
    p.add_argument("--max-create-rev", type=int64, default=0, help="Maximum create revision")
    p.add_argument("--min-mod-rev", type=int64, default=0, help="Minimum modification revision")
    p.add_argument("--max-mod-rev", type=int64, default=0, help="Maximum modification revision")


def add_put_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="<key> <value>")
    p.add_argument("--lease", default="0", help="lease ID (in hexadecimal) to attach to the key")
    p.add_argument("--prev-kv", action="store_true", help="return the previous key-value pair before modification")
    p.add_argument("--ignore-value", action="store_true", help="updates the key using its current value")
    p.add_argument("--ignore-lease", action="store_true", help="updates the key using its current lease")


def add_del_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="<key> [range_end]")
    p.add_argument("--prefix", action="store_true", help="delete keys with matching prefix")
    p.add_argument("--prev-kv", action="store_true", help="return deleted key-value pairs")
    p.add_argument("--from-key", action="store_true", help="delete keys that are greater than or equal to the given key using byte compare")
    p.add_argument("--range", action="store_true", help="delete range of keys (etcdctl 3.6's: it waits 2 s with a "
                                                        "warning before a [key, range_end) delete without it; kvctl "
                                                        "never waits)")


async def run_get(ctx: Context, ns: argparse.Namespace) -> None:
    options = GetOptions.from_args(ns)
    op = options.op()
    client = await ctx.client()
    printer = ctx.printer
    if options.count_only and not isinstance(printer, FieldsPrinter):
        await client.do(op)  # (etcdctl asks first, then refuses the format)
        raise _bad("--count-only is only for `--write-out=fields`")
    if options.print_value_only:
        if not isinstance(printer, SimplePrinter):
            raise _bad("print-value-only is only for `--write-out=simple`")
        printer.value_only = True
    if isinstance(printer, SimplePrinter) and _streamable(op.body) and await _print_stream(client, op, printer):
        return
    resp = await client.do(op)
    assert isinstance(resp, GetResponse)
    printer.get(resp)


STREAM_PAGE = 1000


def _streamable(body: dict[str, Any]) -> bool:
    """A range the simple format prints key by key, in key order: worth streaming."""
    return bool(body.get("range_end")) and body.get("sort_order") in (None, "NONE", "ASCEND") \
        and body.get("sort_target") in (None, "KEY") and not any(body.get(f) for f in _FILTERS)


_FILTERS = ("min_create_revision", "max_create_revision", "min_mod_revision", "max_mod_revision", "count_only")
"""What a streamed range does not take: such a range is asked in one request."""


async def _print_stream(client: Any, op: Op, printer: SimplePrinter) -> bool:
    """A range's keys printed page by page as kvraft streams them (``Client.get_stream``):
    the same lines as one range, but neither the member nor kvctl holds a million keys at
    once (etcdctl's ``get --prefix`` on a large keyspace is etcd-io/etcd#12342). False, with
    nothing printed, from a server without streamed ranges (etcd): the caller asks one range."""
    streamed = Op(op.kind, {k: v for k, v in op.body.items() if k not in ("sort_order", "sort_target")})
    try:
        async for page in client.stream_range(streamed, page_size=STREAM_PAGE):
            printer.get(page)
    except ServerError as exc:
        if exc.code != UNIMPLEMENTED:  # (the route is not there)
            raise
        return False
    return True


async def run_put(ctx: Context, ns: argparse.Namespace) -> None:
    options = PutOptions.from_args(ns)
    stdin_value = ctx.stdin.read() if len(options.args) == 1 and not options.ignore_value else None
    op = options.op(stdin_value)
    client = await ctx.client()
    resp = await client.do(op)
    assert isinstance(resp, PutResponse)
    ctx.printer.put(resp)


async def run_del(ctx: Context, ns: argparse.Namespace) -> None:
    op = DeleteOptions.from_args(ns).op()
    client = await ctx.client()
    resp = await client.do(op)
    assert isinstance(resp, DeleteResponse)
    ctx.printer.delete(resp)


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("get", parents=[parent], help="Gets the key or a range of keys")
    add_get_flags(p)
    p.set_defaults(handler=run_get)
    p = sub.add_parser("put", parents=[parent], help="Puts the given key into the store")
    add_put_flags(p)
    p.set_defaults(handler=run_put)
    p = sub.add_parser("del", parents=[parent], help="Removes the specified key or range of keys [key, range_end)")
    add_del_flags(p)
    p.set_defaults(handler=run_del)
