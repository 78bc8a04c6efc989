"""etcd's ``--initial-election-tick-advance``: the first election comes early after a start.

A member starts as a follower with its election timer at zero, so without help the first
leader of a cluster comes a whole randomized election timeout after its members start (1-2 s
with the defaults), and a one-member cluster waits the same for an election it cannot lose.
etcd fast-forwards the timer (``adjustTicks``); kvraft does the same, once, at start:

- **The only voter** campaigns at once (etcd ticks it to one tick short of the timeout). It
  is the whole quorum, so waiting protects nothing. Done whatever the flag says, as etcd.
- **One voter of several**, with the flag on (the default): the member waits until it has
  connections to enough voters to make a quorum with itself (etcd: more than one active
  peer), at most ``WAIT_S`` (etcd's 5 s), polling every ``POLL_S``. Then it advances the
  timer by election ticks - 2: the election comes after 2 to ``election ticks`` + 1 more ticks
  instead of ``election ticks`` to 2 x ``election ticks``, still randomized, so members
  started together still rarely split the vote. Nothing is done when a leader is already
  known (a member restarting into a working cluster hears its heartbeats within a tick), or
  when no quorum connects in time.
- **The last leader**, restarting with the flag on, campaigns at once when that quorum is
  connected: a member whose durable state says it voted for itself in its last term and whose
  log ends in that term led that term (a candidate that lost has no entry of its own term;
  one that voted for itself and then took a leader's entries of the same term is the rare
  exception, and harmless). When a whole cluster restarts (after maintenance, a power cut),
  its old leader, whose log is as long as any, is elected a round trip after two members are
  up, instead of 2 to ``election ticks`` + 1 ticks later. etcd has no such rule. When the
  others already have a leader, the pre-vote is refused and nothing changes.

Safety does not depend on it: it only makes a member campaign sooner, which any timeout
could have done. A pre-vote (``--pre-vote``, on by default) keeps a member that restarts
into a working cluster from disturbing it: its peers refuse while they hear their leader.

``decide`` is the pure rule; ``advance_initial_ticks`` runs it against a ``Node``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["POLL_S", "WAIT_S", "Advance", "Campaign", "advance_initial_ticks", "decide", "led_last_term"]

log = logging.getLogger("kvraft.node")

POLL_S = 0.05
WAIT_S = 5.0
"""How long a member waits for a quorum of peer connections (etcd: ``rafthttp.ConnReadTimeout``)."""


@dataclass(frozen=True)
class Campaign:
    """Start an election now: this member is the only voter, or ``led`` its last term."""

    led: bool = False


@dataclass(frozen=True)
class Advance:
    """Advance the election timer by ``ticks`` (``connected``: the voters reached)."""

    ticks: int
    connected: int


DONE = "done"
WAIT = "wait"


def decide(member_id: int, voters: Collection[int], connected: Collection[int], leader: int, election_ticks: int,
           enabled: bool, applied_all: bool = True, led: bool = False) -> Campaign | Advance | str:
    """What to do now: ``Campaign()``, ``Advance(ticks)``, ``DONE`` (nothing, ever) or
    ``WAIT`` (ask again later). ``connected``: the peers this member has a connection to;
    ``applied_all``: every committed entry is applied (Raft refuses to campaign with a
    committed membership change not applied yet, as a restarted member has for a moment);
    ``led``: this member led the last term it knows (``led_last_term``)."""
    if leader:
        return DONE
    if not applied_all:
        return WAIT
    if set(voters) == {member_id}:
        return Campaign()
    if member_id not in voters or not enabled:
        return DONE
    reached = len({peer for peer in connected if peer in voters and peer != member_id})
    if reached + 1 >= len(voters) // 2 + 1:
        if led:
            return Campaign(led=True)
        return Advance(election_ticks - 2, reached) if election_ticks > 2 else DONE
    return WAIT


def led_last_term(member_id: int, term: int, vote: int, last_term: int) -> bool:
    """Whether a member's durable state says it led its last term: it voted for itself in
    ``term`` and its log (``last_term``: the term of its last entry) ends in that term."""
    return term > 0 and vote == member_id and last_term == term


async def advance_initial_ticks(node: Any, enabled: bool, election_ticks: int, *, led_term: int = 0,
                                poll_s: float = POLL_S, wait_s: float = WAIT_S,
                                clock: Callable[[], float] = time.monotonic) -> None:
    """Run ``decide`` until it acts or gives up; ``node`` has ``member_id``, ``raw`` (its
    ``status()``), ``transport`` (``peers()``, ``connected(id)``) and ``driver``
    (``campaign_now()``, ``advance_ticks(n)``, ``heartbeat_interval_s``); ``led_term``: the
    term this member led before it stopped (``led_last_term``), else 0."""
    deadline = clock() + wait_s
    while True:
        status = node.raw.status()
        connected = [peer for peer in node.transport.peers() if node.transport.connected(peer)]
        action = decide(node.member_id, status.conf_state.voters, connected, status.leader, election_ticks, enabled,
                        status.applied >= status.commit, led=led_term > 0)
        if isinstance(action, Campaign):
            if action.led:
                log.info("led term %d before it stopped; campaigning at once now that a quorum is connected",
                         led_term, extra={"fields": {"active-remote-members": len(connected)}})
            else:
                log.info("started as the only voter; campaigning at once (election ticks fast-forwarded)")
            node.driver.campaign_now()
            return
        if isinstance(action, Advance):
            if action.ticks:
                log.info("initialized peer connections; fast-forwarding election ticks", extra={"fields": {
                    "forward-ticks": action.ticks,
                    "forward-duration": f"{action.ticks * node.driver.heartbeat_interval_s:g}s",
                    "election-ticks": election_ticks,
                    "active-remote-members": action.connected}})
                node.driver.advance_ticks(action.ticks)
            return
        if action == DONE or clock() >= deadline:
            return
        await asyncio.sleep(poll_s)
