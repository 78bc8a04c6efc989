"""``kvraft-agent`` settings: etcd-style flags and the same settings from a YAML file.

Every flag ``--lease-ttl-s`` has the YAML key ``lease-ttl-s`` (or ``lease_ttl_s``); flags given
on the command line win over the file. Example ``agent.yaml``::

    endpoints: 127.0.0.1:2379,127.0.0.1:22379
    name: gpu-node-7
    data-dir: /var/lib/kvraft-agent
    runtime: runc
    labels: {rack: r1, switch: s1}
    gpu-inventory: /etc/kvraft-agent/gpus.yaml
    lease-ttl-s: 40
    heartbeat-s: 10
    listen-url: http://127.0.0.1:10250
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.confcheck import (
    MAX_LEASE_TTL_S,
    add_cluster_flags,
    check_endpoints,
    check_name,
    check_serving_tls,
    check_tls_files,
    check_url,
    coerce,
    discovered_endpoints,
    in_range,
    load_mapping,
)
from agent.eviction import DEFAULT_EVICTION_HARD, parse_eviction_hard
from agent.labels import label_problem

__all__ = ["AgentConfig", "build_parser", "load_config", "parse_labels"]


RUNTIMES = ("", "runc", "docker", "process", "fake")  # "": runc where it works, else process


@dataclass
class AgentConfig:
    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    discovery_srv: str = ""  # the endpoints from DNS SRV records (_etcd-client._tcp.DOMAIN), as etcdctl -d
    discovery_srv_name: str = ""
    auto_sync_interval_s: float = 300.0  # the members' client URLs become the endpoints this often (0: never)
    name: str = field(default_factory=socket.gethostname)
    data_dir: Path = Path("/var/lib/kvraft-agent")
    runtime: str = ""  # runc where it works, else process
    labels: dict[str, str] = field(default_factory=dict)
    gpu_inventory: str = ""
    rdma_inventory: str = ""
    lease_ttl_s: int = 40
    heartbeat_s: float = 10.0
    lease_loss_grace_s: float = 30.0  # out of touch this long past the TTL: stop the tasks (< 0: never)
    listen_url: str = "http://127.0.0.1:10250"
    advertise_url: str = ""  # what jobctl uses to reach this agent (default: listen-url)
    log_max_bytes: int = 10 * 1024 * 1024
    log_max_files: int = 5
    restart_backoff_s: float = 10.0
    restart_backoff_max_s: float = 300.0
    finished_retention_s: float = 3600.0  # logs of tasks that ended by themselves, after unassignment
    relist_s: float = 1.0
    node_status_s: float = 10.0
    request_timeout_s: float = 5.0
    log_level: str = "info"
    log_format: str = "json"  # json lines (docs/observability.md), console (zap's) or text
    user: str = ""
    password: str = ""
    cacert: str = ""  # TLS to kvraft, as etcdctl: CA bundle, client certificate and key
    cert: str = ""
    key: str = ""
    insecure_skip_tls_verify: bool = False
    tls_cert_file: str = ""  # kubelet's: the endpoint's own certificate and key (an https --listen-url)
    tls_private_key_file: str = ""
    eviction_hard: str = ""  # kubelet's --eviction-hard; signals not named keep kubelet's defaults


def parse_labels(text: str | dict[str, Any] | None) -> dict[str, str]:
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"--labels: {item!r} is not key=value")
        if k.strip() in out:  # (a=1,a=2 kept the last one without a word)
            raise ValueError(f"--labels: label {k.strip()!r} given twice")
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvraft-agent", description="kvraft node agent: registers this machine, runs its tasks")
    p.add_argument("--config", "--config-file", dest="config", help="YAML file with the same settings (flags win)")
    add_cluster_flags(p, 300.0)
    p.add_argument("--name", help="node name (default: the hostname)")
    p.add_argument("--data-dir", help="task state, logs, bundles (default /var/lib/kvraft-agent)")
    p.add_argument("--runtime", choices=["runc", "docker", "process", "fake"], help="default: runc where it works, else process")
    p.add_argument("--labels", help="node labels, e.g. rack=r1,switch=s1")
    p.add_argument("--gpu-inventory", help="fake GPU inventory file (default: nvidia-smi when present)")
    p.add_argument("--rdma-inventory", help="fake RDMA inventory file (default: /sys/class/infiniband)")
    p.add_argument("--lease-ttl-s", type=int, help="node lease TTL (default 40)")
    p.add_argument("--heartbeat-s", type=float, help="lease renewal interval (default 10)")
    p.add_argument("--lease-loss-grace-s", type=float,
                   help="stop this node's tasks when no renewal has succeeded for lease-ttl-s plus this "
                        "(the scheduler may have moved them); negative: never (default 30)")
    p.add_argument("--listen-url", help="the agent's HTTP endpoint (default http://127.0.0.1:10250)")
    p.add_argument("--advertise-url", help="URL other machines use to reach the endpoint (default: listen-url)")
    p.add_argument("--log-max-bytes", type=int, help="task log file size before rotation (default 10 MiB)")
    p.add_argument("--log-max-files", type=int, help="task log files kept (default 5)")
    p.add_argument("--restart-backoff-s", type=float, help="first restart delay, doubling (default 10)")
    p.add_argument("--restart-backoff-max-s", type=float, help="restart delay cap (default 300)")
    p.add_argument("--finished-retention-s", type=float,
                   help="keep the state and logs of a task that finished by itself this long after its "
                        "assignment is removed, for jobctl logs (default 3600)")
    p.add_argument("--relist-s", type=float, help="runtime relist interval (default 1)")
    p.add_argument("--node-status-s", type=float, help="node conditions check interval (default 10)")
    p.add_argument("--request-timeout-s", type=float, help="kvraft request timeout (default 5)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "console", "text"], help="log lines as JSON objects (default), zap's console lines or text")
    p.add_argument("--user", help="kvraft user (auth enabled)")
    p.add_argument("--password", help="kvraft password")
    p.add_argument("--cacert", help="verify kvraft's certificate with this CA bundle (https)")
    p.add_argument("--cert", help="client certificate for kvraft (--client-cert-auth)")
    p.add_argument("--key", help="the client certificate's key")
    p.add_argument("--insecure-skip-tls-verify", action="store_const", const=True, default=None,
                   help="do not verify kvraft's certificate (testing only)")
    p.add_argument("--tls-cert-file", help="the endpoint's certificate (kubelet's flag; with an https --listen-url)")
    p.add_argument("--tls-private-key-file", help="the endpoint certificate's key")
    p.add_argument("--eviction-hard",
                   help="node pressure thresholds, kubelet's syntax: signal<quantity, comma-separated, e.g. "
                        "'nodefs.available<1Gi,nodefs.inodesFree<1%%'; signals not named keep their defaults "
                        f"({DEFAULT_EVICTION_HARD.replace('%', '%%')}); 0 turns one off")
    return p


def _labels(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not k.strip() or not isinstance(v, str | int | float) or isinstance(v, bool):
                raise ValueError(f"--labels: {k!r}: {v!r}: keys must be non-empty strings, values strings or numbers")
        return parse_labels(value)
    if isinstance(value, str):
        return parse_labels(value)
    raise ValueError(f"--labels: must be key=value,... or a mapping, not {value!r}")


def _check(cfg: AgentConfig) -> None:
    check_endpoints("--endpoints", cfg.endpoints)
    check_name("--name", cfg.name)
    if not str(cfg.data_dir).strip():
        raise ValueError("--data-dir: must not be empty")
    if cfg.runtime not in RUNTIMES:
        raise ValueError(f"--runtime: {cfg.runtime!r} is not one of {', '.join(r for r in RUNTIMES if r)}")
    for key in ("rack", "spine"):  # the node record's rack and spine: names the scheduler keys on
        if key in cfg.labels:
            check_name(f"--labels {key}", cfg.labels[key])
    for key, value in cfg.labels.items():  # Kubernetes' label syntax (kubelet --node-labels)
        if (problem := label_problem(key, value)) is not None:
            raise ValueError(f"--labels: {problem}")
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"--log-level: {cfg.log_level!r} is not one of debug, info, warning, error")
    if cfg.log_format not in ("json", "console", "text"):
        raise ValueError(f"--log-format: {cfg.log_format!r} is not one of json, console, text")
    in_range("lease_ttl_s", cfg.lease_ttl_s, 1, MAX_LEASE_TTL_S)
    in_range("heartbeat_s", cfg.heartbeat_s, 0, above=True)
    if cfg.heartbeat_s >= cfg.lease_ttl_s:
        raise ValueError(f"need 0 < heartbeat-s ({cfg.heartbeat_s}) < lease-ttl-s ({cfg.lease_ttl_s})")
    for name in ("relist_s", "node_status_s", "request_timeout_s"):
        in_range(name, getattr(cfg, name), 0, above=True)
    in_range("auto_sync_interval_s", cfg.auto_sync_interval_s, 0, note=" (0: never)")
    in_range("log_max_bytes", cfg.log_max_bytes, 1)
    in_range("log_max_files", cfg.log_max_files, 1)
    in_range("restart_backoff_s", cfg.restart_backoff_s, 0)
    in_range("restart_backoff_max_s", cfg.restart_backoff_max_s, cfg.restart_backoff_s,
             note=" (at least --restart-backoff-s)")
    in_range("finished_retention_s", cfg.finished_retention_s, 0)
    check_url("--listen-url", cfg.listen_url)
    if cfg.advertise_url:
        check_url("--advertise-url", cfg.advertise_url)
    check_tls_files(cfg.cacert, cfg.cert, cfg.key)
    check_serving_tls(cfg.listen_url, cfg.tls_cert_file, cfg.tls_private_key_file)
    parse_eviction_hard(cfg.eviction_hard)


def load_config(argv: list[str] | None = None) -> AgentConfig:
    """Flags over the YAML file over the defaults; every value checked (a ``ValueError`` names
    the flag, the value and what is allowed)."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        for key, value in load_mapping(args.config, "--config").items():
            values[str(key).replace("-", "_")] = value
    for f in fields(AgentConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    known = {f.name for f in fields(AgentConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    defaults = AgentConfig(name="")
    for name, value in list(values.items()):
        if name == "endpoints":
            if isinstance(value, str):
                values[name] = [e.strip() for e in value.split(",") if e.strip()]
            elif isinstance(value, list) and all(isinstance(e, str) for e in value):
                values[name] = [e.strip() for e in value if e.strip()]
            else:
                raise ValueError(f"--endpoints: must be a comma-separated string or a list of strings, not {value!r}")
        elif name == "labels":
            values[name] = _labels(value)
        elif name == "eviction_hard" and isinstance(value, dict):  # kubelet's config file: evictionHard: {signal: qty}
            values[name] = ",".join(f"{k}<{v}" for k, v in value.items())
        elif name == "data_dir":
            values[name] = Path(coerce(name, value, ""))
        else:
            values[name] = coerce(name, value, getattr(defaults, name))
    cfg = AgentConfig(**values)
    _check(cfg)
    cfg.endpoints = discovered_endpoints(cfg.discovery_srv, cfg.discovery_srv_name, cfg.endpoints)
    return cfg
