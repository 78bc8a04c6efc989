"""The traffic of a robustness run, and its recorded history.

* **KV clients** run puts, linearizable gets, compare-and-swap txns and deletes on a small
  set of keys through the v3 JSON API, each client pinned to a member and failing over to
  the next one when that member stops answering (as ``kvraft.client`` does). Every
  operation is recorded with its call and return time; a write whose outcome the client
  could not see (timeout, reset, 5xx) is recorded with ``ret = None`` (outcome unknown); one
  refused with a 4xx (``Definite``) is left out, as one that reached nobody.
  A request that could not even connect is dropped: it never reached a member.
* **Watchers**, one per member, watch the key prefix from revision 1 and resume from the
  last revision they saw after every disconnect (on the next member, as a client would).
  A compacted answer is recorded and the watch resumes from the compact revision.
  ``lagging_watchers`` go away until a compaction passes them, then resume below it.
* **Lease clients** (``kvraft.robustness.leases``): kept-alive leases, and expiring
  leases never kept alive, with their keys read through every member.
* **Txn clients** (``kvraft.robustness.txns``): multi-key transactions reading and appending
  to lists, for the Elle-style check.
* **Once clients** (``kvraft.robustness.once``): numbered puts and counter increments sent
  again after forced timeouts until answered; each must be applied exactly once.

All records are plain dicts (JSON lines in ``history.jsonl``), so a failed run's history can
be checked again later (``python -m kvraft.robustness --check DIR``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kvraft.robustness.leases import expiring_lease_client, final_lease_reads, kept_lease_client
from kvraft.robustness.once import final_once_reads, once_client
from kvraft.robustness.txns import final_txn_reads, txn_client

__all__ = ["History", "KEY_PREFIX", "Workload"]

KEY_PREFIX = "rb/"
REQUEST_TIMEOUT_S = 3.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str | None) -> str | None:
    return None if text is None else base64.b64decode(text).decode()


def _prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Definite(Exception):
    """The request certainly did not take effect: it never reached a member, or the member
    refused it with a definite error (a 4xx: etcd's gateway answers the codes of requests
    refused before or instead of being applied, e.g. 429 "database space exceeded", with a
    4xx; 408 and 499, a request cut short, are not definite)."""


def refused(status: int) -> bool:
    """Whether an HTTP status is a definite refusal (``Definite``)."""
    return 400 <= status < 500 and status not in (408, 499)


@dataclass
class History:
    ops: list[dict[str, Any]] = field(default_factory=list)  # KV operations
    watches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # watcher -> events
    watch_errors: list[str] = field(default_factory=list)
    lease_violations: list[str] = field(default_factory=list)
    lease_cycles: int = 0
    faults: list[str] = field(default_factory=list)
    compactions: list[dict[str, Any]] = field(default_factory=list)  # issued: revision, ok (None: unknown)
    # watcher -> compacted answers: the start revision asked for, the compact_revision
    # given, and how many events the watcher had seen before (``after``)
    watch_compacted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # leases (``kvraft.robustness.leases``): each granted lease, each read of a lease's
    # key, and the last round of reads after healing
    leases: list[dict[str, Any]] = field(default_factory=list)
    lease_reads: list[dict[str, Any]] = field(default_factory=list)
    lease_final: list[dict[str, Any]] = field(default_factory=list)
    # transactions (``kvraft.robustness.txns``): each one as ``kvraft.testing.elle`` reads
    # it, and every member's lists after healing (member -> key -> list)
    txns: list[dict[str, Any]] = field(default_factory=list)
    txn_final: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    # numbered writes (``kvraft.robustness.once``): each write with its attempts, and every
    # member's keys after healing (member -> key -> [value, version])
    once: list[dict[str, Any]] = field(default_factory=list)
    once_final: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def dump(self, path: str) -> None:
        with open(path, "w") as out:
            for op in self.ops:
                out.write(json.dumps({"kind": "op", **op}) + "\n")
            for name, events in self.watches.items():
                for ev in events:
                    out.write(json.dumps({"kind": "watch", "watcher": name, **ev}) + "\n")
            for text in self.watch_errors:
                out.write(json.dumps({"kind": "watch_error", "text": text}) + "\n")
            for text in self.lease_violations:
                out.write(json.dumps({"kind": "lease_violation", "text": text}) + "\n")
            for text in self.faults:
                out.write(json.dumps({"kind": "fault", "text": text}) + "\n")
            for doc in self.compactions:
                out.write(json.dumps({"kind": "compaction", **doc}) + "\n")
            for name, answers in self.watch_compacted.items():
                for doc in answers:
                    out.write(json.dumps({"kind": "watch_compacted", "watcher": name, **doc}) + "\n")
            for kind, docs in (("lease", self.leases), ("lease_read", self.lease_reads), ("lease_final", self.lease_final),
                               ("txn", self.txns), ("once", self.once)):
                for doc in docs:
                    out.write(json.dumps({"kind": kind, **doc}) + "\n")
            for member, lists in self.txn_final.items():
                out.write(json.dumps({"kind": "txn_final", "member": member, "lists": lists}) + "\n")
            for member, keys in self.once_final.items():
                out.write(json.dumps({"kind": "once_final", "member": member, "keys": keys}) + "\n")

    @classmethod
    def load(cls, path: str) -> History:
        history = cls()
        with open(path) as src:
            for line in src:
                doc = json.loads(line)
                kind = doc.pop("kind")
                if kind == "op":
                    history.ops.append(doc)
                elif kind == "watch":
                    history.watches.setdefault(doc.pop("watcher"), []).append(doc)
                elif kind == "watch_error":
                    history.watch_errors.append(doc["text"])
                elif kind == "lease_violation":
                    history.lease_violations.append(doc["text"])
                elif kind == "fault":
                    history.faults.append(doc["text"])
                elif kind == "compaction":
                    history.compactions.append(doc)
                elif kind == "watch_compacted":
                    history.watch_compacted.setdefault(doc.pop("watcher"), []).append(doc)
                elif kind == "lease":
                    history.leases.append(doc)
                elif kind == "lease_read":
                    history.lease_reads.append(doc)
                elif kind == "lease_final":
                    history.lease_final.append(doc)
                elif kind == "txn":
                    history.txns.append(doc)
                elif kind == "txn_final":
                    history.txn_final[doc["member"]] = doc["lists"]
                elif kind == "once":
                    history.once.append(doc)
                elif kind == "once_final":
                    history.once_final[doc["member"]] = doc["keys"]
        return history


class Workload:
    """Traffic against ``urls`` (client URLs of the members) until ``stop()``."""

    def __init__(
        self,
        urls: list[str],
        *,
        seed: int,
        clients: int = 4,
        keys: int = 8,
        lease_clients: int = 1,
        stale_reads: bool = False,
        lagging_watchers: int = 0,
        expiring_leases: bool = True,
        txn_clients: int = 3,
        once_clients: int = 2,
        once_numbered: bool = True,
    ) -> None:
        self.urls = list(urls)
        self.lagging_watchers = lagging_watchers  # watchers that go away until a compaction passes them
        self.rng = random.Random(seed)
        self.clients = clients
        self.keys = [f"{KEY_PREFIX}k{i}" for i in range(keys)]
        self.lease_clients = lease_clients
        self.expiring_leases = expiring_leases  # a TTL-3 lease a second, never kept alive
        self.stale_reads = stale_reads  # serializable gets: only for showing that the checks catch stale reads
        self.txn_clients = txn_clients
        self.once_clients = once_clients
        self.once_numbered = once_numbered  # False: the same traffic unnumbered (shows the check's teeth)
        self._element = 0  # the last list element a txn client appended (unique in the run)
        self.history = History()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._seq = 0

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        for index in range(len(self.urls)):
            self._watch_tasks.append(asyncio.create_task(self._watcher(f"w{index}", index)))
        for index in range(self.lagging_watchers):
            self._watch_tasks.append(asyncio.create_task(self._watcher(f"lag{index}", index % len(self.urls), lagging=True)))
        for client in range(self.clients):
            self._tasks.append(asyncio.create_task(self._kv_client(client, random.Random(self.rng.random()))))
        for client in range(self.lease_clients):
            self._tasks.append(asyncio.create_task(kept_lease_client(self, client)))
        if self.expiring_leases:
            self._tasks.append(asyncio.create_task(expiring_lease_client(self)))
        for client in range(self.txn_clients):
            self._tasks.append(asyncio.create_task(txn_client(self, client, random.Random(self.rng.random()))))
        for client in range(self.once_clients):
            self._tasks.append(asyncio.create_task(once_client(self, client, random.Random(self.rng.random()))))
        if self.stale_reads:  # (a serializable txn reader pinned to each member: kvraft.robustness.txns)
            for index in range(len(self.urls)):
                reader = txn_client(self, self.txn_clients + index, random.Random(self.rng.random()), reader=True)
                self._tasks.append(asyncio.create_task(reader))

    async def stop(self) -> None:
        self._stop.set()
        # clients finish the request in flight (each has a deadline) and record it; watchers
        # wait on open streams and are cancelled once the last write is in
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(1.0)
        for task in self._watch_tasks:
            task.cancel()
        await asyncio.gather(*self._watch_tasks, return_exceptions=True)
        self._tasks.clear()
        self._watch_tasks.clear()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- requests ----------------------------------------------------------------------------
    async def _post(self, url: str, path: str, doc: dict[str, Any], timeout_s: float = REQUEST_TIMEOUT_S,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
        assert self._session is not None
        try:
            async with self._session.post(url + path, json=doc, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                          headers=headers) as resp:
                body = await resp.json(content_type=None)
                if refused(resp.status):
                    raise Definite(f"HTTP {resp.status}: {body}")
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {body}")
                return body  # type: ignore[no-any-return]
        except aiohttp.ClientConnectorError as exc:
            raise Definite(str(exc)) from exc

    # -- KV clients --------------------------------------------------------------------------
    async def _kv_client(self, client: int, rng: random.Random) -> None:
        member = client % len(self.urls)
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            roll = rng.random()
            self._seq += 1
            value = f"c{client}-{self._seq}"
            if roll < 0.4:
                op: dict[str, Any] = {"op": "get", "key": key}
            elif roll < 0.75:
                op = {"op": "put", "key": key, "value": value}
            elif roll < 0.9:
                expect = await self._peek(member, key)
                op = {"op": "cas", "key": key, "value": value, "expect": expect}
            else:
                op = {"op": "put", "key": key, "value": None, "delete": True}
            op.update(client=client, member=member)
            ok = await self._run_op(op)
            if not ok:
                member = (member + 1) % len(self.urls)
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0, 0.01))

    async def _peek(self, member: int, key: str) -> str | None:
        """A serializable read, to give CAS a plausible expected value (not recorded)."""
        try:
            doc = await self._post(self.urls[member], "/v3/kv/range", {"key": _b64(key), "serializable": True}, 1.0)
        except Exception:
            return None
        kvs = doc.get("kvs") or []
        return _unb64(kvs[0].get("value", "")) if kvs else None

    async def _run_op(self, op: dict[str, Any]) -> bool:
        """Run and record one operation; False when the member did not answer."""
        url = self.urls[op["member"]]
        key = op["key"]
        op["call"] = time.monotonic()
        try:
            if op["op"] == "get":
                doc = await self._post(url, "/v3/kv/range", {"key": _b64(key), "serializable": self.stale_reads})
                kvs = doc.get("kvs") or []
                op["output"] = _unb64(kvs[0].get("value", "")) if kvs else None
            elif op["op"] == "put" and op.get("delete"):
                doc = await self._post(url, "/v3/kv/deleterange", {"key": _b64(key)})
                op["output"] = None
                op["deleted"] = int(doc.get("deleted", 0))
            elif op["op"] == "put":
                doc = await self._post(url, "/v3/kv/put", {"key": _b64(key), "value": _b64(op["value"])})
                op["output"] = None
            else:
                if op["expect"] is None:
                    cmp = {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                else:
                    cmp = {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(op["expect"])}
                put = {"request_put": {"key": _b64(key), "value": _b64(op["value"])}}
                doc = await self._post(url, "/v3/kv/txn", {"compare": [cmp], "success": [put]})
                op["output"] = bool(doc.get("succeeded", False))
            op["ret"] = time.monotonic()
            op["revision"] = int(doc.get("header", {}).get("revision", 0))
        except Definite:
            return False
        except Exception as exc:  # timeout, reset, 5xx, leader changed: outcome unknown
            if op["op"] == "get":
                return False  # a read that failed changed nothing: leave it out
            op["ret"] = None
            op["error"] = f"{type(exc).__name__}: {exc}"[:200]
            self.history.ops.append(op)
            return False
        self.history.ops.append(op)
        return True

    async def final_reads(self) -> None:
        """One linearizable read of every key through every member (after healing)."""
        self.stale_reads = False
        for index in range(len(self.urls)):
            for key in self.keys:
                op: dict[str, Any] = {"op": "get", "key": key, "client": 10_000 + index, "member": index}
                for _ in range(20):
                    if await self._run_op(dict(op)):
                        break
                    await asyncio.sleep(0.5)

    async def final_lease_reads(self) -> None:
        """The expiring leases' keys through every member until gone (after healing)."""
        await final_lease_reads(self)

    async def final_txn_reads(self) -> None:
        """Every txn key's list through every member (after healing)."""
        await final_txn_reads(self)

    async def final_once_reads(self) -> None:
        await final_once_reads(self)

    # -- watchers ----------------------------------------------------------------------------
    async def _watcher(self, name: str, member: int, lagging: bool = False) -> None:
        """Watch the prefix from revision 1, resuming from the next revision after every
        disconnect. A compacted answer (canceled, ``compact_revision`` set) is recorded and
        the watch resumes from the compact revision, as an etcd client must. A ``lagging``
        watcher reads for a while, goes away until a compaction past its next revision is
        acknowledged, then resumes below it."""
        assert self._session is not None
        events = self.history.watches.setdefault(name, [])
        compacted = self.history.watch_compacted.setdefault(name, [])
        rng = random.Random(f"{name}-{len(self.urls)}")
        next_rev = 1
        while not self._stop.is_set():
            url = self.urls[member]
            start = next_rev
            read_until = time.monotonic() + rng.uniform(0.5, 2.0) if lagging else None
            create = {"create_request": {"key": _b64(KEY_PREFIX), "range_end": _b64(_prefix_end(KEY_PREFIX)), "start_revision": str(start)}}
            answered = False
            try:
                async with self._session.post(url + "/v3/watch", json=create, timeout=aiohttp.ClientTimeout(total=None, sock_read=5.0)) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")
                    buffer = b""
                    reading = True
                    while reading and not self._stop.is_set() and (read_until is None or time.monotonic() < read_until):
                        chunk = await resp.content.readany()
                        if not chunk:
                            break
                        answered = True
                        buffer += chunk
                        while reading and b"\n" in buffer:
                            line, buffer = buffer.split(b"\n", 1)
                            if line.strip():
                                next_rev, reading = self._on_watch_line(name, line, events, next_rev, start, url, compacted)
            except TimeoutError:
                pass  # no event for a while, or the member stopped answering: reconnect
            except Exception as exc:
                if not self._stop.is_set() and not isinstance(exc, aiohttp.ClientConnectorError):
                    self.history.watch_errors.append(f"{name}@{url}: {type(exc).__name__}: {exc}"[:300])
            if self._stop.is_set():
                break
            if compacted and compacted[-1]["start"] == start and compacted[-1]["member"] == url and next_rev > start:
                continue  # resume at once from the compact revision, on the same member
            if lagging and answered:
                await self._away_until_compacted(next_rev)
            member = (member + 1) % len(self.urls)
            await asyncio.sleep(0.2)

    async def _away_until_compacted(self, next_rev: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if any(c.get("ok") and c["revision"] > next_rev for c in self.history.compactions):
                await asyncio.sleep(0.3)  # let the followers apply it too
                return
            await asyncio.sleep(0.1)

    def _on_watch_line(
        self, name: str, line: bytes, events: list[dict[str, Any]], next_rev: int, start: int, url: str,
        compacted: list[dict[str, Any]],
    ) -> tuple[int, bool]:
        """Record one watch response; (next revision to watch from, keep reading)."""
        doc = json.loads(line)
        if "error" in doc:
            self.history.watch_errors.append(f"{name}: {doc['error']}"[:300])
            return next_rev, False
        result = doc.get("result", {})
        for ev in result.get("events", []):
            kv = ev.get("kv", {})
            rev = int(kv.get("mod_revision", 0))
            events.append({
                "type": ev.get("type", "PUT"),
                "key": _unb64(kv.get("key")),
                "value": _unb64(kv.get("value")) if ev.get("type", "PUT") == "PUT" else None,
                "revision": rev,
                "at": time.monotonic(),
            })  # fmt: skip
            next_rev = max(next_rev, rev + 1)
        compact = int(result.get("compact_revision", 0))
        if compact:
            compacted.append({"start": start, "compact_revision": compact, "canceled": bool(result.get("canceled")),
                              "after": len(events), "member": url, "at": time.monotonic()})
            return max(next_rev, compact), False
        if result.get("canceled"):
            self.history.watch_errors.append(f"{name}: canceled: {result.get('cancel_reason', '')}"[:300])
            return next_rev, False
        return next_rev, True
