"""The driver's queue of proposals, and where each goes: appended as one batch by the leader,
forwarded to the leader by a follower, or kept for a leader to be known.

Three sources fill it: this member's clients (``NodeDriver.propose``, each kept in
``OwnProposals`` until applied or expired), followers' forwards (``FORWARD``/``FORWARD_TERM``
frames, and their membership changes), and this member's own proposals that a leader change
lost or whose forward never left (proposed again, never twice: ``own_proposals``). The Ready
loop calls ``propose`` between Readies, the only place the core is touched.

A proposal a peer forwarded for a term (``FORWARD_TERM``) is appended only in that term, by
its leader: anywhere else it is dropped, never appended at another term nor passed on (its
sender proposes it again, ``OwnProposals.lost``). A membership change that removes the leader
itself waits for a leadership transfer first (``handover.OwnRemoval``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack

from kvraft.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from kvraft.raft.types import NONE, ConfChange, StateRole
from kvraft.server import wire
from kvraft.server.handover import HOLD, PROPOSE, OwnRemoval
from kvraft.server.own_proposals import UNTRACKED, OwnProposals, Proposal

__all__ = ["ProposalQueue"]

log = logging.getLogger("kvraft.driver")


class ProposalQueue:
    def __init__(self, member_id: int, stats: Any, request_timeout_s: float) -> None:
        self.member_id = member_id
        self.stats = stats
        """The driver's ``DriverStats`` (forwarded, reforwarded, reproposed, forwards dropped)."""
        self.request_timeout_s = request_timeout_s
        self.items: list[Proposal] = []  # in order
        self.own = OwnProposals()
        self.own_removal = OwnRemoval(member_id)
        self.forwarders: set[int] = set()  # followers whose forwarded proposals are queued
        self.forwarded: dict[int, int] = {}  # follower -> the last index it forwarded
        """Read by the driver's sending: the commit index that commits a follower's forwarded
        proposals is not held back (``NodeDriver._transmit``)."""

    def add_own(self, request_id: int, data: bytes, conf: bool, deadline: float, repropose: bool) -> None:
        """A proposal of this member's; without ``repropose`` it is queued as a peer's would be
        (never proposed again after a leader change lost it)."""
        if repropose:
            self.items.append(self.own.register(request_id, data, conf, deadline))
        else:
            self.items.append((data, conf, deadline, 0, 0))

    def add_forwarded(self, source: int, kind: int, body: Any) -> None:
        """A peer's ``FORWARD*`` frame (a malformed term raises: the transport closes the
        sender's connection)."""
        deadline = time.monotonic() + self.request_timeout_s
        if kind == wire.FORWARD:
            self.items.extend((bytes(d), False, deadline, 0, 0) for d in body)
            self.forwarders.add(source)
        elif kind == wire.FORWARD_TERM:
            term = _term(body[0])
            self.items.extend((bytes(d), False, deadline, 0, term) for d in body[1])
            self.forwarders.add(source)
        elif kind == wire.FORWARD_CONF:
            self.items.append((bytes(body), True, deadline, 0, 0))
        elif kind == wire.FORWARD_CONF_TERM:
            self.items.append((bytes(body[1]), True, deadline, 0, _term(body[0])))

    def returned(self, kind: int, body: Any) -> int:
        """Forwarded proposals that never left this member (not a byte written: the leader's
        connection was down, or it stopped leading first) are queued again, to go to whoever
        leads now, where etcd loses them until its client times out (a leader killed: every
        write through a follower for the next ~7 s). Never twice, as they were never sent.
        Only this member's own (its waiter here, its deadline kept). How many."""
        if kind in (wire.FORWARD_TERM, wire.FORWARD_CONF_TERM):
            kind, body = (wire.FORWARD if kind == wire.FORWARD_TERM else wire.FORWARD_CONF), body[1]
        datas = body if kind == wire.FORWARD else [body]
        returned = 0
        for data in datas:
            proposal = self.own.returned(_request_id(kind, data))
            if proposal is not None:
                self.items.append(proposal)
                returned += 1
        self.stats.proposals_reforwarded += returned
        return returned

    def requeue_lost(self, applied: int) -> int:
        """This member's proposals that a leader change lost, queued again once ``applied``
        shows they can no longer commit (``OwnProposals.lost``). How many."""
        lost = self.own.lost(applied)
        self.items.extend(lost)
        self.stats.proposals_reproposed += len(lost)
        return len(lost)

    def propose(self, raw: Any, transport: Any) -> None:
        """Propose every queued proposal as one batch; forward them when not leading."""
        if not self.items:
            return
        now, term = time.monotonic(), raw.term
        queued = []
        for proposal in self.items:
            if proposal[2] <= now:
                continue  # (expired: its waiter is failed by the driver's expiry)
            if proposal[4] and proposal[4] != term:
                self.stats.forwards_dropped += 1
                continue
            queued.append(proposal)
        self.items = []
        normal = [p for p in queued if not p[1]]
        if normal:
            try:
                last = raw.propose_batch([p[0] for p in normal])
                self.own.handed(normal, term)
                for source in self.forwarders:
                    self.forwarded[source] = last
                self.forwarders.clear()
            except NotLeaderError as exc:
                mine = [p for p in normal if not p[4]]  # (forwarded for this term: not here)
                self.stats.forwards_dropped += len(normal) - len(mine)
                if exc.leader == NONE:
                    self.items.extend(mine)  # retry when known
                elif mine:
                    self._forward(transport, exc.leader, mine, term)
            except ProposalDroppedError:
                self.items.extend(normal)  # e.g. a transfer: retry
        for proposal in queued:
            if not proposal[1]:
                continue
            cc = ConfChange.decode(proposal[0])
            if self.own_removal.removes_self(cc.changes) and self._hand_over_first(raw, transport, term):
                self.items.append(proposal)
                continue
            try:
                raw.propose_conf_change(cc)
                self.own.handed([proposal], term)
            except NotLeaderError as exc:
                if proposal[4]:
                    self.stats.forwards_dropped += 1
                elif exc.leader == NONE:
                    self.items.append(proposal)
                else:
                    self._forward(transport, exc.leader, [proposal], term)
            except ProposalDroppedError:
                self.items.append(proposal)  # a change is pending: retry
            except RaftError as exc:
                log.warning("conf change refused: %s", exc)

    def _hand_over_first(self, raw: Any, transport: Any, term: int) -> bool:
        """Whether a change removing this member waits for a leadership transfer
        (``handover.OwnRemoval``), which this starts when it is time to."""
        status = raw.status()
        if status.role != StateRole.LEADER:
            return False  # (proposed: the core forwards it, or refuses it to be tried again)
        action = self.own_removal.action(term, status.conf_state.voters, status.lead_transferee, transport.active_since)
        if action == HOLD:
            return True
        if action == PROPOSE:
            return False
        log.info("member %x is to be removed; handing its leadership over to %x first", self.member_id, action)
        try:
            raw.transfer_leader(action)
        except RaftError as exc:
            log.warning("member %x: leadership transfer to %x refused: %s", self.member_id, action, exc)
        return True

    def _forward(self, transport: Any, leader: int, proposals: list[Proposal], term: int) -> None:
        """Send ``proposals`` (all normal or one conf change) to ``leader``, the leader of
        ``term``: for that term (``FORWARD_TERM``) where the leader checks it, else as the
        first version did (and this member's own among them are then never proposed again)."""
        conf = proposals[0][1]
        body: Any = proposals[0][0] if conf else [p[0] for p in proposals]
        if transport.supports(leader, wire.FEATURE_FORWARD_TERM):
            kind, body, state = (wire.FORWARD_CONF_TERM if conf else wire.FORWARD_TERM), [term, body], term
        else:
            kind, state = (wire.FORWARD_CONF if conf else wire.FORWARD), UNTRACKED
        if not transport.send_frame(leader, kind, body):
            # No copy left this member: the leader Raft still names is no peer any more (its
            # removal applied here before an election) or its queue is full. Kept for the next
            # turn, as when no leader is known; before, such a put was taken for forwarded to a
            # member that does not check the term and waited out its 7 s deadline.
            self.items.extend(proposals)
            return
        self.own.handed(proposals, state)
        if not conf:
            self.stats.proposals_forwarded += len(proposals)


def _term(value: Any) -> int:
    """The term a ``FORWARD_TERM`` frame names (malformed: raises, and the transport closes
    the sender's connection)."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"not a term: {value!r}")
    return value


def _request_id(kind: int, data: Any) -> int | None:
    """The request id a forwarded proposal carries (an entry's first field; a membership
    change's in its context)."""
    try:
        if kind == wire.FORWARD_CONF:
            data = ConfChange.decode(bytes(data)).context
        head = msgpack.unpackb(data, raw=False)
        return head[0] if isinstance(head, list) and head and isinstance(head[0], int) else None
    except Exception:  # noqa: BLE001 - not one of ours: not returned
        return None
