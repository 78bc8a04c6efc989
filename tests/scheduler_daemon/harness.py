"""Real processes on 127.0.0.1: a kvraft cluster (kvraft.server.local.LocalCluster), one or
two ``kvraft-scheduler`` daemons, and fake agents (``python -m scheduler.fake_agent``).
Every process is stopped by PID in teardown."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvraft.client import SyncClient
from kvraft.server.local import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]
PY = sys.executable


def wait_for(cond: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_member_at(base: Path, client_port: int, peer_port: int) -> subprocess.Popen[bytes]:
    """One kvraft member on ports chosen before it starts (a daemon started first waits for
    it there); its log in ``base/member.log``."""
    with open(base / "member.log", "wb") as log:
        return subprocess.Popen(
            [PY, "-m", "kvraft.server.main", "--name", "m0", "--data-dir", str(base / "m0"),
             "--listen-client-urls", f"http://127.0.0.1:{client_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"m0=http://127.0.0.1:{peer_port}"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=log)


class Procs:
    def __init__(self, base: Path, endpoints: list[str]) -> None:
        self.base = base
        self.endpoints = endpoints
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], ready_line: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE if ready_line else log, stderr=log,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.procs[name] = p
        if ready_line:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == b"ready", f"{name} did not start: {(self.base / f'{name}.log').read_text()[-2000:]}"
        return p

    def scheduler(self, name: str, *extra: str, ttl_s: int = 3) -> str:
        port = free_port()
        self.start(name, [PY, "-m", "scheduler.service", "--endpoints", ",".join(self.endpoints), "--name", name,
                          "--listen-url", f"http://127.0.0.1:{port}", "--election-ttl-s", str(ttl_s),
                          "--cycle-interval-s", "0.5", *extra])
        return f"http://127.0.0.1:{port}"

    def agent(self, name: str, *extra: str) -> None:
        self.start(name, [PY, "-m", "scheduler.fake_agent", "--endpoints", ",".join(self.endpoints),
                          "--lease-ttl-s", "3", *extra], ready_line=True)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        p = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)
        return p.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            p = self.procs.pop(name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(3, tmp_path_factory.mktemp("kv"), extra_args=FAST_FLAGS)
    try:
        cluster.start(timeout_s=120)
        yield cluster
    finally:
        cluster.stop()


def endpoints(cluster: LocalCluster) -> list[str]:
    return [m.client_url for m in cluster.members.values()]


@pytest.fixture
def procs(cluster3: LocalCluster, tmp_path: Path) -> Iterator[Procs]:
    eps = endpoints(cluster3)
    with SyncClient(eps, request_timeout_s=15.0) as c:
        c.delete("/registry/", prefix=True)  # a clean keyspace per test (scheduler keys only)
    p = Procs(tmp_path, eps)
    try:
        yield p
    finally:
        p.stop_all()


def jobctl(eps: list[str], *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run jobctl in a subprocess (as a user would)."""
    r = subprocess.run([PY, "-m", "scheduler.cli.main", "--endpoints", ",".join(eps), *args], cwd=ROOT,
                       input=stdin, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return r.returncode, r.stdout, r.stderr


def job(eps: list[str], name: str) -> dict[str, Any] | None:
    rc, out, _ = jobctl(eps, "get", "job", name, "-o", "json")
    return json.loads(out) if rc == 0 else None


def phase(eps: list[str], name: str) -> str:
    j = job(eps, name)
    return j["status"]["phase"] if j else ""


def no_double_allocation(eps: list[str]) -> None:
    """Every GPU of a node is held by at most one job, and alloc agrees with the bindings."""
    with SyncClient(eps, request_timeout_s=15.0) as c:
        resp = c.get("/registry/", prefix=True)
    alloc: dict[str, dict[str, Any]] = {}
    bindings: dict[str, dict[str, Any]] = {}
    for kv in resp.kvs:
        k = kv.key.decode(errors="replace")  # a test may have written a key that is not UTF-8
        if k.startswith("/registry/alloc/"):
            alloc[k.rsplit("/", 1)[1]] = json.loads(kv.value)["jobs"]
        elif k.startswith("/registry/bindings/"):
            bindings[k.rsplit("/", 1)[1]] = json.loads(kv.value)
    for node, jobs in alloc.items():
        used: list[int] = []
        for g in jobs.values():
            used += g["gpus"]
        assert len(used) == len(set(used)), f"{node}: a GPU given twice: {jobs}"
    from_bindings: dict[tuple[str, str], list[int]] = {}
    for name, b in bindings.items():
        for t in b["tasks"]:
            from_bindings.setdefault((t["node"], name), []).extend(t["gpus"])
    for (node, name), gpus in from_bindings.items():
        assert sorted(alloc[node][name]["gpus"]) == sorted(gpus), (node, name)
    assert {(n, j) for n, js in alloc.items() for j in js} == set(from_bindings)


def write_yaml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


__all__ = ["Procs", "endpoints", "io", "job", "jobctl", "no_double_allocation", "phase", "wait_for", "write_yaml"]
