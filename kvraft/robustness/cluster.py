"""``RobustCluster``: a local cluster of member processes that faults can be injected into.

On top of ``kvraft.server.local.LocalCluster``: each member runs with its own group id (so
``NetFaults`` can cut its traffic), and the cluster can SIGKILL, SIGSTOP/SIGCONT and restart
members, add and remove members through the API, and wait for every member to converge
(same applied revision, same ``hashkv``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvraft.server.local import LocalCluster, ProcessMember, b64, post

__all__ = ["FAKETIME_LIB", "GID_BASE", "RobustCluster", "faketime_env"]

GID_BASE = 47_000
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"  # Debian's libfaketime


def faketime_env(offset_file: Path) -> dict[str, str]:
    """The environment that runs a process under libfaketime with the wall-clock offset in
    ``offset_file`` (re-read on every call) and the monotonic clock left alone.

    ``FAKETIME_FORCE_MONOTONIC_FIX=0``: libfaketime 0.9.10 turns its "monotonic fix" on by
    itself on a recent glibc, and with it a ``pthread_cond_timedwait`` on a condition
    variable of CLOCK_MONOTONIC (CPython's GIL) no longer times out properly: a thread
    waiting for the GIL while another runs Python code starves. A member's Raft-log
    writer thread then waited 0.3-1 s per write behind a busy event loop, which made the
    skewed member too slow to win a leadership transfer (seed 3025 of
    ``lease-leader-clock-jump``, docs/robustness.md) and to keep leading under load.
    ``tests/robustness/test_faketime.py`` checks such a wait under this environment."""
    return {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    }


class RobustCluster(LocalCluster):
    def __init__(self, size: int, base_dir: str, *, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 binary: str = "kvraft") -> None:
        super().__init__(size, base_dir, binary=binary, token=f"robust-{os.getpid()}", extra_args=extra_args)
        self.env = dict(env or {})
        self.member_env: dict[str, dict[str, str]] = {}  # per member, on top of ``env``
        self.gids: dict[str, int] = {}
        self.paused: set[str] = set()
        self.states: dict[str, str] = {}  # name -> --initial-cluster-state it was started with
        self.member_initial_cluster: dict[str, str] = {}  # members added at runtime
        for name in self.members:
            self._gid(name)

    def _gid(self, name: str) -> int:
        if name not in self.gids:
            self.gids[name] = GID_BASE + len(self.gids)
        return self.gids[name]

    def peer_port(self, name: str) -> int:
        port = urlsplit(self.members[name].peer_url).port
        assert port is not None
        return port

    def client_port(self, name: str) -> int:
        port = urlsplit(self.members[name].client_url).port
        assert port is not None
        return port

    def start_member(self, name: str, initial_cluster: str | None = None, state: str = "new") -> None:
        member = self.members[name]
        if member.alive():
            return
        gid = self._gid(name)
        log = open(member.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env, **self.member_env.get(name, {}))
        can_setgid = os.geteuid() == 0

        def become_group() -> None:
            if can_setgid:
                os.setgroups([gid])
                os.setgid(gid)

        command = self.command(member, initial_cluster or self.initial_cluster(), state)
        with open(self.base_dir / f"{name}.cmd", "a") as record:  # to restart a kept run's members by hand
            record.write(" ".join(command) + "\n")
        member.process = subprocess.Popen(
            command,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=become_group,  # noqa: PLW1509 - no threads hold locks the child needs
        )  # fmt: skip
        log.close()
        self.states[name] = state

    # -- faults ------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        member = self.members[name]
        if member.process is not None and member.process.poll() is None:
            if name in self.paused:
                os.kill(member.process.pid, signal.SIGCONT)
                self.paused.discard(name)
            os.kill(member.process.pid, signal.SIGKILL)
            member.process.wait(30)

    def restart(self, name: str) -> None:
        self.start_member(name, self.member_initial_cluster.get(name), self.states.get(name, "new"))

    def pause(self, name: str) -> None:
        member = self.members[name]
        if member.alive() and name not in self.paused:
            assert member.process is not None
            os.kill(member.process.pid, signal.SIGSTOP)
            self.paused.add(name)

    def resume(self, name: str) -> None:
        member = self.members[name]
        if name in self.paused and member.process is not None:
            os.kill(member.process.pid, signal.SIGCONT)
        self.paused.discard(name)

    def resume_all(self) -> None:
        for name in list(self.paused):
            self.resume(name)

    def skew_clock(self, name: str) -> Path:
        """Start ``name`` (call before it starts) under libfaketime with a wall-clock offset
        read from the returned file on every call (``+90s``, ``-90s``, ``+0``). The
        monotonic clock is left alone: it is what Raft's ticks and the leases use, and a
        real NTP step does not move it either."""
        offset = self.base_dir / f"{name}.faketime"
        offset.write_text("+0\n")
        self.member_env[name] = faketime_env(offset)
        return offset

    def arm(self, name: str, failpoint: str, action: str) -> None:
        """``PUT /debug/failpoints/NAME`` on a member started with ``KVRAFT_FAILPOINTS``."""
        request = urllib.request.Request(
            f"{self.url(name)}/debug/failpoints/{failpoint}", data=action.encode(), method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 204:
                raise RuntimeError(f"arming {failpoint}={action} on {name}: HTTP {resp.status}")

    def compact(self, name: str, keep: int, record: dict[str, Any]) -> None:
        """Compact through ``name`` at ``keep`` revisions below its current one; ``record``
        gets the revision (before the request is sent) and ``ok`` (True, False with the
        error, or left None when the outcome is unknown)."""
        code, doc = post(self.url(name), "/v3/kv/range", {"key": b64("\0"), "limit": 1}, timeout_s=10.0)
        if code != 200:
            raise RuntimeError(f"range through {name}: HTTP {code} {doc}")
        record["revision"] = max(1, int(doc["header"]["revision"]) - keep)
        record["call"] = time.monotonic()
        code, doc = post(self.url(name), "/v3/kv/compaction", {"revision": str(record["revision"])}, timeout_s=10.0)
        record["ret"] = time.monotonic()
        record["ok"] = code == 200
        if code != 200:
            record["error"] = str(doc)[:200]

    # -- membership ----------------------------------------------------------------------------
    def member_ids(self, via: str | None = None) -> dict[str, int]:
        """name -> member id, from ``member/list`` through any serving member."""
        for name in [via] if via else [m.name for m in self.running()]:
            try:
                code, doc = post(self.members[name].client_url, "/v3/cluster/member/list", {}, timeout_s=5.0)
            except OSError:
                continue
            if code == 200:
                return {m["name"]: int(m["ID"]) for m in doc.get("members", []) if m.get("name")}
        return {}

    def add_member(self, name: str, timeout_s: float = 60.0) -> ProcessMember:
        """``member/add`` through the leader, then start the new process with state
        ``existing`` and the initial cluster the answer implies."""
        member = self.add_process(name)
        self._gid(name)
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                try:
                    code, doc = post(self.url(leader), "/v3/cluster/member/add", {"peerURLs": [member.peer_url]}, timeout_s=10.0)
                except OSError as exc:
                    last = exc
                else:
                    if code == 200:
                        names = []
                        for m in doc["members"]:
                            found = [n for n, pm in self.members.items() if m["peerURLs"] and pm.peer_url == m["peerURLs"][0]]
                            names.extend(found)
                        cluster = ",".join(f"{n}={self.members[n].peer_url}" for n in names)
                        self.member_initial_cluster[name] = cluster
                        self.start_member(name, cluster, "existing")
                        return member
                    last = doc
            time.sleep(0.5)
        raise TimeoutError(f"member add {name} failed: {last}")

    def move_leader(self, target: str, timeout_s: float = 60.0) -> None:
        """Make ``target`` the leader (``maintenance/transfer-leadership`` through the
        current leader, repeated until every member agrees)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader == target:
                return
            ids = self.member_ids(leader) if leader else {}
            if leader is not None and target in ids:
                try:
                    code, doc = post(self.url(leader), "/v3/maintenance/transfer-leadership", {"targetID": str(ids[target])}, timeout_s=10.0)
                    last = None if code == 200 else doc
                except OSError as exc:
                    last = exc
            time.sleep(0.5)
        raise TimeoutError(f"leadership did not move to {target} in {timeout_s:g} s: {last}")

    def remove_member(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            leader = self.leader()
            ids = self.member_ids(leader) if leader else {}
            if leader is not None and name in ids:
                try:
                    code, doc = post(self.url(leader), "/v3/cluster/member/remove", {"ID": str(ids[name])}, timeout_s=10.0)
                except OSError as exc:
                    last = exc
                else:
                    if code == 200:
                        return
                    last = doc
            elif leader is not None and ids and name not in ids:
                return
            time.sleep(0.5)
        raise TimeoutError(f"member remove {name} failed: {last}")

    # -- convergence ----------------------------------------------------------------------------
    def converged(self, names: list[str]) -> tuple[bool, str]:
        """Every named member at the same revision with the same ``hashkv``."""
        seen: dict[str, tuple[int, int]] = {}
        for name in names:
            try:
                code, doc = post(self.url(name), "/v3/maintenance/hashkv", {"revision": "0"}, timeout_s=5.0)
            except OSError as exc:
                return False, f"{name}: {exc}"
            if code != 200:
                return False, f"{name}: HTTP {code} {doc}"
            seen[name] = (int(doc["header"].get("revision", 0)), int(doc.get("hash", 0)))
        revisions = {rev for rev, _ in seen.values()}
        hashes = {h for _, h in seen.values()}
        if len(revisions) == 1 and len(hashes) == 1:
            return True, f"revision {revisions.pop()} hash {hashes.pop()}"
        return False, " ".join(f"{n}=rev{r}/hash{h}" for n, (r, h) in sorted(seen.items()))

    def wait_converged(self, names: list[str], timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        why = ""
        while time.monotonic() < deadline:
            ok, why = self.converged(names)
            if ok:
                return why
            time.sleep(0.5)
        raise AssertionError(f"members did not converge in {timeout_s:g} s: {why}")
