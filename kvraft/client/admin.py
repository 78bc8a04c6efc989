"""Cluster membership, maintenance and auth administration.

Membership changes, defragment, alarm disarm and auth changes are not retried after a
lost answer (they are not idempotent); reads (member list, status, alarms, user and role
reads) are. ``endpoint=`` pins a maintenance call to one member, as ``kvctl endpoint
status`` and ``defrag`` need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvraft.client._transport import Transport

import time
from collections.abc import AsyncIterator
from typing import Any

from kvraft.client.kv import Key, to_bytes
from kvraft.client.types import (
    AlarmResponse,
    AuthStatusResponse,
    HashKVResponse,
    HeaderResponse,
    MemberAddResponse,
    MemberListResponse,
    RoleGetResponse,
    RoleListResponse,
    ScopedToken,
    StatusResponse,
    UserGetResponse,
    UserListResponse,
    wire_bytes,
    wire_int,
)
from kvraft.urls import parse_peer_urls

__all__ = ["AdminMixin", "SnapshotChunk"]

PERM_TYPES = ("READ", "WRITE", "READWRITE")


class SnapshotChunk:
    """One piece of a snapshot stream; ``remaining_bytes`` is the server's estimate."""

    __slots__ = ("blob", "remaining_bytes")

    def __init__(self, blob: bytes, remaining_bytes: int) -> None:
        self.blob = blob
        self.remaining_bytes = remaining_bytes


class AdminMixin:
    _transport: Transport

    # -- cluster ---------------------------------------------------------------------------
    async def member_list(self, *, linearizable: bool = False) -> MemberListResponse:
        """The members; ``linearizable`` (etcd 3.5's field): as the leader has committed them,
        after a ReadIndex round, instead of as this member has applied them. etcd 3.4's
        gateway refuses the field, so it is sent only to kvraft and etcd 3.5 or later (3.4
        answers serializably, as it does to etcdctl 3.6's gRPC request)."""
        body = {"linearizable": True} if linearizable and self._transport.takes_35_fields else {}
        return MemberListResponse.from_wire(await self._transport.unary("/cluster/member/list", body, safe=True))

    async def member_add(self, peer_urls: list[str], *, is_learner: bool = False) -> MemberAddResponse:
        """``ValueError`` before sending when a URL is not one etcd takes (``kvraft.urls``)."""
        parse_peer_urls(peer_urls)
        body: dict[str, Any] = {"peerURLs": list(peer_urls)}
        if is_learner:
            body["isLearner"] = True
        return MemberAddResponse.from_wire(await self._transport.unary("/cluster/member/add", body, safe=False))

    async def member_remove(self, member_id: int) -> MemberListResponse:
        doc = await self._transport.unary("/cluster/member/remove", {"ID": member_id}, safe=False)
        return MemberListResponse.from_wire(doc)

    async def member_update(self, member_id: int, peer_urls: list[str]) -> MemberListResponse:
        """``ValueError`` before sending when a URL is not one etcd takes (``kvraft.urls``)."""
        parse_peer_urls(peer_urls)
        body = {"ID": member_id, "peerURLs": list(peer_urls)}
        return MemberListResponse.from_wire(await self._transport.unary("/cluster/member/update", body, safe=False))

    async def member_promote(self, member_id: int) -> MemberListResponse:
        doc = await self._transport.unary("/cluster/member/promote", {"ID": member_id}, safe=False)
        return MemberListResponse.from_wire(doc)

    # -- maintenance -----------------------------------------------------------------------
    async def status(self, endpoint: str | None = None) -> StatusResponse:
        doc = await self._transport.unary("/maintenance/status", {}, safe=True, endpoint=endpoint)
        return StatusResponse.from_wire(doc)

    async def hash_kv(self, revision: int = 0, endpoint: str | None = None) -> HashKVResponse:
        """HashKV. etcd 3.4/3.5 do not route it over HTTP (their gateway answers 404)."""
        body = {"revision": revision} if revision else {}
        doc = await self._transport.unary("/maintenance/hashkv", body, safe=True, endpoint=endpoint)
        return HashKVResponse.from_wire(doc)

    async def health(self, endpoint: str | None = None) -> tuple[bool, str, float]:
        """``GET /health`` of one member: (healthy, error text, seconds taken)."""
        target = endpoint or self._transport.endpoint
        started = time.perf_counter()
        try:
            doc = await self._transport.get_json(target, "/health")
        except Exception as exc:  # any failure is an unhealthy answer, reported as text
            return False, str(exc) or type(exc).__name__, time.perf_counter() - started
        took = time.perf_counter() - started
        healthy = str(doc.get("health")) == "true"
        return healthy, "" if healthy else str(doc.get("reason") or "unhealthy"), took

    async def defragment(self, endpoint: str | None = None) -> HeaderResponse:
        doc = await self._transport.unary("/maintenance/defragment", {}, safe=False, endpoint=endpoint,
                                          timeout_s=max(self._transport.request_timeout_s, 30.0))
        return HeaderResponse.from_wire(doc)

    async def alarm_list(self) -> AlarmResponse:
        body = {"action": "GET", "memberID": 0, "alarm": "NONE"}
        return AlarmResponse.from_wire(await self._transport.unary("/maintenance/alarm", body, safe=True))

    async def alarm_disarm(self, member_id: int = 0, alarm: str = "NONE") -> AlarmResponse:
        """Disarm an alarm; with no arguments, every alarm the cluster reports."""
        if member_id == 0 and alarm == "NONE":
            listed = await self.alarm_list()
            last = AlarmResponse(listed.header)
            for item in listed.alarms:
                last = await self.alarm_disarm(item.member_id, item.alarm)
            return AlarmResponse(last.header, listed.alarms)
        body = {"action": "DEACTIVATE", "memberID": member_id, "alarm": alarm}
        return AlarmResponse.from_wire(await self._transport.unary("/maintenance/alarm", body, safe=False))

    async def move_leader(self, target_id: int) -> HeaderResponse:
        doc = await self._transport.unary("/maintenance/transfer-leadership", {"targetID": target_id}, safe=False)
        return HeaderResponse.from_wire(doc)

    async def snapshot(self, endpoint: str | None = None) -> AsyncIterator[SnapshotChunk]:
        """Stream the backend snapshot of one member, chunk by chunk."""
        stream = self._transport.stream("/maintenance/snapshot", {}, endpoint=endpoint)
        try:
            async for doc in stream:
                yield SnapshotChunk(wire_bytes(doc.get("blob")), wire_int(doc.get("remaining_bytes")))
        finally:
            await stream.aclose()

    # -- auth ------------------------------------------------------------------------------
    async def auth_enable(self) -> HeaderResponse:
        return HeaderResponse.from_wire(await self._transport.unary("/auth/enable", {}, safe=False, numbered=True))

    async def auth_disable(self) -> HeaderResponse:
        return HeaderResponse.from_wire(await self._transport.unary("/auth/disable", {}, safe=False, numbered=True))

    async def auth_status(self) -> AuthStatusResponse:
        """etcd 3.5+ and kvraft; etcd 3.4 answers 404 (a ``ServerError`` with code 12)."""
        return AuthStatusResponse.from_wire(await self._transport.unary("/auth/status", {}, safe=True))

    async def scoped_token_grant(self, name: str, key: Key, range_end: Key = b"", *, lease: int,
                                 perm_type: str = "READWRITE") -> str:
        """kvraft's scoped token: this client's user's own ``perm_type`` on ``[key,
        range_end)`` (etcd's range conventions), for as long as ``lease`` lives or until
        ``scoped_token_revoke(name)``. Another client passes it as ``token=``; it can do
        nothing its scope or this user's roles do not allow, and nothing admin. Needs auth on."""
        if perm_type not in PERM_TYPES:
            raise ValueError(f"perm_type must be one of {PERM_TYPES}")
        body: dict[str, Any] = {"name": name, "permType": perm_type, "key": to_bytes(key), "lease": lease}
        if range_end:
            body["range_end"] = to_bytes(range_end)
        doc = await self._transport.unary("/kvraft/auth/token/grant", body, safe=False)
        return str(doc.get("token", ""))

    async def scoped_token_revoke(self, name: str) -> HeaderResponse:
        """End this user's scoped token ``name`` (no error if there is none)."""
        doc = await self._transport.unary("/kvraft/auth/token/revoke", {"name": name}, safe=False)
        return HeaderResponse.from_wire(doc)

    async def scoped_token_list(self) -> list[ScopedToken]:
        """The scoped tokens' grants: every one for root, this user's own otherwise."""
        doc = await self._transport.unary("/kvraft/auth/token/list", {}, safe=True)
        return [ScopedToken.from_wire(t) for t in doc.get("tokens") or ()]

    async def user_add(self, name: str, password: str = "", *, no_password: bool = False) -> HeaderResponse:
        body: dict[str, Any] = {"name": name, "password": password}
        if no_password:
            body["options"] = {"no_password": True}
        return HeaderResponse.from_wire(await self._transport.unary("/auth/user/add", body, safe=False, numbered=True))

    async def user_get(self, name: str) -> UserGetResponse:
        return UserGetResponse.from_wire(await self._transport.unary("/auth/user/get", {"name": name}, safe=True))

    async def user_list(self) -> UserListResponse:
        return UserListResponse.from_wire(await self._transport.unary("/auth/user/list", {}, safe=True))

    async def user_delete(self, name: str) -> HeaderResponse:
        doc = await self._transport.unary("/auth/user/delete", {"name": name}, safe=False, numbered=True)
        return HeaderResponse.from_wire(doc)

    async def user_change_password(self, name: str, password: str) -> HeaderResponse:
        body = {"name": name, "password": password}
        return HeaderResponse.from_wire(await self._transport.unary("/auth/user/changepw", body, safe=False, numbered=True))

    async def user_grant_role(self, user: str, role: str) -> HeaderResponse:
        body = {"user": user, "role": role}
        return HeaderResponse.from_wire(await self._transport.unary("/auth/user/grant", body, safe=False, numbered=True))

    async def user_revoke_role(self, name: str, role: str) -> HeaderResponse:
        body = {"name": name, "role": role}
        return HeaderResponse.from_wire(await self._transport.unary("/auth/user/revoke", body, safe=False, numbered=True))

    async def role_add(self, name: str) -> HeaderResponse:
        return HeaderResponse.from_wire(await self._transport.unary("/auth/role/add", {"name": name}, safe=False, numbered=True))

    async def role_get(self, name: str) -> RoleGetResponse:
        return RoleGetResponse.from_wire(await self._transport.unary("/auth/role/get", {"role": name}, safe=True))

    async def role_list(self) -> RoleListResponse:
        return RoleListResponse.from_wire(await self._transport.unary("/auth/role/list", {}, safe=True))

    async def role_delete(self, name: str) -> HeaderResponse:
        doc = await self._transport.unary("/auth/role/delete", {"role": name}, safe=False, numbered=True)
        return HeaderResponse.from_wire(doc)

    async def role_grant_permission(
        self, name: str, perm_type: str, key: Key, range_end: Key = b""
    ) -> HeaderResponse:
        if perm_type not in PERM_TYPES:
            raise ValueError(f"perm_type must be one of {PERM_TYPES}")
        perm: dict[str, Any] = {"permType": perm_type, "key": to_bytes(key)}
        if range_end:
            perm["range_end"] = to_bytes(range_end)
        doc = await self._transport.unary("/auth/role/grant", {"name": name, "perm": perm}, safe=False, numbered=True)
        return HeaderResponse.from_wire(doc)

    async def role_revoke_permission(self, name: str, key: Key, range_end: Key = b"") -> HeaderResponse:
        body: dict[str, Any] = {"role": name, "key": to_bytes(key)}
        if range_end:
            body["range_end"] = to_bytes(range_end)
        return HeaderResponse.from_wire(await self._transport.unary("/auth/role/revoke", body, safe=False, numbered=True))
