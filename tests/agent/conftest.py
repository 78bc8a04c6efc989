"""Fixtures for the agent suite: a real kvraft cluster (processes on 127.0.0.1, free ports),
``kvraft-agent`` processes, and helpers to assign tasks and read statuses.

Every process started here (kvraft members, agents) is stopped by PID in teardown; task
processes and supervisors are killed by PID through the state directories the agents leave
(``kill_task_processes``), and runc containers/cgroups of the test's node names are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvraft.client import Client
from kvraft.local.cluster import LOCAL_EVICTION_HARD as TEST_EVICTION_HARD
from kvraft.server.local import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def kill_task_processes(data_dir: Path) -> None:
    """SIGKILL every supervisor and task recorded under an agent data dir (by PID, checked
    against the recorded start time), then delete runc containers under its private root."""
    from agent.runtime.supervised import pid_alive, read_json

    zygote = read_json(data_dir / "zygote.pid")  # the supervisors' fork server
    if pid_alive(zygote):
        assert zygote is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(zygote["pid"]), signal.SIGKILL)
    for name in ("shim.json", "started.json"):
        for f in data_dir.glob(f"tasks/*/*/*/{name}"):
            doc = read_json(f)
            if pid_alive(doc):
                assert doc is not None
                try:
                    if name == "started.json":
                        os.killpg(int(doc["pid"]), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(doc["pid"]), signal.SIGKILL)
    root = data_dir / "runc"
    if root.is_dir() and shutil.which("runc"):
        out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
        for cid in out.stdout.split():
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
    from agent.runtime.cgroups import CgroupLayout

    layout = CgroupLayout.detect()
    for f in data_dir.glob("tasks/*/*/*/handle.json"):
        doc = read_json(f)
        if doc and layout.usable:
            for parent in ("kvraft-agent",):
                base = Path("/sys/fs/cgroup/memory") / parent
                for d in base.glob(f"*/{doc['id']}"):
                    layout.kill_and_remove(str(d.relative_to(Path("/sys/fs/cgroup/memory"))))


def remove_node_cgroups(node: str) -> None:
    """The per-node cgroup parents a test agent (or runtime) created, with anything left in them
    (``kvraft-agent reset``)."""
    from agent.runtime.supervised import remove_node_cgroups as reset

    reset(node)


@pytest.fixture(scope="module")
def kvraft_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(1, tmp_path_factory.mktemp("kv"), extra_args=FAST_FLAGS)
    try:
        cluster.start(timeout_s=90)
        yield cluster
    finally:
        cluster.stop()


def endpoints(cluster: LocalCluster) -> list[str]:
    return [m.client_url for m in cluster.members.values()]


class AgentProcess:
    """A ``kvraft-agent`` subprocess (``python -m agent``)."""

    def __init__(self, cluster: LocalCluster, base: Path, name: str, runtime: str, *extra: str) -> None:
        self.cluster = cluster
        self.name = name
        self.data_dir = base / f"agent-{name}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runtime = runtime
        self.extra = list(extra)
        self.log_path = base / f"agent-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "agent", "--endpoints", ",".join(endpoints(self.cluster)),
                "--name", self.name, "--data-dir", str(self.data_dir), "--runtime", self.runtime,
                "--listen-url", self.url, "--lease-ttl-s", "4", "--heartbeat-s", "1",
                "--restart-backoff-s", "0.3", "--relist-s", "0.5", "--node-status-s", "1",
                "--request-timeout-s", "10", "--log-level", "info", "--eviction-hard", TEST_EVICTION_HARD, *self.extra]

    def start(self) -> AgentProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=ROOT, start_new_session=True)
        log.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def teardown(self) -> None:
        self.kill()
        kill_task_processes(self.data_dir)
        remove_node_cgroups(self.name)


@pytest.fixture
def agents(kvraft_cluster: LocalCluster, tmp_path: Path) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def make(name: str, runtime: str = "process", *extra: str) -> AgentProcess:
        a = AgentProcess(kvraft_cluster, tmp_path, name, runtime, *extra)
        started.append(a)
        return a

    yield make
    for a in started:
        a.teardown()


@pytest.fixture
async def kv(kvraft_cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(endpoints(kvraft_cluster), request_timeout_s=15.0, dial_timeout_s=5.0) as c:
        yield c


async def assign(kv: Client, node: str, job: str, task: str, spec: dict[str, Any]) -> int:
    resp = await kv.put(f"/registry/assignments/{node}/{job}/{task}",
                        json.dumps({"job": job, "task": task, "node": node, "spec": spec}).encode())
    return resp.header.revision


async def unassign(kv: Client, node: str, job: str, task: str) -> None:
    await kv.delete(f"/registry/assignments/{node}/{job}/{task}")


async def status(kv: Client, job: str, task: str) -> dict[str, Any] | None:
    resp = await kv.get(f"/registry/tasks/{job}/{task}/status")
    try:
        doc = json.loads(resp.kvs[0].value) if resp.kvs else None
    except ValueError:  # a test wrote something else there
        return None
    return doc if isinstance(doc, dict) else None


async def wait_for(predicate: Any, timeout_s: float = 60.0, what: str = "condition", agent: AgentProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = ("\nagent log tail:\n" + agent.log_text()[-3000:]) if agent else ""
            raise AssertionError(f"timed out waiting for {what}{extra}")
        await asyncio.sleep(0.1)


async def wait_status(kv: Client, job: str, task: str, *phases: str, timeout_s: float = 60.0,
                      agent: AgentProcess | None = None, attempt: int | None = None) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        s = await status(kv, job, task)
        if s and s["phase"] in phases and (attempt is None or s["attempt"] == attempt):
            return s
        return None

    return await wait_for(check, timeout_s, f"{job}/{task} in {phases}", agent)


# --- the runtime tests' fixtures (tests/agent/runtime_helpers.py has their helpers) ----------
@pytest.fixture(params=["process", "runc"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    from tests.agent.runtime_helpers import CG_NODE, NODE

    d = tmp_path / "agent"
    yield d
    kill_task_processes(d)
    for node in (NODE, CG_NODE):  # the nodes make_runtime is given here
        remove_node_cgroups(node)
