"""Local clusters of real member processes on 127.0.0.1, for the demo, tests and benchmarks.

``LocalCluster(size, base_dir)`` starts kvraft members (``python -m kvraft.server.main``)
or, with ``binary="etcd"``, real etcd members: both take the same flags. Ports are free
ports picked at start; every process is tracked by PID and stopped by PID.

``python -m kvraft.server.local`` starts a 3-member kvraft cluster, writes and reads a few
keys through the JSON API, prints the members and the leader, and stops it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvraft.testing.ports import free_port

__all__ = ["LocalCluster", "ProcessMember", "free_port", "post"]


def post(url: str, path: str, doc: Any, timeout_s: float = 10.0,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST JSON to a member (with ``headers`` besides the content type); returns (HTTP
    status, decoded body or the raw text)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"{url!r}: not a URL with a host")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode("utf-8", "replace")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


@dataclass
class ProcessMember:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    def __init__(
        self,
        size: int,
        base_dir: str | Path | None = None,
        *,
        binary: str = "kvraft",
        token: str = "kvraft-local",
        extra_args: list[str] | None = None,
    ) -> None:
        self.binary = binary
        self.token = token
        self.extra_args = list(extra_args or [])
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"{Path(binary).name}-cluster-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.members: dict[str, ProcessMember] = {}
        for index in range(size):
            self._new_member(f"m{index}")

    def _new_member(self, name: str) -> ProcessMember:
        member = ProcessMember(
            name,
            f"http://127.0.0.1:{free_port()}",
            f"http://127.0.0.1:{free_port()}",
            self.base_dir / f"{name}.data",
            self.base_dir / f"{name}.log",
        )
        self.members[name] = member
        return member

    def command(self, member: ProcessMember, initial_cluster: str, state: str) -> list[str]:
        # "etcd", or a path to an etcd binary (a benchmark's --compare-etcd: before, a path ran kvraft)
        etcd = self.binary == "etcd" or Path(self.binary).name == "etcd"
        program = [shutil.which(self.binary) or self.binary] if etcd else [sys.executable, "-m", "kvraft.server.main"]
        return program + [
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            *self.extra_args,
            *member.extra,
        ]  # fmt: skip

    def initial_cluster(self, names: list[str] | None = None) -> str:
        chosen = names if names is not None else list(self.members)
        return ",".join(f"{n}={self.members[n].peer_url}" for n in chosen)

    # -- processes ----------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> None:
        """Start every member of a new cluster and wait until all serve.

        A free port picked here can be taken by another process (a parallel test) before the
        member binds it: that member exits with "address already in use" while the others
        elect a leader without it. Then the whole new cluster starts again on fresh ports
        (nothing was acknowledged yet); any other early exit is an error."""
        for attempt in range(attempts):
            cluster = self.initial_cluster()
            for member in self.members.values():
                self.start_member(member.name, cluster, "new")
            try:
                self.wait_ready(timeout_s)
            except TimeoutError:
                if not self._port_taken():
                    raise
            dead = [m for m in self.members.values() if not m.alive()]
            if not dead:
                return
            if not self._port_taken() or attempt == attempts - 1:
                raise RuntimeError(f"{', '.join(m.name for m in dead)} exited at start; logs in {self.base_dir}")
            for name in list(self.members):
                self.stop_member(name, signal.SIGKILL)
                member = self.members[name]
                shutil.rmtree(member.data_dir, ignore_errors=True)
                member.log_path.rename(member.log_path.with_suffix(f".log.port-taken-{attempt}"))
                self._new_member(name).extra = member.extra

    def _port_taken(self) -> bool:
        """Whether a member that is not running failed to bind its address."""
        for member in self.members.values():
            if member.alive() or not member.log_path.exists():
                continue
            if b"address already in use" in member.log_path.read_bytes()[-4096:].lower():
                return True
        return False

    def start_member(self, name: str, initial_cluster: str | None = None, state: str = "new") -> None:
        member = self.members[name]
        if member.alive():
            return
        log = open(member.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        member.process = subprocess.Popen(
            self.command(member, initial_cluster or self.initial_cluster(), state),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()

    def add_process(self, name: str) -> ProcessMember:
        """Create (not yet start) a member, e.g. one that will join with
        ``--initial-cluster-state existing`` after ``cluster/member/add``."""
        return self._new_member(name)

    def stop_member(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        member = self.members[name]
        process = member.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout_s)

    def stop(self) -> None:
        for name in list(self.members):
            self.stop_member(name)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ------------------------------------------------------------------------
    def running(self) -> list[ProcessMember]:
        # a copy: tests call this from a writer thread while the main thread adds members
        return [m for m in list(self.members.values()) if m.alive()]

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            code, doc = post(self.members[name].client_url, "/v3/maintenance/status", {}, timeout_s=3.0)
        except OSError:
            return None
        return doc if code == 200 and isinstance(doc, dict) else None

    def leader(self) -> str | None:
        """The name of the member every running member agrees leads, if any."""
        ids = {}
        for member in self.running():
            status = self.status(member.name)
            if status is None or "leader" not in status:
                return None
            ids[member.name] = (status["leader"], status["header"]["member_id"])
        leaders = {leader for leader, _ in ids.values()}
        if len(leaders) != 1:
            return None
        (leader,) = leaders
        for name, (_, member_id) in ids.items():
            if member_id == leader:
                return name
        return None

    def wait_leader(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.2)
        raise TimeoutError(f"no leader after {timeout_s}s; logs in {self.base_dir}")

    def wait_ready(self, timeout_s: float = 60.0) -> str:
        leader = self.wait_leader(timeout_s)
        deadline = time.monotonic() + timeout_s
        for member in self.running():
            while member.alive():  # one that exits is the caller's to see (start() retries)
                try:
                    code, _ = post(member.client_url, "/v3/kv/range", {"key": b64("ready")}, timeout_s=3.0)
                    if code == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{member.name} not serving; logs in {self.base_dir}")
                time.sleep(0.2)
        return leader

    def url(self, name: str) -> str:
        return self.members[name].client_url


def demo() -> int:
    with LocalCluster(3) as cluster:
        print(f"starting 3 kvraft members under {cluster.base_dir}")
        cluster.start()
        for member in cluster.members.values():
            print(f"  {member.name}: pid {member.pid}, client {member.client_url}, peer {member.peer_url}")
        urls = [m.client_url for m in cluster.members.values()]
        for index, url in enumerate(urls):
            code, doc = post(url, "/v3/kv/put", {"key": b64(f"demo/{index}"), "value": b64(f"hello from member {index}")})
            print(f"put demo/{index} via {url}: HTTP {code}, revision {doc['header']['revision']}")
        code, doc = post(urls[0], "/v3/kv/range", {"key": b64("demo/"), "range_end": b64("demo0")})
        for kv in doc.get("kvs", []):
            print(f"  {base64.b64decode(kv['key']).decode()} = {base64.b64decode(kv['value']).decode()}")
        code, doc = post(urls[2], "/v3/cluster/member/list", {})
        leader = cluster.leader()
        print("members:")
        for member in doc["members"]:
            print(f"  {member['ID']} {member.get('name', '?')} peer={member['peerURLs']} client={member.get('clientURLs')}")
        print(f"leader: {leader}")
    print("stopped every member")
    return 0


if __name__ == "__main__":
    sys.exit(demo())
