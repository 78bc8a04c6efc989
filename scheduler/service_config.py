"""``kvraft-scheduler`` settings: etcd-style flags and the same settings from a YAML file.

Every flag ``--election-ttl-s`` has the YAML key ``election-ttl-s`` (or ``election_ttl_s``);
flags given on the command line win over the file. Example ``scheduler.yaml``::

    endpoints: 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
    name: sched-a
    profile: default
    plugin-args: {elastic: {grow_after_s: 300}}   # or a list: ["elastic.grow_after_s=300"]
    election-ttl-s: 10
    listen-url: http://127.0.0.1:10251
    log-level: info
"""

from __future__ import annotations

import argparse
import json
import socket
from dataclasses import dataclass, field, fields
from typing import Any

from agent.confcheck import (
    MAX_LEASE_TTL_S,
    add_cluster_flags,
    check_endpoints,
    check_name,
    check_tls_files,
    check_url,
    coerce,
    discovered_endpoints,
    in_range,
    load_mapping,
)
from scheduler.framework.registry import Profile

__all__ = ["SchedulerConfig", "build_parser", "core_profile", "load_config"]


@dataclass
class SchedulerConfig:
    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    discovery_srv: str = ""  # the endpoints from DNS SRV records (_etcd-client._tcp.DOMAIN), as etcdctl -d
    discovery_srv_name: str = ""
    auto_sync_interval_s: float = 60.0  # the members' client URLs become the endpoints this often (0: never)
    name: str = field(default_factory=socket.gethostname)
    profile: str = "default"
    plugin_args: list[str] = field(default_factory=list)  # PLUGIN.ARG=JSON: the profile's plugin arguments changed
    seed: int = 0
    election: bool = True  # false: act without leader election (only for tests and benchmarks)
    election_ttl_s: int = 10
    listen_url: str = "http://127.0.0.1:10251"
    cycle_interval_s: float = 1.0  # a pass at least this often, even without events
    max_txn_ops: int = 120
    request_timeout_s: float = 5.0
    log_level: str = "info"
    log_format: str = "json"  # json lines (docs/observability.md), console (zap's) or text
    user: str = ""
    password: str = ""
    cacert: str = ""  # TLS to kvraft, as etcdctl: CA bundle, client certificate and key
    cert: str = ""
    key: str = ""
    insecure_skip_tls_verify: bool = False
    ttl_seconds_after_finished: float = 86400.0  # finished jobs' keys deleted after this; < 0: never (job_gc)
    accounting_retention_months: int = 13  # /accounting/ months kept (this one included); 0: for ever


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvraft-scheduler", description="the leader-elected scheduler of kvraft")
    p.add_argument("--config-file", help="YAML file with the same settings (flags win)")
    add_cluster_flags(p, 60.0)
    p.add_argument("--name", help="this replica's identity (default: hostname)")
    p.add_argument("--profile", help="scheduler profile (default, b1-fifo, b2-spread, b3-pack, b4-las)")
    p.add_argument("--plugin-arg", dest="plugin_args", action="append", metavar="PLUGIN.ARG=JSON",
                   help="change an argument of one of the profile's plugins, e.g. elastic.grow_after_s=300 "
                        "(repeatable; Kubernetes' pluginConfig; the arguments are in docs/design/scheduler.md)")
    p.add_argument("--seed", type=int)
    p.add_argument("--election", choices=["true", "false"], help="campaign for leadership (default true)")
    p.add_argument("--election-ttl-s", type=int, help="lease TTL of the leader key (default 10)")
    p.add_argument("--listen-url", help="HTTP endpoint for /health and /metrics")
    p.add_argument("--cycle-interval-s", type=float)
    p.add_argument("--max-txn-ops", type=int)
    p.add_argument("--request-timeout-s", type=float)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "console", "text"], help="log lines as JSON objects (default), zap's console lines or text")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--cacert", help="verify kvraft's certificate with this CA bundle (https)")
    p.add_argument("--cert", help="client certificate for kvraft (--client-cert-auth)")
    p.add_argument("--key", help="the client certificate's key")
    p.add_argument("--insecure-skip-tls-verify", choices=["true", "false"], nargs="?", const="true",
                   help="do not verify kvraft's certificate (testing only)")
    p.add_argument("--ttl-seconds-after-finished", type=float,
                   help="delete a finished job's keys this long after it finished, unless the job sets "
                        "ttl_seconds_after_finished (default 86400; negative: keep for ever)")
    p.add_argument("--accounting-retention-months", type=int,
                   help="keep the GPU-time accounting records (/accounting/, jobctl report) of this many "
                        "months, the current one included (default 13; 0: for ever)")
    return p


def _coerce(name: str, value: Any, current: Any) -> Any:
    if name == "plugin_args":  # a list of PLUGIN.ARG=JSON, or in YAML also {plugin: {arg: value}}
        if isinstance(value, dict):
            if not all(isinstance(v, dict) for v in value.values()):
                raise ValueError("plugin-args: a mapping must map each plugin to its {arg: value} mapping")
            return [f"{p}.{a}={json.dumps(v)}" for p, args in value.items() for a, v in args.items()]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if name == "endpoints":
        if isinstance(value, str):
            return [e.strip() for e in value.split(",") if e.strip()]
        if isinstance(value, list) and all(isinstance(e, str) for e in value):
            return [e.strip() for e in value if e.strip()]
        raise ValueError(f"--endpoints: must be a comma-separated string or a list of strings, not {value!r}")
    return coerce(name, value, current)


def _check(config: SchedulerConfig) -> None:
    check_endpoints("--endpoints", config.endpoints)
    check_name("--name", config.name)
    check_url("--listen-url", config.listen_url)
    if config.log_level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"--log-level: {config.log_level!r} is not one of debug, info, warning, error")
    if config.log_format not in ("json", "console", "text"):
        raise ValueError(f"--log-format: {config.log_format!r} is not one of json, console, text")
    in_range("election_ttl_s", config.election_ttl_s, 1, MAX_LEASE_TTL_S)
    in_range("cycle_interval_s", config.cycle_interval_s, 0, above=True)
    in_range("request_timeout_s", config.request_timeout_s, 0, above=True)
    in_range("auto_sync_interval_s", config.auto_sync_interval_s, 0, note=" (0: never)")
    in_range("max_txn_ops", config.max_txn_ops, 1)
    in_range("accounting_retention_months", config.accounting_retention_months, 0, note=" (0: for ever)")
    check_tls_files(config.cacert, config.cert, config.key)


def load_config(argv: list[str] | None = None) -> SchedulerConfig:
    """Flags over the YAML file over the defaults; every value checked (a ``ValueError`` names
    the flag or key, the value and what is allowed)."""
    args = build_parser().parse_args(argv)
    config = SchedulerConfig()
    names = {f.name for f in fields(SchedulerConfig)}
    if args.config_file:
        doc = load_mapping(args.config_file, "--config-file")
        for key, value in doc.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise ValueError(f"--config-file {args.config_file}: unknown setting {key!r}")
            try:
                setattr(config, name, _coerce(name, value, getattr(config, name)))
            except ValueError as exc:
                raise ValueError(f"--config-file {args.config_file}: {key}: {exc}") from None
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, _coerce(name, value, getattr(config, name)))
    _check(config)
    config.endpoints = discovered_endpoints(config.discovery_srv, config.discovery_srv_name, config.endpoints)
    from scheduler.cycle import Scheduler

    try:
        chosen = core_profile(config)
        if config.plugin_args:
            Scheduler(chosen)  # each plugin checks its arguments as it is built
    except KeyError as exc:
        raise ValueError(f"--profile: {exc.args[0]}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--plugin-arg: {exc}") from None
    return config


def core_profile(config: SchedulerConfig) -> Profile:
    """The profile the daemon's core runs: ``config.profile`` with ``config.plugin_args``
    (``load_config`` checks them by building a core once, at start)."""
    from scheduler.profiles import profile, with_args

    base = profile(config.profile)
    return with_args(base, config.plugin_args) if config.plugin_args else base
