"""One network namespace per agent on a bridge (``kvraft-local up --network netns``, root).

For a cluster directory the plan is fixed by a hash of its path, so clusters side by side
get distinct names and subnets: bridge ``kvl<h>`` with ``10.<a>.<b>.1/24`` on the host side
(members, schedulers and the dashboard listen there), namespace ``kvl<h>-<i>`` for agent
``i`` with a veth pair and ``10.<a>.<b>.<10+i>``. Ranks of different agents then talk over
real interfaces and a bridge, as between machines.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NetPlan", "available", "plan", "setup", "teardown"]


@dataclass(frozen=True)
class NetPlan:
    bridge: str
    subnet: str  # "10.a.b"
    namespaces: tuple[str, ...]

    @property
    def host_address(self) -> str:
        return f"{self.subnet}.1"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    def exec_prefix(self, i: int) -> list[str]:
        # nsenter switches only the network namespace; `ip netns exec` also remounts /sys,
        # which hides the cgroup tree from the agent (its tasks then could not get limits)
        return ["nsenter", f"--net=/run/netns/{self.namespaces[i]}", "--"]


def plan(directory: Path, agents: int) -> NetPlan:
    digest = hashlib.sha256(str(directory.resolve()).encode()).digest()
    tag = digest[:3].hex()
    subnet = f"10.{200 + digest[3] % 50}.{digest[4]}"
    return NetPlan(f"kvl{tag}", subnet, tuple(f"kvl{tag}-{i}" for i in range(agents)))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str:
    """"" when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"kvlprobe{os.getpid()}"
    try:
        r = _ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            return f"ip netns add failed: {r.stderr.strip()}"
        r = _ip("link", "add", probe[:15], "type", "bridge", check=False)
        if r.returncode != 0:
            return f"cannot create a bridge: {r.stderr.strip()}"
        _ip("link", "del", probe[:15], check=False)
        return ""
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        _ip("netns", "del", probe, check=False)


def setup(p: NetPlan) -> None:
    teardown(p)
    _ip("link", "add", p.bridge, "type", "bridge")
    _ip("addr", "add", f"{p.host_address}/24", "dev", p.bridge)
    _ip("link", "set", p.bridge, "up")
    for i, ns in enumerate(p.namespaces):
        host_end, ns_end = f"{p.bridge}h{i}", f"{p.bridge}n{i}"
        _ip("netns", "add", ns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", ns)
        _ip("link", "set", host_end, "master", p.bridge)
        _ip("link", "set", host_end, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{p.address(i)}/24", "dev", ns_end)
        _ip("netns", "exec", ns, "ip", "link", "set", ns_end, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")


def teardown(p: NetPlan) -> None:
    for ns in p.namespaces:
        _ip("netns", "del", ns, check=False)  # takes its veth ends with it
    _ip("link", "del", p.bridge, check=False)
