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

import yaml

__all__ = ["AgentConfig", "build_parser", "load_config", "parse_labels"]


@dataclass
class AgentConfig:
    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
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
    log_format: str = "json"  # json lines (docs/observability.md) or text
    user: str = ""
    password: str = ""
    cacert: str = ""  # TLS to kvraft, as etcdctl: CA bundle, client certificate and key
    cert: str = ""
    key: str = ""
    insecure_skip_tls_verify: bool = False


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
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvraft-agent", description="kvraft node agent: registers this machine, runs its tasks")
    p.add_argument("--config", help="YAML file with the same settings (flags win)")
    p.add_argument("--endpoints", help="kvraft client URLs, comma-separated (default 127.0.0.1:2379)")
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
    p.add_argument("--log-format", choices=["json", "text"], help="log lines as JSON objects (default) or text")
    p.add_argument("--user", help="kvraft user (auth enabled)")
    p.add_argument("--password", help="kvraft password")
    p.add_argument("--cacert", help="verify kvraft's certificate with this CA bundle (https)")
    p.add_argument("--cert", help="client certificate for kvraft (--client-cert-auth)")
    p.add_argument("--key", help="the client certificate's key")
    p.add_argument("--insecure-skip-tls-verify", action="store_const", const=True, default=None,
                   help="do not verify kvraft's certificate (testing only)")
    return p


def load_config(argv: list[str] | None = None) -> AgentConfig:
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        doc = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{args.config}: must be a mapping")
        values.update({str(k).replace("-", "_"): v for k, v in doc.items()})
    for f in fields(AgentConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    known = {f.name for f in fields(AgentConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    if isinstance(values.get("endpoints"), str):
        values["endpoints"] = [e.strip() for e in values["endpoints"].split(",") if e.strip()]
    if "labels" in values:
        values["labels"] = parse_labels(values["labels"])
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    cfg = AgentConfig(**values)
    if cfg.log_format not in ("json", "text"):
        raise ValueError(f"log-format must be json or text, not {cfg.log_format!r}")
    if cfg.heartbeat_s <= 0 or cfg.lease_ttl_s <= 0 or cfg.heartbeat_s >= cfg.lease_ttl_s:
        raise ValueError(f"need 0 < heartbeat-s ({cfg.heartbeat_s}) < lease-ttl-s ({cfg.lease_ttl_s})")
    return cfg
