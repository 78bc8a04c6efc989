"""argparse shaped like cobra/pflag: flags anywhere, ``--flag=true|false`` for booleans,
pflag's error texts, and etcdctl's global flags on every command."""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.goformat import parse_duration

__all__ = ["GoArgumentParser", "add_default_true_flag", "add_global_flags", "duration", "int64", "normalize_bools", "subcommands"]

_SEP = "\x00"


def int64(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text}{_SEP}strconv.ParseInt: parsing "{text}": invalid syntax') from None


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
    for name, default in (("--keepalive-time", "2s"), ("--keepalive-timeout", "6s")):
        parser.add_argument(name, type=duration, default=s, help=f"accepted for etcdctl compatibility (default {default})")
    parser.add_argument("--cacert", default=s, help="verify certificates of TLS-enabled secure servers using this CA bundle")
    parser.add_argument("--cert", default=s, help="identify secure client using this TLS certificate file")
    parser.add_argument("--key", default=s, help="identify secure client using this TLS key file")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true", default=s,
                        help="skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)")
    parser.add_argument("--insecure-transport", action="store_true", default=s, help="accepted for etcdctl compatibility")
    parser.add_argument("--debug", action="store_true", default=s, help="accepted for etcdctl compatibility")


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
