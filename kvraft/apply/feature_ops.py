"""Ops of the lease and auth layers, as Raft-entry payloads (registered with
``kvraft.apply.ops.register_op``; the tags are in every member's log, keep them).

- ``LeaseGrantOp`` / ``LeaseRevokeOp`` / ``LeaseRenewOp``: client requests (the proposing
  member picks the ID of a server-chosen lease, so every member applies the same one).
- ``LeaseExpireOp`` / ``LeaseCheckpointOp``: proposed by the leader's lessor loop.
- ``AuthOp``: one auth-store mutation, ``action`` naming an ``AuthState`` method (plus
  ``assign_simple``: register a simple token on every member).
- ``AuthedOp``: any op proposed on behalf of an authenticated user; the Auth applier
  checks ``user``'s permissions at apply time and unwraps ``wire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvraft.apply.ops import op_from_wire, op_to_wire, register_op

__all__ = [
    "AuthOp",
    "AuthedOp",
    "LeaseCheckpointOp",
    "LeaseExpireOp",
    "LeaseGrantOp",
    "LeaseRenewOp",
    "LeaseRevokeOp",
    "authed",
]


@dataclass(slots=True)
class LeaseGrantOp:
    id: int = 0
    ttl: int = 0


@dataclass(slots=True)
class LeaseRevokeOp:
    id: int = 0


@dataclass(slots=True)
class LeaseExpireOp:
    id: int = 0


@dataclass(slots=True)
class LeaseRenewOp:
    id: int = 0


@dataclass(slots=True)
class LeaseCheckpointOp:
    items: list[list[int]] = field(default_factory=list)


@dataclass(slots=True)
class AuthOp:
    action: str = ""
    args: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class AuthedOp:
    user: str = ""
    revision: int = 0
    wire: list[Any] = field(default_factory=list)

    def op(self) -> Any:
        return op_from_wire(self.wire)


def authed(user: str, revision: int, op: Any) -> AuthedOp:
    return AuthedOp(user, revision, op_to_wire(op))


for _tag, _cls in (
    (20, LeaseGrantOp),
    (21, LeaseRevokeOp),
    (22, LeaseExpireOp),
    (23, LeaseRenewOp),
    (24, LeaseCheckpointOp),
    (25, AuthOp),
    (26, AuthedOp),
):
    register_op(_tag, _cls)
