"""At most once per numbered write: the table of clients' answered requests (Raft thesis, 6.3).

A client that numbers its writes (``Kvraft-Request-Id: <client>:<seq>:<first>``; kvraft's
client numbers put, delete, txn, lease grant and revoke, compaction, and user and role
changes) may send one again when its answer was lost: every member applies the committed
``SessionOp`` entries through ``Sessions.apply``, which applies the write the
first time and keeps its answer, and answers a later copy of the same ``(client, seq)``
with that answer, applying nothing. So a put retried after a lost connection, a leader
change or a timeout changes the store once, and the retry learns what the first copy did
(its revision, a txn's ``succeeded``, a ``prev_kv``).

The table is part of the replicated state, so everything here is deterministic: it
changes only through committed entries, it is kept in the ``meta`` bucket in the same
LMDB commit as the write (so a restart, a snapshot and a restore carry it), and clients
expire by the entries' own clock:

- ``first`` (the lowest seq the client has no answer for) drops the answers below it; a
  copy of a seq below ``first`` is a stale duplicate of a request already answered: it is
  refused (``ALREADY_ANSWERED``) and not applied.
- ``stamp_ms`` is the proposing member's wall clock; the table's clock is the largest
  stamp applied. A client not heard from for ``TTL_MS`` by that clock is forgotten (all
  members at the same entry). A copy can arrive that late only from a client that keeps
  retrying one request for ten minutes; kvraft's client gives up after its request
  deadline (seconds).
- At most ``MAX_CLIENTS`` clients (the least recently used go first: ``use`` numbers the
  numbered entries applied, so the order is the same on a member that restarted or restored
  a snapshot) and ``MAX_ANSWERS`` answers per client (its requests in flight): past it the
  oldest answer goes and ``first`` moves above it (a copy of it is then refused, not
  applied); an answer over
  ``MAX_ANSWER_BYTES`` (a txn that ranged over much, a large ``prev_kv``) is kept as its
  revision alone, and a copy is then answered ``ANSWER_NOT_KEPT``.

Records (``meta`` bucket, values ``schema.encode_meta`` framed)::

    session/<client u64 BE>             msgpack [first, last_ms, use]
    session/<client u64 BE><seq u64 BE> msgpack answer (``encode_answer``)
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from kvraft.apply.chain import CompactResult
from kvraft.apply.errors import EtcdError, FailedPrecondition, InvalidArgument, error_from_code
from kvraft.apply.feature_appliers import LeaseGrantResult
from kvraft.apply.ops import SessionOp
from kvraft.storage.errors import StorageCorruptionError
from kvraft.storage.mvcc.types import DeleteRangeResult, KeyValue, PutResult, RangeResult, TxnResult
from kvraft.storage.schema import BUCKET_META, decode_meta, encode_meta

__all__ = [
    "ALREADY_ANSWERED",
    "HEADER",
    "REQUEST_IDS_OFF",
    "RequestId",
    "ANSWER_NOT_KEPT",
    "MAX_ANSWERS",
    "MAX_ANSWER_BYTES",
    "MAX_CLIENTS",
    "PREFIX",
    "TTL_MS",
    "Sessions",
    "decode_answer",
    "encode_answer",
    "parse_request_id",
    "request_id",
]

HEADER = "Kvraft-Request-Id"
"""``<client hex>:<seq>:<first>``: client a nonzero u64 (random, one per client), seq the
write's number (from 1), first the lowest seq the client has no answer for (<= seq)."""
REQUEST_IDS_OFF = ("kvraft: request ids are not available: member {member:x} has not announced them (an older "
                   "version, or not reached since this member started); send the write without Kvraft-Request-Id")

PREFIX = b"session/"
TTL_MS = 10 * 60 * 1000
MAX_CLIENTS = 100_000
MAX_ANSWERS = 256
MAX_ANSWER_BYTES = 16 * 1024
ALREADY_ANSWERED = ("kvraft: request already answered (client {client:x} seq {seq} is below the oldest answer kept); "
                    "it was not applied again")
ANSWER_NOT_KEPT = ("kvraft: request applied at revision {revision}; its answer ({size} bytes) was too large to "
                   "keep for a retry")

_U64 = struct.Struct(">Q")
_REQUEST_ID = re.compile(r"([0-9a-fA-F]{1,16}):([1-9][0-9]{0,18}):([1-9][0-9]{0,18})", re.ASCII)
_U64X2 = struct.Struct(">QQ")


@dataclass(frozen=True, slots=True)
class RequestId:
    client: int
    seq: int
    first: int


def parse_request_id(text: str) -> RequestId:
    """The ``Kvraft-Request-Id`` header's value; ``InvalidArgument`` if malformed."""
    found = _REQUEST_ID.fullmatch(text.strip())
    if found is None:
        raise InvalidArgument(f"kvraft: malformed {HEADER} {text!r}: want <client hex>:<seq>:<first>")
    client, seq, first = int(found[1], 16), int(found[2]), int(found[3])
    if not 0 < client < 2**64 or not 0 < first <= seq < 2**63:
        raise InvalidArgument(f"kvraft: bad {HEADER} {text!r}: client 1..2^64-1, 1 <= first <= seq < 2^63")
    return RequestId(client, seq, first)


def request_id(text: str | None) -> RequestId | None:
    """``parse_request_id`` of a header that may be absent (None: an unnumbered write)."""
    return None if text is None else parse_request_id(text)


@dataclass(slots=True)
class _Client:
    first: int
    last_ms: int
    use: int
    answers: dict[int, bytes] = field(default_factory=dict)


class Sessions:
    """The table over an ``MVCCStore`` (its backend's held batch is where records go)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._clients: OrderedDict[int, _Client] = OrderedDict()
        """Ordered by ``use`` (a client used moves to the end), hence by ``last_ms`` too (the
        clock only grows)."""
        self._uses = 0
        self.clock_ms = 0
        self.applied = 0
        """Numbered writes applied (first copies)."""
        self.duplicates = 0
        """Copies answered from the table (not applied)."""
        self.expired = 0
        self._writes: list[tuple[bytes, bytes | None]] = []
        self.load()

    def __len__(self) -> int:
        return len(self._clients)

    def load(self) -> None:
        """(Re)read the table from the store (at start, after a snapshot is installed)."""
        clients: dict[int, _Client] = {}
        answers: list[tuple[int, int, bytes]] = []
        with self.store.backend.read() as read:
            cursor = read.txn.cursor(db=read.dbis[BUCKET_META])
            if cursor.set_range(PREFIX):
                for key, raw in cursor:
                    key = bytes(key)
                    if not key.startswith(PREFIX):
                        break
                    rest = key[len(PREFIX):]
                    payload = decode_meta(key, bytes(raw))
                    if len(rest) == _U64.size:
                        first, last_ms, use = msgpack.unpackb(payload)
                        clients[_U64.unpack(rest)[0]] = _Client(first, last_ms, use)
                    elif len(rest) == _U64X2.size:
                        client, seq = _U64X2.unpack(rest)
                        answers.append((client, seq, payload))
                    else:
                        raise StorageCorruptionError(f"corrupt session record {key.hex()}")
        for client, seq, payload in answers:
            if client not in clients:
                raise StorageCorruptionError(f"session answer {client:x}/{seq} without its client record")
            clients[client].answers[seq] = payload
        self._clients = OrderedDict(sorted(clients.items(), key=lambda item: item[1].use))
        self.clock_ms = max((c.last_ms for c in clients.values()), default=0)
        self._uses = max((c.use for c in clients.values()), default=0)

    def apply(self, op: SessionOp, apply: Callable[[Any], Any]) -> Any:
        """``apply(op.op)`` the first time ``(op.client, op.seq)`` is seen, else its first
        answer; an ``EtcdError`` (the write's own, or kept) is raised."""
        try:
            return self._apply(op, apply)
        finally:
            writes, self._writes = self._writes, []
            if writes:  # (one batch context for the records an entry changes)
                with self.store.backend.batch() as batch:
                    db = batch.dbis[BUCKET_META]
                    for key, payload in writes:
                        if payload is None:
                            batch.txn.delete(key, db=db)
                        else:
                            batch.txn.put(key, encode_meta(key, payload), db=db)

    def _apply(self, op: SessionOp, apply: Callable[[Any], Any]) -> Any:
        self.clock_ms = max(self.clock_ms, op.stamp_ms)
        self._expire()
        self._uses += 1
        client = self._clients.get(op.client)
        if client is None:
            client = self._clients[op.client] = _Client(op.first, self.clock_ms, self._uses)
            while len(self._clients) > MAX_CLIENTS:
                self._forget(next(iter(self._clients)))
        else:
            self._clients.move_to_end(op.client)
            client.last_ms, client.use = self.clock_ms, self._uses
        if op.first > client.first:
            for seq in [s for s in client.answers if s < op.first]:
                self._drop_answer(op.client, client, seq)
            client.first = op.first
        kept = client.answers.get(op.seq)
        if op.seq < client.first or kept is not None:
            self.duplicates += 1
            self._save(op.client, client)
            if kept is None:
                raise FailedPrecondition(ALREADY_ANSWERED.format(client=op.client, seq=op.seq))
            answer = decode_answer(kept)
            if isinstance(answer, EtcdError):
                raise answer
            return answer
        self.applied += 1
        error: EtcdError | None = None
        try:
            result = apply(op.op)
        except EtcdError as exc:
            result, error = exc, exc
        encoded = encode_answer(result)
        client.answers[op.seq] = encoded
        self._write(_answer_key(op.client, op.seq), encoded)
        while len(client.answers) > MAX_ANSWERS:
            oldest = min(client.answers)
            self._drop_answer(op.client, client, oldest)
            client.first = max(client.first, oldest + 1)
        self._save(op.client, client)
        if error is not None:
            raise error
        return result

    def _save(self, client_id: int, client: _Client) -> None:
        self._write(_client_key(client_id), msgpack.packb([client.first, client.last_ms, client.use]))

    def _expire(self) -> None:
        horizon = self.clock_ms - TTL_MS
        while self._clients:
            oldest, client = next(iter(self._clients.items()))
            if client.last_ms >= horizon:
                return
            self._forget(oldest)
            self.expired += 1

    def _forget(self, client_id: int) -> None:
        client = self._clients.pop(client_id)
        for seq in client.answers:
            self._write(_answer_key(client_id, seq), None)
        self._write(_client_key(client_id), None)

    def _drop_answer(self, client_id: int, client: _Client, seq: int) -> None:
        del client.answers[seq]
        self._write(_answer_key(client_id, seq), None)

    def _write(self, key: bytes, payload: bytes | None) -> None:
        """Queue a record change (None: delete) for the end of ``apply``."""
        self._writes.append((key, payload))


def _client_key(client: int) -> bytes:
    return PREFIX + _U64.pack(client)


def _answer_key(client: int, seq: int) -> bytes:
    return PREFIX + _U64X2.pack(client, seq)


# -- answers --------------------------------------------------------------------------------
# msgpack, a tag first: ["p", revision, kv|None] put, ["d", revision, deleted, [kv]] delete,
# ["r", [kv], more, count, revision] range, ["t", revision, succeeded, [answer]] txn,
# ["e", code, message] an EtcdError, ["g", id, ttl, revision] a lease grant, ["i", revision] a lease revoke, ["x", revision,
# size] an answer not kept; kv =
# [key, create_revision, mod_revision, version, value, lease].

def encode_answer(result: Any) -> bytes:
    data: bytes = msgpack.packb(_to_wire(result), use_bin_type=True)
    if len(data) > MAX_ANSWER_BYTES:
        data = msgpack.packb(["x", getattr(result, "revision", 0), len(data)], use_bin_type=True)
    return data


def decode_answer(data: bytes) -> Any:
    return _from_wire(msgpack.unpackb(data, raw=False, use_list=True))


def _to_wire(result: Any) -> list[Any]:
    if isinstance(result, PutResult):
        return ["p", result.revision, None if result.prev_kv is None else list(result.prev_kv)]
    if isinstance(result, DeleteRangeResult):
        return ["d", result.revision, result.deleted, [list(kv) for kv in result.prev_kvs]]
    if isinstance(result, RangeResult):
        return ["r", [list(kv) for kv in result.kvs], result.more, result.count, result.revision]
    if isinstance(result, TxnResult):
        return ["t", result.revision, result.succeeded, [_to_wire(r) for r in result.responses]]
    if isinstance(result, EtcdError):
        return ["e", result.code, result.message]
    if isinstance(result, LeaseGrantResult):
        return ["g", result.id, result.ttl, result.revision]
    if type(result) is int:  # (a lease revoke's revision, a user or role change's)
        return ["i", result]
    if isinstance(result, CompactResult):
        return ["c", result.revision]
    return ["x", getattr(result, "revision", 0), 0]  # (no other write is numbered)


def _from_wire(wire: list[Any]) -> Any:
    tag = wire[0]
    if tag == "p":
        return PutResult(wire[1], None if wire[2] is None else KeyValue(*wire[2]))
    if tag == "d":
        return DeleteRangeResult(wire[1], wire[2], tuple(KeyValue(*kv) for kv in wire[3]))
    if tag == "r":
        return RangeResult(tuple(KeyValue(*kv) for kv in wire[1]), wire[2], wire[3], wire[4])
    if tag == "t":
        return TxnResult(wire[1], wire[2], tuple(_from_wire(r) for r in wire[3]))
    if tag == "e":
        return error_from_code(wire[1], wire[2])
    if tag == "g":
        return LeaseGrantResult(wire[1], wire[2], wire[3])
    if tag == "i":
        return int(wire[1])
    if tag == "c":
        return CompactResult(wire[1])
    if tag == "x":
        return FailedPrecondition(ANSWER_NOT_KEPT.format(revision=wire[1], size=wire[2]))
    raise StorageCorruptionError(f"unknown session answer tag {tag!r}")
