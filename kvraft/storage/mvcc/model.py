"""``MemoryKV``: a deliberately naive in-memory model of etcd's MVCC semantics.

It keeps the whole history as a list of records and answers every question by replaying
it, so it is slow and obviously right. The property tests drive it and ``MVCCStore``
with the same random operations and require identical answers. It shares with the store
only the request checks of ``ops`` (pure, and tested separately against etcd's captured
behaviour) and the record encoding (``hash_kv`` hashes encoded records); range options,
puts, deletes, txns, compaction and hashing are written again here from etcd's rules.

Compaction in the model only moves the compaction point (the history stays); the store
deletes records. That the answers agree is the point of the test.

Threading: none; single-threaded use only. Also usable as a quick fake in other tests.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kvraft.storage.mvcc import ops
from kvraft.storage.mvcc.errors import (
    CompactedRevisionError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
)
from kvraft.storage.mvcc.types import (
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResult,
    Event,
    EventType,
    HashKVResult,
    KeyValue,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResult,
)
from kvraft.storage.revision import rev_to_bytes
from kvraft.storage.schema import BUCKET_KEY, encode_kv

__all__ = ["MemoryKV"]


@dataclass(frozen=True)
class _Record:
    main: int
    sub: int
    kv: KeyValue
    tombstone: bool


def _in_range(key: bytes, start: bytes, range_end: bytes) -> bool:
    if not range_end:
        return key == start
    if range_end == b"\x00":
        return key >= start
    return start <= key < range_end


class MemoryKV:
    """See the module docstring. Same request methods as ``MVCCStore``."""

    def __init__(self, *, max_txn_ops: int = ops.DEFAULT_MAX_TXN_OPS,
                 lease_check: Callable[[int], bool] | None = None) -> None:
        self.history: list[_Record] = []
        self._latest: dict[bytes, KeyValue] = {}
        self.rev = 1
        self.compact_revision = -1
        self.nospace_alarm = False
        self.max_txn_ops = max_txn_ops
        self.lease_check = lease_check

    # -- reading the history -------------------------------------------------------------

    def _record(self, rec: _Record) -> None:
        self.history.append(rec)
        if rec.tombstone:
            self._latest.pop(rec.kv.key, None)
        else:
            self._latest[rec.kv.key] = rec.kv

    def state_at(self, rev: int) -> dict[bytes, KeyValue]:
        """The keys alive at ``rev``, by replaying the history (the latest state is also
        kept as it is written, only to make long replays in tests affordable)."""
        if not self.history or rev >= self.history[-1].main:
            return dict(self._latest)
        alive: dict[bytes, KeyValue] = {}
        for rec in self.history:
            if rec.main > rev:
                break
            if rec.tombstone:
                alive.pop(rec.kv.key, None)
            else:
                alive[rec.kv.key] = rec.kv
        return alive

    def _range(self, key: bytes, range_end: bytes, rev: int, cur: int) -> list[KeyValue]:
        if rev > cur:
            raise FutureRevisionError()
        if rev <= 0:
            rev = cur
        if rev < self.compact_revision:
            raise CompactedRevisionError()
        state = self.state_at(rev)
        return [state[k] for k in sorted(state) if _in_range(k, key, range_end)]

    def _range_result(self, r: Any, cur: int) -> RangeResult:
        kvs = self._range(r.key, r.range_end, r.revision, cur)
        count = len(kvs)
        if r.count_only:
            kvs = []
        kvs = [kv for kv in kvs if (
            (not r.min_mod_revision or kv.mod_revision >= r.min_mod_revision)
            and (not r.max_mod_revision or kv.mod_revision <= r.max_mod_revision)
            and (not r.min_create_revision or kv.create_revision >= r.min_create_revision)
            and (not r.max_create_revision or kv.create_revision <= r.max_create_revision))]
        if r.sort_order != SortOrder.NONE or r.sort_target != SortTarget.KEY:
            field_name = {SortTarget.KEY: "key", SortTarget.VERSION: "version",
                          SortTarget.CREATE: "create_revision", SortTarget.MOD: "mod_revision",
                          SortTarget.VALUE: "value"}[SortTarget(r.sort_target)]
            kvs.sort(key=lambda kv: getattr(kv, field_name), reverse=r.sort_order == SortOrder.DESCEND)
        more = 0 < r.limit < len(kvs)
        if r.limit > 0:
            kvs = kvs[: r.limit]
        if r.keys_only:
            kvs = [kv._replace(value=b"") for kv in kvs]
        return RangeResult(tuple(kvs), more, count, cur)

    # -- requests ------------------------------------------------------------------------

    def range(self, key: bytes, range_end: bytes = b"", **options: Any) -> RangeResult:
        return self.range_request(RangeRequest(key, range_end, **options))

    def range_request(self, r: Any) -> RangeResult:
        ops.check_range_request(r)
        return self._range_result(r, self.rev)

    def put(self, key: bytes, value: bytes = b"", **options: Any) -> PutResult:
        return self.put_request(PutRequest(key, value, **options))

    def put_request(self, r: Any) -> PutResult:
        ops.check_put_request(r)
        ops.check_capped(self.nospace_alarm, "put", r)
        if r.lease and self.lease_check is not None and not self.lease_check(r.lease):
            raise LeaseNotFoundError()
        w = _Write(self)
        result = w.put(r)
        w.finish()
        return result

    def delete_range(self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False) -> DeleteRangeResult:
        return self.delete_range_request(DeleteRangeRequest(key, range_end, prev_kv))

    def delete_range_request(self, r: Any) -> DeleteRangeResult:
        ops.check_delete_request(r)
        w = _Write(self)
        result = w.delete(r.key, r.range_end, r.prev_kv)
        w.finish()
        return result

    def delete_keys(self, keys: Iterable[bytes]) -> DeleteRangeResult:
        w = _Write(self)
        deleted = sum(w.delete(k, b"", False).deleted for k in sorted(set(keys)))
        w.finish()
        return DeleteRangeResult(revision=self.rev, deleted=deleted)

    def txn(self, compare: Iterable[Any] = (), success: Iterable[Any] = (),
            failure: Iterable[Any] = ()) -> TxnResult:
        return self.txn_request(TxnRequest(tuple(compare), tuple(success), tuple(failure)))

    def txn_request(self, r: Any) -> TxnResult:
        ops.check_txn_request(r, self.max_txn_ops)
        ops.check_capped(self.nospace_alarm, "txn", r)
        before = self.state_at(self.rev)
        path = self._path(r, before)
        self._check_ops(r, path, before)
        w = _Write(self)
        result = w.txn(r, path)
        w.finish()
        return result._replace(revision=self.rev)

    def request(self, op: Any) -> Any:
        kind = ops.op_kind(op)
        method = {"range": self.range_request, "put": self.put_request,
                  "delete": self.delete_range_request, "txn": self.txn_request}[kind]
        return method(op)

    def _path(self, r: Any, state: dict[bytes, KeyValue]) -> Any:
        ok = all(self._holds(c, state) for c in r.compare)
        chosen = r.success if ok else r.failure
        return ok, [self._path(op, state) for op in chosen if ops.op_kind(op) == "txn"]

    @staticmethod
    def _holds(c: Any, state: dict[bytes, KeyValue]) -> bool:
        kvs = [state[k] for k in sorted(state) if _in_range(k, c.key, c.range_end)]
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(c.key)]
        name = {CompareTarget.VERSION: "version", CompareTarget.CREATE: "create_revision",
                CompareTarget.MOD: "mod_revision", CompareTarget.VALUE: "value",
                CompareTarget.LEASE: "lease"}.get(c.target)
        want = getattr(c, name) if name else 0  # an unknown target compares 0 with 0
        result = c.result  # an unknown result holds
        for kv in kvs:
            got = getattr(kv, name) if name else 0
            if result == CompareResult.EQUAL and got != want:
                return False
            if result == CompareResult.NOT_EQUAL and got == want:
                return False
            if result == CompareResult.GREATER and not got > want:
                return False
            if result == CompareResult.LESS and not got < want:
                return False
        return True

    def _check_ops(self, r: Any, path: Any, state: dict[bytes, KeyValue]) -> None:
        def walk(r: Any, path: Any, check: Callable[[Any], None]) -> None:
            ok, children = path
            nested = iter(children)
            for op in r.success if ok else r.failure:
                if ops.op_kind(op) == "txn":
                    walk(op, next(nested), check)
                else:
                    check(op)

        live = set(state)  # the keys as the txn's ops so far leave them, in run order

        def check_put(op: Any) -> None:
            kind = ops.op_kind(op)
            if kind == "delete":
                live.difference_update([k for k in live if _in_range(k, op.key, op.range_end)])
                return
            if kind != "put":
                return
            if (op.ignore_value or op.ignore_lease) and op.key not in live:
                raise KeyNotFoundError()
            if op.lease and self.lease_check is not None and not self.lease_check(op.lease):
                raise LeaseNotFoundError()
            live.add(op.key)

        def check_range(op: Any) -> None:
            if ops.op_kind(op) == "range" and op.revision:
                if op.revision > self.rev:
                    raise FutureRevisionError()
                if op.revision < self.compact_revision:
                    raise CompactedRevisionError()

        if not ops.is_txn_readonly(r):
            walk(r, path, check_put)
        walk(r, path, check_range)

    # -- compaction, hashing, history ------------------------------------------------------

    def compact(self, rev: int, *, physical: bool = False) -> None:
        if rev <= self.compact_revision:
            raise CompactedRevisionError()
        if rev > self.rev:
            raise FutureRevisionError()
        self.compact_revision = rev

    def hash_kv(self, rev: int = 0) -> HashKVResult:
        if 0 < rev < self.compact_revision:
            raise CompactedRevisionError()
        if rev > self.rev:
            raise FutureRevisionError()
        rev = rev if rev > 0 else self.rev
        visible = {kv.key: kv.mod_revision for kv in self.state_at(rev).values()}
        crc = zlib.crc32(BUCKET_KEY)
        for rec in self.history:
            if rec.main > rev:
                break
            if rec.main <= self.compact_revision and (
                rec.tombstone or visible.get(rec.kv.key) != rec.main or self._last_sub(rec) != rec.sub
            ):
                continue
            rk = rev_to_bytes(rec.main, rec.sub, rec.tombstone)
            kv = rec.kv
            crc = zlib.crc32(rk, crc)
            crc = zlib.crc32(encode_kv(rk, kv.key, kv.create_revision, kv.mod_revision,
                                       kv.version, kv.value, kv.lease), crc)
        return HashKVResult(crc, self.compact_revision, rev, self.rev)

    def _last_sub(self, rec: _Record) -> int:
        subs = [r.sub for r in self.history if r.main == rec.main and r.kv.key == rec.kv.key]
        return max(subs)

    def events(self, start_rev: int, end_rev: int = 0) -> list[tuple[int, list[Event]]]:
        if start_rev < self.compact_revision:
            raise CompactedRevisionError()
        end = end_rev or self.rev + 1
        out: list[tuple[int, list[Event]]] = []
        for rec in self.history:
            if not start_rev <= rec.main < end:
                continue
            kv = KeyValue(rec.kv.key, mod_revision=rec.main) if rec.tombstone else rec.kv
            ev = Event(EventType.DELETE if rec.tombstone else EventType.PUT, kv)
            if out and out[-1][0] == rec.main:
                out[-1][1].append(ev)
            else:
                out.append((rec.main, [ev]))
        return out

    def keys_by_lease(self, lease: int) -> list[bytes]:
        if not lease:
            return []  # 0 is "no lease"
        return sorted(k for k, kv in self.state_at(self.rev).items() if kv.lease == lease)


class _Write:
    """One revision being built on the model."""

    def __init__(self, kv: MemoryKV) -> None:
        self.kv = kv
        self.main = kv.rev + 1
        self.changes = 0

    def cur(self) -> int:
        return self.main if self.changes else self.main - 1

    def put(self, r: Any) -> PutResult:
        state = self.kv.state_at(self.main)
        prev = state.get(r.key)
        if (r.ignore_value or r.ignore_lease) and prev is None:
            raise KeyNotFoundError()
        value = prev.value if r.ignore_value and prev else r.value
        lease = prev.lease if r.ignore_lease and prev else r.lease
        created, version = (prev.create_revision, prev.version + 1) if prev else (self.main, 1)
        kv = KeyValue(r.key, created, self.main, version, value, lease)
        self.kv._record(_Record(self.main, self.changes, kv, False))
        self.changes += 1
        return PutResult(self.main, prev if r.prev_kv else None)

    def delete(self, key: bytes, range_end: bytes, prev_kv: bool) -> DeleteRangeResult:
        state = self.kv.state_at(self.main)
        gone = [state[k] for k in sorted(state) if _in_range(k, key, range_end)]
        for kv in gone:
            self.kv._record(_Record(self.main, self.changes, KeyValue(kv.key, mod_revision=self.main), True))
            self.changes += 1
        return DeleteRangeResult(self.cur(), len(gone), tuple(gone) if prev_kv else ())

    def txn(self, r: Any, path: Any) -> TxnResult:
        ok, children = path
        nested = iter(children)
        out: list[Any] = []
        for op in r.success if ok else r.failure:
            kind = ops.op_kind(op)
            if kind == "range":
                out.append(self.kv._range_result(op, self.cur()))
            elif kind == "put":
                out.append(self.put(op))
            elif kind == "delete":
                out.append(self.delete(op.key, op.range_end, op.prev_kv))
            else:
                out.append(self.txn(op, next(nested)))
        return TxnResult(0, ok, tuple(out))

    def finish(self) -> None:
        if self.changes:
            self.kv.rev = self.main
