"""A leader stopping gracefully hands its leadership over first (etcd's ``TransferLeadership``,
run by ``EtcdServer.Stop`` on SIGTERM or SIGINT).

Without it, the followers of a leader that was stopped for a restart or an upgrade notice
its absence only when their election timers run out: writes stall for an election timeout
or more (1-2 s with the defaults), and a follower's forward made meanwhile waits as long. With
it, the stopping leader picks the voter it has been connected to the longest (etcd's
``longestConnected``), brings that voter's log up to date and tells it to campaign at once
(Raft's leadership transfer, as ``move-leader``); the new leader is in place a round trip
or two later, before the old one closes its connections.

It is bounded: the wait ends as soon as another member leads, or the Raft core gave the
transfer up (it does after an election timeout: the transferee did not win), or the
transferee's connection went down (it is stopping too: a whole cluster stopped at once), or
after ``MAX_WAIT_S``. A member that does not lead, or leads alone, stops at once, as in etcd.
Nothing here is needed for safety: a leader that stops without it is replaced by an election.

``choose`` is the pure rule; ``hand_over`` runs it against a ``Node``.

A leader asked to remove itself (``member remove`` of the leader, sent to it or forwarded by a
follower) hands its leadership over the same way before it proposes the removal
(``OwnRemoval``, run by the driver). Without that it would step down when it applied its own
removal, and its followers would wait out an election timeout before writes went on (about
1 s, in etcd as before here); with it, the removal is proposed by the new leader and no
election timer runs out. If the transfer does not take (the core gives it up after an
election timeout), the leader proposes the removal itself, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from kvraft.raft.types import NONE, ConfChangeType, StateRole

__all__ = ["HOLD", "MAX_WAIT_S", "POLL_S", "PROPOSE", "OwnRemoval", "choose", "hand_over"]

log = logging.getLogger("kvraft.node")

MAX_WAIT_S = 5.0
"""The longest a stopping leader waits for its successor (etcd waits its request timeout)."""
POLL_S = 0.005


def choose(member_id: int, voters: Collection[int], active_since: Callable[[int], float | None]) -> int:
    """The voter other than ``member_id`` whose connection has been up the longest (the
    earliest ``active_since``; ties to the lower id), or ``NONE`` when no other voter is
    connected."""
    up = [(since, voter) for voter in voters if voter != member_id and (since := active_since(voter)) is not None]
    return min(up)[1] if up else NONE


async def hand_over(node: Any, *, max_wait_s: float = MAX_WAIT_S, poll_s: float = POLL_S,
                    clock: Callable[[], float] = time.monotonic) -> int:
    """If ``node`` leads a cluster of several voters, transfer its leadership and wait (module
    docstring). The new leader's id, or ``NONE`` when there was none to hand over to or the
    transfer did not finish. ``node`` has ``member_id``, ``raw`` (``status()``), ``transport``
    (``active_since(id)``) and ``driver`` (``role``, ``leader``, ``transfer_leader(id)``)."""
    driver = node.driver
    if driver.role != StateRole.LEADER:
        log.info("skipped leadership transfer; local server is not leader")
        return NONE
    voters = node.raw.status().conf_state.voters
    if set(voters) <= {node.member_id}:
        log.info("skipped leadership transfer for single voting member cluster")
        return NONE
    target = choose(node.member_id, voters, node.transport.active_since)
    if target == NONE:
        log.warning("leadership transfer failed: no other voting member is connected")
        return NONE
    started = clock()
    ids = {"local-member-id": f"{node.member_id:x}", "current-leader-member-id": f"{node.member_id:x}",
           "transferee-member-id": f"{target:x}"}
    log.info("leadership transfer starting", extra={"fields": ids})
    driver.transfer_leader(target)
    outcome, began = "timed out", False
    while clock() - started < max_wait_s:
        await asyncio.sleep(poll_s)
        if driver.leader not in (NONE, node.member_id):
            took = f"{clock() - started:.3f}s"
            log.info("leadership transfer finished", extra={"fields": {**ids, "new-leader-member-id": f"{driver.leader:x}",
                                                                        "took": took}})
            return int(driver.leader)
        if driver.role == StateRole.LEADER:  # (the core takes the request on its next turn)
            transferring = node.raw.status().lead_transferee == target
            if began and not transferring:
                outcome = "the transferee did not take over within an election timeout"
                break
            began = began or transferring
        if node.transport.active_since(target) is None:
            outcome = "the transferee's connection went down"
            break
    log.warning("leadership transfer failed: %s", outcome, extra={"fields": ids})
    return NONE


PROPOSE = 0
"""``OwnRemoval.action``: propose the change now."""
HOLD = -1
"""``OwnRemoval.action``: keep the change queued, a leadership transfer is running."""


class OwnRemoval:
    """What a leader does with a membership change it is about to propose that removes the
    leader itself (module docstring): one transfer per term, then the change."""

    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self.tried_term = 0
        """The term in which a transfer was last started for a removal (0: none)."""
        self.gave_up_term = 0

    def removes_self(self, changes: Collection[tuple[ConfChangeType, int]]) -> bool:
        return (ConfChangeType.REMOVE_NODE, self.member_id) in changes

    def action(self, term: int, voters: Collection[int], lead_transferee: int,
               active_since: Callable[[int], float | None]) -> int:
        """For a leader at ``term`` holding a change that removes it: ``PROPOSE``, ``HOLD``, or
        the voter to transfer leadership to first (the change is then held). A transfer
        already running (this one's, or a ``move-leader``) is waited for; one started in
        this term that ended with this member still leading is not tried again: the change
        is proposed, and the followers elect a leader once it applies."""
        if lead_transferee != NONE:
            return HOLD
        if self.tried_term == term:
            if self.gave_up_term != term:
                self.gave_up_term = term
                log.warning("leadership transfer before the leader's removal did not finish; removing it "
                            "(the followers elect another)", extra={"fields": {"local-member-id": f"{self.member_id:x}"}})
            return PROPOSE
        target = choose(self.member_id, voters, active_since)
        if target == NONE:
            return PROPOSE
        self.tried_term = term
        return target
