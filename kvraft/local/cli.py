"""``kvraft-local``: a whole local cluster (members, schedulers, node agents) in the background.

    kvraft-local up [--dir D] [--members 3] [--schedulers 2] [--agents 4] [--gpus-per-agent 4]
                    [--racks 2] [--runtime process] [--lease-ttl-s 10] [--tls]
    kvraft-local status [--dir D] [-o json|table]
    kvraft-local kill-node NAME [--dir D]     # SIGKILL the node's agent and all it started
    kvraft-local start-node NAME [--dir D]    # start its agent again (re-attaches to live tasks)
    kvraft-local down [--dir D]               # stop every process by PID, tasks included
    kvraft-local demo [--dir D] [--job examples/digits-dp.yaml]   # what `make demo` runs

Exit codes: 0 ok, 1 failure (the reason on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvraft.bytecode import compile_packages
from kvraft.local.cluster import (
    MAX_AGENTS,
    ClusterError,
    LocalSpec,
    down,
    kill_node,
    start_node,
    status,
    up,
)

__all__ = ["main"]

DEFAULT_DIR = ".kvraft-local"


def _count(least: int, most: int | None = None) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < least or (most is not None and n > most):
            raise argparse.ArgumentTypeError(f"must be {least} or more, not {n}" if most is None
                                             else f"must be in {least}..{most}, not {n}")
        return n

    return parse


def _node_prefix(text: str) -> str:
    # agents are PREFIX-<i>: a node name in kvraft keys and a directory under <dir>/agents
    if not text or "/" in text or text.startswith(".") or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: must not be empty, start with '.', nor contain '/' or whitespace")
    return text


def _plugin_arg(text: str) -> str:
    name, eq, _ = text.partition("=")
    plugin, dot, arg = name.partition(".")
    if not (eq and dot and plugin and arg):
        raise argparse.ArgumentTypeError(f"{text!r} is not PLUGIN.ARG=JSON")
    return text


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kvraft-local", description="run a local kvraft cluster in the background")
    sub = ap.add_subparsers(dest="verb", required=True)

    def with_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", type=Path, default=Path(DEFAULT_DIR), help=f"state, data and logs (default {DEFAULT_DIR})")

    def with_spec(p: argparse.ArgumentParser) -> None:
        p.add_argument("--members", type=_count(1), default=3)
        p.add_argument("--schedulers", type=_count(0), default=2)
        # agent i listens on 127.0.0.<10+i> (or 10.a.b.<10+i> with netns)
        p.add_argument("--agents", type=_count(1, MAX_AGENTS), default=4)
        p.add_argument("--gpus-per-agent", type=_count(0), default=4, help="fake GPUs per agent")
        p.add_argument("--racks", type=_count(1), default=None,
                       help="at most --agents (default 2, or 1 with one agent)")
        p.add_argument("--runtime", choices=["process", "runc", "docker", "fake"], default="process",
                       help="task runtime of the agents (process works as root without containers)")
        p.add_argument("--lease-ttl-s", type=_count(int(LocalSpec.heartbeat_s) + 1), default=10,
                       help="node lease TTL of the agents (over their heartbeat)")
        p.add_argument("--node-prefix", type=_node_prefix, default="node",
                       help="agents are PREFIX-0.. (use distinct prefixes for clusters side by side)")
        p.add_argument("--network", choices=["auto", "loopback", "netns"], default="auto",
                       help="netns: a network namespace per agent on a bridge (root); loopback: agent i on "
                            "127.0.0.<10+i>; auto (default): netns when root and `ip netns` works (and no --tls)")
        p.add_argument("--plugin-arg", dest="plugin_args", action="append", default=[], metavar="PLUGIN.ARG=JSON",
                       type=_plugin_arg,
                       help="passed to every scheduler (kvraft-scheduler --plugin-arg), e.g. "
                            "elastic.grow_after_s=20 (repeatable)")

    p = sub.add_parser("up", help="start members, schedulers and agents in the background")
    with_dir(p)
    with_spec(p)
    p.add_argument("--tls", action="store_true",
                   help="client and peer mutual TLS (a CA and certificates in <dir>/pki, made by deploy/make-certs.sh); "
                        "clients need --cacert/--cert/--key, printed by up")
    p = sub.add_parser("status", help="endpoints and every process (name, role, pid, URL)")
    with_dir(p)
    p.add_argument("-o", "--output", choices=["json", "table"], default="table")
    p = sub.add_parser("kill-node", help="SIGKILL a node's agent and every process it started")
    with_dir(p)
    p.add_argument("name")
    p = sub.add_parser("start-node", help="start a node's agent again (after kill-node, or an agent killed alone)")
    with_dir(p)
    p.add_argument("name")
    p = sub.add_parser("down", help="stop every process of the cluster by PID")
    with_dir(p)
    p = sub.add_parser("demo", help="up (if needed), submit the data-parallel digits job, follow it")
    with_dir(p)
    with_spec(p)
    p.add_argument("--job", type=Path, default=None, help="job YAML (default examples/digits-dp.yaml)")
    p.add_argument("--timeout-s", type=float, default=600.0)
    return ap


def _network(ns: argparse.Namespace) -> str:
    if ns.network != "auto":
        return str(ns.network)
    if getattr(ns, "tls", False):
        return "loopback"
    from kvraft.local.netns import available

    return "loopback" if available() else "netns"


def _spec(ns: argparse.Namespace) -> LocalSpec:
    return LocalSpec(members=ns.members, schedulers=ns.schedulers, agents=ns.agents, gpus_per_agent=ns.gpus_per_agent,
                     racks=ns.racks if ns.racks is not None else min(2, ns.agents), runtime=ns.runtime,
                     lease_ttl_s=ns.lease_ttl_s, tls=getattr(ns, "tls", False),
                     network=_network(ns), node_prefix=ns.node_prefix, plugin_args=tuple(ns.plugin_args))


def _table(doc: dict[str, object]) -> str:
    rows = [["NAME", "ROLE", "PID", "STATE", "URL"]]
    for p in doc["processes"]:  # type: ignore[attr-defined]
        state = "healthy" if p["healthy"] else ("running" if p["alive"] else "dead")
        rows.append([p["name"] + (f" ({p['rack']})" if p.get("rack") else ""), p["role"], str(p["pid"]), state, p["url"]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return f"endpoints: {','.join(doc['endpoints'])}\n" + "\n".join(lines)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    ns = ap.parse_args(argv)
    if getattr(ns, "racks", None) is not None and ns.racks > ns.agents:
        ap.error(f"argument --racks: {ns.racks} racks for {ns.agents} agents: at most one rack per agent")
    if ns.verb in ("up", "start-node", "demo"):  # (what they start reads bytecode, as installed: kvraft.bytecode)
        compile_packages()
    terminated: list[int] = []
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a service manager, `timeout`, kill) ends up and demo as Ctrl-C does: what
        # they started is stopped; it killed the CLI outright and left the cluster running
        def on_term(signum: int, frame: Any) -> None:
            terminated.append(signum)
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
    try:
        if ns.verb == "up":
            doc = up(ns.dir, _spec(ns))
            print(_table(status(ns.dir)))
            print(f"kvraft-local: up in {doc['dir']}; stop with: kvraft-local down --dir {ns.dir}")
            if doc.get("tls"):
                t = doc["tls"]
                print(f"kvraft-local: TLS on; connect with: kvctl --endpoints {','.join(doc['endpoints'])} "
                      f"--cacert {t['cacert']} --cert {t['cert']} --key {t['key']} ... (jobctl takes the same flags)")
            return 0
        if ns.verb == "status":
            doc = status(ns.dir)
            print(json.dumps(doc, indent=2) if ns.output == "json" else _table(doc))
            return 0
        if ns.verb == "kill-node":
            pids = kill_node(ns.dir, ns.name)
            print(f"kvraft-local: killed node {ns.name}: {len(pids)} processes (SIGKILL): {' '.join(map(str, pids))}")
            return 0
        if ns.verb == "start-node":
            pid = start_node(ns.dir, ns.name)
            print(f"kvraft-local: started the agent of {ns.name}: pid {pid}")
            return 0
        if ns.verb == "down":
            pids = down(ns.dir)
            print(f"kvraft-local: stopped {len(pids)} processes")
            return 0
        if ns.verb == "demo":
            from kvraft.local.demo import run_demo

            return run_demo(ns.dir, _spec(ns), ns.job, ns.timeout_s)
    except ClusterError as exc:
        print(f"kvraft-local: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # up stops what it had started before the interrupt reaches here (each was recorded)
        done = {"up": "; what up had started is stopped", "demo": f"; stop with: kvraft-local down --dir {ns.dir}"}
        how = "terminated" if terminated else "interrupted"
        print(f"kvraft-local: {how}{done.get(ns.verb, '')}", file=sys.stderr)
        return 143 if terminated else 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
