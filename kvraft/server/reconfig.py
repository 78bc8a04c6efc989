"""``--strict-reconfig-check``: refuse a membership change that would leave the cluster
without a working quorum, as etcd does (its default, on).

Two kinds of refusal, with etcd's messages and codes (as its v3 JSON gateway answers them,
captured from etcd 3.4):

- **not enough started members** (code 2): counted from the registry alone. A member is
  *started* once it has a name (a founding member from ``--initial-cluster``, or one that
  announced itself after ``member add``). Adding a voter is refused when fewer than a quorum
  of the voters-to-be are started (a one-member cluster may always add its second);
  removing a voter when fewer than a quorum of the rest are started; promoting a learner
  when fewer than a quorum of the voters-to-be, the learner counted, are started.
- **unhealthy cluster** (code 14): counted from the peer connections of the member that
  received the request. Adding a member (voter or learner) needs a connection to every
  other voter that has been up for ``HEALTH_INTERVAL_S``; removing a voter that is
  connected needs the voters so connected, less the one removed, to still be a quorum (a
  voter this member is not connected to is down, and removing it is always allowed).

Removing a learner is never checked. ``time`` and the connections are inputs (``clock``,
``active_since``), so the rules are tested without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kvraft.apply.errors import Unavailable, Unknown
from kvraft.server.membership import Member, Membership

__all__ = ["HEALTH_INTERVAL_S", "NOT_ENOUGH_STARTED", "UNHEALTHY", "ReconfigCheck"]

HEALTH_INTERVAL_S = 5.0
"""etcd's ``HealthInterval``: a peer counts as connected once its connection has been up this long."""

NOT_ENOUGH_STARTED = "etcdserver: re-configuration failed due to not enough started members"
UNHEALTHY = "etcdserver: unhealthy cluster"


def _quorum(voters: int) -> int:
    return voters // 2 + 1


class ReconfigCheck:
    def __init__(
        self,
        membership: Membership,
        self_id: int,
        active_since: Callable[[int], float | None],
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        self._membership = membership
        self._self_id = self_id
        self._active_since = active_since
        self._clock = clock
        self._interval_s = interval_s

    def _voters(self) -> list[Member]:
        return [m for m in self._membership.members.values() if not m.is_learner]

    def _connected(self, member_id: int, since: float) -> bool:
        """This member itself, or a peer whose connection has been up since ``since``."""
        if member_id == self._self_id:
            return True
        up = self._active_since(member_id)
        return up is not None and up <= since

    def _connected_count(self, voters: list[Member]) -> int:
        since = self._clock() - self._interval_s
        return sum(self._connected(m.member_id, since) for m in voters)

    def may_add(self, is_learner: bool) -> None:
        voters = self._voters()
        if not is_learner:
            started = sum(1 for m in voters if m.name)
            to_be = len(voters) + 1
            # a one-member cluster adding its second member (how a restored cluster grows)
            if not (started == 1 and to_be == 2) and started < _quorum(to_be):
                raise Unknown(NOT_ENOUGH_STARTED)
        if self._connected_count(voters) < len(voters):
            raise Unavailable(UNHEALTHY)

    def may_remove(self, member_id: int) -> None:
        member = self._membership.get(member_id)
        if member is not None and member.is_learner:
            return
        voters = self._voters()
        rest = [m for m in voters if m.member_id != member_id]
        if sum(1 for m in rest if m.name) < _quorum(len(rest)):
            raise Unknown(NOT_ENOUGH_STARTED)
        if member_id != self._self_id and self._active_since(member_id) is None:
            return  # down: not part of the working quorum, so it is safe to remove
        if self._connected_count(voters) - 1 < _quorum(len(voters) - 1):
            raise Unavailable(UNHEALTHY)

    def may_promote(self, member_id: int) -> None:
        voters = self._voters()
        # the learner is counted among the voters-to-be, and as started
        started = 1 + sum(1 for m in voters if m.name)
        if started < _quorum(len(voters) + 1):
            raise Unknown(NOT_ENOUGH_STARTED)
