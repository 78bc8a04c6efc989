"""The dashboard's live state: follows kvraft and turns every change into a diff for the page.

- an ``Informer`` on ``/registry/`` (list, then watch; house rule: through kvraft.client only)
  feeds a ``ClusterView`` plus what the view ignores: job events and the scheduler election;
- a watch on ``/jobs/`` keeps the records the trainer writes to ``/jobs/<job>/progress``;
- member status (maintenance/status of every member, alarms) is polled every ``poll_s``;
  the scheduler's ``/metrics`` too when ``--scheduler-url`` names it; this month's GPU-time
  accounting records (``/accounting/``, ``month_usage``) every ``usage_poll_s``;
- after a change the items (``model.items``) are rebuilt at most every ``coalesce_s`` and
  the ``model.diff`` against the last ones goes to every subscriber's queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from kvraft.aio import cancel_and_wait
from kvraft.client import ClientError, WatchCompactedError
from scheduler import accounting, keys
from scheduler.dashboard import model
from scheduler.informer import Informer
from scheduler.informer_view import ClusterView

__all__ = ["LiveState", "month_usage"]

log = logging.getLogger("kvraft.dashboard")

PROGRESS_PREFIX = "/jobs/"
MAX_EVENTS = 100
MAX_RECORDS = 1000
MAX_RECORD_BYTES = 64 * 1024  # a job's ranks write the records: a larger one is neither kept nor pushed


class _Sink:
    """Informer sink: the scheduler's ``ClusterView`` plus events and the election keys."""

    def __init__(self, state: LiveState) -> None:
        self.state = state

    def replace(self, kvs: Sequence[Any], revision: int) -> None:
        st = self.state
        st.view.replace(kvs, revision)
        st.events.clear()
        st.election.clear()
        for kv in kvs:
            self._extra(kv.key.decode(errors="replace"), kv.value, kv.create_revision, put=True)
        st.changed()

    def apply(self, events: Sequence[Any], revision: int) -> None:
        st = self.state
        st.view.apply(events, revision)
        for ev in events:
            self._extra(ev.kv.key.decode(errors="replace"), ev.kv.value, ev.kv.create_revision, put=ev.type == "PUT")
        st.changed()

    def _extra(self, key: str, value: bytes, create: int, *, put: bool) -> None:
        st = self.state
        if key.startswith(keys.EVENTS):
            job, _, seq = key[len(keys.EVENTS):].partition("/")
            evs = st.events.setdefault(job, {})
            if put:
                doc = model.progress_record(value)
                if doc is not None:
                    evs[seq] = doc
                    while len(evs) > MAX_EVENTS:
                        del evs[min(evs)]
            else:
                evs.pop(seq, None)
                if not evs:
                    st.events.pop(job, None)
        elif key.startswith(keys.ELECTION + "/"):
            if put:
                st.election[key] = (create, bytes(value).decode(errors="replace"))
            else:
                st.election.pop(key, None)


class LiveState:
    def __init__(self, client: Any, *, scheduler_urls: Sequence[str] = (), poll_s: float = 1.5,
                 coalesce_s: float = 0.05, max_jobs: int = 500, usage_poll_s: float = 60.0) -> None:
        self.client = client
        self.scheduler_urls = list(scheduler_urls)
        self.poll_s = poll_s
        self.usage_poll_s = usage_poll_s
        self.usage: dict[str, dict[str, Any]] | None = None  # tenant -> this month's accounting sums
        self.coalesce_s = coalesce_s
        self.max_jobs = max_jobs
        self.view = ClusterView()
        self.events: dict[str, dict[str, dict[str, Any]]] = {}
        self.election: dict[str, tuple[int, str]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}
        self.informer = Informer(client, keys.REGISTRY, _Sink(self))
        self.kv: dict[str, Any] | None = None
        self.metrics: dict[str, float] | None = None
        self.metrics_at = 0.0
        self.prev_metrics: dict[str, float] | None = None
        self.metrics_interval_s = 0.0
        self.sched: dict[str, Any] | None = None
        self.items: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.rebuilds = 0
        self._snapshot: tuple[int, bytes] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.informer.run()), loop.create_task(self._rebuild_loop()),
                       loop.create_task(self._poll_members()), loop.create_task(self._watch_progress()),
                       loop.create_task(self._poll_usage())]
        if self.scheduler_urls:
            self._tasks.append(loop.create_task(self._poll_scheduler()))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)

    # --- changes -----------------------------------------------------------------------------
    def changed(self) -> None:
        self._dirty.set()

    def leader_name(self) -> str | None:
        if not self.election:
            return None
        return min(self.election.values())[1]

    def rebuild(self) -> dict[str, Any] | None:
        """Rebuild the items; the diff from the last ones (None if nothing changed)."""
        self.sched = model.scheduler_item(self.leader_name(), self.metrics, self.prev_metrics,
                                          self.metrics_interval_s, self._jobs_for_scheduler())
        new = model.items(self.view, self.kv, self.sched, max_jobs=self.max_jobs, usage=self.usage)
        d = model.diff(self.items, new)
        self.rebuilds += 1
        if d is None:
            return None
        self.items = new
        self.seq += 1
        msg = {"seq": self.seq, "revision": self.view.revision, **d}
        for q in list(self.subscribers):
            self._offer(q, msg)
        return msg

    def _jobs_for_scheduler(self) -> dict[str, dict[str, Any]]:
        return {n: {"phase": self.view.phase(n)} for n in self.view.jobs}

    async def _rebuild_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                self.rebuild()
            except Exception:  # a malformed document must not stop the page's updates
                log.exception("dashboard rebuild failed")
            await asyncio.sleep(self.coalesce_s)

    # --- subscribers (one per open page) ----------------------------------------------------
    def subscribe(self) -> tuple[asyncio.Queue[dict[str, Any]], dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self.subscribers.add(q)
        return q, {"seq": self.seq, "revision": self.view.revision, "snapshot": self.items,
                   "synced": self.informer.synced.is_set()}

    def snapshot_json(self) -> bytes:
        """The whole state as JSON, serialized once per state: the first SSE message of a new
        page, and the state inlined in the page itself."""
        if self._snapshot is None or self._snapshot[0] != self.seq:
            msg = {"seq": self.seq, "revision": self.view.revision, "snapshot": self.items,
                   "synced": self.informer.synced.is_set()}
            self._snapshot = (self.seq, json.dumps(msg, separators=(",", ":")).encode())
        return self._snapshot[1]

    def snapshot_bytes(self) -> bytes:
        return b"data: " + self.snapshot_json() + b"\n\n"

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(q)

    def _offer(self, q: asyncio.Queue[dict[str, Any]], msg: dict[str, Any]) -> None:
        try:
            q.put_nowait(msg)
        except asyncio.QueueFull:  # a page that does not keep up gets the whole state again
            while not q.empty():
                q.get_nowait()
            # (the shutdown's goodbye stays: it ends the stream)
            q.put_nowait(msg if msg.get("bye") else
                         {"seq": self.seq, "revision": self.view.revision, "snapshot": self.items, "synced": True})

    def publish(self, msg: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            self._offer(q, msg)

    # --- member status -----------------------------------------------------------------------
    async def member_status(self) -> dict[str, Any]:
        members = (await self.client.member_list()).members

        async def one(m: Any) -> dict[str, Any]:
            url = m.client_urls[0] if m.client_urls else ""
            row: dict[str, Any] = {"id": m.id, "name": m.name, "endpoint": url}
            try:
                async with asyncio.timeout(max(1.0, self.poll_s)):
                    st = await self.client.status(url)
                row["status"] = {"leader": st.leader, "raft_term": st.raft_term, "raft_index": st.raft_index,
                                 "raft_applied_index": st.raft_applied_index, "db_size": st.db_size,
                                 "db_size_in_use": st.db_size_in_use, "errors": list(st.errors),
                                 "is_learner": st.is_learner}
            except (ClientError, OSError, TimeoutError) as exc:
                row["error"] = str(exc) or type(exc).__name__
            return row

        rows = await asyncio.gather(*(one(m) for m in members))
        try:
            alarms = [{"member_id": a.member_id, "alarm": a.alarm} for a in (await self.client.alarm_list()).alarms]
        except ClientError as exc:  # e.g. a dashboard user without the right to list alarms
            alarms = [{"member_id": 0, "alarm": f"unknown ({exc})"}]
        return model.kvraft_item(rows, alarms)

    async def _poll_members(self) -> None:
        while True:
            try:
                kv = await self.member_status()
                if kv != self.kv:
                    self.kv = kv
                    self.changed()
            except (ClientError, OSError, TimeoutError) as exc:
                log.warning("member status failed", extra={"fields": {"error": str(exc)}})
            await asyncio.sleep(self.poll_s)

    async def _poll_usage(self) -> None:
        warned = False
        while True:
            try:
                usage = await month_usage(self.client, time.time())
            except ClientError as exc:  # e.g. a dashboard user without READ on /accounting/
                if not warned:
                    log.warning("GPU-time accounting not readable", extra={"fields": {"error": str(exc)}})
                    warned = True
            else:
                if usage != self.usage:
                    self.usage = usage
                    self.changed()
            await asyncio.sleep(self.usage_poll_s)

    async def _poll_scheduler(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(1.0, self.poll_s))) as http:
            while True:
                found = None
                for url in self.scheduler_urls:
                    try:
                        async with http.get(url.rstrip("/") + "/metrics") as r:
                            if r.status != 200:  # not a scheduler's /metrics (a wrong --scheduler-url)
                                continue
                            m = model.parse_metrics((await r.read()).decode(errors="replace"))
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        continue
                    if m.get("kvraft_scheduler_leader") == 1.0 or found is None:
                        found = m
                    if m.get("kvraft_scheduler_leader") == 1.0:
                        break
                now = time.monotonic()
                if found is not None and self.metrics is not None:
                    self.prev_metrics, self.metrics_interval_s = self.metrics, now - self.metrics_at
                else:
                    self.prev_metrics, self.metrics_interval_s = None, 0.0
                self.metrics, self.metrics_at = found, now
                self.changed()
                await asyncio.sleep(self.poll_s)

    # --- trainer progress --------------------------------------------------------------------
    def _progress(self, key: str, value: bytes, *, put: bool = True) -> None:
        rest = key[len(PROGRESS_PREFIX):]
        job, _, tail = rest.partition("/")
        if tail != "progress":
            return
        if not put:  # the job was collected (job_gc deletes /jobs/<job>/): its records go too
            self.progress.pop(job, None)
            return
        rec = _record(value)
        if rec is None:
            return
        recs = self.progress.setdefault(job, [])
        recs.append(rec)
        del recs[:-MAX_RECORDS]
        self.publish({"progress": {"job": job, "record": rec}})

    async def _watch_progress(self) -> None:
        await self.informer.synced.wait()
        start = self.informer.revision + 1
        while True:
            try:
                async with self.client.watch(PROGRESS_PREFIX, prefix=True, start_revision=start,
                                             reconnect_timeout_s=None) as w:
                    async for resp in w:
                        for ev in resp.events:
                            self._progress(ev.kv.key.decode(errors="replace"), ev.kv.value, put=ev.type == "PUT")
                        start = resp.header.revision + 1
            except WatchCompactedError as exc:
                start = exc.compact_revision
            except ClientError as exc:
                log.warning("progress watch failed", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(1.0)

    async def progress_history(self, client: Any, job: str) -> list[dict[str, Any]]:
        """The job's records: from memory when the watch saw them, else every version of the
        key still in kvraft's history (a watch from its create revision up to its current one)."""
        key = f"{PROGRESS_PREFIX}{job}/progress"
        resp = await client.get(key)
        if not resp.kvs:
            return list(self.progress.get(job, []))
        kv = resp.kvs[0]
        have = self.progress.get(job, [])
        if len(have) >= kv.version:
            return list(have)
        records: list[dict[str, Any]] = []
        try:
            async with client.watch(key, start_revision=kv.create_revision) as w:
                async for r in w:
                    for ev in r.events:
                        if ev.type == "PUT" and ev.kv.mod_revision <= kv.mod_revision:
                            rec = _record(ev.kv.value)
                            if rec is not None:
                                records.append(rec)
                    if r.header.revision >= kv.mod_revision or any(e.kv.mod_revision >= kv.mod_revision
                                                                   for e in r.events):
                        break
        except WatchCompactedError:
            rec = _record(kv.value)
            records = [rec] if rec is not None else []
        if len(records) > len(self.progress.get(job, [])):
            self.progress[job] = records[-MAX_RECORDS:]
        return list(self.progress.get(job, records))

    def job_events(self, job: str) -> list[dict[str, Any]]:
        evs = self.events.get(job, {})
        return [evs[k] for k in sorted(evs)]


def _record(value: bytes) -> dict[str, Any] | None:
    """A trainer's progress record, unless it is larger than ``MAX_RECORD_BYTES``."""
    return model.progress_record(value) if len(value) <= MAX_RECORD_BYTES else None


async def month_usage(client: Any, now_s: float) -> dict[str, dict[str, Any]]:
    """Per tenant, the sums (``accounting.summarize``) of the runs that ended this month (UTC);
    what is not a record is left out."""
    kvs = (await client.get(accounting.PREFIX + accounting.month_of(now_s) + "/", prefix=True)).kvs
    records = []
    for kv in kvs:
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue
        if accounting.is_record(doc):
            records.append(doc)
    return {row["tenant"]: row for row in accounting.summarize(records)}
