"""Typed results: frozen dataclasses built from the gateway's answers.

Every ``from_wire`` accepts both encodings of an answer: proto3 JSON (bytes as base64
text, 64-bit integers as decimal strings, defaults omitted) and kvraft's msgpack (raw
bytes and integers, same field names). Missing fields take their proto default.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Alarm",
    "AlarmResponse",
    "AuthStatusResponse",
    "DeleteResponse",
    "Event",
    "GetResponse",
    "HashKVResponse",
    "HeaderResponse",
    "KeyValue",
    "LeaderKey",
    "LeaseGrantResponse",
    "LeaseKeepAliveResponse",
    "LeaseLeasesResponse",
    "LeaseTimeToLiveResponse",
    "Member",
    "MemberAddResponse",
    "MemberListResponse",
    "Permission",
    "PutResponse",
    "ResponseHeader",
    "RoleGetResponse",
    "RoleListResponse",
    "StatusResponse",
    "TxnResponse",
    "UserGetResponse",
    "UserListResponse",
    "WatchResponse",
    "wire_bytes",
    "wire_int",
]

Wire = dict[str, Any]

PERM_TYPES = ("READ", "WRITE", "READWRITE")
ALARM_TYPES = ("NONE", "NOSPACE", "CORRUPT")


def wire_bytes(value: Any) -> bytes:
    """A bytes field: raw bytes (msgpack) or standard base64 text (JSON)."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return base64.b64decode(value)


def wire_int(value: Any) -> int:
    """A 64-bit integer field: an int (msgpack, JSON number) or a decimal string (JSON)."""
    if value is None or value == "":
        return 0
    return int(value)


def _enum(value: Any, names: tuple[str, ...]) -> str:
    if value is None:
        return names[0]
    if isinstance(value, int):
        return names[value] if 0 <= value < len(names) else str(value)
    return str(value)


@dataclass(frozen=True)
class ResponseHeader:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0

    @classmethod
    def from_wire(cls, doc: Wire | None) -> ResponseHeader:
        doc = doc or {}
        return cls(
            wire_int(doc.get("cluster_id")),
            wire_int(doc.get("member_id")),
            wire_int(doc.get("revision")),
            wire_int(doc.get("raft_term")),
        )


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0

    @classmethod
    def from_wire(cls, doc: Wire) -> KeyValue:
        return cls(
            wire_bytes(doc.get("key")),
            wire_int(doc.get("create_revision")),
            wire_int(doc.get("mod_revision")),
            wire_int(doc.get("version")),
            wire_bytes(doc.get("value")),
            wire_int(doc.get("lease")),
        )


def _kv_or_none(doc: Wire | None) -> KeyValue | None:
    return None if doc is None else KeyValue.from_wire(doc)


@dataclass(frozen=True)
class HeaderResponse:
    """An answer that carries only a header (put without prev_kv, revoke, auth admin...)."""

    header: ResponseHeader

    @classmethod
    def from_wire(cls, doc: Wire) -> HeaderResponse:
        return cls(ResponseHeader.from_wire(doc.get("header")))


@dataclass(frozen=True)
class GetResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0

    @classmethod
    def from_wire(cls, doc: Wire) -> GetResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            tuple(KeyValue.from_wire(kv) for kv in doc.get("kvs") or ()),
            bool(doc.get("more")),
            wire_int(doc.get("count")),
        )


@dataclass(frozen=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None

    @classmethod
    def from_wire(cls, doc: Wire) -> PutResponse:
        return cls(ResponseHeader.from_wire(doc.get("header")), _kv_or_none(doc.get("prev_kv")))


@dataclass(frozen=True)
class DeleteResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> DeleteResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            wire_int(doc.get("deleted")),
            tuple(KeyValue.from_wire(kv) for kv in doc.get("prev_kvs") or ()),
        )


@dataclass(frozen=True)
class TxnResponse:
    header: ResponseHeader
    succeeded: bool = False
    responses: tuple[GetResponse | PutResponse | DeleteResponse | TxnResponse, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> TxnResponse:
        items: list[GetResponse | PutResponse | DeleteResponse | TxnResponse] = []
        for op in doc.get("responses") or ():
            if "response_range" in op:
                items.append(GetResponse.from_wire(op["response_range"]))
            elif "response_put" in op:
                items.append(PutResponse.from_wire(op["response_put"]))
            elif "response_delete_range" in op:
                items.append(DeleteResponse.from_wire(op["response_delete_range"]))
            elif "response_txn" in op:
                items.append(TxnResponse.from_wire(op["response_txn"]))
        return cls(ResponseHeader.from_wire(doc.get("header")), bool(doc.get("succeeded")), tuple(items))


@dataclass(frozen=True)
class Event:
    """A watch event. ``type`` is ``"PUT"`` or ``"DELETE"``; a DELETE's ``kv`` carries only
    the key and the deletion revision (``mod_revision``)."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @classmethod
    def from_wire(cls, doc: Wire) -> Event:
        return cls(
            _enum(doc.get("type"), ("PUT", "DELETE")),
            KeyValue.from_wire(doc.get("kv") or {}),
            _kv_or_none(doc.get("prev_kv")),
        )


@dataclass(frozen=True)
class WatchResponse:
    header: ResponseHeader
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    events: tuple[Event, ...] = ()

    @property
    def is_progress_notify(self) -> bool:
        """An empty response that only reports the current revision."""
        return (
            not self.events and not self.canceled and not self.created
            and self.compact_revision == 0 and self.header.revision != 0
        )

    @classmethod
    def from_wire(cls, doc: Wire) -> WatchResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            wire_int(doc.get("watch_id")),
            bool(doc.get("created")),
            bool(doc.get("canceled")),
            wire_int(doc.get("compact_revision")),
            str(doc.get("cancel_reason") or ""),
            bool(doc.get("fragment")),
            tuple(Event.from_wire(e) for e in doc.get("events") or ()),
        )


@dataclass(frozen=True)
class LeaseGrantResponse:
    header: ResponseHeader
    id: int
    ttl: int
    error: str = ""

    @classmethod
    def from_wire(cls, doc: Wire) -> LeaseGrantResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            wire_int(doc.get("ID")),
            wire_int(doc.get("TTL")),
            str(doc.get("error") or ""),
        )


@dataclass(frozen=True)
class LeaseKeepAliveResponse:
    """``ttl`` 0 means the lease is gone."""

    header: ResponseHeader
    id: int
    ttl: int

    @classmethod
    def from_wire(cls, doc: Wire) -> LeaseKeepAliveResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            wire_int(doc.get("ID")),
            wire_int(doc.get("TTL")),
        )


@dataclass(frozen=True)
class LeaseTimeToLiveResponse:
    """``ttl`` -1 means expired or unknown."""

    header: ResponseHeader
    id: int
    ttl: int
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> LeaseTimeToLiveResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            wire_int(doc.get("ID")),
            wire_int(doc.get("TTL")),
            wire_int(doc.get("grantedTTL")),
            tuple(wire_bytes(k) for k in doc.get("keys") or ()),
        )


@dataclass(frozen=True)
class LeaseLeasesResponse:
    header: ResponseHeader
    leases: tuple[int, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> LeaseLeasesResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            tuple(wire_int(item.get("ID")) for item in doc.get("leases") or ()),
        )


@dataclass(frozen=True)
class Member:
    id: int
    name: str = ""
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    @classmethod
    def from_wire(cls, doc: Wire) -> Member:
        return cls(
            wire_int(doc.get("ID")),
            str(doc.get("name") or ""),
            tuple(doc.get("peerURLs") or ()),
            tuple(doc.get("clientURLs") or ()),
            bool(doc.get("isLearner")),
        )


@dataclass(frozen=True)
class MemberListResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> MemberListResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            tuple(Member.from_wire(m) for m in doc.get("members") or ()),
        )


@dataclass(frozen=True)
class MemberAddResponse:
    header: ResponseHeader
    member: Member
    members: tuple[Member, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> MemberAddResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            Member.from_wire(doc.get("member") or {}),
            tuple(Member.from_wire(m) for m in doc.get("members") or ()),
        )


@dataclass(frozen=True)
class StatusResponse:
    header: ResponseHeader
    version: str = ""
    db_size: int = 0
    leader: int = 0
    raft_index: int = 0
    raft_term: int = 0
    raft_applied_index: int = 0
    errors: tuple[str, ...] = ()
    db_size_in_use: int = 0
    is_learner: bool = False

    @classmethod
    def from_wire(cls, doc: Wire) -> StatusResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            str(doc.get("version") or ""),
            wire_int(doc.get("dbSize")),
            wire_int(doc.get("leader")),
            wire_int(doc.get("raftIndex")),
            wire_int(doc.get("raftTerm")),
            wire_int(doc.get("raftAppliedIndex")),
            tuple(doc.get("errors") or ()),
            wire_int(doc.get("dbSizeInUse")),
            bool(doc.get("isLearner")),
        )


@dataclass(frozen=True)
class HashKVResponse:
    header: ResponseHeader
    hash: int = 0
    compact_revision: int = 0

    @classmethod
    def from_wire(cls, doc: Wire) -> HashKVResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            wire_int(doc.get("hash")),
            wire_int(doc.get("compact_revision")),
        )


@dataclass(frozen=True)
class Alarm:
    member_id: int
    alarm: str  # "NONE", "NOSPACE" or "CORRUPT"

    @classmethod
    def from_wire(cls, doc: Wire) -> Alarm:
        return cls(wire_int(doc.get("memberID")), _enum(doc.get("alarm"), ALARM_TYPES))


@dataclass(frozen=True)
class AlarmResponse:
    header: ResponseHeader
    alarms: tuple[Alarm, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> AlarmResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            tuple(Alarm.from_wire(a) for a in doc.get("alarms") or ()),
        )


@dataclass(frozen=True)
class Permission:
    perm_type: str  # "READ", "WRITE" or "READWRITE"
    key: bytes
    range_end: bytes = b""

    @classmethod
    def from_wire(cls, doc: Wire) -> Permission:
        return cls(
            _enum(doc.get("permType"), PERM_TYPES),
            wire_bytes(doc.get("key")),
            wire_bytes(doc.get("range_end")),
        )


@dataclass(frozen=True)
class RoleGetResponse:
    header: ResponseHeader
    perm: tuple[Permission, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> RoleGetResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            tuple(Permission.from_wire(p) for p in doc.get("perm") or ()),
        )


@dataclass(frozen=True)
class RoleListResponse:
    header: ResponseHeader
    roles: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> RoleListResponse:
        return cls(ResponseHeader.from_wire(doc.get("header")), tuple(doc.get("roles") or ()))


@dataclass(frozen=True)
class UserGetResponse:
    header: ResponseHeader
    roles: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> UserGetResponse:
        return cls(ResponseHeader.from_wire(doc.get("header")), tuple(doc.get("roles") or ()))


@dataclass(frozen=True)
class UserListResponse:
    header: ResponseHeader
    users: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, doc: Wire) -> UserListResponse:
        return cls(ResponseHeader.from_wire(doc.get("header")), tuple(doc.get("users") or ()))


@dataclass(frozen=True)
class AuthStatusResponse:
    header: ResponseHeader
    enabled: bool = False
    auth_revision: int = 0

    @classmethod
    def from_wire(cls, doc: Wire) -> AuthStatusResponse:
        return cls(
            ResponseHeader.from_wire(doc.get("header")),
            bool(doc.get("enabled")),
            wire_int(doc.get("authRevision")),
        )


@dataclass(frozen=True)
class LeaderKey:
    """An election leadership: ``key`` is the leader's key, owned through ``lease``."""

    name: bytes
    key: bytes
    rev: int
    lease: int

    @classmethod
    def from_wire(cls, doc: Wire) -> LeaderKey:
        return cls(
            wire_bytes(doc.get("name")),
            wire_bytes(doc.get("key")),
            wire_int(doc.get("rev")),
            wire_int(doc.get("lease")),
        )


