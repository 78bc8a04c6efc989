"""The ``kvraft-agent`` daemon: the imperative shell around ``agent.reconcile``.

Five independent loops on one event loop (the heartbeat never waits on the runtime -- the
"PLEG is not healthy" lesson):

1. **lease**: grant a kvraft lease, write ``/registry/leases/<node>`` under it and the node
   record, renew every ``heartbeat_s`` (retry backoff 200 ms -> 7 s, kubelet's), and when
   the lease is found gone re-register and relist (tasks moved elsewhere get stopped).
   When no renewal has succeeded for ``lease_ttl_s + lease_loss_grace_s`` (a partition: the
   scheduler has seen the lease expire and may have placed the node's gangs elsewhere) the
   node is *fenced*: every task is stopped with its grace period and nothing starts until a
   renewal succeeds and the assignments are listed again.
2. **watch**: list ``/registry/assignments/<node>/`` then watch from the listed revision;
   relist after compaction or lease loss. Builds ``desired``; reads back the statuses of
   desired tasks into ``reported`` so nothing is reported twice after a restart.
3. **reconcile**: on every hint (an assignment event, a supervisor's exit datagram, an action
   finished, a backoff wakeup) or every ``relist_s``: observe the runtime, call the pure
   ``reconcile``, run the actions -- at most one action in flight per task.
4. **node status**: recompute conditions (memory/disk/PID pressure, GPU health) and rewrite
   the node record when they change.
5. the HTTP endpoint (``agent.endpoint``).

Status writes are a txn: ``if create_revision(assignment) == the placement we ran and
mod_revision(status) == the one we last saw then put status``; on a mismatch the agent
re-reads and never overwrites a newer placement's status or regresses a phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent.config import AgentConfig
from agent.datadir import DataDirGone, DirIdentity
from agent.devices import (
    GpuInventory,
    RdmaDevice,
    load_gpu_inventory,
    load_rdma_inventory,
    machine_facts,
)
from agent.eviction import parse_eviction_hard
from agent.jobtokens import JobTokens
from agent.keys import (
    assignment_key,
    assignments_prefix,
    lease_key,
    node_key,
    split_assignment_key,
    status_key,
)
from agent.logs import parse_line
from agent.node_record import build_node_record, conditions
from agent.rankenv import NodeFacts, rank_env
from agent.reconcile import (
    Action,
    BackoffPolicy,
    Cleanup,
    Observed,
    Phase,
    Remove,
    Report,
    Reported,
    Start,
    Stop,
    Wakeup,
    is_newer,
    reconcile,
)
from agent.runtime.base import DeviceGrant, Runtime, RuntimeUnavailable, TaskRun
from agent.spec import Assignment, TaskSpec, parse_assignment
from kvraft.aio import cancel_and_wait, wait_event
from kvraft.client import Client, ClientError, Compare, Op, TLSConfig, WatchCompactedError

__all__ = ["Agent", "AgentStatistics", "make_runtime"]

TaskAction = Start | Stop | Cleanup | Remove | Report
"""The actions ``_run_action`` carries out: every ``Action`` but ``Wakeup``, which
``reconcile_once`` consumes itself (it only moves the next pass)."""

log = logging.getLogger("kvraft.agent")
LOG_TAIL_BYTES = 4096  # kubelet's termination-message limit
STOP_STARTS_S = 30.0  # how long a stopping agent lets its starts in flight finish (systemd allows 90 s)


def make_runtime(config: AgentConfig) -> Runtime:
    """The configured runtime; default runc where it works, else process."""
    name = config.runtime
    notify = str(config.data_dir / "events.sock")
    notify = notify if len(notify) < 100 else ""
    common: dict[str, Any] = {"log_max_bytes": config.log_max_bytes, "log_max_files": config.log_max_files,
                              "notify_socket": notify}
    if name in ("", "runc"):
        from agent.runtime.runc import RuncRuntime, runc_available

        why = runc_available()
        if not why:
            return RuncRuntime(config.data_dir, config.name, **common)
        if name == "runc":
            raise SystemExit(f"kvraft-agent: --runtime runc: {why}")
        name = "process"
    if name == "process":
        from agent.runtime.process import ProcessRuntime

        return ProcessRuntime(config.data_dir, config.name, **common)
    if name == "docker":
        from agent.runtime.docker import DockerRuntime

        return DockerRuntime(config.data_dir, config.name, log_max_bytes=config.log_max_bytes,
                             log_max_files=config.log_max_files)
    if name == "fake":
        from agent.runtime.fake import FakeRuntime

        return FakeRuntime(config.data_dir, config.name)
    raise SystemExit(f"kvraft-agent: unknown runtime {name!r}")


@dataclass(frozen=True, slots=True)
class AgentStatistics:
    registered: bool
    lease_id: int
    lease_grants: int
    lease_losses: int
    keepalive_failures: int
    desired: int
    observed: dict[str, int]
    actions: dict[str, int]
    status_writes: dict[str, int]
    reconcile_passes: int
    reconcile_seconds_total: float
    watch_relists: int
    orphans_swept: int
    fenced: bool = False  # out of touch past TTL + grace: every task stopped (docs/design/agent.md)
    fences: int = 0
    lease_age_s: float = 0.0  # since the last successful renewal
    tokens_granted: int = 0  # scoped tokens granted to tasks' ranks
    token_failures: int = 0  # starts whose token kvraft refused (auth on)


class Agent:
    def __init__(self, config: AgentConfig, runtime: Runtime | None = None, *, client: Client | None = None) -> None:
        self.config = config
        self.name = config.name
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = DirIdentity(config.data_dir)
        self.fatal = ""
        """Why the agent stopped acting (its data dir gone); ``failed`` is set with it."""
        self.failed = asyncio.Event()
        self.runtime = runtime if runtime is not None else make_runtime(config)
        self.client = client or Client(
            config.endpoints, request_timeout_s=config.request_timeout_s, user=config.user or None,
            password=config.password or None, auto_sync_interval_s=config.auto_sync_interval_s,
            tls=TLSConfig.from_flags(config.cacert, config.cert, config.key, config.insecure_skip_tls_verify))
        self.tokens = JobTokens(self.client, self.name, logs_in=bool(config.user))
        self.gpus: GpuInventory = load_gpu_inventory(config.gpu_inventory or None)
        self.rdma: tuple[RdmaDevice, ...] = load_rdma_inventory(config.rdma_inventory or None)
        self.backoff = BackoffPolicy(config.restart_backoff_s, config.restart_backoff_max_s)
        self.url = config.advertise_url or config.listen_url
        self.desired: dict[str, Assignment] = {}
        self.reported: dict[str, Reported] = {}
        self.observed: list[Observed] = []
        self._status_mod: dict[str, int] = {}
        self._busy: set[str] = set()
        self._starting_gpus: dict[str, tuple[int, ...]] = {}  # Starts in flight: held before the runtime sees them
        self._wake = asyncio.Event()
        self._relist = asyncio.Event()
        self._desired_loaded = asyncio.Event()
        self.registered = asyncio.Event()
        self._wakeup_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._action_tasks: set[asyncio.Task[None]] = set()
        self._start_tasks: set[asyncio.Task[None]] = set()  # the Start ones, which a stop lets finish
        self._stimulus = itertools.count(1)
        self._rng = random.Random()
        self.lease_id = 0
        self.started_at = time.time()
        self._lease_ok_at = time.monotonic() - _saved_lease_age(config.data_dir / "lease.json")
        self._fenced = False
        self.fences = 0
        self._contact_tried = asyncio.Event()  # a restarted agent first tries to renew, then fences
        self._conditions: list[dict[str, Any]] = []
        self.eviction_hard = parse_eviction_hard(config.eviction_hard)  # checked by load_config
        self.runtime_down = ""  # why the runtime's last ping failed; the node is NotReady while set
        self._reconcile_error = ""  # the last reconcile pass's RuntimeUnavailable, logged once
        self._node_doc: dict[str, Any] = {}
        self._transport: asyncio.DatagramTransport | None = None
        # statistics
        self.lease_grants = 0
        self.lease_losses = 0
        self.keepalive_failures = 0
        self.actions: Counter[str] = Counter()
        self.status_writes: Counter[str] = Counter()
        self.reconcile_passes = 0
        self.reconcile_seconds_total = 0.0
        self.watch_relists = 0
        self.orphans_swept = 0
        self.assign_to_running_ms: list[float] = []
        self._assigned_at: dict[str, float] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Sweep orphans and start the loops; returns at once. kvraft may be unreachable: the
        agent keeps connecting (backoff 200 ms -> 7 s) while its tasks run on."""
        swept = await self.runtime.sweep()
        self.orphans_swept += len(swept)
        if swept:
            log.info("swept orphans", extra={"fields": {"orphans": swept}})
        await self._listen_events()
        loop = asyncio.get_running_loop()
        # the reconcile loop runs from the start: it acts only on listed assignments, or to
        # fence a node that has been out of touch too long (also when kvraft is unreachable
        # from the start: the clock runs from the saved renewal time)
        self._tasks.append(loop.create_task(self._reconcile_loop()))
        self._tasks.append(loop.create_task(self._connect_then_run()))

    async def _connect_then_run(self) -> None:
        def unreachable(exc: ClientError, delay_s: float) -> None:
            self._contact_tried.set()
            log.warning("kvraft unreachable", extra={"fields": {"error": str(exc), "retry_s": delay_s}})

        # any error is waited out (kubelet keeps trying its API server, a refused login too)
        await self.client.open_when_reachable(on_retry=unreachable, retry_on=(ClientError,), retry_tls=True,
                                             rng=self._rng)
        loop = asyncio.get_running_loop()
        for coro in (self._lease_loop(), self._watch_loop(), self._status_loop()):
            self._tasks.append(loop.create_task(coro))

    async def stop(self) -> None:
        """Stop the loops; tasks keep running under their supervisors (Nomad's client stop).
        Starts in flight may finish first (for ``STOP_STARTS_S``): one cancelled between its
        handle and its supervisor is an attempt that never ran, which the next agent reports
        Failed/Lost."""
        await cancel_and_wait(*self._tasks)  # nothing new is started
        if self._start_tasks:
            await asyncio.wait(set(self._start_tasks), timeout=STOP_STARTS_S)
        await cancel_and_wait(*self._action_tasks)
        self._tasks.clear()
        if self.fatal:  # (agent.datadir) what runs of the tasks no attempt owns now: kill it
            with contextlib.suppress(Exception):
                swept = await self.runtime.sweep()
                self.orphans_swept += len(swept)
                log.warning("stopped the tasks whose state was lost", extra={"fields": {"orphans": swept}})
        if self._transport is not None:
            self._transport.close()
        await self.runtime.close()
        await self.client.close()

    def wake(self) -> None:
        self._wake.set()

    @property
    def node_doc(self) -> dict[str, Any]:
        """The node record last written to kvraft (empty before the first registration)."""
        return self._node_doc

    @property
    def fenced(self) -> bool:
        return self._fenced

    def statistics(self) -> AgentStatistics:
        return AgentStatistics(
            registered=self.registered.is_set(),
            lease_id=self.lease_id,
            lease_grants=self.lease_grants,
            lease_losses=self.lease_losses,
            keepalive_failures=self.keepalive_failures,
            desired=len(self.desired),
            observed=dict(Counter(o.state.value for o in self.observed)),
            actions=dict(self.actions),
            status_writes=dict(self.status_writes),
            reconcile_passes=self.reconcile_passes,
            reconcile_seconds_total=self.reconcile_seconds_total,
            watch_relists=self.watch_relists,
            orphans_swept=self.orphans_swept,
            fenced=self._fenced,
            fences=self.fences,
            lease_age_s=max(0.0, time.monotonic() - self._lease_ok_at),
            tokens_granted=self.tokens.granted,
            token_failures=self.tokens.failures,
        )

    async def _listen_events(self) -> None:
        path = getattr(self.runtime, "notify_socket", "")
        if not path:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        agent = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                agent.wake()

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=path, family=socket.AF_UNIX)
        self._transport = transport

    # --- lease and node record ------------------------------------------------------------------
    def node_record(self) -> dict[str, Any]:
        facts = machine_facts(self.config.data_dir, self.eviction_hard)
        facts["runtime_down"] = self.runtime_down
        before = {c["type"]: c["status"] for c in self._conditions}
        self._conditions = conditions(facts, self.gpus, self._conditions, time.time())
        for c in self._conditions:  # kubelet's NodeHasDiskPressure / NodeHasNoDiskPressure events
            if c["type"].endswith("Pressure") and before.get(c["type"], "False") != c["status"]:
                if c["status"] == "True":
                    log.warning(f"{c['type']}: node NotReady", extra={"fields": {
                        "why": facts["pressure"][c["type"]][1], "eviction_hard": self.config.eviction_hard}})
                else:
                    log.info(f"no {c['type']} any more", extra={"fields": {"condition": c["type"]}})
        return build_node_record(self.name, self.config.labels, facts, self.gpus, self.rdma, self._conditions,
                                 runtime=self.runtime.name, capabilities=self.runtime.capabilities().to_json(),
                                 url=self.url, started_at=self.started_at, lease_id=self.lease_id)

    async def _register(self) -> None:
        saved = self.config.data_dir / "lease.json"
        lease_id = 0
        sent = time.monotonic()
        old = _saved_lease_id(saved)
        if old:
            with contextlib.suppress(ClientError):
                if (await self.client.lease_keep_alive_once(old)).ttl > 0:
                    lease_id = old  # an agent restart within the TTL keeps its lease
        if not lease_id:
            sent = time.monotonic()
            lease_id = (await self.client.lease_grant(self.config.lease_ttl_s)).id
            self.lease_grants += 1
        self.lease_id = lease_id
        self._lease_renewed(sent)
        await self._ping_runtime()
        self._node_doc = self.node_record()
        heartbeat = {"holder": self.name, "lease_id": lease_id, "ttl_s": self.config.lease_ttl_s,
                     "renew_interval_s": self.config.heartbeat_s, "acquired_at": time.time()}
        await self.client.txn().then(
            Op.put(lease_key(self.name), json.dumps(heartbeat).encode(), lease=lease_id),
            Op.put(node_key(self.name), json.dumps(self._node_doc).encode()),
        ).commit()
        self.registered.set()
        log.info("registered", extra={"fields": {"lease_id": lease_id, "node": self.name}})

    async def _lease_loop(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._register()
            except (ClientError, OSError) as exc:
                self._contact_tried.set()
                log.warning("register failed", extra={"fields": {"error": str(exc), "retry_s": delay}})
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 7.0)
                continue
            delay = 0.2
            self._contact_tried.set()
            await self._keep_alive()
            self.registered.clear()
            self.lease_losses += 1
            log.warning("lease lost; re-registering", extra={"fields": {"lease_id": self.lease_id}})
            self.lease_id = 0
            with contextlib.suppress(OSError):
                (self.config.data_dir / "lease.json").unlink()
            self._relist.set()

    async def _keep_alive(self) -> None:
        """Renew until the server says the lease is gone."""
        retry = 0.2
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            while True:
                try:
                    sent = time.monotonic()
                    resp = await self.client.lease_keep_alive_once(self.lease_id, timeout_s=self.config.request_timeout_s)
                except ClientError:
                    self.keepalive_failures += 1
                    await asyncio.sleep(retry * (0.5 + self._rng.random()))
                    retry = min(retry * 2, 7.0)
                    continue
                retry = 0.2
                if resp.ttl <= 0:
                    return
                self._lease_renewed(sent)
                break

    def _lease_renewed(self, sent: float) -> None:
        """A renewal sent at ``sent`` (monotonic) succeeded: the lease lives at least until
        ``sent + ttl``. Saved with the lease id, so a restarted agent knows how long it has
        been out of touch; ends a fence once the assignments are listed again."""
        self._lease_ok_at = max(self._lease_ok_at, sent)
        doc = {"id": self.lease_id, "renewed_at": time.time() - (time.monotonic() - self._lease_ok_at)}
        path = self.config.data_dir / "lease.json"
        with contextlib.suppress(OSError):
            tmp = path.with_name("lease.json.tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, path)  # a crash mid-write never leaves a torn file
        if self._fenced:
            self._relist.set()

    def _out_of_touch(self) -> bool:
        """No renewal succeeded for TTL + grace: kvraft has let the lease expire (or will
        before anyone hears from us), and the scheduler may have moved our tasks."""
        grace = self.config.lease_loss_grace_s
        return grace >= 0 and time.monotonic() > self._lease_ok_at + self.config.lease_ttl_s + grace

    async def _ping_runtime(self) -> None:
        """kubelet's runtime status check: a runtime that cannot run tasks now makes the node
        NotReady (the scheduler places nothing new here) until it answers again."""
        try:
            async with asyncio.timeout(10.0):
                await self.runtime.ping()
            down = ""
        except RuntimeUnavailable as exc:
            down = str(exc) or "unavailable"
        except TimeoutError:
            down = "no answer to its status check in 10 s"
        if down != self.runtime_down:
            if down:
                log.warning("container runtime is down: node NotReady", extra={"fields": {"error": down}})
            else:
                log.info("container runtime is back: node Ready", extra={"fields": {"runtime": self.runtime.name}})
        self.runtime_down = down

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.node_status_s)
            if not self.registered.is_set():
                continue
            try:
                if self.gpus.source == "nvidia-smi":
                    self.gpus = _after_nvidia_smi(self.gpus, await asyncio.to_thread(load_gpu_inventory, None))
                await self._ping_runtime()
                doc = self.node_record()
                if _without_times(doc) != _without_times(self._node_doc):
                    await self.client.put(node_key(self.name), json.dumps(doc).encode())
                    self._node_doc = doc
            except (ClientError, OSError) as exc:
                log.warning("node status update failed", extra={"fields": {"error": str(exc)}})

    # --- desired state ---------------------------------------------------------------------------
    def _parse(self, key: str, revision: int, value: bytes) -> Assignment:
        try:
            doc = json.loads(value)
        except ValueError as exc:
            return Assignment(key, revision, None, f"assignment: invalid JSON ({exc})")
        a = parse_assignment(key, revision, doc)
        if a.spec is not None:
            try:
                self.gpus.grant(a.spec.resources.gpus)
            except KeyError as exc:
                return Assignment(key, revision, None, f"spec.resources.gpus: {exc.args[0]}")
            if a.spec.resources.rdma and not self.rdma:
                return Assignment(key, revision, None, "spec.resources.rdma: this node has no RDMA devices")
        return a

    async def _load_reported(self, keys: list[str]) -> None:
        sem = asyncio.Semaphore(16)

        async def one(key: str) -> None:
            async with sem:
                resp = await self.client.get(status_key(key))
            if not resp.kvs:
                self._status_mod[key] = 0
                return
            kv = resp.kvs[0]
            self._status_mod[key] = kv.mod_revision
            rep = _reported_from(kv.value)
            if rep is not None:
                self.reported[key] = rep

        await asyncio.gather(*(one(k) for k in keys))

    async def _watch_loop(self) -> None:
        prefix = assignments_prefix(self.name)
        delay = 0.2
        while True:
            try:
                self._relist.clear()  # a request arriving while listing asks for another list
                list_started = time.monotonic()
                resp = await self.client.get(prefix, prefix=True)
                desired: dict[str, Assignment] = {}
                for kv in resp.kvs:
                    key = split_assignment_key(self.name, kv.key)  # None for bytes that are not UTF-8
                    if key is not None:
                        desired[key] = self._parse(key, kv.create_revision, kv.value)
                await self._load_reported(list(desired))
                self.desired = desired
                for key in [k for k in self.reported if k not in desired]:
                    del self.reported[key]
                self._desired_loaded.set()
                if self._fenced and self._lease_ok_at <= list_started and not self._out_of_touch():
                    self._fenced = False  # renewed, then listed: the assignments are current again
                    log.warning("lease renewed and assignments relisted: unfenced",
                                extra={"fields": {"lease_id": self.lease_id, "tasks": len(desired)}})
                self.watch_relists += 1
                self.wake()
                delay = 0.2
                watch = asyncio.get_running_loop().create_task(self._follow(prefix, resp.header.revision + 1))
                relist = asyncio.get_running_loop().create_task(self._relist.wait())
                try:
                    await asyncio.wait({watch, relist}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait(relist, watch)
                # a failed watch (not one that fell behind compaction: relist) is retried below
                failed = None if watch.cancelled() else watch.exception()
                if failed is not None and not isinstance(failed, WatchCompactedError):
                    raise failed
            except (ClientError, OSError) as exc:
                log.warning("assignment watch failed", extra={"fields": {"error": str(exc), "retry_s": delay}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 7.0)

    async def _follow(self, prefix: str, revision: int) -> None:
        async with self.client.watch(prefix, prefix=True, start_revision=revision, reconnect_timeout_s=None) as w:
            async for resp in w:
                for ev in resp.events:
                    key = split_assignment_key(self.name, ev.kv.key)
                    if key is None:
                        continue
                    if ev.type == "PUT":
                        a = self._parse(key, ev.kv.create_revision, ev.kv.value)
                        old = self.desired.get(key)
                        self.desired[key] = a
                        if old is None or old.revision != a.revision:
                            self._status_mod.setdefault(key, 0)
                            self._assigned_at[key] = time.monotonic()
                    else:
                        self.desired.pop(key, None)
                self.wake()

    # --- reconcile and actions ---------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            timeout = self.config.relist_s
            if self._wakeup_at is not None:
                timeout = max(0.0, min(timeout, self._wakeup_at - time.time()))
            await wait_event(self._wake, timeout)
            self._wake.clear()
            if not self._fenced and self._contact_tried.is_set() and self._out_of_touch():
                self._fenced = True
                self.fences += 1
                log.warning("lease out of touch past its TTL and grace: fenced, stopping every task",
                            extra={"fields": {"lease_id": self.lease_id, "ttl_s": self.config.lease_ttl_s,
                                              "grace_s": self.config.lease_loss_grace_s}})
            if not self._desired_loaded.is_set() and not self._fenced:
                continue  # a restarted agent never acts before it has read its assignments
            try:
                await self.reconcile_once()
                self._reconcile_error = ""
            except DataDirGone as exc:  # the attempts' state is gone: acting on it would double them
                self.fatal = f"{exc}; its tasks' state is gone: stopping them and exiting"
                log.critical(self.fatal)
                self.failed.set()
                return
            except RuntimeUnavailable as exc:  # dockerd down: one line when it starts, not a traceback a pass
                if str(exc) != self._reconcile_error:
                    log.warning("reconcile pass failed: container runtime unavailable", extra={"fields": {"error": str(exc)}})
                self._reconcile_error = str(exc)
                await asyncio.sleep(self.config.relist_s)
            except Exception:  # a bug must not stop the agent; it is logged with its traceback
                log.exception("reconcile pass failed")
                await asyncio.sleep(self.config.relist_s)

    async def reconcile_once(self) -> list[Action]:
        t0 = time.perf_counter()
        self.data_dir.check()
        self.observed = await self.runtime.observe()
        stimulus_id = f"{self.name}-{next(self._stimulus)}"
        actions = reconcile(self.desired, self.observed, self.reported, time.time(),
                            stimulus_id=stimulus_id, backoff=self.backoff, fenced=self._fenced,
                            retain_finished_s=self.config.finished_retention_s, starting=self._starting_gpus)
        self.reconcile_passes += 1
        self.reconcile_seconds_total += time.perf_counter() - t0
        self._wakeup_at = None
        for action in actions:
            if isinstance(action, Wakeup):
                self._wakeup_at = action.at_s
                continue
            if action.key in self._busy:
                continue
            self._busy.add(action.key)
            if isinstance(action, Start):
                self._starting_gpus[action.key] = action.spec.resources.gpus
            task = asyncio.get_running_loop().create_task(self._run_action(action))
            self._action_tasks.add(task)
            task.add_done_callback(self._action_tasks.discard)
            if isinstance(action, Start):
                self._start_tasks.add(task)
                task.add_done_callback(self._start_tasks.discard)
        return actions

    async def _run_action(self, action: TaskAction) -> None:
        kind = type(action).__name__
        fields: dict[str, object] = {"action": kind, "stimulus_id": action.stimulus_id}
        try:
            if isinstance(action, Start):
                fields |= {"task": action.key, "attempt": action.attempt}
                devices = self.gpus.grant(action.spec.resources.gpus, self.rdma, action.spec.resources.rdma) \
                    if action.spec.resources.gpus or action.spec.resources.rdma else DeviceGrant()
                spec = await self._with_rank_env(action.spec, action.key, action.attempt)
                await self.runtime.start(TaskRun(action.key, action.attempt, action.revision, spec, devices))
            elif isinstance(action, Stop):
                fields |= {"task": action.key, "attempt": action.attempt, "reason": action.reason}
                await self.runtime.stop(action.key, action.attempt, action.grace_s)
            elif isinstance(action, Cleanup):
                fields |= {"task": action.key, "attempt": action.attempt}
                await self.runtime.cleanup(action.key, action.attempt)
                await self.tokens.revoke(action.key, action.attempt)
            elif isinstance(action, Remove):
                fields |= {"task": action.key, "attempt": action.attempt}
                await self.runtime.remove(action.key, action.attempt)
                await self.tokens.revoke(action.key, action.attempt)
            elif isinstance(action, Report):
                fields |= {"task": action.key, "phase": action.status.phase.value, "attempt": action.status.attempt}
                await self._write_status(action)
            self.actions[kind] += 1
            log.info(kind.lower(), extra={"fields": fields})
        except (ClientError, OSError) as exc:
            self.actions[kind + "Failed"] += 1
            log.warning(f"{kind.lower()} failed", extra={"fields": fields | {"error": str(exc)}})
            await asyncio.sleep(0.2)
        except Exception:
            self.actions[kind + "Failed"] += 1
            log.exception(f"{kind.lower()} failed", extra={"fields": fields})
            await asyncio.sleep(0.2)
        finally:
            self._busy.discard(action.key)
            if isinstance(action, Start):
                self._starting_gpus.pop(action.key, None)
            self.wake()

    async def _with_rank_env(self, spec: TaskSpec, key: str = "", attempt: int = 0) -> TaskSpec:
        """Add the rank/placement environment (``agent.rankenv``, owned by the end-to-end work,
        issue 13); the binding and job uid are read once per start, best effort. With auth
        on, the task gets a token scoped to its job's keys (``agent.jobtokens``)."""
        env = dict(spec.env)
        binding: dict[str, Any] | None = None
        uid = 0
        job = env.get("KVRAFT_JOB", "")
        if "/" in job or job in (".", ".."):
            job = ""  # not a name under /registry/ or /jobs/
        token = ""
        if job and key and "KVRAFT_TOKEN" not in env:
            token = await self.tokens.grant(job, key, attempt, self.lease_id)
        if job and env.get("KVRAFT_PEERS"):
            with contextlib.suppress(ClientError, OSError, ValueError, asyncio.TimeoutError):
                got = await self.client.get(f"/registry/bindings/{job}")
                doc = json.loads(got.kvs[0].value) if got.kvs else None
                binding = doc if isinstance(doc, dict) else None  # anyone may write it: racks are a hint
                got = await self.client.get(f"/registry/jobs/{job}")
                uid = got.kvs[0].create_revision if got.kvs else 0
        host = (self.config.listen_url.split("://", 1)[-1].rsplit(":", 1)[0]).strip("[]")
        c = self.config
        # (the client's endpoints: the configured ones until auto-sync has taken the members')
        facts = NodeFacts(self.name, c.labels.get("rack", "rack-0"), tuple(self.client.endpoints),
                          host if host not in ("", "0.0.0.0", "::") else "", cacert=c.cacert, cert=c.cert, key=c.key,
                          insecure_skip_tls_verify=c.insecure_skip_tls_verify, token=token)
        extra = rank_env(env, facts, binding, uid)
        return dataclasses.replace(spec, env=tuple(sorted((env | extra).items()))) if extra else spec

    def _log_tail(self, key: str, attempt: int) -> str:
        """The last ``LOG_TAIL_BYTES`` of the attempt's output, without the CRI prefixes."""
        data = b""
        truncated = False
        for path in reversed(self.runtime.log_files(key, attempt)):
            with contextlib.suppress(OSError), open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - LOG_TAIL_BYTES * 2)
                f.seek(start)
                data = f.read() + data
                truncated = start > 0
            if len(data) >= LOG_TAIL_BYTES * 2:
                break
        lines = data.splitlines()
        if truncated and lines:
            lines = lines[1:]  # the first line was cut by the seek
        texts = []
        for ln in lines:
            parsed = parse_line(ln)
            texts.append(ln if parsed is None else parsed[3])
        return b"\n".join(texts).decode(errors="replace")[-LOG_TAIL_BYTES:]

    async def _write_status(self, action: Report) -> None:
        key, s = action.key, action.status
        doc: dict[str, Any] = {"job": key.split("/", 1)[0], "task": key.split("/", 1)[1], "node": self.name,
                               "assignment_revision": action.revision, **s.to_json(),
                               "updated_at": time.time(), "agent_url": self.url, "stimulus_id": action.stimulus_id}
        if s.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.PENDING) and s.attempt:
            doc["log_tail"] = await asyncio.to_thread(self._log_tail, key, s.attempt)
        akey, skey = assignment_key(self.name, key), status_key(key)
        body = json.dumps(doc).encode()
        for _ in range(8):
            mod = self._status_mod.get(key, 0)
            resp = await self.client.txn().if_(
                Compare.create(akey, "=", action.revision), Compare.mod(skey, "=", mod)
            ).then(Op.put(skey, body)).else_(Op.get(akey), Op.get(skey)).commit()
            if resp.succeeded:
                self._status_mod[key] = resp.header.revision
                self.reported[key] = Reported(action.revision, s.attempt, s.phase, s.reason)
                self.status_writes["ok"] += 1
                if s.phase is Phase.RUNNING and key in self._assigned_at:
                    self.assign_to_running_ms.append((time.monotonic() - self._assigned_at.pop(key)) * 1000)
                return
            a_resp, s_resp = resp.responses
            akvs = getattr(a_resp, "kvs", ())
            if not akvs or akvs[0].create_revision != action.revision:
                self.status_writes["stale_assignment"] += 1
                self.reported[key] = Reported(action.revision, s.attempt, s.phase, s.reason)  # nothing to report to
                return
            skvs = getattr(s_resp, "kvs", ())
            self._status_mod[key] = skvs[0].mod_revision if skvs else 0
            current = _reported_from(skvs[0].value) if skvs else None
            if current is not None and not is_newer(s, action.revision, current):
                self.status_writes["superseded"] += 1
                self.reported[key] = current
                return
            self.status_writes["retry"] += 1
        raise ClientError(f"status of {key}: compare kept failing")


def _after_nvidia_smi(last: GpuInventory, fresh: GpuInventory) -> GpuInventory:
    """The inventory after nvidia-smi was asked again: a call that failed (a timeout under
    load, a GPU off the bus) keeps the GPUs last listed, unhealthy (the node is not Ready),
    rather than a node of no GPUs on which every assignment meanwhile is invalid for good."""
    if fresh.gpus or fresh.healthy or not last.gpus:
        return fresh
    return dataclasses.replace(last, healthy=False, health_message=fresh.health_message)


def _reported_from(value: bytes) -> Reported | None:
    """The status last written for a task, None when it does not decode (anyone may write the
    key: a list, text, 1e999; it is then overwritten like a missing one)."""
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    revision, attempt, phase = doc.get("assignment_revision", 0), doc.get("attempt", 0), doc.get("phase")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (revision, attempt)) or \
            not isinstance(phase, str) or phase not in {p.value for p in Phase}:
        return None
    return Reported(revision, attempt, Phase(phase), str(doc.get("reason", "")))


def _saved_lease_id(path: Any) -> int:
    """The lease id a previous agent saved; 0 when none reads as one (the file is the agent's,
    but anyone may edit it: a null or a list there must not stop the registration)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    lease_id = doc.get("id") if isinstance(doc, dict) else None
    return lease_id if isinstance(lease_id, int) and not isinstance(lease_id, bool) and 0 < lease_id < 2**63 else 0


def _saved_lease_age(path: Any) -> float:
    """Seconds since the saved lease was last renewed (0 when unknown: a first start)."""
    try:
        renewed_at = float(json.loads(path.read_text())["renewed_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
    return max(0.0, time.time() - renewed_at)


def _without_times(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in ("updated_at",)}
    out["conditions"] = [{k: v for k, v in c.items() if k not in ("last_heartbeat",)} for c in doc.get("conditions", [])]
    facts = dict(out.get("machine", {}))
    facts.pop("memory_available_mib", None)
    facts.pop("disk_free_fraction", None)
    out["machine"] = facts
    return out
