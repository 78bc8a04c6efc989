"""This member's own proposals, kept until applied or expired, and the rule that proposes
again those a leader change lost (``NodeDriver`` queues what ``lost`` returns).

Each proposal has a state: ``QUEUED`` (waiting in the driver's queue: no copy of it handed to
a leader), ``UNTRACKED`` (a copy may be appended at any term: forwarded to a member that does
not check the term, or possibly inside a snapshot received), or the term in which its last
copy was handed to a leader (appended by this member as the leader of that term, or forwarded
as ``FORWARD_TERM``, which a receiver appends only while leading in exactly that term): every
copy of it in any log is of that term or an earlier one.

The rule: once this member has applied the first committed entry of a term T, a proposal still
waiting whose state is a term below T can never commit any more. Entries after a committed one
of term T have terms >= T (log matching); an earlier one holding it would have been applied
(and answered) by now; a leader of an earlier term cannot commit anything (a quorum has moved
past its term). So it is proposed again, to whoever leads now, and applied once: no
de-duplication table. What etcd leaves to the client's timeout: a write forwarded to a leader
that died before committing it, or appended by one that stepped down.
"""

from __future__ import annotations

from typing import Any

from kvraft.raft.types import Ready

__all__ = ["QUEUED", "UNTRACKED", "OwnProposals", "Proposal"]

QUEUED = 0
UNTRACKED = -1

Proposal = tuple[bytes, bool, float, int, int]
"""(data, conf, deadline, request id of this member's own else 0, the term a peer forwarded
it for else 0): an item of the driver's proposal queue."""


class OwnProposals:
    def __init__(self) -> None:
        self.records: dict[int, list[Any]] = {}
        """Request id -> [data, conf, deadline, state]; dropped with the proposal's waiter (by
        the apply stage, or ``forget`` at its deadline)."""
        self._committed_term = 0  # the term of the last committed entry seen
        self._due: tuple[int, int] | None = None  # (index, term): ``lost`` once it is applied

    def register(self, request_id: int, data: bytes, conf: bool, deadline: float) -> Proposal:
        """Keep a new proposal; its queue item."""
        self.records[request_id] = [data, conf, deadline, QUEUED]
        return (data, conf, deadline, request_id, 0)

    def forget(self, request_id: int) -> None:
        self.records.pop(request_id, None)

    def handed(self, proposals: list[Proposal], state: int) -> None:
        """A copy of each of ours among ``proposals`` went to a leader: ``state`` is the term
        its entry can have at most, or ``UNTRACKED`` (which stays)."""
        records = self.records
        for proposal in proposals:
            if proposal[3]:
                record = records.get(proposal[3])
                if record is not None and record[3] != UNTRACKED:
                    record[3] = state

    def returned(self, request_id: int | None) -> Proposal | None:
        """A frame of ours that never left this member came back: its queue item, unless it
        is not ours or already queued (no copy of it anywhere: queued again, once)."""
        record = self.records.get(request_id) if request_id is not None else None
        if record is None or record[3] == QUEUED:
            return None
        return self._requeue(request_id, record)  # type: ignore[arg-type]

    def note(self, rd: Ready) -> None:
        """Called with each Ready before its committed entries are applied: the first
        committed entry of a new term makes ``lost`` due once it is applied. A snapshot makes
        every proposal handed before it ``UNTRACKED`` (it may hold them)."""
        if not rd.snapshot.is_empty():
            for record in self.records.values():
                if record[3] > 0:
                    record[3] = UNTRACKED
            self._committed_term = max(self._committed_term, rd.snapshot.metadata.term)
        entries = rd.committed_entries
        if entries and entries[-1].term > self._committed_term:
            term, first = entries[-1].term, entries[-1].index
            for entry in reversed(entries):
                if entry.term != term:
                    break
                first = entry.index
            self._committed_term = term
            self._due = (first, term)

    def lost(self, applied: int) -> list[Proposal]:
        """With ``applied`` the member's applied index: the queue items of the proposals the
        rule (module docstring) proposes again, once the first entry of a new term is applied."""
        due = self._due
        if due is None or applied < due[0]:
            return []
        self._due = None
        return [self._requeue(request_id, record) for request_id, record in self.records.items()
                if 0 < record[3] < due[1]]

    @staticmethod
    def _requeue(request_id: int, record: list[Any]) -> Proposal:
        record[3] = QUEUED
        return (record[0], record[1], record[2], request_id, 0)
