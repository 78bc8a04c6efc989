"""The lessor: leases, the keys attached to them, and when each one expires.

Three kinds of calls:

- **Applied** (every member, in log order, from committed Raft entries): ``grant``,
  ``revoke``, ``checkpoint``, ``attach``/``detach`` (and ``renew``, for ``LeaseRenewOp``
  entries older logs still hold). They change the replicated state (ID, granted TTL,
  checkpointed remaining TTL, keys) identically everywhere.
- **Primary** (the Raft leader, its own clock): ``keepalive`` renews a lease in memory,
  as etcd's ``Lessor.Renew``: no log entry of its own (the caller answers the client once
  the checkpoint carrying the renewal has committed, ``server/lease_renew.py``). ``expired(now)``
  names leases to revoke through Raft; ``checkpoints_due(now)`` names the remaining TTLs
  to replicate: every lease renewed since its last checkpoint (so followers learn of
  renewals within one lease-loop period) and every lease untouched for the interval (so a
  restart resumes from a recent remaining TTL).
- **Local** deadlines: every member keeps one per lease. A follower sets it when a grant
  or checkpoint is applied (``now + remaining``), so its TimeToLive trails the leader's
  by at most the checkpoint delay. The primary's deadlines are its own (grants and
  keepalives); applying its own checkpoints changes only the persisted remaining TTL, never
  the deadline (a checkpoint proposed before a keepalive must not undo it).

Leader change, as etcd's ``Promote(extend)``: the new primary starts from the deadlines
the applied checkpoints gave it and extends every lease by ``extend`` (the election
timeout), so a lease whose owner kept it alive survives the time without a leader, and a
lease nobody renews still ends within TTL + election timeout + checkpoint delay. The
caller promotes only once the new leader has applied everything committed before its term
(the old leader's last checkpoints).

Worked example (TTL 10, keepalive at t=3, checkpoint loop every 0.1 s): grant at t=0 ->
deadline 10 everywhere; the leader renews at t=3 -> deadline 13 on the leader, checkpoint
``(id, 10)`` proposed at t=3.1, applied by a follower at t=3.15 -> deadline 13.15 there;
the leader dies at t=5, the follower is promoted at t=6.5 with extend 1 -> deadline 14.15.

PURE: time comes in as ``now`` (seconds, float, any monotonic origin). Not thread-safe.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from kvraft.durations import DurationHistogram

__all__ = [
    "MAX_LEASE_TTL_S",
    "Lease",
    "LeaseExists",
    "LeaseNotFound",
    "LeaseTTLTooLarge",
    "Lessor",
    "NotPrimary",
]

MAX_LEASE_TTL_S = 9_000_000_000


LEASE_TTL_BUCKETS_S = tuple(float(2**i) for i in range(24))
"""etcd's buckets for ``etcd_debugging_lease_ttl_total``: 1 s to 2^23 s (97 days), doubling."""


class LeaseNotFound(KeyError):
    """etcdserver: requested lease not found (code 5)."""


class LeaseExists(ValueError):
    """etcdserver: lease already exists (code 9)."""


class LeaseTTLTooLarge(ValueError):
    """etcdserver: too large lease TTL (code 11)."""


class NotPrimary(RuntimeError):
    """A keepalive reached a member that is not (yet) the primary lessor."""


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
        self._renewed: set[int] = set()
        """Primary: leases renewed by ``keepalive`` since their last checkpoint."""
        self._scanned_at = -math.inf
        # etcd's lessor counters (etcd_debugging_lease_*), since the process started
        self.granted = 0
        self.revoked = 0
        self.renewed = 0
        """Keepalives renewed here as the primary (etcd counts the leader's renewals)."""
        self.expired_revoked = 0
        """Expired leases whose revocation this member proposed and saw applied (the server's
        ``etcd_debugging_server_lease_expired_total``; counted by its caller)."""
        self.ttls = DurationHistogram(LEASE_TTL_BUCKETS_S)
        """The TTL of every lease granted (after the minimum is applied)."""

    # -- applied through Raft ---------------------------------------------------------------
    def grant(self, lease_id: int, ttl_s: int, now: float) -> Lease:
        if ttl_s > MAX_LEASE_TTL_S:  # before the ID, as etcd's lessor checks
            raise LeaseTTLTooLarge(ttl_s)
        if lease_id in self.leases:
            raise LeaseExists(lease_id)
        lease = Lease(lease_id, max(ttl_s, self.min_ttl_s))
        self.leases[lease_id] = lease
        self.granted += 1
        self.ttls.observe(lease.ttl_s)
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
        self._renewed.discard(lease_id)
        self.revoked += 1
        return sorted(lease.keys)

    def renew(self, lease_id: int, now: float) -> int:
        """An applied ``LeaseRenewOp`` (logs written before keepalives became
        leader-local): the lease runs its full TTL again from ``now``. Returns the TTL."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        lease.remaining_ttl_s = 0
        self._set_deadline(lease, now + lease.ttl_s)
        self._checkpointed_at[lease_id] = now
        return lease.ttl_s

    def checkpoint(self, lease_id: int, remaining_ttl_s: int, now: float) -> None:
        """An applied checkpoint: ``remaining_ttl_s`` is persisted; a follower's deadline
        becomes ``now + remaining``; the primary keeps its own deadline."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return  # revoked meanwhile: the checkpoint is moot
        lease.remaining_ttl_s = remaining_ttl_s
        if not self.primary:
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

    # -- primary ------------------------------------------------------------------------------
    def keepalive(self, lease_id: int, now: float) -> int:
        """Renew on the primary, in memory (etcd's ``Lessor.Renew``): the lease runs its
        full TTL again from ``now``; a checkpoint of it is due at once. Returns the TTL.
        Raises ``NotPrimary`` off the primary and ``LeaseNotFound`` for an unknown lease
        or one already past its deadline (its revocation is or will be under way: a
        keepalive must not bring it back)."""
        if not self.primary:
            raise NotPrimary(lease_id)
        lease = self.leases.get(lease_id)
        if lease is None or lease.deadline <= now or lease_id in self._revoking:
            raise LeaseNotFound(lease_id)
        self._set_deadline(lease, now + lease.ttl_s)
        self._renewed.add(lease_id)
        self.renewed += 1
        return lease.ttl_s

    def renewal_pending(self, lease_id: int) -> bool:
        """Whether a renewal of ``lease_id`` waits for ``checkpoints_due`` to take it."""
        return lease_id in self._renewed

    def promote(self, now: float, extend_s: float = 0.0) -> None:
        """This member became the Raft leader (and has applied everything committed before
        its term): start acting on deadlines, each extended by ``extend_s`` (a deadline
        already past counts from ``now``), as etcd's ``Promote``."""
        self.primary = True
        self._revoking.clear()
        self._renewed.clear()
        if extend_s > 0:
            for lease in self.leases.values():
                lease.deadline = max(lease.deadline, now) + extend_s
        self._rebuild_heap()
        for lease_id in self.leases:
            self._checkpointed_at.setdefault(lease_id, now)

    def demote(self) -> None:
        self.primary = False
        self._revoking.clear()
        self._renewed.clear()
        self._deadlines.clear()

    # -- local --------------------------------------------------------------------------------

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
        if not self.primary:
            return min((lease.deadline for lease in self.leases.values()), default=math.inf)
        while self._deadlines:
            deadline, lease_id = self._deadlines[0]
            lease = self.leases.get(lease_id)
            if lease is not None and lease.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return math.inf

    def checkpoints_due(self, now: float, interval_s: float, limit: int = 1024) -> list[tuple[int, int]]:
        """Primary only: (lease, remaining TTL) to replicate: leases renewed by
        ``keepalive`` since their last checkpoint, then leases not checkpointed (nor
        granted) within ``interval_s``, oldest first (looked for at most every
        ``interval_s / 10``: a scan of 5,000 leases every lease-loop turn was 4% of a
        leader's CPU); at most ``limit`` (the rest next time)."""
        if not self.primary:
            return []
        out: list[tuple[int, int]] = []
        renewed = self._renewed
        while renewed and len(out) < limit:
            lease_id = renewed.pop()
            self._checkpointed_at[lease_id] = now
            left = self.remaining(lease_id, now)
            if left > 0:
                out.append((lease_id, left))
        if len(out) >= limit or now - self._scanned_at < interval_s / 10:
            return out
        self._scanned_at = now  # the scan of every lease runs a tenth as often as the interval
        due = sorted((at, lid) for lid, at in self._checkpointed_at.items() if now - at >= interval_s)
        for _, lease_id in due[: limit - len(out)]:
            left = self.remaining(lease_id, now)
            self._checkpointed_at[lease_id] = now  # in flight
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
        self._renewed.clear()
        for lease_id, ttl_s, remaining_s in records:
            lease = Lease(lease_id, ttl_s, remaining_s)
            self.leases[lease_id] = lease
            self._set_deadline(lease, now + (remaining_s if remaining_s > 0 else ttl_s))
            self._checkpointed_at[lease_id] = now
        self._rebuild_heap()

    def _set_deadline(self, lease: Lease, deadline: float) -> None:
        """Only the primary keeps the deadline heap (only it expires leases); a superseded
        entry stays in it until it comes due, or until the heap is rebuilt when stale
        entries outnumber live ones (a keepalive every 2 ms at 5,000 agents)."""
        lease.deadline = deadline
        if not self.primary:
            return
        heapq.heappush(self._deadlines, (deadline, lease.id))
        if len(self._deadlines) > 4 * len(self.leases) + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        if not self.primary:
            self._deadlines.clear()
            return
        self._deadlines = [(lease.deadline, lease.id) for lease in self.leases.values()]
        heapq.heapify(self._deadlines)
