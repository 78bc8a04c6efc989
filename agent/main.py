"""``kvraft-agent``: parse flags/YAML, run the agent and its HTTP endpoint, stop on SIGTERM.

SIGTERM/SIGINT stop the agent's loops and endpoint; running tasks are left to their
supervisors (a new agent re-attaches), and the lease is not revoked, so a restart within the
TTL keeps the node Ready.

``kvraft-agent reset [NODE...]`` (default: this host's name; ``kubeadm reset`` for the
agent's part): kill whatever is left in the nodes' task cgroups and remove them, for a node
taken out of service for good after its agent and tasks were killed (a running agent removes
its tasks' cgroups itself, and sweeps stale ones when it starts). Its data directory is left.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import time

import yaml

from agent.agent import Agent
from agent.confcheck import check_name
from agent.config import AgentConfig, load_config
from agent.devices import load_gpu_inventory, load_rdma_inventory
from agent.endpoint import serve
from agent.runtime.supervised import node_cgroup_parent, remove_node_cgroups
from kvraft.client.observe import configure_logging

__all__ = ["main", "run"]


def preflight(config: AgentConfig) -> None:
    """What the settings name on this machine: a writable data directory, inventory files
    that load (``ValueError`` naming the flag otherwise)."""
    d = config.data_dir
    if d.exists() and not d.is_dir():
        raise ValueError(f"--data-dir {d}: not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--data-dir {d}: {exc.strerror or exc}") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise ValueError(f"--data-dir {d}: not writable")
    for flag, path, load in (("--gpu-inventory", config.gpu_inventory, load_gpu_inventory),
                             ("--rdma-inventory", config.rdma_inventory, load_rdma_inventory)):
        if path:
            try:
                load(path)
            except (OSError, yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{flag} {path}: {type(exc).__name__}: {exc}") from None


async def run(config: AgentConfig) -> int:
    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner = await serve(agent, config.listen_url)
    except ssl.SSLError as exc:  # (an OSError) a certificate or key that does not load, or do not match
        print(f"kvraft-agent: --tls-cert-file {config.tls_cert_file}, --tls-private-key-file "
              f"{config.tls_private_key_file}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kvraft-agent: --listen-url {config.listen_url}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    await agent.start()
    logging.getLogger("kvraft.agent").info(
        "started", extra={"fields": {"node": config.name, "runtime": agent.runtime.name, "url": config.listen_url,
                                     "endpoints": config.endpoints, "t": time.time()}})
    stopped, failed = asyncio.ensure_future(stop.wait()), asyncio.ensure_future(agent.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    await agent.stop()
    await runner.cleanup()
    if agent.fatal:
        print(f"kvraft-agent: {agent.fatal}", file=sys.stderr)
        return 1
    return 0


def reset(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kvraft-agent reset",
                                description="kill what is left in these nodes' task cgroups and remove them")
    p.add_argument("nodes", nargs="*", help="node names (default: this host's name, the agent's default --name)")
    ns = p.parse_args(argv)
    for node in ns.nodes:  # "" or ".." would name the cgroup of every node, or the one above it
        try:
            check_name("kvraft-agent reset: node name", node)
        except ValueError as exc:
            p.error(str(exc))
    for node in ns.nodes or [socket.gethostname()]:
        removed = remove_node_cgroups(node)
        print(f"{node}: {'removed' if removed else 'nothing left in'} {node_cgroup_parent(node)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reset"]:
        return reset(argv[1:])
    try:
        config = load_config(argv)
        preflight(config)
    except ValueError as exc:
        print(f"kvraft-agent: {exc}", file=sys.stderr)
        return 2
    try:
        configure_logging(config.log_level, config.log_format, static={"node": config.name})
    except ValueError as exc:
        print(f"kvraft-agent: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
