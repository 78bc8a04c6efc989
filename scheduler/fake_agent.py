"""A fake node agent for tests and benchmarks: registers nodes and completes tasks.

It writes exactly what ``kvraft-agent`` writes (docs/keyspace.md): the node record at
``/registry/nodes/<node>`` (the ``scheduler.model.Node`` fields at the top level), a heartbeat
at ``/registry/leases/<node>`` attached to a kvraft lease kept alive every TTL/3, and task
statuses at ``/registry/tasks/<job>/<task>/status`` with a txn comparing the assignment's
create revision. Unlike the real agent it shares one lease among all its nodes (so 1,000
nodes cost one keepalive) and runs no process; the task's command says what happens:

- ``["sleep", "S"]``: Running, then Succeeded (exit 0) after S seconds;
- ``["exit", "N"]``: Running, then Failed with exit code N after 0.2 s;
- anything else: Running until the assignment is deleted.

An assignment put again with ``stopping`` (a preemption, an eviction) ends its task at once:
``Failed`` / ``Killed``, as the real agent reports a task it stopped.

``--no-run`` registers the nodes and ignores assignments (no status at all).

Run: ``python -m scheduler.fake_agent --endpoints URL --nodes 4 --gpus-per-node 8 --racks 2``;
it prints ``ready`` once every node is registered. SIGKILL it and its heartbeats expire
after the lease TTL, as a dead machine's would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from kvraft.aio import cancel_and_wait
from kvraft.client import Client, Compare, EndpointError, Op, UnavailableError, WatchCompactedError
from scheduler import keys

__all__ = ["FakeAgent", "FakeNode", "main", "node_record"]


@dataclass(frozen=True, slots=True)
class FakeNode:
    name: str
    gpus: int = 8
    gpu_type: str = "A100"
    rack: str = "rack-0"
    spine: str = "spine-0"
    cpus: int = 64
    memory_mib: int = 512 * 1024


def node_record(n: FakeNode, lease_id: int) -> dict[str, Any]:
    """The agent's node record (agent/node_record.py), with a made-up inventory."""
    conds = [{"type": t, "status": "True" if t in ("Ready", "GPUHealthy") else "False", "message": "",
              "last_transition": time.time()} for t in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "GPUHealthy")]
    return {
        "name": n.name, "gpus": n.gpus, "gpu_type": n.gpu_type, "cpu_milli": n.cpus * 1000, "memory_mib": n.memory_mib,
        "rack": n.rack, "spine": n.spine, "islands": [n.gpus] if n.gpus else [], "labels": {"rack": n.rack},
        "healthy": True,
        "capacity": {"cpus": n.cpus, "memory_mib": n.memory_mib, "gpus": n.gpus, "rdma": 0},
        "gpu_list": [{"index": i, "uuid": f"GPU-fake-{n.name}-{i}", "model": n.gpu_type} for i in range(n.gpus)],
        "gpu_source": "fake", "conditions": conds,
        "agent": {"version": "fake", "url": "", "runtime": "fake", "lease_id": lease_id, "started_at": time.time()},
    }


# what a loaded cluster answers now and then (a leader change, a request timed out, a member
# restarting): the real agent's reconcile loop writes the status again; so does this one
TRANSIENT = (EndpointError, UnavailableError, TimeoutError, OSError)


def _say(what: str, exc: BaseException) -> None:
    sys.stderr.write(f"fake_agent: {what}: {type(exc).__name__}: {exc}; retrying\n")
    sys.stderr.flush()


class FakeAgent:
    def __init__(self, client: Client, nodes: list[FakeNode], *, lease_ttl_s: int = 5, run_tasks: bool = True) -> None:
        self.client = client
        self.run_tasks = run_tasks  # False: nodes only, assignments ignored (scheduler_perf's fake nodes)
        self.nodes = {n.name: n for n in nodes}
        self.lease_ttl_s = lease_ttl_s
        self.lease: Any = None
        self.running: dict[str, asyncio.Task[None]] = {}  # "<node>/<job>/<task>" -> task
        self.started: dict[str, float] = {}
        self.statuses_written = 0
        self.status_retries = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped: dict[str, int] = {}  # key -> the revision whose end was reported for a stop
        self._revisions: dict[str, int] = {}  # key -> the assignment revision its run in ``running`` is for
        self._stops: set[asyncio.Task[bool]] = set()
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.lease = await self.client.lease(self.lease_ttl_s).grant()
        items = list(self.nodes.values())
        for i in range(0, len(items), 50):
            ops = []
            for n in items[i:i + 50]:
                hb = {"holder": n.name, "lease_id": self.lease.id, "ttl_s": self.lease_ttl_s, "acquired_at": time.time()}
                ops.append(Op.put(keys.lease_key(n.name), json.dumps(hb).encode(), lease=self.lease.id))
                ops.append(Op.put(keys.node_key(n.name), json.dumps(node_record(n, self.lease.id)).encode()))
            await self.client.txn().then(*ops).commit()
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch()))
        await self.ready.wait()

    async def stop(self, *, revoke: bool = True) -> None:
        await cancel_and_wait(*self.running.values(), *self._stops, *self._tasks)
        if self.lease is not None:
            await self.lease.close(revoke=revoke)

    async def _watch(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except WatchCompactedError:
                continue
            except TRANSIENT as exc:  # the list failed (the watch itself reconnects)
                _say("listing assignments", exc)
                await asyncio.sleep(0.5)

    async def _list_and_watch(self) -> None:
        """List the assignments (starting what is new, cancelling what is gone), then watch
        from the revision after the list."""
        resp = await self.client.get(keys.ASSIGNMENTS, prefix=True)
        seen = set()
        for kv in resp.kvs:
            seen.add(kv.key.decode())
            self._on_put(kv.key.decode(), kv.create_revision, kv.value)
        for k in [k for k in self.running if keys.ASSIGNMENTS + k not in seen]:
            self.running.pop(k).cancel()
        self.ready.set()
        async with self.client.watch(keys.ASSIGNMENTS, prefix=True, start_revision=resp.header.revision + 1,
                                     reconnect_timeout_s=None) as w:
            async for batch in w:
                for ev in batch.events:
                    key = ev.kv.key.decode()
                    if ev.type == "PUT":
                        self._on_put(key, ev.kv.create_revision, ev.kv.value)
                    else:
                        self._stopped.pop(key[len(keys.ASSIGNMENTS):], None)
                        t = self.running.pop(key[len(keys.ASSIGNMENTS):], None)
                        if t is not None:
                            t.cancel()

    def _on_put(self, key: str, revision: int, value: bytes) -> None:
        rest = key[len(keys.ASSIGNMENTS):]
        parts = rest.split("/")
        if not self.run_tasks or len(parts) != 3 or parts[0] not in self.nodes:
            return
        doc = json.loads(value)
        if doc.get("stopping"):
            t = self.running.pop(rest, None)
            if t is not None:
                t.cancel()
            if self._stopped.get(rest) != revision:
                self._stopped[rest] = revision
                stop = asyncio.get_running_loop().create_task(
                    self._status(parts[0], parts[1], parts[2], revision, "Failed", exit_code=143, signal=15,
                                 reason="Killed", finished_at=time.time()))
                self._stops.add(stop)
                stop.add_done_callback(self._stops.discard)
            return
        if rest in self.running:
            if self._revisions.get(rest) == revision:
                return  # (the same assignment again: a relist)
            # another assignment under the same key (the gang restarted while the watch was
            # away, and a relist shows the new one): the old run's entry stayed, done or not, and
            # skipping on the key alone never started the new one (the job waited for ever)
            self.running.pop(rest).cancel()
        self.started[rest] = time.time()
        self._revisions[rest] = revision
        self.running[rest] = asyncio.get_running_loop().create_task(self._run(parts[0], parts[1], parts[2], revision, doc))

    async def _status(self, node: str, job: str, task: str, revision: int, phase: str, **extra: Any) -> bool:
        """Write the task's status if its assignment is still the one of ``revision``; False
        when it is not. A transient failure is retried (0.2 s, doubling to 2 s) until the
        write is answered: one lost write left the job without a phase for ever (the task's
        run ended with the exception, and the assignment was already taken as running)."""
        doc = {"job": job, "task": task, "node": node, "assignment_revision": revision, "phase": phase, "attempt": 1,
               "updated_at": time.time(), **extra}
        akey = keys.assignment_key(node, f"{job}/{task}")
        delay = 0.2
        while True:
            try:
                resp = await self.client.txn().if_(Compare.create(akey, "=", revision)).then(
                    Op.put(keys.status_key(f"{job}/{task}"), json.dumps(doc).encode())).commit()
                break
            except TRANSIENT as exc:  # the same compare and put again: idempotent
                self.status_retries += 1
                _say(f"writing {phase} for {node}/{job}/{task}", exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        self.statuses_written += 1
        return bool(resp.succeeded)

    async def _run(self, node: str, job: str, task: str, revision: int, doc: dict[str, Any]) -> None:
        command = list((doc.get("spec") or {}).get("command") or [])
        if not await self._status(node, job, task, revision, "Running", started_at=time.time()):
            return
        if command[:1] == ["sleep"] and len(command) > 1:
            await asyncio.sleep(float(command[1]))
            await self._status(node, job, task, revision, "Succeeded", exit_code=0, reason="Completed")
        elif command[:1] == ["exit"] and len(command) > 1:
            await asyncio.sleep(0.2)
            code = int(command[1])
            await self._status(node, job, task, revision, "Succeeded" if code == 0 else "Failed", exit_code=code,
                               reason="Completed" if code == 0 else "Error")


def make_nodes(count: int, gpus: int, racks: int, prefix: str, gpu_type: str, first: int = 0) -> list[FakeNode]:
    per_rack = max(1, -(-count // racks))
    return [FakeNode(f"{prefix}{i}", gpus, gpu_type, f"rack-{(i - first) // per_rack}")
            for i in range(first, first + count)]


async def _amain(args: argparse.Namespace) -> int:
    nodes = make_nodes(args.nodes, args.gpus_per_node, args.racks, args.prefix, args.gpu_type, args.first)
    if args.rack:
        nodes = [FakeNode(n.name, n.gpus, n.gpu_type, args.rack) for n in nodes]
    async with Client(args.endpoints.split(","), request_timeout_s=10.0) as client:
        agent = FakeAgent(client, nodes, lease_ttl_s=args.lease_ttl_s, run_tasks=not args.no_run)
        await agent.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await agent.stop(revoke=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.fake_agent")
    p.add_argument("--endpoints", required=True)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--first", type=int, default=0, help="number of the first node")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--racks", type=int, default=1)
    p.add_argument("--rack", default="", help="put every node in this rack")
    p.add_argument("--prefix", default="node-")
    p.add_argument("--gpu-type", default="A100")
    p.add_argument("--lease-ttl-s", type=int, default=5)
    p.add_argument("--no-run", action="store_true",
                   help="register the nodes but run nothing: assignments get no status (bind-only benchmarks, "
                        "like kube-scheduler's scheduler_perf, whose fake nodes run no kubelet)")
    return asyncio.run(_amain(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
