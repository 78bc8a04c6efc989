"""``kvraft-scheduler``: the leader-elected daemon around the pure scheduling core.

One event loop, four parts:

1. **informer** (``scheduler.informer``) lists ``/registry/`` and watches it into a
   ``ClusterView`` on every replica, leader or not, so a standby is warm.
2. **election**: ``client.election("/registry/scheduler/leader", ttl)``; only the leader acts,
   and every write it makes is fenced by ``create(our leader key) == our revision``. When its
   lease is lost it stops acting and campaigns again.
3. **the loop** (leader only), woken by watch events or timers: feed the core the view's
   changes (``CoreFeed``), run the lifecycle of bound jobs (``scheduler.lifecycle``, this
   class's base: finished, failed, lost on a node whose heartbeat expired, cancelled, past
   ``max_run_s``, stopped runs whose tasks ended or whose grace period is over), act on
   operators' eviction requests (``scheduler.evictions``: drain, requeue), keep the
   nodes of a failed gang whose agent reported nothing out of placement until their lease is
   seen renewed (``scheduler.suspects``: a dead agent's lease outlives it by the TTL), run one
   ``Scheduler.schedule`` pass -- the same code the simulator replays -- and write its
   decisions with the ``Binder``: bindings, evictions of preemption victims, pending reasons.
4. **HTTP**: ``/health`` and ``/metrics`` (Prometheus text; ``scheduler.metrics``).

Becoming leader rebuilds the core from the view: the store is the only state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections import Counter
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from kvraft.aio import cancel_and_wait
from kvraft.client import Client, ClientError, Compare, TLSConfig
from kvraft.client.observe import configure_logging, metrics_response
from scheduler import accounting, arrays, dependencies, keys
from scheduler.binder import Binder
from scheduler.cycle import Scheduler
from scheduler.informer import Informer
from scheduler.informer_view import TERMINAL, ClusterView, CoreFeed
from scheduler.job_gc import collect, due_at
from scheduler.lifecycle import SUSPENDED, RunLifecycle
from scheduler.metrics import BIND_BUCKETS_S as BUCKETS_S
from scheduler.metrics import SchedulerMetrics
from scheduler.model import BindFailed
from scheduler.service_config import SchedulerConfig, core_profile, load_config
from scheduler.suspects import Suspects

__all__ = ["SchedulerDaemon", "main", "run"]

log = logging.getLogger("kvraft.scheduler")


RESIGN_TIMEOUT_S = 2.0  # a stop's resignation of the leader key: a standby takes over at once, not a TTL later


class SchedulerDaemon(RunLifecycle):
    def __init__(self, config: SchedulerConfig, client: Client | None = None) -> None:
        self.config = config
        self.client = client or Client(
            config.endpoints, request_timeout_s=config.request_timeout_s, user=config.user or None,
            password=config.password or None, auto_sync_interval_s=config.auto_sync_interval_s,
            tls=TLSConfig.from_flags(config.cacert, config.cert, config.key, config.insecure_skip_tls_verify))
        self.view = ClusterView()
        self.informer = Informer(self.client, keys.REGISTRY, self)
        self.fence: list[Compare] = []
        self.binder = Binder(self.client, self.view, identity=config.name, fence=lambda: self.fence,
                             max_ops=config.max_txn_ops)
        self.core: Scheduler | None = None
        self.feed = CoreFeed()
        self.leader = False
        self.election: Any = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[str, float] = {}
        self._next_prune = 0.0  # when the leader next deletes accounting months past retention
        self.suspects = Suspects()  # nodes that may have lost their agent (scheduler.suspects)
        self._fresh_suspects: set[str] = set()  # suspected in this step: the pass must know
        self.terms = 0
        # statistics
        self.passes = 0
        self.bindings = 0
        self.bind_failures = 0
        self.preemptions = 0
        self.evictions: Counter[str] = Counter()  # runs evicted on an operator's request, by reason
        self.collected = 0  # finished jobs deleted after their TTL
        self.releases: Counter[str] = Counter()
        self.gpu_seconds: Counter[tuple[str, str]] = Counter()  # (tenant, outcome) -> of the runs released here
        self.bind_hist = [0] * (len(BUCKETS_S) + 1)
        self.bind_sum_s = 0.0
        self.bind_count = 0
        self.pending_by_reason: Counter[str] = Counter()
        self.started = time.time()
        self.became_leader_at: float | None = None
        self.metrics = SchedulerMetrics(self)  # /metrics: a registry of this daemon's own

    # --- informer sink ------------------------------------------------------------------------
    def replace(self, kvs: Any, revision: int) -> None:
        self.view.replace(kvs, revision)
        self._wake.set()

    def apply(self, events: Any, revision: int) -> None:
        self.view.apply(events, revision)
        self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.client.is_open:  # run() opened it already, waiting for kvraft
            await self.client.open()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.informer.run()))
        self._tasks.append(loop.create_task(self._main()))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self.election is not None:  # hand over at once; with kvraft gone, not the request timeout
            with contextlib.suppress(ClientError, Exception):
                async with asyncio.timeout(RESIGN_TIMEOUT_S):
                    await self.election.resign()
        await self.client.close()

    async def _main(self) -> None:
        await self.informer.synced.wait()
        while True:
            lost: asyncio.Event
            if self.config.election:
                self.election = self.client.election(keys.ELECTION, ttl=self.config.election_ttl_s)
                try:
                    await self.election.campaign(self.config.name.encode())
                except ClientError as exc:
                    log.warning("campaign failed", extra={"fields": {"error": str(exc)}})
                    with contextlib.suppress(Exception):
                        await self.election.resign()
                    await asyncio.sleep(1.0)
                    continue
                key = self.election.key
                self.fence = [Compare.create(key, "=", self.election.revision)]
                lost = self.election.lease.lost
            else:
                self.fence = []
                lost = asyncio.Event()
            # act only on a view at least as new as our leadership
            with contextlib.suppress(ClientError):
                await self.informer.list_once()
            self.terms += 1
            self.leader = True
            self.became_leader_at = time.time()
            log.info("leading", extra={"fields": {"name": self.config.name, "term": self.terms,
                                                  "revision": self.view.revision}})
            self._rebuild()
            try:
                await self._act(lost)
            finally:
                self.leader = False
            log.warning("leadership lost", extra={"fields": {"name": self.config.name}})
            with contextlib.suppress(Exception):
                await self.election.resign()

    def _rebuild(self) -> None:
        self.core = Scheduler(core_profile(self.config), seed=self.config.seed)
        self.feed = CoreFeed()
        v = self.view
        v.dirty_nodes |= set(v.nodes) | set(v.heartbeats) | set(v.cordons)
        v.dirty_jobs |= set(v.jobs) | set(v.bindings) | set(v.evictions)
        v.dirty_tenants |= set(v.tenants)
        self._timers.clear()

    async def _act(self, lost: asyncio.Event) -> None:
        lost_wait = asyncio.get_running_loop().create_task(lost.wait())
        try:
            while not lost.is_set():
                if not self.informer.synced.is_set():  # the view missed changes (its sink failed)
                    await self._wait_synced(lost_wait)
                    continue
                try:
                    await self.step()
                except ClientError as exc:
                    log.warning("pass failed", extra={"fields": {"error": str(exc)}})
                    await asyncio.sleep(0.5)
                except Exception:  # a bug must not leave a leader that does nothing: resync
                    log.exception("pass failed; rebuilding the core from the view")
                    self._rebuild()
                    await asyncio.sleep(0.5)
                timeout = self.config.cycle_interval_s
                wake = self._next_wakeup()
                if wake is not None:
                    timeout = max(0.0, min(timeout, wake - time.time()))
                if not self._wake.is_set():
                    waiter = asyncio.get_running_loop().create_task(self._wake.wait())
                    await asyncio.wait({waiter, lost_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                self._wake.clear()
        finally:
            lost_wait.cancel()

    async def _wait_synced(self, lost_wait: asyncio.Task[Any]) -> None:
        """Act on nothing until the informer has listed again: a view that missed changes is
        stale in every way (heartbeats not renewed in it: each node would look lost, its jobs
        released), so stale decisions would be written."""
        log.warning("view out of sync with the store; not acting until the informer lists again")
        synced = asyncio.get_running_loop().create_task(self.informer.synced.wait())
        try:
            await asyncio.wait({synced, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
        if self.informer.synced.is_set():
            log.info("view in sync again; acting", extra={"fields": {"revision": self.view.revision}})

    def _next_wakeup(self) -> float | None:
        times = list(self._timers.values())
        w_mono = self.suspects.next_wakeup()
        if w_mono is not None:
            times.append(time.time() + (w_mono - time.monotonic()))
        if self.core is not None:
            w = self.core.next_wakeup_s()
            if w is not None:
                times.append(w)
        return min(times) if times else None

    # --- one step -----------------------------------------------------------------------------
    async def step(self) -> None:
        assert self.core is not None
        core, view, feed = self.core, self.view, self.feed
        if len(self.suspects):
            await self._probe_suspects()
        now = time.time()
        nodes, jobs, tenants = view.take_dirty()
        for name, at in list(self._timers.items()):
            if at <= now:
                jobs.add(name)
                del self._timers[name]
        events = []
        for n in sorted(nodes):
            events += feed.sync_node(view, n)
        for t in sorted(tenants):
            events += feed.sync_tenant(view, t)
        self._feed_jobs(sorted(jobs), now, events)
        for j in sorted(jobs):
            if j in view.evictions:
                await self._eviction_request(j)
        changed = False
        updates: dict[str, dict[str, Any]] = {}
        for j in sorted(jobs):
            changed |= await self._lifecycle(j, now, updates)
        if updates:  # Starting/Running updates of many jobs: one batched write, not a txn per job
            await self.binder.write_statuses(updates)
        for j in sorted(jobs):
            await self._collect(j, now)
        if changed:  # releases were applied to the view; feed them before the pass
            self._feed_jobs(sorted(jobs), now, [])
        if self._fresh_suspects:  # nodes suspected by the lifecycle: NotReady for this pass
            fresh, self._fresh_suspects = sorted(self._fresh_suspects), set()
            more = [ev for n in fresh for ev in feed.sync_node(view, n)]
            if more:
                core.handle(*more)
        if now >= self._next_prune:
            await self._prune_accounting(now)
        started = time.perf_counter()
        result = core.schedule(now)
        self.metrics.algorithm.observe(time.perf_counter() - started)
        self.passes += 1
        if result.bindings:
            for b in result.bindings:
                feed.assumed(b.job_id, b.placement)
            outcomes = await self.binder.bind(result.bindings)
            for o in outcomes:
                if o.ok:
                    self.bindings += 1
                    self._observe_bind(o.latency_s)
                    info = core.state.jobs.get(o.job)
                    if info is not None and 0 < info.pending_since_s <= now:  # (a record without submitted_at: 0)
                        self.metrics.job_wait.observe(now - info.pending_since_s)
                else:
                    self.bind_failures += 1
                    feed.bind_failed(o.job)
                    core.handle(BindFailed(o.job, now, stimulus_id=f"bind-failed:{o.job}"))
            # the bindings are in the view (put_local); confirm them to the core now
            self._feed_jobs([o.job for o in outcomes if o.ok], now, [])
            view.dirty_jobs -= {o.job for o in outcomes if o.ok}
            log.info("bound", extra={"fields": {"jobs": [o.job for o in outcomes if o.ok],
                                                "failed": [o.job for o in outcomes if not o.ok],
                                                "stimulus_id": f"pass:{self.passes}"}})
            self.metrics.e2e.observe(time.perf_counter() - started)
        for p in result.preemptions:
            why = p.reason if p.reason.startswith(f"preempted by {p.preemptor_id}") else \
                f"preempted by {p.preemptor_id} ({p.reason})"  # defrag's "moved to make room for ..."
            if await self._stop_run(p.victim_id, "Preempting", why, status_message=why):
                self.preemptions += 1
        for r in result.resizes:  # an elastic run restarts larger: stopped as a preempted one is
            why = f"growing from {r.from_tasks} to {r.to_tasks} tasks (elastic: room freed)"
            if await self._stop_run(r.job_id, "Resizing", why, event="Resizing",
                                    eviction={"reason": "resize", "message": why}):
                log.info("resizing", extra={"fields": {"job": r.job_id, "from": r.from_tasks, "to": r.to_tasks}})
        await self._write_pending(now)

    def _feed_jobs(self, jobs: list[str], now: float, events: list[Any]) -> None:
        """Tell the core ``events`` and what changed of ``jobs``, in one batch. A stored placement
        the core does not hold yet is first checked against its state (told everything before
        it): one it cannot hold (a node it does not know, GPUs another job holds: anyone may
        write a binding) is not given to it, and the lifecycle releases that run."""
        core = self.core
        assert core is not None

        def fits(job: Any, placement: Any) -> str:
            if events:
                core.handle(*events)
                events.clear()
            return core.state.placement_problem(job, placement)

        for j in jobs:
            events += self.feed.sync_job(self.view, j, now, fits=fits)
        if events:
            core.handle(*events)

    def _observe_bind(self, latency_s: float) -> None:
        self.bind_sum_s += latency_s
        self.bind_count += 1
        for i, edge in enumerate(BUCKETS_S):
            if latency_s <= edge:
                self.bind_hist[i] += 1
                return
        self.bind_hist[-1] += 1

    def _pending(self, docs: dict[str, dict[str, Any]], job: str, reason: str, plugin: str, message: str) -> None:
        """Put ``job``'s Pending status in ``docs`` unless the stored one already says it."""
        old = self._status(job)
        if (old.get("phase"), old.get("reason"), old.get("message")) != ("Pending", reason, message):
            docs[job] = dict(old, phase="Pending", reason=reason, plugin=plugin, message=message)

    async def _write_pending(self, now: float) -> None:
        assert self.core is not None
        core, view = self.core, self.view
        docs: dict[str, dict[str, Any]] = {}
        by_reason: Counter[str] = Counter()
        for job_id in core.state.pending:
            if job_id in view.bindings:
                continue
            r = core.pending_reason(job_id)
            code, plugin, message = (r.code, r.plugin, r.message) if r is not None else ("Queued", "queue", "waiting for a scheduling pass")
            by_reason[code] += 1
            self._pending(docs, job_id, code, plugin, message)
        # job keys whose value is not a job: the reason names the key (a fixed spec is a job again)
        for key, why in view.invalid.items():
            job_id = key[len(keys.JOBS):]
            if not key.startswith(keys.JOBS) or job_id in view.bindings or view.phase(job_id) in TERMINAL:
                continue
            by_reason["InvalidSpec"] += 1
            self._pending(docs, job_id, "InvalidSpec", "daemon", f"{key}: {why}")
        # jobs the core is not told of until their dependencies are met (scheduler.dependencies):
        # Pending/Dependency, or Failed/DependencyNeverSatisfied; met outcomes recorded
        events: list[tuple[str, str, str]] = []
        for job_id in view.gated_jobs():
            verdict = view.dependency_verdict(job_id)
            assert verdict is not None
            if verdict.state == "waiting":
                by_reason["Dependency"] += 1
            doc, event = dependencies.status_update(docs.get(job_id) or self._status(job_id), verdict, now)
            if doc is not None:
                docs[job_id] = doc
            if event:
                events.append((job_id, "DependencyNeverSatisfied", event))
        # elements of job arrays kept back by their array's limit (scheduler.arrays)
        for job_id, message in view.throttled_jobs():
            by_reason[arrays.THROTTLED] += 1
            self._pending(docs, job_id, arrays.THROTTLED, "daemon", message)
        # suspended jobs (jobctl suspend, or submitted so): held until jobctl resume
        for job_id in view.suspended_jobs():
            by_reason["Suspended"] += 1
            self._pending(docs, job_id, "Suspended", "daemon", SUSPENDED)
        self.pending_by_reason = by_reason
        # jobs cancelled before they ever ran
        for job_id, entry in view.jobs.items():
            if entry.doc.get("cancelled") and job_id not in view.bindings and view.phase(job_id) not in TERMINAL:
                docs[job_id] = dict(self._status(job_id), phase="Cancelled", reason="Cancelled",
                                    message="cancelled before it ran", finished_at=now)
        if docs:
            await self.binder.write_statuses(docs, events)

    async def _probe_suspects(self) -> None:
        """Ask kvraft for the remaining TTL of each suspect node's lease that is due; clear the
        nodes whose lease was renewed, whose heartbeat is gone or new, or past their give-up."""
        view, sus = self.view, self.suspects
        names = sus.names()
        current = {n: view.heartbeats[n].create_revision for n in names if n in view.heartbeats}
        cleared = [(n, "heartbeat gone or registered again") for n in sus.heartbeats(current)]
        cleared += [(n, "give-up time passed with the lease still there") for n in sus.expire(time.monotonic())]
        due = sus.due(time.monotonic())
        if due:
            answers = await asyncio.gather(*(self._lease_ttl(lease_id) for _, lease_id in due), return_exceptions=True)
            for (node, _), answer in zip(due, answers, strict=True):
                if isinstance(answer, BaseException):
                    sus.probe_failed(node, time.monotonic())
                elif sus.observe(node, *answer):
                    cleared.append((node, "lease renewed"))
        for node, why in cleared:
            view.unreachable.discard(node)
            view.dirty_nodes.add(node)
            log.info("node no longer suspected", extra={"fields": {"node": node, "why": why}})

    async def _lease_ttl(self, lease_id: int) -> tuple[int, float, float]:
        sent = time.monotonic()
        async with asyncio.timeout(1.0):
            resp = await self.client.lease_time_to_live(lease_id)
        return resp.ttl, sent, time.monotonic()

    async def _collect(self, job: str, now: float) -> None:
        """Delete a finished job's keys once its TTL after finishing is over (scheduler.job_gc)."""
        entry, st = self.view.jobs.get(job), self.view.status.get(job)
        spec = entry.doc if entry is not None else {}
        if entry is None:  # a spec that does not decode is collected with the daemon's TTL
            entry = self.view.invalid_jobs.get(job)
        if entry is None or st is None or job in self.view.bindings or not isinstance(st.doc, dict):
            return
        due = due_at(spec, st.doc, self.config.ttl_seconds_after_finished)
        if due is None:
            return
        if now < due:
            self._timers[job] = min(self._timers.get(job, due), due)
            return
        # its dependents record its outcome before its keys may go (scheduler.dependencies)
        hold = dependencies.collect_hold(job, self.view.dependent_records(job))
        record = arrays.member(spec)
        if hold is None and record is not None:  # (an element: jobs may depend on its whole array)
            hold = dependencies.collect_hold(record["job"], self.view.dependent_records(record["job"]))
        if hold is not None:
            log.debug("collection deferred", extra={"fields": {"job": job, "why": hold}})
            self._timers[job] = now + 1.0
            return
        try:
            done = await collect(self.client, self.fence, job, entry.mod_revision, st.mod_revision)
        except ClientError as exc:  # try again in a second; the pass goes on
            log.warning("collecting a finished job failed", extra={"fields": {"job": job, "error": str(exc)}})
            self._timers[job] = now + 1.0
            return
        if done:
            self.collected += 1
            log.info("collected", extra={"fields": {"job": job, "phase": st.doc.get("phase")}})
        self._wake.set()

    async def _prune_accounting(self, now: float) -> None:
        """Delete the accounting months older than ``--accounting-retention-months``: one
        range delete (keys sort by month), at most once an hour."""
        self._next_prune = now + 3600.0
        months = self.config.accounting_retention_months
        if months <= 0:
            return
        end = accounting.PREFIX + accounting.retention_end(now, months)
        try:
            gone = (await self.client.delete(accounting.PREFIX, range_end=end)).deleted
        except ClientError as exc:
            self._next_prune = now + 60.0
            log.warning("accounting records not pruned", extra={"fields": {"error": str(exc)}})
            return
        if gone:
            log.info("accounting records pruned", extra={"fields": {"deleted": gone, "before": end}})

    # --- HTTP ---------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        ok = self.informer.synced.is_set()
        return (200 if ok else 503), {"status": "ok" if ok else "syncing", "leader": self.leader, "name": self.config.name,
                                      "revision": self.view.revision, "terms": self.terms,
                                      "suspect_nodes": sorted(self.suspects.names())}

    def metrics_text(self) -> str:
        """The Prometheus text ``/metrics`` serves (``scheduler.metrics``)."""
        return generate_latest(self.metrics.registry).decode()


def make_app(daemon: SchedulerDaemon) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        code, doc = daemon.health()
        return web.json_response(doc, status=code)

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(daemon.metrics.registry, request)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def _start_when_reachable(daemon: SchedulerDaemon, config: SchedulerConfig, stop: asyncio.Event) -> bool:
    """Start the daemon once kvraft answers, as kube-scheduler waits for its API server: no
    endpoint answering (kvraft not up yet, or without a leader) is retried with a backoff of
    200 ms to 7 s, each try logged; /health says 503 meanwhile. What retrying cannot mend --
    TLS files that do not load, a login refused -- is one line on stderr and False; so is a
    stop asked for while waiting (with ``stop`` set)."""
    def unreachable(exc: ClientError, delay_s: float) -> None:
        log.warning("kvraft unreachable", extra={"fields": {"endpoints": config.endpoints, "error": str(exc),
                                                             "retry_s": round(delay_s, 3)}})

    try:
        if not await daemon.client.open_when_reachable(stop, on_retry=unreachable):
            return False
        await daemon.start()
        return True
    except (ClientError, OSError) as exc:
        what = "--cacert/--cert/--key" if isinstance(exc, ssl.SSLError) else f"--endpoints {','.join(config.endpoints)}"
        print(f"kvraft-scheduler: {what}: {exc}", file=sys.stderr)
        return False


async def run(config: SchedulerConfig) -> int:
    daemon = SchedulerDaemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from urllib.parse import urlsplit

    url = urlsplit(config.listen_url)
    runner = web.AppRunner(make_app(daemon), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, url.hostname or "127.0.0.1", url.port or 10251).start()
    except OSError as exc:
        await runner.cleanup()
        print(f"kvraft-scheduler: --listen-url {config.listen_url}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if not await _start_when_reachable(daemon, config, stop):
        await daemon.stop()
        await runner.cleanup()
        return 0 if stop.is_set() else 1
    log.info("started", extra={"fields": {"name": config.name, "endpoints": config.endpoints,
                                          "listen_url": config.listen_url, "profile": config.profile}})
    await stop.wait()
    log.info("stopping", extra={"fields": {"name": config.name}})
    await daemon.stop()
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ValueError as exc:
        print(f"kvraft-scheduler: {exc}", file=sys.stderr)
        return 2
    try:
        configure_logging(config.log_level, config.log_format, static={"scheduler": config.name})
    except ValueError as exc:
        print(f"kvraft-scheduler: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
