"""Network faults between members on one machine: iptables rules keyed by process group.

Every member process runs with its own group id (``RobustCluster`` sets it when it starts
the member). The peer transport dials one connection per direction (A sends to B only on
the connection A dialed to B's peer port), so dropping the packets that group A sends to
B's peer port cuts A -> B and nothing else; the other direction is a separate rule.
Symmetric, asymmetric and partial partitions are sets of such one-way cuts. Packet loss
(``lossy``) is a second chain, jumped to from ``INPUT``: iptables' ``statistic`` match drops
packets as they arrive on a member's peer port or come from it.

Only the loopback interface is involved: every cut matches ``-o lo``, a destination port of
one of our members, and the owner group of one of our members; every loss rule ``-i lo`` and
one of our members' ports. The rules live in chains of their own (``KVRAFT-<pid>``, jumped to
from ``OUTPUT``; ``KVRAFT-<pid>-IN``, from ``INPUT``), removed on ``close``.

Needs root and iptables with the ``owner`` match (``available()`` says whether this machine
has them); scenarios that need it are skipped with that reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable

__all__ = ["NetFaults", "available"]


def _iptables() -> str | None:
    return shutil.which("iptables") or (os.path.exists("/usr/sbin/iptables") and "/usr/sbin/iptables" or None)


def available() -> tuple[bool, str]:
    """(usable, why not)."""
    if os.geteuid() != 0:
        return False, "network faults need root (iptables owner match)"
    binary = _iptables()
    if binary is None:
        return False, "iptables is not installed"
    probe = subprocess.run([binary, "-L", "OUTPUT", "-n"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"iptables does not work here: {probe.stderr.strip()[:200]}"
    return True, ""


class NetFaults:
    """One-way cuts between members, by name. ``members`` maps a name to (gid, peer port)."""

    def __init__(self, members: dict[str, tuple[int, int]]) -> None:
        binary = _iptables()
        if binary is None:
            raise RuntimeError("iptables is not installed")
        self._bin = binary
        self.members = dict(members)
        self.chain = f"KVRAFT-{os.getpid()}"  # cuts: what a member sends, by its group id
        self.in_chain = f"KVRAFT-{os.getpid()}-IN"  # loss: what arrives on a peer port
        self.cuts: set[tuple[str, str]] = set()
        self.losses: dict[int, float] = {}  # port -> the chance that a packet to or from it is lost
        self._run("-N", self.chain)
        self._run("-I", "OUTPUT", "-j", self.chain)
        self._open = True
        self._run("-N", self.in_chain)
        self._run("-I", "INPUT", "-j", self.in_chain)

    def _run(self, *args: str) -> None:
        done = subprocess.run([self._bin, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(args)}: {done.stderr.strip()}")

    def _rule(self, src: str, dst: str) -> list[str]:
        gid, _ = self.members[src]
        _, port = self.members[dst]
        return [
            "-o", "lo", "-p", "tcp", "--dport", str(port),
            "-m", "owner", "--gid-owner", str(gid), "-j", "DROP",
        ]  # fmt: skip

    def add_member(self, name: str, gid: int, peer_port: int) -> None:
        self.members[name] = (gid, peer_port)

    # -- cuts -------------------------------------------------------------------------------
    def cut(self, src: str, dst: str) -> None:
        """Drop everything ``src`` sends to ``dst`` (one direction)."""
        if (src, dst) in self.cuts or src == dst:
            return
        self._run("-A", self.chain, *self._rule(src, dst))
        self.cuts.add((src, dst))

    def lossy(self, probability: float, ports: Iterable[int] | None = None) -> None:
        """Every connection to or from one of ``ports`` (by default the members' peer ports:
        every peer connection), both ways, loses each packet with ``probability``, whoever
        dialed it (kvraft's connections are dialed by the sender, etcd's streams by the
        receiver). Dropped on arrival (the ``INPUT`` chain, iptables' ``statistic`` match on
        the ports), as a lossy network drops them: the
        sender's TCP has sent the packet and must find out (duplicate and selective
        acknowledgements, tail loss probes, retransmission timeouts). A drop in ``OUTPUT``
        would not do: the sender's own stack learns of it at once and only retries on a timer.
        A second call adds a second, independent chance."""
        if not 0.0 < probability < 1.0:
            raise ValueError(f"a loss probability is in (0, 1), not {probability}")
        sample = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}"]
        for port in [p for _, p in self.members.values()] if ports is None else ports:
            for direction in ("--dport", "--sport"):
                self._run("-A", self.in_chain, "-i", "lo", "-p", "tcp", direction, str(port), *sample, "-j", "DROP")
            self.losses[port] = 1.0 - (1.0 - self.losses.get(port, 0.0)) * (1.0 - probability)

    def reshape(self, links: Iterable[tuple[str, str]]) -> None:
        """Heal, then cut exactly ``links`` (one-way, (src, dst)): the network's next shape."""
        self.heal()
        for src, dst in links:
            self.cut(src, dst)

    def cut_both(self, a: str, b: str) -> None:
        self.cut(a, b)
        self.cut(b, a)

    def partition(self, *groups: Iterable[str]) -> None:
        """Members talk only inside their group (symmetric). Members not named in any group
        form a group of their own."""
        sides = [set(g) for g in groups]
        rest = set(self.members) - set().union(*sides)
        if rest:
            sides.append(rest)
        for i, side in enumerate(sides):
            for other in sides[i + 1 :]:
                for a in side:
                    for b in other:
                        self.cut_both(a, b)

    def isolate(self, name: str) -> None:
        self.partition([name])

    @property
    def faulty(self) -> bool:
        """Some cut or loss is in place."""
        return bool(self.cuts or self.losses)

    def heal(self) -> None:
        if self.faulty:
            self._run("-F", self.chain)
            self._run("-F", self.in_chain)
            self.cuts.clear()
            self.losses.clear()

    def describe(self) -> str:
        parts = [f"{a}->{b}" for a, b in sorted(self.cuts)]
        parts += [f"port {port} loses {p:.0%}" for port, p in sorted(self.losses.items())]
        return ",".join(parts) or "none"

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for args in (("-D", "OUTPUT", "-j", self.chain), ("-F", self.chain), ("-X", self.chain),
                     ("-D", "INPUT", "-j", self.in_chain), ("-F", self.in_chain), ("-X", self.in_chain)):
            subprocess.run([self._bin, *args], capture_output=True)

    def __enter__(self) -> NetFaults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
