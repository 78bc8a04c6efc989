"""argparse shaped like cobra/pflag: flags anywhere, ``--flag=true|false`` for booleans,
pflag's error texts, and etcdctl's global flags on every command."""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.goformat import go_quote, parse_duration
from kvraft.client.completion import complete_files

__all__ = ["GoArgumentParser", "GoNumError", "add_default_true_flag", "add_global_flags", "duration", "go_parse_int",
           "int64", "normalize_bools", "subcommands"]

_SEP = "\x00"


class GoNumError(ValueError):
    """strconv's NumError: ``str(exc)`` is Go's text, ``strconv.ParseInt: parsing "x": invalid syntax``."""


def _underscore_ok(text: str) -> bool:
    """strconv's underscoreOK: an underscore only between digits (or a base prefix and a digit)."""
    saw, i = "^", 0
    if text[:1] in ("+", "-"):
        text = text[1:]
    hexadecimal = False
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "box":
        i, saw, hexadecimal = 2, "0", text[1].lower() == "x"
    for c in text[i:]:
        if c.isascii() and (c.isdigit() or hexadecimal and c.lower() in "abcdef"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def go_parse_int(text: str, base: int, *, unsigned: bool = False, bits: int = 64) -> int:
    """Go's ``strconv.ParseInt(text, base, bits)`` (``ParseUint`` when ``unsigned``): no
    spaces, a sign only when signed, a ``0x``/``0o``/``0b``/``0`` prefix and underscores
    only with base 0, and the int64 (uint64) range. Python's ``int`` takes all of those."""
    func = "ParseUint" if unsigned else "ParseInt"

    def fail(reason: str) -> GoNumError:
        return GoNumError(f"strconv.{func}: parsing {go_quote(text.encode('utf-8', 'surrogateescape'))}: {reason}")

    body, negative = text, False
    if not unsigned and body[:1] in ("+", "-"):
        negative, body = body[0] == "-", body[1:]
    if not body:
        raise fail("invalid syntax")
    base0 = base == 0
    if base0:
        base = 10
        if body[0] == "0":
            if len(body) >= 3 and body[1].lower() in "box":
                base, body = {"b": 2, "o": 8, "x": 16}[body[1].lower()], body[2:]
            else:
                base, body = 8, body[1:]
    limit = 1 << bits if unsigned else (1 << (bits - 1)) + (1 if negative else 0)
    value, underscores = 0, False
    for c in body:
        if c == "_" and base0:
            underscores = True
            continue
        if c.isascii() and c.isdigit():
            digit = ord(c) - ord("0")
        elif c.isascii() and c.isalpha():
            digit = ord(c.lower()) - ord("a") + 10
        else:
            raise fail("invalid syntax")
        if digit >= base:
            raise fail("invalid syntax")
        value = value * base + digit
        if value >= limit:
            raise fail("value out of range")
    if underscores and not _underscore_ok(text):
        raise fail("invalid syntax")
    return -value if negative else value


def int64(text: str) -> int:
    """pflag's Int64 (and Int): ``strconv.ParseInt(text, 0, 64)``."""
    try:
        return go_parse_int(text, 0)
    except GoNumError as exc:
        raise argparse.ArgumentTypeError(f"{text}{_SEP}{exc}") from None


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text}{_SEP}{exc}") from None


class GoArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("add_help", True)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.S)
        if match and _SEP in match.group(2):
            value, reason = match.group(2).split(_SEP, 1)
            flag = match.group(1).split("/")[-1]
            raise CommandError(EXIT_ERROR, f'invalid argument "{value}" for "{flag}" flag: {reason}')
        if match and "invalid choice" in match.group(2):
            choice = re.search(r"invalid choice: '([^']*)'", match.group(2))
            name = choice.group(1) if choice else ""
            raise CommandError(EXIT_ERROR, f'unknown command "{name}" for "{self.prog}"')
        if message.startswith("unrecognized arguments:"):
            first = message.split(":", 1)[1].split()[0]
            if first.startswith("-"):
                raise CommandError(EXIT_ERROR, f"unknown flag: {first}")
        if message.startswith("the following arguments are required"):
            raise CommandError(EXIT_BAD_ARGS, f"{self.prog}: {message}")
        if "expected one argument" in message and match:
            raise CommandError(EXIT_ERROR, f"flag needs an argument: {match.group(1)}")
        raise CommandError(EXIT_ERROR, message)


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """etcdctl's global flags; defaults are filled in later from the environment."""
    s = argparse.SUPPRESS
    parser.add_argument("--endpoints", default=s, help="gRPC-style endpoints, comma separated (env ETCDCTL_ENDPOINTS, KVCTL_ENDPOINTS)")
    parser.add_argument("--user", default=s, help="username[:password] for authentication (prompt if password is not supplied)")
    parser.add_argument("--password", default=s, help="password for authentication (if this option is used, --user option shouldn't include password)")
    parser.add_argument("--token", default=s, help="a kvraft scoped token to act with instead of a user (kvctl only; env KVCTL_TOKEN)")
    parser.add_argument("--dial-timeout", type=duration, default=s, help="dial timeout for client connections (default 2s)")
    parser.add_argument("--command-timeout", type=duration, default=s, help="timeout for short running command (default 5s)")
    parser.add_argument("-w", "--write-out", default=s, help="set the output format (fields, json, simple, table)")
    parser.add_argument("--hex", action="store_true", default=s, help="print byte strings as hex encoded strings")
    parser.add_argument("--encoding", choices=("auto", "json", "msgpack"), default=s,
                        help="wire encoding (kvctl only): msgpack when the server is kvraft, else JSON")
    parser.add_argument("--keepalive-time", type=duration, default=s,
                        help="keepalive time for client connections: a member that sent nothing for this long "
                             "is probed; 0 turns keepalive off (default 1s; etcdctl's 2s)")
    parser.add_argument("--keepalive-timeout", type=duration, default=s,
                        help="keepalive timeout for client connections: a probe unanswered this long fails the "
                             "member over (default 2s; etcdctl's 6s)")
    complete_files(
        parser.add_argument("--cacert", default=s, help="verify certificates of TLS-enabled secure servers using this CA bundle"),
        parser.add_argument("--cert", default=s, help="identify secure client using this TLS certificate file"),
        parser.add_argument("--key", default=s, help="identify secure client using this TLS key file"))
    parser.add_argument("--insecure-skip-tls-verify", action="store_true", default=s,
                        help="skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)")
    parser.add_argument("--insecure-transport", action="store_true", default=s, help="accepted for etcdctl compatibility")
    parser.add_argument("-d", "--discovery-srv", default=s,
                        help="domain name to query for SRV records describing cluster endpoints")
    parser.add_argument("--discovery-srv-name", default=s, help="service name to query when using DNS discovery")
    parser.add_argument("--insecure-discovery", action="store_true", default=s,
                        help="accept insecure SRV records describing cluster endpoints (default true)")
    parser.add_argument("--no-insecure-discovery", dest="insecure_discovery", action="store_false", default=s,
                        help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=s, help="accepted for etcdctl compatibility")
    parser.add_argument("--max-request-bytes", type=int, default=s,
                        help="client-side request send limit in bytes (if 0, it defaults to 2.0 MiB (2 * 1024 * 1024).)")
    parser.add_argument("--max-recv-bytes", type=int, default=s,
                        help='client-side response receive limit in bytes (if 0, it defaults to "math.MaxInt32")')


def add_default_true_flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    """A boolean flag that defaults to true; ``--flag=false`` reaches it as ``--no-flag``."""
    dest = flag[2:].replace("-", "_")
    parser.add_argument(flag, dest=dest, action="store_true", default=True, help=help_text)
    parser.add_argument("--no-" + flag[2:], dest=dest, action="store_false", help=argparse.SUPPRESS)


def subcommands(parser: argparse.ArgumentParser, title: str) -> Any:
    return parser.add_subparsers(dest=title, metavar="<command>", parser_class=GoArgumentParser)


def normalize_bools(argv: list[str], bool_flags: set[str], true_by_default: frozenset[str] = frozenset()) -> list[str]:
    """pflag accepts ``--flag=true`` / ``--flag=false`` for boolean flags. A flag that is
    true by default (``user add --interactive``) is turned off as ``--no-<flag>``, which
    its command defines (``add_default_true_flag``)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        name, sep, value = arg.partition("=")
        if sep and name in bool_flags:
            if value.lower() in ("true", "1", "t"):
                out.append(name)
            elif value.lower() in ("false", "0", "f"):
                if name in true_by_default:
                    out.append("--no-" + name[2:])
                continue
            else:
                raise CommandError(EXIT_ERROR, f'invalid argument "{value}" for "{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax')
        else:
            out.append(arg)
    return out


def take_positionals(ns: argparse.Namespace, extras: list[str], prog: str) -> None:
    """Positionals after flags (pflag intersperses them) join ``ns.args``; an unknown flag
    or a word where the command takes none is an error (``CommandError``, exit 1)."""
    for extra in extras:
        if extra.startswith("-") and extra != "-":
            raise CommandError(EXIT_ERROR, f"unknown flag: {extra.split('=', 1)[0]}")
        if not hasattr(ns, "args"):
            raise CommandError(EXIT_ERROR, f'unknown command "{extra}" for "{prog}"')
        ns.args.append(extra)
