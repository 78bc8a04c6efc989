"""``python -m scheduler.bench --through-kvraft [--json]`` (or ``python -m scheduler.bench_kvraft``): the daemon measured through a real kvraft.

Starts a 3-member kvraft (``python -m kvraft.server.main`` processes on 127.0.0.1), fake
agents registering ``--nodes`` nodes, and two ``kvraft-scheduler`` replicas, then measures:

- ``submit_to_bound``: one 1-GPU job at a time on an idle cluster; from the job's put to its
  binding's arrival on a watch (p50/p99);
- ``single_task``: ``--jobs`` 1-GPU jobs submitted at once; binds per second from the first
  put to the last binding seen, with fake nodes that run their tasks (each task's Running
  status is written, and the scheduler updates the job's status);
- ``gang_8gpu``: ``--gangs`` gangs of 2 x 4 GPUs, likewise;
- ``single_task_bind_only``, ``gang_8gpu_bind_only``: the same two with fake nodes that run
  nothing (kube-scheduler's scheduler_perf measures binding this way: no kubelets);
- ``failover``: SIGKILL the leading scheduler, submit one job, time until it is bound.

Each saturation scenario starts with fresh schedulers (the old ones are stopped, which
resigns, and the bench waits until a new one leads). ``--profile-dir`` runs them under
cProfile.

Every process is stopped by PID at the end. ``--json``: one object per scenario with
``scenario, p50_ms, p99_ms, per_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp

from kvraft.aio import wait_event
from kvraft.client import Client, Op
from kvraft.testing.ports import free_port
from scheduler import keys
from scheduler.jobs import normalize_job

__all__ = ["main"]


def _job(name: str, workers: int, gpus: int) -> bytes:
    doc = {"name": name, "tasks": [{"name": "w", "replicas": workers, "command": ["sleep", "3600"],
                                    "resources": {"gpus": gpus}}]}
    return json.dumps(normalize_job(doc, submitted_at=time.time())).encode()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="sched-bench-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.endpoints: list[str] = []
        self.t0 = time.monotonic()

    def spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.dir, name + ".log"), "wb")  # noqa: SIM115
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        self.procs.append(p)
        return p

    def start_kvraft(self) -> None:
        members = [(f"m{i}", free_port(), free_port()) for i in range(3)]
        cluster = ",".join(f"{n}=http://127.0.0.1:{pp}" for n, _, pp in members)
        for n, cp, pp in members:
            self.spawn([sys.executable, "-m", "kvraft.server.main", "--name", n, "--data-dir", os.path.join(self.dir, n),
                        "--listen-client-urls", f"http://127.0.0.1:{cp}", "--advertise-client-urls", f"http://127.0.0.1:{cp}",
                        "--listen-peer-urls", f"http://127.0.0.1:{pp}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                        "--initial-cluster", cluster, "--initial-cluster-state", "new"], n)
            self.endpoints.append(f"127.0.0.1:{cp}")

    async def start_agent(self, eps: str, *, run: bool) -> subprocess.Popen[bytes]:
        """The fake nodes (one process for all); ``run=False``: they ignore their assignments."""
        agent = self.spawn([sys.executable, "-m", "scheduler.fake_agent", "--endpoints", eps, "--nodes",
                            str(self.args.nodes), "--racks", str(max(1, self.args.nodes // 20)), "--lease-ttl-s", "10",
                            *([] if run else ["--no-run"])], "agent" if run else "agent-no-run")
        assert agent.stdout is not None
        line = await asyncio.to_thread(agent.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"fake agent did not start (see {self.dir})")
        return agent

    def spawn_scheduler(self, name: str, eps: str) -> tuple[subprocess.Popen[bytes], str]:
        url = f"http://127.0.0.1:{free_port()}"
        prof = ["-m", "cProfile", "-o", os.path.join(self.args.profile_dir, f"{name}.prof")] \
            if self.args.profile_dir else []
        proc = self.spawn([sys.executable, *prof, "-m", "scheduler.service", "--endpoints", eps, "--name", name,
                           "--election-ttl-s", str(self.args.ttl_s), "--listen-url", url, "--log-level", "warning"], name)
        return proc, url

    async def start_schedulers(self, scheds: dict[str, tuple[subprocess.Popen[bytes], str]], names: tuple[str, ...],
                               eps: str) -> None:
        """Start the replicas one after the other (the first leads) and wait until it leads."""
        for name in names:
            scheds[name] = self.spawn_scheduler(name, eps)
            await self.leader(scheds)

    async def leader(self, scheds: dict[str, tuple[subprocess.Popen[bytes], str]], timeout_s: float = 120.0) -> str:
        """The replica whose /health says it leads (its informer synced, the core rebuilt)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                for name, (proc, url) in scheds.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"scheduler {name} exited with {proc.returncode}")
                    with contextlib.suppress(aiohttp.ClientError, ValueError):
                        async with http.get(f"{url}/health") as r:
                            if r.status == 200 and (await r.json()).get("leader"):
                                return name
                await asyncio.sleep(0.1)
        raise RuntimeError("no scheduler became leader")

    def emit(self, out: list[dict[str, Any]], row: dict[str, Any]) -> None:
        """Print each scenario as soon as it is measured (a later failure keeps the earlier rows)."""
        out.append(row)
        self.note(f"{row['scenario']} measured")
        print(json.dumps(row) if self.args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def note(self, what: str) -> None:
        print(f"# +{time.monotonic() - self.t0:.1f}s {what}", file=sys.stderr, flush=True)

    async def run(self) -> list[dict[str, Any]]:
        self.t0 = time.monotonic()
        self.start_kvraft()
        eps = ",".join(self.endpoints)
        c = Client(self.endpoints, request_timeout_s=30.0)
        for _ in range(600):  # the members take a few seconds to start and elect
            try:
                await c.open()
                await c.put("/bench/ready", b"1")
                break
            except Exception:
                await c.close()
                c = Client(self.endpoints, request_timeout_s=30.0)
                await asyncio.sleep(0.2)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(c.close)  # already open
            self.note("kvraft ready")
            agent = await self.start_agent(eps, run=True)
            self.note(f"{self.args.nodes} fake nodes registered")
            scheds: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
            await self.start_schedulers(scheds, ("sched-a", "sched-b"), eps)
            self.note("schedulers up")
            bound: dict[str, float] = {}
            arrived = asyncio.Event()
            rev = (await c.get("/bench/ready")).header.revision

            async def follow() -> None:
                async with c.watch(keys.BINDINGS, prefix=True, start_revision=rev + 1, filters=("NODELETE",)) as w:
                    async for resp in w:
                        now = time.perf_counter()
                        for ev in resp.events:
                            bound.setdefault(ev.kv.key.decode()[len(keys.BINDINGS):], now)
                        arrived.set()

            watcher = asyncio.get_running_loop().create_task(follow())
            out: list[dict[str, Any]] = []

            async def wait_bound(names: list[str], timeout_s: float = 300.0) -> None:
                deadline = time.perf_counter() + timeout_s
                while not all(n in bound for n in names):
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{sum(n not in bound for n in names)} job(s) never bound")
                    arrived.clear()
                    await wait_event(arrived, 1.0)

            # 1. submit-to-bound on an idle cluster
            lat = []
            for i in range(self.args.latency_jobs):
                name = f"lat-{i}"
                t0 = time.perf_counter()
                await c.put(keys.job_key(name), _job(name, 1, 1))
                await wait_bound([name])
                lat.append((bound[name] - t0) * 1000)
            self.emit(out, {"scenario": "submit_to_bound", "jobs": len(lat), "p50_ms": round(_pct(lat, 0.5), 1),
                        "p99_ms": round(_pct(lat, 0.99), 1), "per_s": round(1000 / statistics.mean(lat), 1)})
            # 2./3. saturation
            # "_bind_only": the same with fake nodes that run nothing (no task statuses, no
            # Running updates): binding alone, as kube-scheduler's scheduler_perf measures it
            scenarios = [("single_task", 1, 1, self.args.jobs, True), ("gang_8gpu", 2, 4, self.args.gangs, True),
                         ("single_task_bind_only", 1, 1, self.args.jobs, False),
                         ("gang_8gpu_bind_only", 2, 4, self.args.gangs, False)]
            for k, (scenario, workers, gpus, count, run) in enumerate(scenarios):
                names = [f"{scenario}-{i}" for i in range(count)]
                t0 = time.perf_counter()
                for i in range(0, count, 100):
                    await c.txn().then(*(Op.put(keys.job_key(n), _job(n, workers, gpus)) for n in names[i:i + 100])).commit()
                await wait_bound(names)
                span = max(bound[n] for n in names) - t0
                per = [(bound[n] - t0) * 1000 for n in names]
                self.emit(out, {"scenario": scenario, "jobs": count, "p50_ms": round(_pct(per, 0.5), 1),
                            "p99_ms": round(_pct(per, 0.99), 1), "per_s": round(count / span, 1)})
                await c.delete(keys.JOBS, prefix=True)  # the scheduler keeps what is bound; free the cluster:
                await c.delete(keys.BINDINGS, prefix=True)
                await c.delete(keys.ALLOC, prefix=True)
                await c.delete(keys.ASSIGNMENTS, prefix=True)
                for n in names:
                    bound.pop(n, None)
                next_run = scenarios[k + 1][4] if k + 1 < len(scenarios) else True
                if next_run != run:
                    self.terminate(agent)
                    agent = await self.start_agent(eps, run=next_run)
                # fresh schedulers for the next scenario: stop both (SIGTERM resigns, so the next
                # leader is elected at once) and wait until a new one leads
                for name in list(scheds):
                    self.terminate(scheds.pop(name)[0])
                await self.start_schedulers(scheds, (f"{scenario}-a", f"{scenario}-b"), eps)
            # 4. failover: SIGKILL the leader, then one job
            leader = await self.leader(scheds)
            t0 = time.perf_counter()
            scheds.pop(leader)[0].kill()
            await c.put(keys.job_key("after-failover"), _job("after-failover", 1, 1))
            await wait_bound(["after-failover"], 120.0)
            ms = (bound["after-failover"] - t0) * 1000
            self.emit(out, {"scenario": "failover", "lease_ttl_s": self.args.ttl_s, "p50_ms": round(ms, 1), "p99_ms": round(ms, 1),
                        "per_s": 0.0})
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.bench --through-kvraft")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--gangs", type=int, default=500)
    p.add_argument("--latency-jobs", type=int, default=50)
    p.add_argument("--ttl-s", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile-dir", help="run the schedulers under cProfile, one <name>.prof each here "
                                         "(written when a scheduler is stopped, so not for a SIGKILLed leader)")
    args = p.parse_args(argv)
    bench = Bench(args)
    try:
        asyncio.run(bench.run())
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
