"""Writing the scheduler's decisions to kvraft, each as one txn that compares revisions.

**Bind** (one txn per batch of jobs, at most ``max_ops`` operations)::

    if   create(/registry/scheduler/leader/<our key>) == our election revision   (fence)
    and  mod(/registry/jobs/<job>)      == the revision the decision read       (not cancelled)
    and  create(/registry/bindings/<job>) == 0                                 (not bound)
    and  mod(/registry/alloc/<node>)    == the revision the decision read       (per node)
    then put alloc/<node> (+ the job's GPUs), bindings/<job>, assignments/<node>/<job>/<task>
         (the agent's task spec), jobstatus/<job>, events/<job>/<seq>

A stale scheduler (an old leader, or one whose cache lags) fails the compare and learns
``BindFailed``; no GPU is ever given twice because every GPU of a node is recorded in that
node's alloc key, and every writer compares its revision. A batch that fails is retried job
by job so one conflict does not fail its neighbours.

**Release** (a run ended: finished, failed, lost, cancelled, preempted, restarted): re-read
the alloc keys, then ``if fence and mod(bindings/<job>) == seen and mod(alloc/<node>) == read``
delete the binding and assignments, take the job out of the alloc keys, write the status and
events; retried on alloc conflicts.

**Evict** (preemption, or an operator's request, step 1): read the run's assignments, then
``if fence and mod(bindings/<job>) == seen and mod(each assignment) == read [and
mod(evictions/<job>) == seen]`` mark the binding ``evicting_until = now + grace`` (and, for a
request, ``eviction: {reason, message}``), put each assignment again with ``stopping: {reason,
since}``, so the agents stop the tasks with SIGTERM and the grace period and report how they
ended, and delete the request in the same txn (``scheduler.evictions``: acted on once). The
GPUs stay held meanwhile; the release follows when every task has reported its end, or when
the grace period is over (an agent that is gone reports nothing). **Drop** a request: ``if
fence and mod(evictions/<job>) == seen`` delete it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kvraft.client import Compare, Op, PermissionDeniedError
from scheduler import accounting, arrays, decode, keys
from scheduler.informer_view import Binding as StoredBinding
from scheduler.informer_view import ClusterView
from scheduler.jobs import task_instances
from scheduler.model import Binding

WAVE = 8  # bind txns in flight at once

log = logging.getLogger("kvraft.scheduler.binder")

__all__ = ["RUN_ENDINGS", "BindOutcome", "Binder", "assignment_doc"]

# The job status counters of ended runs: each run ends in at most one of them, so their sum is
# the next run's number (``KVRAFT_RUN``), and a bind carries them into the new run's status.
RUN_ENDINGS = ("restarts", "preemptions", "evictions", "resizes", "suspensions")


@dataclass(frozen=True, slots=True)
class BindOutcome:
    job: str
    ok: bool
    revision: int
    latency_s: float


def assignment_doc(spec: dict[str, Any], task: str, group: dict[str, Any], gpus: list[int], *, rank: int,
                   world: int, restarts: int, peers: str, user: tuple[int, int] | None = None,
                   run: int | None = None, job_uid: int = 0) -> dict[str, Any]:
    """The agent's assignment document (agent/spec.py) for one task instance; ``user``: the
    ``(uid, gid)`` it runs as (its tenant's ``run_as``), else root. ``run``: which run of the
    job this is, from 0 (the runs ended so far: ``RUN_ENDINGS``, each run ends in at most one
    of them), and ``job_uid`` the job key's create revision; with them every rank of a
    run, and only of that run, gets the same ``KVRAFT_RUN_ID`` (agent.rankenv)."""
    env = dict(group.get("env") or {})
    env.update({
        "KVRAFT_JOB": spec["name"], "KVRAFT_TASK": task, "KVRAFT_RANK": str(rank),
        "KVRAFT_WORLD_SIZE": str(world), "KVRAFT_RESTARTS": str(restarts), "KVRAFT_PEERS": peers,
        "KVRAFT_RUN": str(restarts if run is None else run),
    })
    env.update(arrays.env(spec))  # an element of a job array: its index (scheduler.arrays)
    if job_uid:
        env["KVRAFT_JOB_UID"] = str(job_uid)
    if spec.get("checkpoint_dir"):
        env["KVRAFT_CHECKPOINT_DIR"] = spec["checkpoint_dir"]
    r = group["resources"]
    resources: dict[str, Any] = {"gpus": gpus, "cpu_milli": r["cpu_milli"], "rdma": r["rdma"]}
    if r["memory_mib"]:
        resources["memory_mib"] = r["memory_mib"]
    doc: dict[str, Any] = {
        "image": group["image"], "command": group["command"], "env": env, "workdir": group.get("workdir", ""),
        "resources": resources, "restart_policy": "Never", "grace_s": spec.get("grace_s", 30.0),
    }
    if user is not None:
        doc["user"] = list(user)
    return {"job": spec["name"], "task": task, "spec": doc}


class Binder:
    def __init__(self, client: Any, view: ClusterView, *, identity: str,
                 fence: Callable[[], list[Compare]] = list, max_ops: int = 120) -> None:
        self.client = client
        self.view = view
        self.identity = identity
        self.fence = fence
        self.max_ops = max_ops
        self._seq = 0
        self.conflicts = 0
        self.txns = 0
        self.accounting_refused = 0  # releases whose accounting record kvraft refused (permission)

    def _event(self, job: str, kind: str, message: str, now: float) -> Op:
        self._seq += 1
        seq = int(now * 1e6) * 1000 + self._seq % 1000
        doc = {"type": kind, "message": message, "at": now, "scheduler": self.identity}
        return Op.put(keys.event_key(job, seq), json.dumps(doc).encode())

    # --- bind ---------------------------------------------------------------------------------
    def _run_as(self, tenant: str) -> tuple[int, int] | None:
        """The tenant's ``run_as`` (None without a record, or one that does not decode: the
        view has logged it)."""
        entry = self.view.tenants.get(tenant)
        if entry is None:
            return None
        try:
            return decode.tenant(tenant, entry.doc).run_as
        except decode.Malformed:
            return None

    def _plan(self, b: Binding, now: float) -> tuple[list[Compare], list[Op], dict[str, dict[str, Any]], dict[str, Any]]:
        view = self.view
        entry = view.jobs[b.job_id]
        spec = entry.doc
        instances = task_instances(spec)
        size = len(b.placement.tasks)
        elastic = spec.get("min_available") is not None and size < len(instances)
        note = ""
        if elastic:  # an elastic job (one task group) bound with fewer tasks: the first ones
            note = f"; {size} of {len(instances)} tasks (elastic, at least {spec['min_available']})"
            instances = instances[:size]
        by_index = {t.task: t for t in b.placement.tasks}
        known = view.status.get(b.job_id)
        counts = (known.doc or {}) if known is not None else {}
        restarts = int(counts.get("restarts", 0))
        run = sum(int(counts.get(k, 0)) for k in RUN_ENDINGS)
        first_node = b.placement.tasks[0].node
        rows: list[dict[str, Any]] = []
        for i, (task, group) in enumerate(instances):
            t = by_index.get(i)
            node, gpus = (t.node, list(t.gpus)) if t is not None else (first_node, [])
            rack = str((view.nodes[node].doc or {}).get("rack", "rack-0")) if node in view.nodes else "rack-0"
            rows.append({"task": task, "node": node, "rack": rack, "gpus": gpus, "index": i if t is not None else -1,
                         "group": group})
        peers = ",".join(f"{r['task']}@{r['node']}" for r in rows)
        user = self._run_as(str(spec.get("tenant", "")))
        ops: list[Op] = []
        per_node: dict[str, dict[str, Any]] = {}
        for rank, row in enumerate(rows):
            group = row.pop("group")
            doc = assignment_doc(spec, row["task"], group, row["gpus"], rank=rank, world=len(rows),
                                 restarts=restarts, peers=peers, user=user, run=run, job_uid=entry.create_revision)
            ops.append(Op.put(keys.assignment_key(row["node"], f"{b.job_id}/{row['task']}"), json.dumps(doc).encode()))
            a = per_node.setdefault(row["node"], {"gpus": [], "cpu_milli": 0, "memory_mib": 0})
            a["gpus"].extend(row["gpus"])
            a["cpu_milli"] += group["resources"]["cpu_milli"]
            a["memory_mib"] += group["resources"]["memory_mib"]
        binding = {"job": b.job_id, "tasks": rows, "bound_at": now, "scheduler": self.identity,
                   "evicting_until": None, "generation": restarts}
        ops.append(Op.put(keys.binding_key(b.job_id), json.dumps(binding).encode()))
        status = {"name": b.job_id, "phase": "Running", "reason": "Scheduled",
                  "message": f"bound to {len(per_node)} node(s){note}",
                  **{k: int(counts.get(k, 0)) for k in RUN_ENDINGS},
                  "placement": [{k: r[k] for k in ("task", "node", "rack", "gpus")} for r in rows],
                  "bound_at": now, "updated_at": now}
        verdict = view.dependency_verdict(b.job_id)
        if verdict is not None:  # met, or the core would not have it: final, whatever their keys become
            status["dependencies"] = verdict.record
        ops.append(Op.put(keys.jobstatus_key(b.job_id), json.dumps(status).encode()))
        where = ", ".join(f"{n}:{v['gpus']}" for n, v in per_node.items())
        ops.append(self._event(b.job_id, "Scheduled", f"bound to {where}{note}", now))
        compares = [Compare.mod(keys.job_key(b.job_id), "=", entry.mod_revision),
                    Compare.create(keys.binding_key(b.job_id), "=", 0)]
        return compares, ops, per_node, {"binding": binding, "status": status}

    async def bind(self, bindings: Sequence[Binding]) -> list[BindOutcome]:
        """Write ``bindings``; one outcome per binding, in order."""
        now = time.time()
        plans: list[tuple[Binding, Any]] = []
        for b in bindings:
            if b.job_id not in self.view.jobs:
                plans.append((b, None))
                continue
            plan = self._plan(b, now)
            why = self._taken(b.job_id, plan[2])
            if why:
                log.warning("bind refused", extra={"fields": {"job": b.job_id, "why": why}})
            plans.append((b, None if why else plan))
        out: dict[str, BindOutcome] = {}
        # Batches of <= max_ops ops, committed concurrently in waves whose batches share no
        # node (each batch compares the alloc revisions of its nodes, so two batches touching
        # one node would fail each other's compare); kvraft commits a wave in one group.
        wave: list[list[tuple[Binding, Any]]] = []
        sizes: list[int] = []
        owner: dict[str, int] = {}  # node -> its batch in the current wave
        for b, plan in plans:
            if plan is None:
                out[b.job_id] = BindOutcome(b.job_id, False, 0, 0.0)
                continue
            n = len(plan[0]) + len(plan[1]) + 2 * len(plan[2])
            owners = {owner[node] for node in plan[2] if node in owner}
            if len(owners) > 1 or (owners and sizes[next(iter(owners))] + n > self.max_ops):
                await self._bind_wave(wave, out)
                wave, sizes, owner, owners = [], [], {}, set()
            if owners:
                i = next(iter(owners))
            elif len(wave) < WAVE:
                i = len(wave)  # spread over up to WAVE concurrent txns
                wave.append([])
                sizes.append(0)
            else:
                i = next((k for k, size in enumerate(sizes) if size + n <= self.max_ops), -1)
                if i < 0:
                    await self._bind_wave(wave, out)
                    wave, sizes, owner, i = [[]], [0], {}, 0
            wave[i].append((b, plan))
            sizes[i] += n
            for node in plan[2]:
                owner[node] = i
        await self._bind_wave(wave, out)
        return [out[b.job_id] for b in bindings]

    def _taken(self, job: str, per_node: dict[str, dict[str, Any]]) -> str:
        """Why the GPUs a plan takes are not free in the alloc records, or "": every GPU is given
        once, whatever the core believed (it is told only what decodes)."""
        for node, add in per_node.items():
            try:
                held = self.view.alloc_jobs(node)
            except decode.Malformed as exc:
                return f"{keys.alloc_key(node)}: {exc}"
            taken = {g for other, h in held.items() if other != job for g in h["gpus"]}
            both = sorted(taken & set(add["gpus"]))
            if both:
                return f"GPUs {both} of {node} are held by {sorted(o for o, h in held.items() if set(h['gpus']) & set(both))}"
        return ""

    async def _bind_wave(self, wave: list[list[tuple[Binding, Any]]], out: dict[str, BindOutcome]) -> None:
        if wave:
            await asyncio.gather(*(self._bind_batch(batch, out) for batch in wave if batch))

    async def _bind_batch(self, batch: list[tuple[Binding, Any]], out: dict[str, BindOutcome]) -> None:
        ok, rev, dt = await self._commit_binds(batch)
        if ok:
            for b, _ in batch:
                out[b.job_id] = BindOutcome(b.job_id, True, rev, dt)
            return
        if len(batch) == 1:
            b = batch[0][0]
            out[b.job_id] = BindOutcome(b.job_id, False, 0, dt)
            return
        for item in batch:
            ok, rev, dt = await self._commit_binds([item])
            out[item[0].job_id] = BindOutcome(item[0].job_id, ok, rev, dt)

    async def _commit_binds(self, batch: list[tuple[Binding, Any]]) -> tuple[bool, int, float]:
        view = self.view
        compares = list(self.fence())
        ops: list[Op] = []
        merged: dict[str, dict[str, Any]] = {}
        for b, (cmp, bops, per_node, _) in batch:
            compares += cmp
            ops += bops
            for node, add in per_node.items():
                if node not in merged:
                    try:
                        merged[node] = view.alloc_jobs(node)
                    except decode.Malformed:  # changed since the plan (the watch ran meanwhile)
                        return False, 0, 0.0
                    compares.append(Compare.mod(keys.alloc_key(node), "=", view.alloc_revision(node)))
                merged[node][b.job_id] = add
        for node, jobs in merged.items():
            ops.append(Op.put(keys.alloc_key(node), json.dumps({"node": node, "jobs": jobs}).encode()))
        t0 = time.perf_counter()
        resp = await self.client.txn().if_(*compares).then(*ops).commit()
        dt = time.perf_counter() - t0
        self.txns += 1
        if not resp.succeeded:
            self.conflicts += 1
            return False, 0, dt
        rev = resp.header.revision
        for node, jobs in merged.items():
            old = view.alloc.get(node)
            view.put_local(keys.alloc_key(node), {"node": node, "jobs": jobs}, old.create_revision if old else rev, rev)
        for b, (_, _, _, docs) in batch:
            view.put_local(keys.binding_key(b.job_id), docs["binding"], rev, rev)
            old = view.status.get(b.job_id)
            view.put_local(keys.jobstatus_key(b.job_id), docs["status"], old.create_revision if old else rev, rev)
        return True, rev, dt

    # --- release and evict --------------------------------------------------------------------
    async def release(self, b: StoredBinding, status: dict[str, Any], events: Sequence[tuple[str, str]], *,
                      clear_task_status: bool, extra_nodes: Sequence[str] = (),
                      usage: dict[str, Any] | None = None) -> bool:
        """End the run held by binding ``b``; ``status`` is the job's new status document.
        False when the binding changed meanwhile (someone else released it). ``extra_nodes``:
        nodes the job holds that the binding does not name (rows that did not decode).
        ``usage``: the run's accounting record (``scheduler.accounting.record``), written by the
        same txn, so exactly once."""
        job = b.job
        nodes = tuple(dict.fromkeys((*b.nodes(), *extra_nodes)))
        for _ in range(8):
            now = time.time()
            read = await self.client.txn().then(*(Op.get(keys.alloc_key(n)) for n in nodes)).commit()
            compares = list(self.fence()) + [Compare.mod(keys.binding_key(job), "=", b.mod_revision)]
            ops: list[Op] = [Op.delete(keys.binding_key(job))]
            new_alloc: dict[str, tuple[dict[str, Any], int]] = {}
            for node, r in zip(nodes, read.responses, strict=True):
                kvs = getattr(r, "kvs", ())
                mod = kvs[0].mod_revision if kvs else 0
                compares.append(Compare.mod(keys.alloc_key(node), "=", mod))
                try:
                    jobs = decode.alloc_jobs(decode.json_value(kvs[0].value)) if kvs else {}
                except decode.Malformed as exc:  # left as it is (the node stays unschedulable)
                    log.warning("alloc record not updated", extra={"fields": {"key": keys.alloc_key(node), "job": job,
                                                                                "why": str(exc)}})
                    jobs = None
                if jobs is not None:
                    jobs.pop(job, None)
                    new_alloc[node] = (jobs, kvs[0].create_revision if kvs else 0)
                    if jobs:
                        ops.append(Op.put(keys.alloc_key(node), json.dumps({"node": node, "jobs": jobs}).encode()))
                    else:
                        ops.append(Op.delete(keys.alloc_key(node)))
                ops.append(Op.delete(f"{keys.ASSIGNMENTS}{node}/{job}/", prefix=True))
            if clear_task_status:
                ops.append(Op.delete(keys.task_status_prefix(job), prefix=True))
            status = dict(status, updated_at=now)
            ops.append(Op.put(keys.jobstatus_key(job), json.dumps(status).encode()))
            ops += [self._event(job, event, message, now) for event, message in events]
            if usage is not None:
                month = accounting.month_of(usage["ended_at"])
                ops.append(Op.put(accounting.key(month, usage["tenant"], job, usage["run"]), json.dumps(usage).encode()))
            try:
                resp = await self.client.txn().if_(*compares).then(*ops).else_(Op.get(keys.binding_key(job))).commit()
            except PermissionDeniedError:
                if usage is None:
                    raise
                # a deployment whose scheduler role predates /accounting/ (deploy/rbac.sh grants
                # it): the run is released all the same, without its record
                self.accounting_refused += 1
                if self.accounting_refused == 1:
                    log.warning("accounting record refused: this scheduler's kvraft user may not write /accounting/ "
                                "(re-run deploy/rbac.sh); runs are released without their records",
                                extra={"fields": {"job": job}})
                usage = None
                continue
            self.txns += 1
            if resp.succeeded:
                rev = resp.header.revision
                self.view.delete_local(keys.binding_key(job))
                for node, (jobs, create) in new_alloc.items():
                    if jobs:
                        self.view.put_local(keys.alloc_key(node), {"node": node, "jobs": jobs}, create or rev, rev)
                    else:
                        self.view.delete_local(keys.alloc_key(node))
                old = self.view.status.get(job)
                self.view.put_local(keys.jobstatus_key(job), status, old.create_revision if old else rev, rev)
                return True
            self.conflicts += 1
            kvs = getattr(resp.responses[0], "kvs", ())
            if not kvs or kvs[0].mod_revision != b.mod_revision:
                return False
        return False

    async def evict(self, b: StoredBinding, grace_s: float, status: dict[str, Any], message: str, *,
                    event: str = "Preempted", eviction: dict[str, str] | None = None,
                    request: tuple[str, int] | None = None, events: Sequence[tuple[str, str]] = ()) -> bool:
        """Start stopping the run of ``b``; ``eviction`` (``{reason, message}``) marks an eviction
        an operator asked for (or any stop but a preemption), ``request`` (key, mod revision) is
        that request, deleted in the same txn; ``events`` are written before ``event``. False
        when the binding or the request changed meanwhile."""
        read = await self.client.txn().then(
            *(Op.get(f"{keys.ASSIGNMENTS}{n}/{b.job}/", prefix=True) for n in b.nodes())).commit()
        now = time.time()
        doc: dict[str, Any] = {"job": b.job, "tasks": list(b.tasks), "bound_at": b.bound_at,
                               "scheduler": self.identity, "evicting_until": now + grace_s}
        if eviction is not None:
            doc["eviction"] = eviction
        ops = [Op.put(keys.binding_key(b.job), json.dumps(doc).encode()),
               Op.put(keys.jobstatus_key(b.job), json.dumps(dict(status, updated_at=now)).encode()),
               *(self._event(b.job, kind, text, now) for kind, text in events),
               self._event(b.job, event, message, now)]
        compares = [*self.fence(), Compare.mod(keys.binding_key(b.job), "=", b.mod_revision)]
        stopping = {"reason": eviction["reason"] if eviction is not None else "preempted", "since": now}
        for r in read.responses:
            for kv in getattr(r, "kvs", ()):
                compares.append(Compare.mod(kv.key, "=", kv.mod_revision))
                ops.append(_stopping(kv, b.revision, stopping))
        if request is not None:
            compares.append(Compare.mod(request[0], "=", request[1]))
            ops.append(Op.delete(request[0]))
        resp = await self.client.txn().if_(*compares).then(*ops).commit()
        self.txns += 1
        if resp.succeeded:
            rev = resp.header.revision
            self.view.put_local(keys.binding_key(b.job), doc, b.revision, rev)
            if request is not None:
                self.view.delete_local(request[0])
        else:
            self.conflicts += 1
        return bool(resp.succeeded)

    async def drop_request(self, key: str, mod_revision: int) -> bool:
        """Delete an eviction request that is not acted on; False when it changed meanwhile
        (or we no longer lead)."""
        resp = await self.client.txn().if_(*self.fence(), Compare.mod(key, "=", mod_revision)) \
            .then(Op.delete(key)).commit()
        self.txns += 1
        if resp.succeeded:
            self.view.delete_local(key)
        else:
            self.conflicts += 1
        return bool(resp.succeeded)

    # --- statuses and events ------------------------------------------------------------------
    async def write_statuses(self, docs: dict[str, dict[str, Any]], events: Sequence[tuple[str, str, str]] = ()) -> int:
        """Put job status documents (pending reasons and the like), fenced, in batches."""
        now = time.time()
        ops = [Op.put(keys.jobstatus_key(j), json.dumps(dict(d, updated_at=now)).encode()) for j, d in docs.items()]
        ops += [self._event(j, kind, msg, now) for j, kind, msg in events]
        written = 0
        fence = self.fence()
        for i in range(0, len(ops), self.max_ops):
            chunk = ops[i:i + self.max_ops]
            resp = await self.client.txn().if_(*fence).then(*chunk).commit()
            self.txns += 1
            if not resp.succeeded:
                return written
            written += len(chunk)
        for j, d in docs.items():
            old = self.view.status.get(j)
            self.view.put_local(keys.jobstatus_key(j), dict(d, updated_at=now), old.create_revision if old else 0,
                                old.mod_revision if old else 0)
        return written


def _stopping(kv: Any, run: int, stopping: dict[str, Any]) -> Op:
    """The op that asks the agent to stop one task of run ``run`` (an evict): its assignment
    put again with ``stopping`` (Kubernetes' deletionTimestamp; the agent stops the task and
    reports its end, agent/reconcile.py rule 6). A key of another placement, or one that does
    not decode, is deleted, which stops the task too, as a release does."""
    try:
        doc = json.loads(kv.value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or kv.create_revision != run:
        return Op.delete(kv.key)
    return Op.put(kv.key, json.dumps(dict(doc, stopping=stopping)).encode())
