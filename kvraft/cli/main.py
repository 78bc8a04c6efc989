"""``kvctl``: etcdctl's commands, flags, output formats and exit codes, over kvraft.client.

Global flags come from the command line, else ``KVCTL_<FLAG>``, else ``ETCDCTL_<FLAG>``
(``ENDPOINTS``, ``USER``, ``PASSWORD``, ``DIAL_TIMEOUT``, ``COMMAND_TIMEOUT``,
``WRITE_OUT``, ``HEX``). Errors print ``Error: <message>`` on stderr and exit with
etcdctl's codes (``kvraft.cli.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from kvraft.cli.commands import MODULES
from kvraft.cli.commands.watch import split_exec
from kvraft.cli.context import DEFAULT_ENDPOINT, Context, GlobalOptions, env
from kvraft.cli.entry import console, execute, guarded
from kvraft.cli.errors import (
    EXIT_ERROR,
    CommandError,
)
from kvraft.cli.goformat import parse_duration
from kvraft.cli.parsing import (
    GoArgumentParser,
    add_global_flags,
    normalize_bools,
    subcommands,
    take_positionals,
)
from kvraft.client.srv import DiscoveryError, discover

__all__ = ["build_parser", "main", "run"]


def build_parser() -> tuple[argparse.ArgumentParser, set[str], frozenset[str]]:
    parent = GoArgumentParser(add_help=False)
    add_global_flags(parent)
    parser = GoArgumentParser(prog="kvctl", parents=[parent],
                              description="A simple command line client for kvraft (and etcd) in etcdctl's image.")
    sub = subcommands(parser, "command")
    for name in MODULES:
        importlib.import_module(f"kvraft.cli.commands.{name}").register(sub, parent)
    bools: set[str] = set()
    true_by_default: set[str] = set()
    _collect_bools(parser, bools, true_by_default)
    return parser, bools, frozenset(true_by_default)


def _collect_bools(parser: argparse.ArgumentParser, out: set[str], true_by_default: set[str]) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._StoreTrueAction):
            names = [s for s in action.option_strings if s.startswith("--")]
            out.update(names)
            if action.default is True or any(f"--no-{n[2:]}" in parser._option_string_actions for n in names):
                true_by_default.update(names)
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _collect_bools(child, out, true_by_default)


def global_options(ns: argparse.Namespace, stderr: TextIO | None = None) -> GlobalOptions:
    def pick(attr: str, name: str) -> Any:
        value = getattr(ns, attr, None)
        return value if value is not None else env(name)

    domain = pick("discovery_srv", "DISCOVERY_SRV") or ""
    insecure_discovery = pick("insecure_discovery", "INSECURE_DISCOVERY")
    insecure_discovery = True if insecure_discovery is None else _truthy(insecure_discovery)
    discovered = discover_endpoints(domain, pick("discovery_srv_name", "DISCOVERY_SRV_NAME") or "",
                                    insecure_discovery, stderr or sys.stderr) if domain else []
    endpoints = ",".join(discovered) or pick("endpoints", "ENDPOINTS") or DEFAULT_ENDPOINT
    dial = pick("dial_timeout", "DIAL_TIMEOUT")
    command = pick("command_timeout", "COMMAND_TIMEOUT")
    hex_flag = pick("hex", "HEX")

    def seconds(value: Any, default: float) -> float:
        return parse_duration(value) if isinstance(value, str) else (value if value is not None else default)

    try:
        dial_s = seconds(dial, 2.0)
        command_s = seconds(command, 5.0)
        keepalive_s = seconds(pick("keepalive_time", "KEEPALIVE_TIME"), 1.0)
        keepalive_timeout_s = seconds(pick("keepalive_timeout", "KEEPALIVE_TIMEOUT"), 2.0)
    except ValueError as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None
    if keepalive_timeout_s <= 0:
        raise CommandError(EXIT_ERROR, "--keepalive-timeout must be positive")
    limits = {}
    for attr, name, default in (("max_request_bytes", "MAX_REQUEST_BYTES", 2 * 1024 * 1024),
                                ("max_recv_bytes", "MAX_RECV_BYTES", 2**31 - 1)):
        try:
            limits[attr] = int(pick(attr, name) or 0) or default  # (etcdctl: 0 is clientv3's default)
        except ValueError:
            raise CommandError(EXIT_ERROR, f"--{attr.replace('_', '-')}: not a number of bytes") from None
        if limits[attr] < 0:
            raise CommandError(EXIT_ERROR, f"--{attr.replace('_', '-')} must not be negative")
    if limits["max_request_bytes"] > limits["max_recv_bytes"]:  # (clientv3's rule)
        raise CommandError(EXIT_ERROR, f"gRPC message recv limit ({limits['max_recv_bytes']} bytes) must be greater "
                                       f"than send limit ({limits['max_request_bytes']} bytes)")
    return GlobalOptions(
        endpoints=tuple(e.strip() for e in str(endpoints).split(",") if e.strip()),
        user=pick("user", "USER"),
        password=pick("password", "PASSWORD"),
        dial_timeout_s=dial_s,
        command_timeout_s=command_s,
        keepalive_time_s=keepalive_s if keepalive_s > 0 else None,
        keepalive_timeout_s=keepalive_timeout_s,
        **limits,
        write_out=pick("write_out", "WRITE_OUT") or "simple",
        hex_output=_truthy(hex_flag),
        encoding=pick("encoding", "ENCODING") or "auto",
        cacert=pick("cacert", "CACERT"),
        cert=pick("cert", "CERT"),
        key=pick("key", "KEY"),
        insecure_skip_tls_verify=_truthy(pick("insecure_skip_tls_verify", "INSECURE_SKIP_TLS_VERIFY")),
        token=getattr(ns, "token", None) or env("TOKEN") or None,
        server_name=domain if domain and not insecure_discovery else None,
    )


def discover_endpoints(domain: str, service_name: str, insecure: bool, stderr: TextIO) -> list[str]:
    """etcdctl's ``-d DOMAIN`` (kvraft.client.srv.discover); none found: ``--endpoints``."""
    try:
        return discover(domain, service_name, insecure=insecure, warn=lambda line: stderr.write(line + "\n"))
    except DiscoveryError as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def run(argv: Sequence[str], stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """Run one kvctl command line; returns the exit code (used by ``main`` and tests)."""
    def body() -> int:
        parser, bools, true_by_default = build_parser()
        args, exec_args = split_exec(list(argv))
        ns, extras = parser.parse_known_args(normalize_bools(args, bools, true_by_default))
        take_positionals(ns, extras, "kvctl")
        if exec_args is not None:
            ns.exec_args = exec_args
        return execute(parser, ns, lambda: Context(global_options(ns, stderr), stdin, stdout, stderr), stdout)

    return guarded(body, stdout, stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``kvctl``)."""
    return console(run, argv)


if __name__ == "__main__":
    sys.exit(main())
