"""``python -m agent.bench --runtime runc|docker|process [--tasks N] [--json]``

Measures, against a real kvraft (a one-member cluster started here on 127.0.0.1 unless
``--endpoints`` is given) and a real ``kvraft-agent`` process:

- **assign -> Running**: from the assignment's put to the agent's ``Running`` status seen by
  a watcher, one task at a time (p50/p99 over ``--tasks``);
- **start-to-exit overhead**: assignment of a trivial task (``true``) to ``Succeeded`` seen;
- **starts per second**: ``--burst`` tasks assigned at once, until all are ``Running``;
- **agent RSS with 100 running tasks** (the agent process only; each task's supervisor is a
  separate process, reported as ``supervisor_rss_mb`` per task);
- **exit codes lost across agent restarts**: ``--restart-tasks`` tasks exiting with distinct
  codes at different times; the agent is SIGKILLed while they run and restarted; every
  status must carry the task's real exit code, attempt 1.

``--json`` prints one object per runtime: ``runtime, tasks, p50_ms, p99_ms, rss_mb`` and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvraft.aio import wait_event
from kvraft.client import Client, ClientError
from kvraft.testing.ports import free_port

__all__ = ["main", "run_bench"]


def start_kvraft(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    log = open(base / "kvraft.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "kvraft.server.main", "--name", "b0", "--data-dir", str(base / "kv"),
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", f"b0={peer}", "--initial-cluster-state", "new",
                             "--initial-cluster-token", "agent-bench"], stdout=log, stderr=log, start_new_session=True)
    return proc, client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else 0.0


class Bench:
    def __init__(self, runtime: str, endpoints: list[str], base: Path, node: str) -> None:
        self.runtime = runtime
        self.endpoints = endpoints
        self.base = base
        self.node = node
        self.agent: subprocess.Popen[bytes] | None = None
        self.seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self.changed = asyncio.Event()

    def start_agent(self) -> None:
        log = open(self.base / "agent.log", "ab")  # noqa: SIM115
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "--endpoints", ",".join(self.endpoints), "--name", self.node,
             "--data-dir", str(self.base / "agent"), "--runtime", self.runtime,
             "--listen-url", f"http://127.0.0.1:{free_port()}", "--log-level", "warning",
             "--restart-backoff-s", "1", "--heartbeat-s", "2", "--lease-ttl-s", "10",
             "--finished-retention-s", "0"],  # wait_idle waits for every attempt to be removed
            stdout=log, stderr=log, start_new_session=True)

    def kill_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGKILL)
            self.agent.wait()
        self.agent = None

    async def watch(self, kv: Client, job: str) -> None:
        async with kv.watch(f"/registry/tasks/{job}/", prefix=True) as w:
            async for resp in w:
                now = time.perf_counter()
                for ev in resp.events:
                    if ev.type == "PUT":
                        self.seen[ev.kv.key.decode()] = (now, json.loads(ev.kv.value))
                self.changed.set()

    async def wait_phase(self, job: str, task: str, phases: tuple[str, ...], timeout_s: float = 120) -> float:
        key = f"/registry/tasks/{job}/{task}/status"
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.seen.get(key)
            if got and got[1]["phase"] in phases:
                return got[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job}/{task} never reached {phases} (last: {got})")
            self.changed.clear()
            await wait_event(self.changed, 1.0)

    async def assign(self, kv: Client, job: str, task: str, spec: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        await kv.put(f"/registry/assignments/{self.node}/{job}/{task}",
                     json.dumps({"job": job, "task": task, "spec": spec}).encode())
        return t0

    async def unassign_all(self, kv: Client, job: str) -> None:
        await kv.delete(f"/registry/assignments/{self.node}/{job}/", prefix=True)

    async def wait_idle(self) -> None:
        """Until the agent has removed every attempt (so phases do not overlap)."""
        deadline = time.monotonic() + 120
        while any((self.base / "agent" / "tasks").glob("*/*/[0-9]*")) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async def run(self, tasks: int, burst: int, restart_tasks: int) -> dict[str, Any]:
        async with Client(self.endpoints, request_timeout_s=30) as kv:
            self.start_agent()
            watchers = [asyncio.get_running_loop().create_task(self.watch(kv, j)) for j in ("lat", "triv", "burst", "rss", "rst")]
            await asyncio.sleep(0.5)
            deadline = time.monotonic() + 60
            while not (await kv.get(f"/registry/leases/{self.node}")).kvs:
                if time.monotonic() > deadline:
                    raise RuntimeError("agent did not register; see agent.log")
                await asyncio.sleep(0.2)
            for i in range(3):  # warm-up (host image, first supervisor)
                await self.assign(kv, "lat", f"warm{i}", {"command": ["sleep", "60"]})
                await self.wait_phase("lat", f"warm{i}", ("Running",))
            latencies = []
            for i in range(tasks):
                t0 = await self.assign(kv, "lat", f"t{i}", {"command": ["sleep", "60"]})
                latencies.append((await self.wait_phase("lat", f"t{i}", ("Running",)) - t0) * 1000)
            await self.unassign_all(kv, "lat")
            await self.wait_idle()
            trivial = []
            for i in range(max(10, tasks // 5)):
                t0 = await self.assign(kv, "triv", f"t{i}", {"command": ["true"]})
                trivial.append((await self.wait_phase("triv", f"t{i}", ("Succeeded", "Failed")) - t0) * 1000)
            await self.unassign_all(kv, "triv")
            await self.wait_idle()
            t0 = time.perf_counter()
            for i in range(burst):
                await self.assign(kv, "burst", f"t{i}", {"command": ["sleep", "60"]})
            for i in range(burst):
                await self.wait_phase("burst", f"t{i}", ("Running",))
            starts_per_s = burst / (time.perf_counter() - t0)
            await self.unassign_all(kv, "burst")
            await self.wait_idle()
            for i in range(100):
                await self.assign(kv, "rss", f"t{i}", {"command": ["sleep", "600"]})
            for i in range(100):
                await self.wait_phase("rss", f"t{i}", ("Running",))
            await asyncio.sleep(2)
            assert self.agent is not None
            agent_rss = rss_mb(self.agent.pid)
            sup_rss = []
            for shim in (self.base / "agent" / "tasks" / "rss").glob("*/1/shim.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    sup_rss.append(rss_mb(json.loads(shim.read_text())["pid"]))
            await self.unassign_all(kv, "rss")
            await self.wait_idle()
            lost = await self.restart_phase(kv, restart_tasks)
            for w in watchers:
                w.cancel()
            self.kill_agent()
        return {
            "runtime": self.runtime, "tasks": tasks,
            "p50_ms": round(pct(latencies, 0.5), 1), "p99_ms": round(pct(latencies, 0.99), 1),
            "mean_ms": round(statistics.fmean(latencies), 1),
            "start_to_exit_p50_ms": round(pct(trivial, 0.5), 1), "start_to_exit_p99_ms": round(pct(trivial, 0.99), 1),
            "burst": burst, "starts_per_s": round(starts_per_s, 1),
            "rss_mb": round(agent_rss, 1), "rss_tasks": 100,
            "supervisor_rss_mb": round(statistics.fmean(sup_rss), 1) if sup_rss else None,
            "restart_tasks": restart_tasks, "exit_codes_lost": lost,
        }

    async def restart_phase(self, kv: Client, n: int) -> int:
        for i in range(n):
            await self.assign(kv, "rst", f"t{i}", {"command": ["sh", "-c", f"sleep {1 + (i % 5) * 0.5}; exit {i % 200 + 1}"]})
        for i in range(n):
            await self.wait_phase("rst", f"t{i}", ("Running", "Failed"))
        self.kill_agent()
        await asyncio.sleep(2.0)  # some tasks end while no agent runs
        self.start_agent()
        lost = 0
        for i in range(n):
            await self.wait_phase("rst", f"t{i}", ("Failed", "Succeeded"))
            doc = self.seen[f"/registry/tasks/rst/t{i}/status"][1]
            if doc.get("exit_code") != i % 200 + 1 or doc.get("attempt") != 1:
                lost += 1
        await self.unassign_all(kv, "rst")
        await self.wait_idle()
        return lost


async def run_bench(runtime: str, tasks: int, burst: int, restart_tasks: int, endpoints: list[str] | None) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix=f"agent-bench-{runtime}-"))
    server = None
    try:
        if not endpoints:
            server, url = start_kvraft(base)
            endpoints = [url]
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with Client(endpoints, request_timeout_s=5) as kv:
                        await kv.put("/bench/ready", b"1")
                    break
                except ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.3)
        bench = Bench(runtime, endpoints, base, f"bench-{runtime}-{os.getpid()}")
        try:
            return await bench.run(tasks, burst, restart_tasks)
        finally:
            bench.kill_agent()
            _kill_tasks(base / "agent")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def _kill_tasks(data_dir: Path) -> None:
    """Leftovers of a failed run: task process groups, and runc containers under the agent's root."""
    root = data_dir / "runc"
    if root.is_dir() and shutil.which("runc"):
        ids = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True).stdout.split()
        for cid in ids:
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
    for shim in data_dir.glob("tasks/*/*/*/started.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.killpg(json.loads(shim.read_text())["pid"], signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", action="append", choices=["runc", "docker", "process"],
                   help="repeatable; default: process and runc")
    p.add_argument("--tasks", type=int, default=50, help="sequential assign->Running samples (default 50)")
    p.add_argument("--burst", type=int, default=50, help="tasks assigned at once for starts/s (default 50)")
    p.add_argument("--restart-tasks", type=int, default=30, help="tasks running across the agent restart (default 30)")
    p.add_argument("--endpoints", help="use this kvraft instead of starting a one-member cluster")
    p.add_argument("--json", action="store_true", help="one JSON object per runtime on stdout")
    args = p.parse_args(argv)
    endpoints = [e for e in (args.endpoints or "").split(",") if e]
    for runtime in args.runtime or ["process", "runc"]:
        result = asyncio.run(run_bench(runtime, args.tasks, args.burst, args.restart_tasks, endpoints))
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"{runtime}: assign->Running p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms; "
                  f"trivial task assign->Succeeded p50 {result['start_to_exit_p50_ms']} ms; "
                  f"{result['starts_per_s']} starts/s ({result['burst']} at once); agent RSS {result['rss_mb']} MB "
                  f"with 100 tasks (+{result['supervisor_rss_mb']} MB per supervisor); "
                  f"exit codes lost across a restart: {result['exit_codes_lost']}/{result['restart_tasks']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
