"""Typed operations: what a client asked for, as values, and their Raft-entry encoding.

The API layer builds these from a decoded request; the driver proposes ``encode_entry(id,
op)`` and every member's apply stage runs ``decode_entry(data)`` on the committed bytes.
One entry carries one request id (so the proposer can find its waiter) and one op; a
``BatchOp`` (the msgpack ``kv/batch`` route's puts) is one op holding many, applied in
order, each with its own revision and its own result or error, as if each had been an
entry of its own: one proposal, one log entry and one waiter instead of one per put.

Wire form: msgpack ``[request_id, tag, *fields]``; nested ops (txn) nest the same arrays
without the id. Keep the tags stable: they are in every member's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "AlarmOp",
    "BatchOp",
    "Compare",
    "CompactOp",
    "DeleteRangeOp",
    "MemberOp",
    "Op",
    "PutOp",
    "RangeOp",
    "SessionOp",
    "TxnOp",
    "decode_entry",
    "describe",
    "encode_entry",
    "op_from_wire",
    "op_to_wire",
    "register_op",
]

# Compare targets / results, with etcd's enum numbers.
VERSION, CREATE, MOD, VALUE, LEASE = range(5)
EQUAL, GREATER, LESS, NOT_EQUAL = range(4)


@dataclass(slots=True)
class RangeOp:
    key: bytes = b""
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = 0
    sort_target: int = 0
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0
    no_count: bool = False
    """kvraft's, never on the wire: leave ``count`` 0 and stop at ``limit`` (a streamed
    range's later pages, api/kv.py)."""


@dataclass(slots=True)
class PutOp:
    key: bytes = b""
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(slots=True)
class DeleteRangeOp:
    key: bytes = b""
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(slots=True)
class Compare:
    result: int = EQUAL
    target: int = VERSION
    key: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0
    range_end: bytes = b""


@dataclass(slots=True)
class TxnOp:
    compare: list[Compare] = field(default_factory=list)
    success: list[Any] = field(default_factory=list)
    failure: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class CompactOp:
    revision: int = 0
    physical: bool = False


@dataclass(slots=True)
class MemberOp:
    """Membership bookkeeping carried in a conf-change entry's context (not a KV op)."""

    action: str = "add"  # add | remove | update | promote | publish | found (a founder's bootstrap entry)
    member_id: int = 0
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False


@dataclass(slots=True)
class AlarmOp:
    action: int = 0  # GET, ACTIVATE, DEACTIVATE
    member_id: int = 0
    alarm: int = 0  # NONE, NOSPACE, CORRUPT


@dataclass(slots=True)
class BatchOp:
    """Independent writes in one entry (not a transaction): applied in order, each its
    own revision; the result is a list with each op's result or ``EtcdError``."""

    ops: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class SessionOp:
    """A write a client numbered (``Kvraft-Request-Id``): ``op`` is applied at most once
    per ``(client, seq)``; a copy applied later answers the first one's result
    (``kvraft.apply.sessions``). ``first`` is the lowest seq the client has no answer for
    (the answers below it are dropped); ``stamp_ms`` the proposer's wall clock, from which
    the members expire idle clients, all at the same entry."""

    client: int = 0
    seq: int = 0
    first: int = 0
    stamp_ms: int = 0
    op: Any = None


Op = RangeOp | PutOp | DeleteRangeOp | TxnOp | CompactOp | AlarmOp | MemberOp | BatchOp | SessionOp

_TAG = {RangeOp: 1, PutOp: 2, DeleteRangeOp: 3, TxnOp: 4, CompactOp: 5, AlarmOp: 6, MemberOp: 7, BatchOp: 8,
        SessionOp: 9}
assert PutOp.__slots__ == ("key", "value", "lease", "prev_kv", "ignore_value", "ignore_lease")  # BatchOp's wire
_RESERVED = (4, 7, 8, 9)  # tags with their own wire form (not register_op's flat field list)
_SIMPLE = {1: RangeOp, 2: PutOp, 3: DeleteRangeOp, 5: CompactOp, 6: AlarmOp}


def register_op(tag: int, cls: type) -> None:
    """Add a flat op type (a slots dataclass of msgpack-able fields) for layers above the
    KV core (leases, auth: ``kvraft.apply.feature_ops``). Tags are forever."""
    if _TAG.get(cls, tag) != tag or _SIMPLE.get(tag, cls) is not cls or tag in _RESERVED:
        raise ValueError(f"op tag {tag} is taken")
    _TAG[cls] = tag
    _SIMPLE[tag] = cls


def op_to_wire(op: Any) -> list[Any]:
    tag = _TAG[type(op)]
    if tag == 4:
        return [
            4,
            [[getattr(c, f) for f in Compare.__slots__] for c in op.compare],
            [op_to_wire(o) for o in op.success],
            [op_to_wire(o) for o in op.failure],
        ]
    if tag == 9:
        return [9, op.client, op.seq, op.first, op.stamp_ms, op_to_wire(op.op)]
    if tag == 8:  # (puts spelled out: a batch holds thousands)
        return [8, [[2, o.key, o.value, o.lease, o.prev_kv, o.ignore_value, o.ignore_lease] if type(o) is PutOp
                    else op_to_wire(o) for o in op.ops]]
    return [tag, *(getattr(op, f) for f in type(op).__slots__)]


def op_from_wire(wire: list[Any]) -> Any:
    tag = wire[0]
    if tag == 4:
        return TxnOp(
            [Compare(*c) for c in wire[1]],
            [op_from_wire(o) for o in wire[2]],
            [op_from_wire(o) for o in wire[3]],
        )
    if tag == 7:
        return MemberOp(*wire[1:])
    if tag == 9:
        return SessionOp(wire[1], wire[2], wire[3], wire[4], op_from_wire(wire[5]))
    if tag == 8:
        return BatchOp([PutOp(*o[1:]) if o[0] == 2 else op_from_wire(o) for o in wire[1]])
    return _SIMPLE[tag](*wire[1:])


def encode_entry(request_id: int, op: Any) -> bytes:
    data: bytes = msgpack.packb([request_id, *op_to_wire(op)], use_bin_type=True)  # msgpack has no type hints
    return data


def decode_entry(data: bytes) -> tuple[int, Any]:
    wire = msgpack.unpackb(data, raw=False, use_list=True)
    return wire[0], op_from_wire(wire[1:])


def describe(op: Any) -> str:
    """One line naming a request for a log, etcd's way: keys shown, values only by size
    ("put key:\"a\" value_size:3")."""
    if isinstance(op, SessionOp):
        return f"{describe(op.op)} client:{op.client:x} seq:{op.seq}"
    if isinstance(op, BatchOp):
        return f"batch ops:{len(op.ops)}"
    if isinstance(op, TxnOp):
        return f"txn compare:{len(op.compare)} success:{len(op.success)} failure:{len(op.failure)}"
    parts = [type(op).__name__.removesuffix("Op").lower()]
    key = getattr(op, "key", None)
    if isinstance(key, bytes):
        parts.append(f"key:{_quoted(key)}")
        end = getattr(op, "range_end", b"")
        if end:
            parts.append(f"range_end:{_quoted(end)}")
    if isinstance(op, PutOp):
        parts.append(f"value_size:{len(op.value)}")
        if op.lease:
            parts.append(f"lease:{op.lease}")
    elif isinstance(op, CompactOp):
        parts.append(f"revision:{op.revision}")
    return " ".join(parts)


def _quoted(data: bytes, limit: int = 64) -> str:
    text = data[:limit].decode("utf-8", "backslashreplace")
    return '"' + text.replace('"', '\\"') + ('..."' if len(data) > limit else '"')


_ETCD_NAMES: dict[type, str] = {CompactOp: "Compaction"}


def op_name(op: Any) -> str:
    """The op as etcd's ``etcd_server_apply_duration_seconds{op}`` names it ("Put", "Txn",
    "DeleteRange", "Compaction", "LeaseGrant", "AuthUserAdd"): a numbered write by its op, an
    authenticated one by the op it wraps (from its wire tag: not decoded); kvraft's own
    (a coalesced "Batch" of puts, "LeaseExpire") by their class."""
    if type(op) is SessionOp:
        op = op.op
    cls: type = type(op)
    wire = getattr(op, "wire", None)
    if type(wire) is list and wire:  # an authenticated request (AuthedOp)
        cls = next((c for c, tag in _TAG.items() if tag == wire[0]), cls)
    action = getattr(op, "action", None)
    if type(action) is str:  # AuthOp: "user_add" -> "AuthUserAdd"
        return "Auth" + "".join(part.capitalize() for part in action.split("_"))
    return _ETCD_NAMES.get(cls) or cls.__name__.removesuffix("Op")
