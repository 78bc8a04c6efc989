"""Typed results of the lease, cluster, maintenance and auth calls (same conventions as
``kvraft.client.types``, which re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvraft.client.types import ResponseHeader, enum_name, wire_bytes, wire_int

__all__ = [
    "Alarm",
    "AlarmResponse",
    "AuthStatusResponse",
    "HashKVResponse",
    "LeaderKey",
    "LeaseGrantResponse",
    "LeaseKeepAliveResponse",
    "LeaseLeasesResponse",
    "LeaseTimeToLiveResponse",
    "Member",
    "MemberAddResponse",
    "MemberListResponse",
    "Permission",
    "RoleGetResponse",
    "RoleListResponse",
    "ScopedToken",
    "StatusResponse",
    "UserGetResponse",
    "UserListResponse",
]

Wire = dict[str, Any]

PERM_TYPES = ("READ", "WRITE", "READWRITE")
ALARM_TYPES = ("NONE", "NOSPACE", "CORRUPT")


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
        return cls(wire_int(doc.get("memberID")), enum_name(doc.get("alarm"), ALARM_TYPES))


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
            enum_name(doc.get("permType"), PERM_TYPES),
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
class ScopedToken:
    """One of kvraft's scoped tokens as ``scoped_token_list`` shows it (never its secret)."""

    id: str
    user: str
    name: str
    perm_type: str  # "READ", "WRITE" or "READWRITE"
    key: bytes
    range_end: bytes
    lease: int

    @classmethod
    def from_wire(cls, doc: Wire) -> ScopedToken:
        return cls(str(doc.get("id", "")), str(doc.get("user", "")), str(doc.get("name", "")),
                   enum_name(doc.get("permType"), PERM_TYPES), wire_bytes(doc.get("key")),
                   wire_bytes(doc.get("range_end")), wire_int(doc.get("lease")))


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


