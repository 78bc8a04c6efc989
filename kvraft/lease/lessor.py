"""The lessor: leases, the keys attached to them, and when each one expires.

Two kinds of calls:

- **Applied** (every member, in log order, from committed Raft entries): ``grant``,
  ``revoke``, ``renew``, ``checkpoint``, ``attach``/``detach``. They change the replicated
  state (ID, granted TTL, checkpointed remaining TTL, keys) identically everywhere.
- **Local** (the member's own clock): every member keeps a local deadline for each lease,
  set when a grant, renew or checkpoint is applied (``now + remaining``). Only the
  primary (the Raft leader) acts on deadlines: ``expired(now)`` names leases to revoke
  through Raft and ``checkpoints_due(now)`` names remaining TTLs to replicate.

Why the remaining TTL survives a leader change: a follower's deadline comes from the same
applied grants, renewals and checkpoints as the leader's, so a new primary keeps it
(``promote`` only makes sure nothing is overdue by more than a tick). etcd instead resets
every lease to its full TTL on promotion unless checkpointing is switched on.

Worked example (TTL 10, checkpoint interval 4): grant at t=0 -> deadline 10; checkpoint
at t=4 records remaining 6; the leader dies at t=5; a follower that applied the
checkpoint at t=4.01 keeps deadline 10.01; a member restarted from disk at t=20 starts
the lease from the persisted remaining TTL: deadline 26.

PURE: time comes in as ``now`` (seconds, float, any monotonic origin). Not thread-safe.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

__all__ = [
    "MAX_LEASE_TTL_S",
    "Lease",
    "LeaseExists",
    "LeaseNotFound",
    "LeaseTTLTooLarge",
    "Lessor",
]

MAX_LEASE_TTL_S = 9_000_000_000


class LeaseNotFound(KeyError):
    """etcdserver: requested lease not found (code 5)."""


class LeaseExists(ValueError):
    """etcdserver: lease already exists (code 9)."""


class LeaseTTLTooLarge(ValueError):
    """etcdserver: too large lease TTL (code 11)."""


@dataclass(slots=True)
class Lease:
    id: int
    ttl_s: int
    """Granted TTL (after the minimum was applied)."""
    remaining_ttl_s: int = 0
    """Last checkpointed remaining TTL; 0 = none since the grant or last renewal."""
    deadline: float = math.inf
    """Local: when this member believes the lease ends."""
    keys: set[bytes] = field(default_factory=set)


class Lessor:
    def __init__(self, min_ttl_s: int = 2, revoke_retry_s: float = 3.0) -> None:
        self.min_ttl_s = min_ttl_s
        self.revoke_retry_s = revoke_retry_s
        self.leases: dict[int, Lease] = {}
        self.primary = False
        self._deadlines: list[tuple[float, int]] = []
        self._revoking: dict[int, float] = {}
        self._checkpointed_at: dict[int, float] = {}

    # -- applied through Raft ---------------------------------------------------------------
    def grant(self, lease_id: int, ttl_s: int, now: float) -> Lease:
        if lease_id in self.leases:
            raise LeaseExists(lease_id)
        if ttl_s > MAX_LEASE_TTL_S:
            raise LeaseTTLTooLarge(ttl_s)
        lease = Lease(lease_id, max(ttl_s, self.min_ttl_s))
        self.leases[lease_id] = lease
        self._set_deadline(lease, now + lease.ttl_s)
        self._checkpointed_at[lease_id] = now
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Forget the lease; returns its keys (sorted), which the caller deletes in the
        same revision."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            raise LeaseNotFound(lease_id)
        self._revoking.pop(lease_id, None)
        self._checkpointed_at.pop(lease_id, None)
        return sorted(lease.keys)

    def renew(self, lease_id: int, now: float) -> int:
        """A keepalive: the lease runs its full TTL again from ``now``. Returns the TTL."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        lease.remaining_ttl_s = 0
        self._set_deadline(lease, now + lease.ttl_s)
        self._checkpointed_at[lease_id] = now
        return lease.ttl_s

    def checkpoint(self, lease_id: int, remaining_ttl_s: int, now: float) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            return  # revoked meanwhile: the checkpoint is moot
        lease.remaining_ttl_s = remaining_ttl_s
        self._set_deadline(lease, now + remaining_ttl_s)
        self._checkpointed_at[lease_id] = now

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # -- local --------------------------------------------------------------------------------
    def promote(self, now: float) -> None:
        """This member became the Raft leader: start acting on deadlines."""
        self.primary = True
        self._revoking.clear()

    def demote(self) -> None:
        self.primary = False
        self._revoking.clear()

    def remaining(self, lease_id: int, now: float) -> int:
        """TimeToLive's ``TTL``: whole seconds left (ceil), -1 if unknown or ended."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return -1
        left = lease.deadline - now
        return max(math.ceil(left - 1e-9), 0) if left > 0 else 0

    def expired(self, now: float, limit: int = 64) -> list[int]:
        """Primary only: leases past their deadline whose revocation should be proposed.
        A lease named here is not named again for ``revoke_retry_s`` (the proposal may be
        lost; then it is named again)."""
        if not self.primary:
            return []
        out: list[int] = []
        heap = self._deadlines
        retry: list[tuple[float, int]] = []
        while heap and heap[0][0] <= now and len(out) < limit:
            deadline, lease_id = heapq.heappop(heap)
            lease = self.leases.get(lease_id)
            if lease is None or lease.deadline != deadline:
                continue  # stale heap entry
            since = self._revoking.get(lease_id)
            if since is not None and now - since < self.revoke_retry_s:
                retry.append((deadline, lease_id))
                continue
            self._revoking[lease_id] = now
            out.append(lease_id)
            retry.append((deadline, lease_id))
        for item in retry:
            heapq.heappush(heap, item)
        return out

    def next_deadline(self) -> float:
        while self._deadlines:
            deadline, lease_id = self._deadlines[0]
            lease = self.leases.get(lease_id)
            if lease is not None and lease.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return math.inf

    def checkpoints_due(self, now: float, interval_s: float, limit: int = 256) -> list[tuple[int, int]]:
        """Primary only: (lease, remaining TTL) for leases not checkpointed (nor granted or
        renewed) within ``interval_s``, oldest first."""
        if not self.primary:
            return []
        due = sorted((at, lid) for lid, at in self._checkpointed_at.items() if now - at >= interval_s)
        out = []
        for _, lease_id in due[:limit]:
            left = self.remaining(lease_id, now)
            self._checkpointed_at[lease_id] = now  # in flight; applying it sets this again
            if left > 0:
                out.append((lease_id, left))
        return out

    # -- persistence ----------------------------------------------------------------------
    def records(self, now: float) -> list[tuple[int, int, int]]:
        """(id, granted TTL, remaining TTL) for every lease, to persist; keys are rebuilt
        from the MVCC store (each key records its lease)."""
        return [(lid, lease.ttl_s, self.remaining(lid, now)) for lid, lease in sorted(self.leases.items())]

    def restore(self, records: list[tuple[int, int, int]], now: float) -> None:
        self.leases.clear()
        self._deadlines.clear()
        self._revoking.clear()
        self._checkpointed_at.clear()
        for lease_id, ttl_s, remaining_s in records:
            lease = Lease(lease_id, ttl_s, remaining_s)
            self.leases[lease_id] = lease
            self._set_deadline(lease, now + (remaining_s if remaining_s > 0 else ttl_s))
            self._checkpointed_at[lease_id] = now

    def _set_deadline(self, lease: Lease, deadline: float) -> None:
        lease.deadline = deadline
        heapq.heappush(self._deadlines, (deadline, lease.id))
