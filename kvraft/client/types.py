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
    "ScopedToken",
    "StatusResponse",
    "TxnResponse",
    "UserGetResponse",
    "UserListResponse",
    "WatchResponse",
    "enum_name",
    "wire_bytes",
    "wire_int",
]

Wire = dict[str, Any]


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


def enum_name(value: Any, names: tuple[str, ...]) -> str:
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
            enum_name(doc.get("type"), ("PUT", "DELETE")),
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


# Lease, cluster, maintenance and auth results live in admin_types; imported last since
# that module needs the helpers above.
from kvraft.client.admin_types import (  # noqa: E402
    Alarm,
    AlarmResponse,
    AuthStatusResponse,
    HashKVResponse,
    LeaderKey,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    Member,
    MemberAddResponse,
    MemberListResponse,
    Permission,
    RoleGetResponse,
    RoleListResponse,
    ScopedToken,
    StatusResponse,
    UserGetResponse,
    UserListResponse,
)
