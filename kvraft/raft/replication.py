"""The leader's side of replication, for ``core.Raft``: per-follower progress driven by
append and heartbeat responses, sending MsgApp (or a snapshot when the entries are
compacted), heartbeats, advancing the commit index, and the transport's reports
(unreachable, snapshot sent or failed).

A mixin of the pure core: ``Raft`` inherits it and owns every attribute and helper it uses
(declared below for the type checker only). Like the rest of ``kvraft.raft``, nothing here
does I/O, reads a clock or uses randomness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvraft.raft.config import RaftConfig, ReadOnlyOption
from kvraft.raft.log import RaftLog
from kvraft.raft.progress import Progress, ProgressState
from kvraft.raft.read_only import ReadOnly, ReadRequest
from kvraft.raft.storage import CompactedError, UnavailableError
from kvraft.raft.tracker import ProgressTracker
from kvraft.raft.types import Message, MessageType, StateRole

__all__ = ["LeaderReplication"]

_MT = MessageType


class LeaderReplication:
    """The replication half of ``Raft``; see the module docstring."""

    id: int
    config: RaftConfig
    log: RaftLog
    tracker: ProgressTracker
    read_only: ReadOnly
    term: int
    role: StateRole
    lead_transferee: int
    pending_reads: list[ReadRequest]

    if TYPE_CHECKING:  # defined by Raft

        def _send(self, msg: Message) -> None: ...

        def _trace(self, text: str) -> None: ...

        def _committed_in_current_term(self) -> bool: ...

        def _leader_read(self, requests: list[ReadRequest]) -> None: ...

        def _answer_read(self, request: ReadRequest, index: int) -> None: ...

    def _retry_lost_snapshots(self) -> None:
        """A follower still waiting for its snapshot a full election timeout later (no
        MsgAppResp, no ``report_snapshot``) probably lost it: probe again, which sends a
        new snapshot if it is still needed. Drivers that report every snapshot's fate
        never reach this."""
        for node, pr in self.tracker.progress.items():
            if pr.state != ProgressState.SNAPSHOT:
                continue
            if pr.snapshot_waited:
                self._trace(f"snapshot to {node} presumed lost: probing again")
                pr.pending_snapshot = 0
                pr.become_probe()
            else:
                pr.snapshot_waited = True

    def _bcast_append(self) -> None:
        for node in self.tracker.ids():
            if node != self.id:
                self._maybe_send_append(node, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        if not send_if_empty and pr.next > self.log.last_index():
            return False  # (nothing to send: what the slice below would find, without it)
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            entries = self.log.entries_from(pr.next, self.config.max_size_per_msg)
        except CompactedError:
            return self._maybe_send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                type=_MT.APP,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        pr.sent_entries(len(entries), entries[-1].index if entries else prev_index)
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that seems down
        try:
            snap = self.log.snapshot()
        except UnavailableError:
            return False  # being prepared; retried on the next heartbeat response
        assert not snap.is_empty(), "log compacted but storage has no snapshot"
        pr.become_snapshot(snap.metadata.index)
        self._trace(f"sent snapshot at index {snap.metadata.index} to {to}")
        self._send(Message(type=_MT.SNAP, to=to, snapshot=snap))
        return True

    def _bcast_heartbeat(self, context: bytes) -> None:
        for node, pr in self.tracker.progress.items():
            if node != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(Message(type=_MT.HEARTBEAT, to=node, commit=commit, context=context))

    def _maybe_commit(self) -> bool:
        if not self.log.maybe_commit(self.tracker.committed(), self.term):
            return False
        if self.pending_reads and self._committed_in_current_term():
            waiting, self.pending_reads = self.pending_reads, []
            self._leader_read(waiting)
        return True

    def _handle_append_response(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            probe = m.reject_hint
            if m.log_term > 0:
                probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.from_, send_if_empty=True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()  # the follower can continue from the log
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append()
        elif was_paused:
            self._maybe_send_append(m.from_, send_if_empty=True)
        while self._maybe_send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self._trace(f"sent TimeoutNow to {m.from_}: caught up")
            self._send(Message(type=_MT.TIMEOUT_NOW, to=m.from_))

    def _handle_heartbeat_response(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()  # a lost MsgApp must not stall the stream forever
        if pr.match < self.log.last_index() or pr.state == ProgressState.PROBE:
            self._maybe_send_append(m.from_, send_if_empty=True)
        if self.config.read_only_option != ReadOnlyOption.SAFE or not m.context:
            return
        acks = self.read_only.ack(m.from_, m.context)
        if acks is None or not self.tracker.quorum_of(acks | {self.id}):
            return
        requests, index, next_round = self.read_only.release(self.log.committed)
        for request in requests:
            self._answer_read(request, index)
        if next_round is not None:
            self._bcast_heartbeat(next_round)

    def report_unreachable(self, node: int) -> None:
        pr = self.tracker.progress.get(node)
        if self.role == StateRole.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: int, ok: bool) -> None:
        pr = self.tracker.progress.get(node)
        if self.role != StateRole.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for an MsgAppResp or heartbeat response before sending
