"""``python -m kvraft.bench cluster-load``: thousands of simulated node agents and a binding
scheduler against a 3-member cluster, step by step, kvraft and etcd side by side.

Each simulated agent does what ``kvraft-agent`` does to the store (docs/keyspace.md):
registers its node under a 40 s lease (``lease/grant``, then ``put /registry/nodes/<node>``
with the lease), holds a watch on its own assignments (``/registry/assignments/<node>/``,
one HTTP watch stream per agent, as real agents have), and every 10 s keeps the lease
alive and writes its node status. Agents are spread over all members, as real ones are.
A scheduler-like binder creates assignments with txns (``create_revision == 0`` then
``put``) at ``--bind-rate`` per second on random registered nodes; the time from a bind's
response to the event on that node's watch is the watch lag.

Steps of agent counts (``--steps``, default 500,1000,2000,5000,7500,10000): agents are
added until the count is reached and registered, then the load runs for
``--step-seconds`` and is measured (new agents join at 100 per second, as nodes of a
growing cluster would, not all in one instant; one whose registration fails tries again,
200 ms -> 7 s, as the real agent): per-verb p50/p99 and errors, watch lag p50/p99 and
binds whose event never came, leases lost (a keepalive answered without a TTL), every
member's CPU and RSS, and the load generator's own CPU. A step holds when every p99 < 1 s,
the watch-lag p99 < 1 s and nothing failed; stepping stops at the first step that does not
hold (``--all-steps`` runs them all). ``--compare-etcd /usr/bin/etcd`` runs the same steps
against etcd (3.4, through the same v3 JSON gateway) in the same invocation.

Each agent has its own keep-alive connection to its member (a real agent's client does;
its keepalive and status put go one after the other on it), besides its watch stream's.
``--pool-per-member N`` shares N connections per member among the agents of a load
process instead (how every run before 2026-12-02 11:00 UTC measured, with 16): a request
then also waits for a free connection, so once a member's latency times the offered rate
exceeds the pool, every verb queues in the generator, not in the store (Little's law: 32
connections per member at 333 requests a second allow 96 ms per request).

    python -m kvraft.bench cluster-load --steps 500,1000 --step-seconds 30 --compare-etcd /usr/bin/etcd

One line per step and target, then a JSON document with every figure (``--json FILE``
writes it to a file).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvraft.bench import compared_etcd
from kvraft.bench.http_client import JSON, HttpConnection, post_json, render_post
from kvraft.server.local import LocalCluster

__all__ = ["main", "run_steps"]

LEASE_TTL_S = 40
PERIOD_S = 10.0
VERBS = ("lease_grant", "register", "watch_create", "keepalive", "status_put", "bind")
POOL_PER_MEMBER = 16
"""Connections per member of the shared pool (the binder's; the agents' with ``--pool-per-member``)."""
JOIN_RATE_PER_S = 100  # new agents registering per second while a step ramps up
RAMP_VERBS = ("lease_grant", "register", "watch_create")  # measured while the step's new agents register


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2)


class _Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lat: dict[str, list[float]] = {v: [] for v in VERBS}
        self.errors: dict[str, int] = dict.fromkeys(VERBS, 0)
        self.error_samples: list[str] = []
        self.lost_leases = 0
        self.events: dict[str, float] = {}  # assignment key -> monotonic time its event arrived
        self.binds: dict[str, float] = {}  # assignment key -> monotonic time the bind was acknowledged
        self.since = time.monotonic()  # when this window began (CLOCK_MONOTONIC: one clock for all processes)

    def error(self, verb: str, exc: BaseException) -> None:
        self.errors[verb] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{verb}: {type(exc).__name__}: {exc}"[:200])


class _Pool:
    """A few keep-alive connections per member, shared by the agents of one process, handed
    out first come, first served: a released connection goes to the longest waiter. (An
    ``asyncio.Queue`` of connections let a request made right after another one finished,
    such as an agent's status put after its keepalive or its register after its grant, take
    the connection ahead of every request already waiting, which then went to the back of
    the line: under load the first request of each agent's pair waited seconds to minutes
    while the second did not, and the keepalive looked slow where the pool was.)"""

    def __init__(self, urls: list[str], per_member: int = POOL_PER_MEMBER) -> None:
        self.free: dict[str, list[HttpConnection]] = {url: [HttpConnection(url) for _ in range(per_member)] for url in urls}
        self.waiters: dict[str, collections.deque[asyncio.Future[HttpConnection]]] = {url: collections.deque() for url in urls}

    async def acquire(self, url: str) -> HttpConnection:
        free, waiters = self.free[url], self.waiters[url]
        if free and not waiters:
            return free.pop()
        future: asyncio.Future[HttpConnection] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(url, future.result())  # handed over just as we were cancelled
            raise

    def release(self, url: str, conn: HttpConnection) -> None:
        waiters = self.waiters[url]
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(conn)
                return
        self.free[url].append(conn)

    async def post(self, url: str, path: str, doc: dict[str, Any], own: HttpConnection | None = None) -> dict[str, Any]:
        """One request, on ``own`` (an agent's own connection) if given, else on a pooled one."""
        if own is not None:
            return await _post(own, path, doc)
        conn = await self.acquire(url)
        try:
            return await _post(conn, path, doc)
        finally:
            self.release(url, conn)


async def _post(conn: HttpConnection, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    return await post_json(conn, path, doc, timeout_s=10.0, error_chars=120)


async def _timed(stats: _Stats, verb: str, coro: Any) -> Any:
    start = time.monotonic()
    try:
        result = await coro
    except Exception as exc:
        stats.error(verb, exc)
        return None
    stats.lat[verb].append(time.monotonic() - start)
    return result


# -- one simulated agent ----------------------------------------------------------------------
async def _agent(node: str, url: str, pool: _Pool, stats: _Stats, registered: list[int], rng: random.Random,
                 ramp_s: float, own: HttpConnection | None) -> None:  # fmt: skip
    """``own``: the agent's own connection (None: it uses the shared pool)."""
    try:
        await _agent_life(node, url, pool, stats, registered, rng, ramp_s, own)
    finally:
        if own is not None:
            await own.close()


async def _agent_life(node: str, url: str, pool: _Pool, stats: _Stats, registered: list[int], rng: random.Random,
                      ramp_s: float, own: HttpConnection | None) -> None:  # fmt: skip
    await asyncio.sleep(rng.uniform(0, ramp_s))  # new nodes join over the ramp, not all in one instant
    record = json.dumps({"name": node, "gpus": 8, "rack": f"r{int(node[1:]) // 32}", "ready": True})
    delay = 0.2
    while True:  # a failed registration is tried again, as the real agent does (200 ms -> 7 s, jittered)
        granted = await _timed(stats, "lease_grant", pool.post(url, "/v3/lease/grant", {"TTL": str(LEASE_TTL_S)}, own))
        if granted is not None:
            lease = granted["ID"]
            put = {"key": _b64(f"/registry/nodes/{node}"), "value": _b64(record), "lease": lease}
            if await _timed(stats, "register", pool.post(url, "/v3/kv/put", put, own)) is not None:
                break
        await asyncio.sleep(delay * (0.5 + rng.random()))
        delay = min(delay * 2, 7.0)
    watch = asyncio.create_task(_watch(node, url, stats))
    registered[0] += 1
    try:
        await asyncio.sleep(rng.uniform(0, PERIOD_S))
        while True:
            started = time.monotonic()
            alive = await _timed(stats, "keepalive", pool.post(url, "/v3/lease/keepalive", {"ID": lease}, own))
            if alive is not None and int(alive.get("TTL", 0)) <= 0:
                stats.lost_leases += 1
            status = json.dumps({"node": node, "at": time.time(), "free_gpus": rng.randint(0, 8)})
            await _timed(stats, "status_put", pool.post(url, "/v3/kv/put", {"key": _b64(f"/registry/nodes/{node}/status"), "value": _b64(status)}, own))
            await asyncio.sleep(max(0.0, PERIOD_S - (time.monotonic() - started)))
    finally:
        watch.cancel()


async def _watch(node: str, url: str, stats: _Stats) -> None:
    conn = HttpConnection(url)
    prefix = f"/registry/assignments/{node}/"
    body = json.dumps({"create_request": {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}}).encode()
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(conn.host, conn.port)
        writer.write(render_post(conn.authority, "/v3/watch", body, JSON))
        await reader.readuntil(b"\r\n\r\n")
        created = False
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                raise ConnectionError("watch stream ended")
            data = await reader.readexactly(size + 2)
            now = time.monotonic()
            for line in data[:-2].splitlines():
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if not created and result.get("created"):
                    created = True
                    stats.lat["watch_create"].append(now - start)
                for ev in result.get("events", []):
                    key = base64.b64decode(ev["kv"]["key"]).decode()
                    stats.events[key] = now
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        stats.error("watch_create", exc)


# -- worker processes -------------------------------------------------------------------------
def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(index: int, workers: int, urls: list[str], inbox: Any, outbox: Any, pool_per_member: int = 0) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_worker_loop(index, workers, urls, inbox, outbox, pool_per_member))


async def _worker_loop(index: int, workers: int, urls: list[str], inbox: Any, outbox: Any, pool_per_member: int = 0) -> None:
    """``pool_per_member`` 0: every agent has its own connection; N: they share N per member."""
    stats = _Stats()
    pool = _Pool(urls, pool_per_member or POOL_PER_MEMBER)
    rng = random.Random(index)
    agents: list[asyncio.Task[None]] = []
    registered = [0]
    binder: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    cpu_mark = _cpu_s()
    while True:
        cmd, arg = await loop.run_in_executor(None, inbox.get)
        if cmd == "grow":  # arg: the total agent count across all workers
            mine = [i for i in range(arg) if i % workers == index]
            new = mine[len(agents) :]
            ramp_s = max(2.0, len(new) * workers / JOIN_RATE_PER_S)
            for i in new:
                node = f"n{i:05d}"
                url = urls[i % len(urls)]
                own = None if pool_per_member else HttpConnection(url)
                agents.append(asyncio.create_task(_agent(node, url, pool, stats, registered, rng, ramp_s, own)))
            outbox.put(("grown", len(agents)))
        elif cmd == "registered":
            outbox.put(("registered", registered[0]))
        elif cmd == "bind":  # arg: (rate per s, node count)
            rate, nodes = arg
            if binder is not None:
                binder.cancel()
            binder = asyncio.create_task(_binder(rate, nodes, urls, pool, stats, rng, index))
            outbox.put(("binding", rate))
        elif cmd == "report":
            now_cpu = _cpu_s()
            outbox.put(("report", {
                "lat": stats.lat, "errors": stats.errors, "error_samples": stats.error_samples,
                "lost_leases": stats.lost_leases, "events": stats.events, "binds": stats.binds,
                "cpu_s": now_cpu - cpu_mark, "since": stats.since, "at": time.monotonic(),
            }))  # fmt: skip
            cpu_mark = now_cpu
            stats.reset()
        elif cmd == "stop":
            for task in agents:
                task.cancel()
            if binder is not None:
                binder.cancel()
            await asyncio.gather(*agents, *( [binder] if binder else []), return_exceptions=True)
            outbox.put(("stopped", None))
            return


async def _binder(rate: float, nodes: int, urls: list[str], pool: _Pool, stats: _Stats, rng: random.Random, index: int) -> None:
    binds: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly: keep each until it ends
    seq = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    while True:
        seq += 1
        node = f"n{rng.randrange(nodes):05d}"
        key = f"/registry/assignments/{node}/job-{index}-{seq}/t0"
        doc = {
            "compare": [{"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(json.dumps({"job": f"job-{seq}", "gpus": [0]}))}}],
        }
        url = urls[seq % len(urls)]
        bind = asyncio.create_task(_bind_one(key, url, doc, pool, stats))
        binds.add(bind)
        bind.add_done_callback(binds.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _bind_one(key: str, url: str, doc: dict[str, Any], pool: _Pool, stats: _Stats) -> None:
    result = await _timed(stats, "bind", pool.post(url, "/v3/kv/txn", doc))
    if result is not None and result.get("succeeded"):
        stats.binds[key] = time.monotonic()


# -- the driver -------------------------------------------------------------------------------
@dataclass
class _Proc:
    pid: int
    cpu_ticks: int = 0

    def sample(self) -> tuple[int, int]:
        """(utime+stime in ticks, rss bytes)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{self.pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
        return int(fields[11]) + int(fields[12]), rss_pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class StepResult:
    target: str
    agents: int
    registered: int
    seconds: float
    verbs: dict[str, dict[str, float]] = field(default_factory=dict)
    watch_lag: dict[str, float] = field(default_factory=dict)
    lost_leases: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    members: dict[str, dict[str, float]] = field(default_factory=dict)
    generator_cpu_pct: float = 0.0
    member_keepalive_ms: dict[str, float] = field(default_factory=dict)
    """kvraft only: each member's own mean time per keepalive it answered in the step (its
    ``/metrics`` counters: the leader's renewals and a follower's forwarding round trip),
    to tell the store's latency from the generator's."""
    holds: bool = False

    def line(self) -> str:
        verbs = " ".join(f"{v}={d['p50_ms']:.0f}/{d['p99_ms']:.0f}ms" for v, d in self.verbs.items() if d["count"])
        members = " ".join(f"{n}:{d['cpu_pct']:.0f}%/{d['rss_mib']:.0f}MiB" for n, d in self.members.items())
        lag = self.watch_lag
        member_ka = " ".join(f"{n}:{ms:.0f}ms" for n, ms in self.member_keepalive_ms.items())
        return (
            f"cluster-load target={self.target} agents={self.agents} registered={self.registered} "
            f"holds={'yes' if self.holds else 'NO'} p50/p99: {verbs} watch_lag={lag.get('p50_ms', 0):.0f}/"
            f"{lag.get('p99_ms', 0):.0f}ms missed_events={lag.get('missed', 0):.0f} errors={self.errors} "
            f"lost_leases={self.lost_leases} members(cpu/rss): {members} generator_cpu={self.generator_cpu_pct:.0f}%"
            + (f" member_keepalive_mean: {member_ka}" if member_ka else "")
        )


class _EtcdCluster(LocalCluster):
    def __init__(self, size: int, base_dir: str, binary_path: str) -> None:
        self.binary_path = binary_path
        super().__init__(size, base_dir, binary="etcd", token="cluster-load")

    def command(self, member: Any, initial_cluster: str, state: str) -> list[str]:
        return [self.binary_path, *super().command(member, initial_cluster, state)[1:]]


def _keepalive_counters(cluster: LocalCluster) -> dict[str, tuple[float, float]]:
    """kvraft members: (keepalives answered, seconds spent) from ``/metrics``; {} for etcd."""
    out: dict[str, tuple[float, float]] = {}
    if getattr(cluster, "binary", "") == "etcd":
        return out
    for member in cluster.members.values():
        try:
            with urllib.request.urlopen(member.client_url + "/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            continue
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("kvraft_lease_keepalives_total", "kvraft_lease_keepalive_seconds_total"):
                values[name] = float(value)
        if len(values) == 2:
            out[member.name] = (values["kvraft_lease_keepalives_total"], values["kvraft_lease_keepalive_seconds_total"])
    return out


def _ask(inboxes: list[Any], outbox: Any, cmd: str, arg: Any = None, timeout_s: float = 120.0) -> list[Any]:
    for q in inboxes:
        q.put((cmd, arg))
    return [outbox.get(timeout=timeout_s)[1] for _ in inboxes]


def run_steps(target: str, cluster: LocalCluster, steps: list[int], step_seconds: float, bind_rate: float,
              workers: int, all_steps: bool, log: Any = print, pool_per_member: int = 0) -> list[StepResult]:  # fmt: skip
    urls = [m.client_url for m in cluster.members.values()]
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(workers + 1)]  # the last worker only binds
    procs = [ctx.Process(target=_worker, args=(i, workers, urls, inboxes[i], outbox, pool_per_member), daemon=True)
             for i in range(workers)]
    procs.append(ctx.Process(target=_worker, args=(workers, workers, urls, inboxes[workers], outbox), daemon=True))
    for p in procs:
        p.start()
    members = {m.name: _Proc(m.pid or 0) for m in cluster.members.values()}
    results: list[StepResult] = []
    try:
        for agents in steps:
            _ask(inboxes[:workers], outbox, "grow", agents)
            deadline = time.monotonic() + max(60.0, agents / 50)
            registered = 0
            while time.monotonic() < deadline:
                registered = sum(_ask(inboxes[:workers], outbox, "registered"))
                if registered >= agents:
                    break
                time.sleep(1.0)
            log(f"[{target}] {registered}/{agents} agents registered; measuring {step_seconds:g} s", file=sys.stderr)
            _ask([inboxes[workers]], outbox, "bind", (bind_rate, agents))
            ramp = _ask(inboxes, outbox, "report")  # registration figures; the rest of the ramp is discarded
            marks = {n: p.sample() for n, p in members.items()}
            ka_marks = _keepalive_counters(cluster)
            started = time.monotonic()
            time.sleep(step_seconds)
            reports = _ask(inboxes, outbox, "report")
            elapsed = time.monotonic() - started
            ka_ends = _keepalive_counters(cluster)
            for r, early in zip(reports, ramp, strict=True):
                for verb in RAMP_VERBS:
                    r["lat"][verb] = early["lat"][verb] + r["lat"][verb]
                    r["errors"][verb] += early["errors"][verb]
            result = _summarize(target, agents, registered, elapsed, reports, members, marks)
            for name, (count, seconds) in ka_ends.items():
                if name in ka_marks and count > ka_marks[name][0]:
                    mean_s = (seconds - ka_marks[name][1]) / (count - ka_marks[name][0])
                    result.member_keepalive_ms[name] = round(mean_s * 1000, 1)
            results.append(result)
            log(result.line(), flush=True)
            if not result.holds and not all_steps:
                break
    finally:
        for q in inboxes:
            q.put(("stop", None))
        deadline = time.monotonic() + 30
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
    return results


def _summarize(target: str, agents: int, registered: int, elapsed: float, reports: list[dict[str, Any]],
               members: dict[str, _Proc], marks: dict[str, tuple[int, int]]) -> StepResult:  # fmt: skip
    result = StepResult(target, agents, registered, round(elapsed, 1))
    lat: dict[str, list[float]] = {v: [] for v in VERBS}
    events: dict[str, float] = {}
    binds: dict[str, float] = {}
    cpu = 0.0
    for r in reports:
        for v in VERBS:
            lat[v] += r["lat"][v]
            result.errors += r["errors"][v]
        result.error_samples += r["error_samples"]
        result.lost_leases += r["lost_leases"]
        events.update(r["events"])
        binds.update(r["binds"])
        cpu += r["cpu_s"]
    for v in VERBS:
        result.verbs[v] = {"count": len(lat[v]), "p50_ms": _pct(lat[v], 0.5), "p99_ms": _pct(lat[v], 0.99),
                           "errors": sum(r["errors"][v] for r in reports)}  # fmt: skip
    lags = [events[k] - t for k, t in binds.items() if k in events]
    # Each process starts and ends its window when it handles "report", not all at once: a
    # bind whose event reached a watcher before that watcher's window began, or after it
    # ended, is not missed. Count only binds acknowledged 1 s after the last window began and
    # 2 s before the first one ended (or the last bind: events may still be in flight).
    begun = max((r["since"] for r in reports), default=0.0) + 1.0
    horizon = min(max(binds.values(), default=0.0), min((r["at"] for r in reports), default=0.0)) - 2.0
    missed = sum(1 for k, t in binds.items() if k not in events and begun <= t < horizon)
    result.watch_lag = {"count": len(lags), "p50_ms": _pct(lags, 0.5), "p99_ms": _pct(lags, 0.99), "missed": missed}
    tick = os.sysconf("SC_CLK_TCK")
    for name, proc in members.items():
        try:
            ticks, rss = proc.sample()
        except OSError:
            continue
        result.members[name] = {"cpu_pct": round((ticks - marks[name][0]) / tick / elapsed * 100, 1), "rss_mib": round(rss / 2**20, 1)}
    result.generator_cpu_pct = round(cpu / elapsed * 100, 1)
    p99s = [d["p99_ms"] for d in result.verbs.values() if d["count"]]
    result.holds = (
        registered >= agents and result.errors == 0 and result.lost_leases == 0 and missed == 0
        and all(p < 1000 for p in p99s) and result.watch_lag["p99_ms"] < 1000 and result.verbs["bind"]["count"] > 0
    )  # fmt: skip
    return result


def main(_workload: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench cluster-load", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="500,1000,2000,5000,7500,10000", help="agent counts, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--bind-rate", type=float, default=20.0, help="scheduler binds per second")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="agent load processes")
    parser.add_argument("--compare-etcd", default="", help="path of an etcd binary to run the same steps against")
    parser.add_argument("--skip-kvraft", action="store_true", help="run only the etcd comparison")
    parser.add_argument("--pool-per-member", type=int, default=0,
                        help="agents share N connections per member and load process (0: one per agent, as real agents)")
    parser.add_argument("--all-steps", action="store_true", help="keep stepping after a step that does not hold")
    parser.add_argument("--json", default="", help="also write every figure to this file")
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--steps: not a list of integers: {args.steps!r}")
    if not steps or min(steps) <= 0 or args.step_seconds <= 0 or args.bind_rate <= 0 or args.workers < 1 or args.pool_per_member < 0:
        parser.error("--steps must be positive integers; --step-seconds, --bind-rate and --workers positive")
    if args.skip_kvraft and not args.compare_etcd:
        parser.error("--skip-kvraft needs --compare-etcd")
    compared_etcd(parser, args.compare_etcd)
    targets: list[tuple[str, Any]] = [] if args.skip_kvraft else [("kvraft", lambda d: LocalCluster(3, d, token="cluster-load"))]
    if args.compare_etcd:
        targets.append(("etcd", lambda d: _EtcdCluster(3, d, args.compare_etcd)))
    doc: dict[str, Any] = {"steps": steps, "step_seconds": args.step_seconds, "bind_rate": args.bind_rate,
                           "pool_per_member": args.pool_per_member, "results": {}}
    for name, make in targets:
        with tempfile.TemporaryDirectory(prefix=f"cluster-load-{name}-") as base:
            cluster = make(base)
            with cluster:
                cluster.start(120)
                results = run_steps(name, cluster, steps, args.step_seconds, args.bind_rate, args.workers, args.all_steps,
                                    pool_per_member=args.pool_per_member)
            doc["results"][name] = [r.__dict__ for r in results]
    held = {name: max((r["agents"] for r in rs if r["holds"]), default=0) for name, rs in doc["results"].items()}
    doc["held"] = held
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    print("held: " + ", ".join(f"{n} {a} agents" for n, a in held.items()))
    return 0
