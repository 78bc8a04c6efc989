"""The lifecycle of a bound run, the half of ``kvraft-scheduler``'s step that is not the pass.

Each step, for every job whose keys changed or whose timer is due, ``RunLifecycle._lifecycle``
decides the fate of its run from the view alone:

- **it runs on**: the status goes Starting/Running as the agents report their tasks;
- **it ends**: every task Succeeded (released at once); a task failed, a node was lost, the
  binding is not one the core can hold, the job was cancelled or ran past ``max_run_s``
  (``_end_run``: restarted under ``restart_policy: OnFailure`` or ended, its status and
  events written now, its GPUs held until every task has reported its end, or the grace period
  is over: the ``FINAL_STOPS``);
- **it is stopped to run again later**: a preemption or a resize from the core's pass, an
  operator's eviction request (``scheduler.evictions``), ``suspend`` (``_stop``): the
  assignments are marked stopping with the grace period and the run is released, back to
  Pending, once its tasks have ended (``_stopped`` names how).

A release (``_release``) frees the GPUs in one txn with the job's status, its events and its
accounting record (``scheduler.accounting``). The class is the daemon's base: it reads and
writes the daemon's view, binder and timers, which ``SchedulerDaemon.__init__`` creates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from kvraft.client import ClientError
from scheduler import accounting, decode, evictions, keys
from scheduler.binder import Binder
from scheduler.informer_view import ClusterView, CoreFeed
from scheduler.suspects import Suspects

__all__ = ["FINAL_STOPS", "SUSPENDED", "RunLifecycle"]

log = logging.getLogger("kvraft.scheduler")
SUSPENDED = "suspended: jobctl resume queues it again"
"""The message of a suspended job's Pending status (reason Suspended)."""


class RunLifecycle:
    """What a bound run goes through, from its binding to its release (the module's text)."""

    view: ClusterView
    feed: CoreFeed
    binder: Binder
    suspects: Suspects
    _fresh_suspects: set[str]  # suspected in this step: the pass must know
    _timers: dict[str, float]  # job -> when the step must look at it again
    _wake: asyncio.Event
    evictions: Counter[str]
    releases: Counter[str]
    gpu_seconds: Counter[tuple[str, str]]

    def _status(self, job: str) -> dict[str, Any]:
        """A copy of ``job``'s stored status with the fields every status has (an absent or
        undecodable one gives just those)."""
        st = self.view.status.get(job)
        doc = dict(st.doc) if st is not None and isinstance(st.doc, dict) else {}
        doc.setdefault("name", job)
        doc.setdefault("restarts", 0)
        doc.setdefault("preemptions", 0)
        doc.setdefault("evictions", 0)
        doc.setdefault("placement", [])
        return doc

    async def _lifecycle(self, job: str, now: float, updates: dict[str, dict[str, Any]]) -> bool:
        """Decide the fate of a bound job; True when its run was released. A job that runs on
        gets its Starting/Running status put in ``updates`` (written by the caller, batched)."""
        view = self.view
        b = view.bindings.get(job)
        if b is None:
            return False
        entry = view.jobs.get(job)
        spec: dict[str, Any] = entry.doc if entry is not None else {}
        st = self._status(job)
        placement = list(st.get("placement") or [])
        broken = b.problem or self.feed.unfit.get(job)
        if entry is None and view.job_problem(job) is not None:
            why = f"{keys.job_key(job)}: {view.job_problem(job)}"
            doc = dict(st, phase="Failed", reason="InvalidSpec", message=why, finished_at=now)
            return await self._release(b, doc, [("Failed", why)], False, "invalid")
        if b.evicting_until is not None:
            ended = self._ended(b)
            if now < b.evicting_until and not ended:  # the agents report each task's end (rule 6)
                self._timers[job] = b.evicting_until
                return False
            if b.evicted_for in FINAL_STOPS:  # its status and events were written when it stopped
                kind, clear = FINAL_STOPS[b.evicted_for]
                return await self._release(b, st, [("Stopped", "all tasks stopped" if ended else "grace period over")],
                                           clear, kind)
            counter, reason, message, event, kind = _stopped(b.evicted_for, b.eviction_message, ended)
            doc = dict(st, phase="Pending", reason=reason, message=message, placement=[], last_placement=placement,
                       **{counter: int(st.get(counter, 0)) + 1})
            return await self._release(b, doc, [event], True, kind)
        if entry is None or spec.get("cancelled"):
            doc = dict(st, phase="Cancelled", reason="Cancelled", message="cancelled by user", finished_at=now)
            return await self._end_run(b, spec, doc, [("Cancelled", "cancelled by user")], "cancel")
        if spec.get("suspend"):  # Kubernetes' Job .spec.suspend: the run stops (it checkpoints), the job waits for resume
            if await self._stop(b, spec, "Suspending", "suspended", event="Suspending",
                                eviction={"reason": "suspend", "message": "suspended"}):
                log.info("suspending", extra={"fields": {"job": job, "grace_s": float(spec.get("grace_s", 30.0))}})
            return False
        lost = [n for n in b.nodes() if n not in view.heartbeats or n not in view.nodes]
        if lost:
            return await self._restart_or_fail(b, spec, st, "NodeLost",
                                               f"node(s) {', '.join(lost)} NotReady: agent heartbeat expired", "Lost")
        if broken:  # what anyone wrote: a binding that does not decode, or that the core cannot hold
            return await self._restart_or_fail(b, spec, st, "InvalidBinding", f"{keys.binding_key(job)}: {broken}",
                                               "Failed", at_once=True)  # its rows may not be what holds the GPUs
        statuses = view.task_statuses(job, b.revision)
        failed = sorted(t for t, s in statuses.items() if s.get("phase") == "Failed")
        if failed:
            self._suspect_silent_nodes(b, statuses)
            s = statuses[failed[0]]
            why = s.get("reason") or "Error"
            last = _last_line(s.get("log_tail"))  # Kubernetes' FallbackToLogsOnError, one line
            return await self._restart_or_fail(b, spec, st, "TaskFailed",
                                               f"task {failed[0]} failed ({why}, exit code {s.get('exit_code')})"
                                               + (f": {last}" if last else ""), "Failed")
        if len(statuses) == len(b.tasks) and all(s.get("phase") == "Succeeded" for s in statuses.values()):
            doc = dict(st, phase="Succeeded", reason="Completed", message=f"all {len(b.tasks)} task(s) succeeded",
                       finished_at=now)
            return await self._release(b, doc, [("Completed", "all tasks succeeded")], False, "succeeded")
        max_run = spec.get("max_run_s")
        if max_run:
            deadline = b.bound_at + float(max_run)
            if now >= deadline:
                doc = dict(st, phase="Failed", reason="DeadlineExceeded", message=f"ran longer than max_run_s={max_run}",
                           finished_at=now)
                return await self._end_run(b, spec, doc, [("DeadlineExceeded", f"max_run_s={max_run}")], "deadline")
            self._timers[job] = min(self._timers.get(job, deadline), deadline)
        running = sum(1 for s in statuses.values() if s.get("phase") in ("Running", "Succeeded"))
        reason, message = ("Running", f"{len(b.tasks)} task(s) running") if running == len(b.tasks) else \
            ("Starting", f"{running}/{len(b.tasks)} task(s) running")
        if (st.get("phase"), st.get("reason"), st.get("message")) != ("Running", reason, message):
            updates[job] = dict(st, phase="Running", reason=reason, message=message)
        return False

    async def _stop_run(self, job: str, reason: str, why: str, **options: Any) -> bool:
        """``_stop`` for the core's decision about ``job``'s run (a preemption, a resize); False
        when the run is gone or already stopping."""
        bound = self.view.bindings.get(job)
        if bound is None or bound.evicting_until is not None:
            return False
        entry = self.view.jobs.get(job)
        return await self._stop(bound, entry.doc if entry is not None else {}, reason, why, **options)

    async def _stop(self, b: Any, spec: dict[str, Any], reason: str, why: str, status_message: str | None = None,
                    **options: Any) -> bool:
        """Start stopping ``b``'s run with the job's grace period (a preemption, an operator's
        eviction, a suspension): status Running/``reason``, the event ``<why>; stopping with a
        G s grace period`` (``_evict``, given ``options``). False when the binding (or the
        request) changed meanwhile."""
        grace = float(spec.get("grace_s", 30.0))
        stopping = f"{why}; stopping with a {grace:g} s grace period"
        status = dict(self._status(b.job), phase="Running", reason=reason, message=status_message or stopping)
        return await self._evict(b, grace, status, stopping, **options)

    async def _evict(self, b: Any, grace: float, status: dict[str, Any], message: str, **options: Any) -> bool:
        """``Binder.evict`` (the assignments marked stopping, the GPUs held), and a wake-up for
        when the grace period is over; the lifecycle releases the run then, or sooner once every
        task has reported its end (``_ended``)."""
        if not await self.binder.evict(b, grace, status, message, **options):
            return False
        self._timers[b.job] = time.time() + grace
        return True

    async def _eviction_request(self, job: str) -> None:
        """Act on ``/registry/evictions/<job>`` once: evict the run it names in the txn that
        deletes it, or drop it (deleted, with a log line)."""
        view, now = self.view, time.time()
        entry = view.evictions[job]
        req: decode.EvictionRequest = entry.doc
        b, spec = view.bindings.get(job), view.jobs[job].doc if job in view.jobs else None
        verdict = evictions.decide(req, b, known=spec is not None, cancelled=bool(spec and spec.get("cancelled")),
                                   phase=view.phase(job), unfit=self.feed.unfit.get(job, ""))
        key = keys.eviction_key(job)
        fields = {"job": job, "key": key, "reason": req.reason, "node": req.node, "by": req.by,
                  "binding_revision": req.binding_revision, "stimulus_id": f"eviction:{job}@{entry.mod_revision}"}
        try:
            if not verdict.evict or b is None or spec is None:
                if await self.binder.drop_request(key, entry.mod_revision):
                    log.info("eviction request dropped", extra={"fields": dict(fields, why=verdict.message)})
                return
            if await self._stop(b, spec, "Evicting", f"Evicted: {verdict.message}", event="Evicted",
                                request=(key, entry.mod_revision),
                                eviction={"reason": req.reason, "message": verdict.message}):
                self.evictions[req.reason] += 1
                log.info("evicting", extra={"fields": dict(fields, why=verdict.message,
                                                           grace_s=float(spec.get("grace_s", 30.0)))})
        except ClientError as exc:  # try again in a second; the pass goes on (a role without the key: every second)
            log.warning("acting on an eviction request failed", extra={"fields": dict(fields, error=str(exc))})
            self._timers[job] = min(self._timers.get(job, now + 1.0), now + 1.0)

    def _suspect_silent_nodes(self, b: Any, statuses: dict[str, dict[str, Any]]) -> None:
        """A gang's run failed: every node of it whose agent reported none of the run's task
        endings may have lost its agent (a dead agent reports nothing; its lease lives on)."""
        node_of = {t["task"]: t["node"] for t in b.tasks}
        reported = {node_of.get(t, s.get("node")) for t, s in statuses.items()
                    if s.get("phase") in ("Failed", "Succeeded")}
        now = time.monotonic()
        for n in b.nodes():
            hb = self.view.heartbeats.get(n)
            if n in reported or hb is None:
                continue
            try:
                lease = decode.heartbeat(hb.doc)
            except decode.Malformed as exc:
                log.warning("heartbeat not probed", extra={"fields": {"key": keys.lease_key(n), "why": str(exc)}})
                continue
            ttl, renew, lease_id = lease.ttl_s, lease.renew_interval_s, lease.lease_id
            if self.suspects.suspect(n, lease_id=lease_id, heartbeat_revision=hb.create_revision, ttl_s=ttl,
                                     renew_interval_s=renew, now=now, reason=f"no task of {b.job} reported its end"):
                self.view.unreachable.add(n)
                self._fresh_suspects.add(n)
                log.warning("node suspected", extra={"fields": {
                    "node": n, "job": b.job, "lease_id": lease_id,
                    "why": "its tasks of a failed gang reported nothing; NotReady until its lease is seen renewed"}})

    async def _restart_or_fail(self, b: Any, spec: dict[str, Any], st: dict[str, Any], reason: str, message: str,
                               event: str, *, at_once: bool = False) -> bool:
        restarts = int(st.get("restarts", 0))
        placement = list(st.get("placement") or [])
        if spec.get("restart_policy") == "OnFailure" and restarts < int(spec.get("max_restarts", 0)):
            ckpt = spec.get("checkpoint_dir")
            doc = dict(st, phase="Pending", reason=reason, message=f"{message}; restarting the gang",
                       restarts=restarts + 1, placement=[], last_placement=placement)
            events = [(event, message), ("Restarted", f"restart {restarts + 1}/{spec.get('max_restarts')}"
                                         + (f", resuming from {ckpt}" if ckpt else ""))]
            return await self._end_run(b, spec, doc, events, "restart", at_once=at_once)
        doc = dict(st, phase="Failed", reason=reason, message=message, finished_at=time.time())
        return await self._end_run(b, spec, doc, [(event, message)], "fail", at_once=at_once)

    def _ended(self, b: Any) -> bool:
        """Every task of ``b``'s run has ended: its agent reported Succeeded or Failed (the
        report for a stopping assignment, agent/reconcile.py rule 6), or its node is lost or
        suspected (an agent that is gone reports nothing; it fences its tasks itself)."""
        view = self.view
        statuses = view.task_statuses(b.job, b.revision)
        return all(t["node"] not in view.heartbeats or t["node"] not in view.nodes or t["node"] in view.unreachable
                   or statuses.get(t["task"], {}).get("phase") in ("Succeeded", "Failed") for t in b.tasks)

    async def _end_run(self, b: Any, spec: dict[str, Any], doc: dict[str, Any], events: list[tuple[str, str]],
                       stop: str, *, at_once: bool = False) -> bool:
        """End ``b``'s run (cancelled, failed, restarted, past its deadline) with the job's new
        status ``doc`` and ``events``: released at once when every task has ended, else its
        tasks are stopped first (assignments marked stopping, the job's grace period) and the
        GPUs stay held until they have ended, as Kubernetes counts a terminating pod's
        resources and Volcano's RestartJob waits for the pods; the status and events are
        written now. True when released now. ``at_once``: released now all the same (a binding
        that does not decode: what holds the GPUs is its alloc records, not its rows)."""
        kind, clear = FINAL_STOPS[stop]
        if at_once or self._ended(b):
            return await self._release(b, doc, events, clear, kind)
        grace = float(spec.get("grace_s", 30.0))
        await self._evict(b, grace, doc, f"stopping its tasks with a {grace:g} s grace period", event="Stopping",
                          events=events, eviction={"reason": stop})  # the release writes the status as it is
        return False

    async def _release(self, b: Any, doc: dict[str, Any], events: list[tuple[str, str]], clear: bool, kind: str) -> bool:
        # a binding with rows that did not decode: the nodes whose alloc record holds the job too
        extra = [n for n in self.view.alloc if n not in b.nodes() and _holds(self.view, n, b.job)] if b.problem else []
        entry = self.view.jobs.get(b.job)
        usage = accounting.record(entry.doc if entry is not None else {}, b.job, b.revision, b.tasks, b.bound_at, kind,
                                  time.time())
        ok = await self.binder.release(b, doc, events, clear_task_status=clear, extra_nodes=extra, usage=usage)
        if ok:
            self.releases[kind] += 1
            self.gpu_seconds[usage["tenant"], usage["outcome"]] += usage["gpu_seconds"]
            log.info("released", extra={"fields": {"job": b.job, "kind": kind, "reason": doc.get("reason"),
                                                   "stimulus_id": f"release:{b.job}@{b.revision}"}})
        self._wake.set()
        return ok


# The stops that end a run for good or restart its gang: the binding's eviction reason -> the
# release's kind and whether it clears the task statuses (a restart's next run has its own).
FINAL_STOPS = {"cancel": ("cancelled", False), "restart": ("restarted", True), "fail": ("failed", False),
               "deadline": ("deadline", False)}


def _stopped(evicted_for: str, message: str, ended: bool) -> tuple[str, str, str, tuple[str, str], str]:
    """How a run stopped with its grace period goes back to Pending, by its binding's eviction
    reason: the status counter (one of ``binder.RUN_ENDINGS``), reason and message, the event,
    and the release's kind. None of them is a restart. ``ended``: every task reported its end
    (else the grace period is over)."""
    how = "all tasks stopped" if ended else "grace period over"
    if evicted_for == "suspend":  # jobctl suspend: held until jobctl resume
        return ("suspensions", "Suspended", SUSPENDED, ("Suspended", f"{how}; held until jobctl resume"), "suspended")
    if evicted_for == "resize":  # an elastic run stopped to restart larger
        return "resizes", "Resizing", f"{message}; starting again", ("Requeued", f"{how}; {message}"), "resized"
    if evicted_for:  # an operator's request (scheduler.evictions)
        return ("evictions", "Evicted", f"Evicted: {message}; waiting to run again",
                ("Requeued", f"{how}; back in the queue (evicted: {message})"), "evicted")
    return ("preemptions", "Preempted", "stopped after preemption; waiting to run again",
            ("Requeued", f"{how}; back in the queue"), "preempted")


def _holds(view: ClusterView, node: str, job: str) -> bool:
    try:
        return job in view.alloc_jobs(node)
    except decode.Malformed:
        return False


def _last_line(log_tail: Any, limit: int = 300) -> str:
    """The last readable line of a task's log tail, cut to ``limit`` characters. Control
    characters and undecodable bytes (U+FFFD) are dropped first: a line made only of them
    (a NUL that mpirun's output ended with, flushed at EOF after jobrun's reason; seen in CI)
    is not the reason a task failed."""
    if not isinstance(log_tail, str):
        return ""
    for raw in reversed(log_tail.splitlines()):
        line = "".join(ch for ch in raw if ch == "\t" or (ch.isprintable() and ch != "\ufffd")).strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
