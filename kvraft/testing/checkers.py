"""Per-step safety checkers for a simulated Raft cluster.

The driver (the simulator, or any harness) reports what each member did, as it fulfils each
``Ready``; every report is checked at once and a broken property raises ``Violation``. The
checkers see only these observations, never the core's internals, so each can be fed a
hand-made history in a unit test.

=====================  ================================================================
checker                property
=====================  ================================================================
election_safety        at most one leader per term
vote_once              a member grants at most one vote per term (across restarts)
durable_promises       what a message promises is on disk (fsynced) when it is sent: a
                       granted vote is in the durable hard state (or a later term is); an
                       acknowledged index is in the durable log with the same term (unless
                       the durable term is already past the acknowledgement's)
log_matching           two logs with an entry of the same index and term hold the same
                       entry there, and agree on every entry before it
leader_completeness    a new leader's log holds every entry committed in an earlier term
committed_immutable    an index, once committed anywhere, keeps its term everywhere
commit_monotonic       a member's commit index never decreases (per incarnation) and
                       never passes its last log index
apply_safety           no index is applied with two different entries; a member applies
                       only committed entries, in order, each once; applied never
                       decreases (per incarnation)
=====================  ================================================================

Indexes covered by a snapshot are taken as matching: the snapshot came from a committed
prefix, and ``committed_immutable`` checks the snapshot's (index, term).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kvraft.raft.types import Entry, HardState, StateRole

__all__ = [
    "ApplySafety",
    "ClusterCheckers",
    "CommitMonotonic",
    "CommittedImmutable",
    "DurablePromises",
    "ElectionSafety",
    "LeaderCompleteness",
    "LogMatching",
    "TermAt",
    "VoteOnce",
    "Violation",
]

TermAt = Callable[[int], "int | None"]
"""A member's log as a function: the term at an index, or None when the index is not in the
log (past its end, or compacted into a snapshot)."""


class Violation(AssertionError):
    """A safety property broke. ``checker`` names it; the message says how."""

    def __init__(self, checker: str, detail: str) -> None:
        super().__init__(f"{checker}: {detail}")
        self.checker = checker
        self.detail = detail


@dataclass
class ElectionSafety:
    leaders: dict[int, int] = field(default_factory=dict)  # term -> leader id

    def on_role(self, node: int, term: int, role: StateRole) -> None:
        if role != StateRole.LEADER:
            return
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise Violation("election_safety", f"term {term} has two leaders: {other} and {node}")


@dataclass
class VoteOnce:
    votes: dict[tuple[int, int], int] = field(default_factory=dict)  # (voter, term) -> candidate

    def on_vote_granted(self, voter: int, term: int, candidate: int) -> None:
        other = self.votes.setdefault((voter, term), candidate)
        if other != candidate:
            raise Violation(
                "vote_once",
                f"member {voter} granted its term {term} vote to {other} and to {candidate}",
            )


class DurablePromises:
    """Persist before send (the Ready contract): checked against what a crash would leave.
    One Ready may answer several messages and end in a later term (a vote in term 6, then
    term 12 reached in the same batch): a durable later term keeps the earlier promise (the
    member will never act in the earlier term again), so only promises of the durable term
    are checked against the durable log and vote."""

    def on_vote_sent(self, voter: int, term: int, candidate: int, durable: HardState) -> None:
        if durable.term > term:
            return
        if durable.term != term or durable.vote != candidate:
            raise Violation(
                "durable_promises",
                f"member {voter} granted its term {term} vote to {candidate} while its durable "
                f"hard state is term {durable.term} vote {durable.vote}",
            )

    def on_ack_sent(
        self,
        node: int,
        msg_term: int,
        index: int,
        term: int | None,
        durable_term_at: TermAt,
        durable_first: int,
        durable: HardState,
    ) -> None:
        """``node`` acknowledged, in a message of ``msg_term``, holding its log up to
        ``index`` (with term ``term`` there, when it still holds it)."""
        if durable.term > msg_term or index < durable_first - 1:
            return  # superseded by a later durable term, or inside the durable snapshot
        have = durable_term_at(index)
        if have is None or (term is not None and have != term):
            raise Violation(
                "durable_promises",
                f"member {node} acknowledged index {index} (term {term}) that is not durable "
                f"(durable term there: {have})",
            )


@dataclass
class LogMatching:
    # (index, term) -> (entry, term of the entry before it, or None when unknown)
    seen: dict[tuple[int, int], tuple[Entry, int | None]] = field(default_factory=dict)

    def on_append(self, node: int, entries: Iterable[Entry], prev_term: int | None) -> None:
        """``node`` wrote ``entries`` (contiguous) after an entry of term ``prev_term`` (None
        when that index is compacted)."""
        pred = prev_term
        seen = self.seen
        for e in entries:
            key = (e.index, e.term)
            old = seen.get(key)
            if old is None:
                seen[key] = (e, pred)
            else:
                entry, old_pred = old
                if entry != e:
                    raise Violation(
                        "log_matching",
                        f"member {node} holds a different entry at index {e.index} term {e.term}: "
                        f"{_short(e)} vs {_short(entry)} held elsewhere",
                    )
                if pred is not None and old_pred is not None and pred != old_pred:
                    raise Violation(
                        "log_matching",
                        f"member {node}: entry {e.index}/{e.term} follows term {pred}, elsewhere term {old_pred}",
                    )
                if old_pred is None and pred is not None:
                    seen[key] = (entry, pred)
            pred = e.term


@dataclass
class CommittedImmutable:
    committed: dict[int, int] = field(default_factory=dict)  # index -> term
    # index -> the lowest current term of a member seen holding it committed: an upper bound
    # on the term of the leader that committed it (every member that knows an index is
    # committed has heard, directly or not, from that leader or a later one)
    known_in: dict[int, int] = field(default_factory=dict)

    def on_committed(self, node: int, index: int, term: int, node_term: int = 0) -> None:
        known = self.known_in.get(index)
        if known is None or node_term < known:
            self.known_in[index] = node_term
        old = self.committed.setdefault(index, term)
        if old != term:
            raise Violation(
                "committed_immutable",
                f"member {node} committed index {index} with term {term}; it was committed with term {old}",
            )


@dataclass
class LeaderCompleteness:
    committed: CommittedImmutable

    def on_new_leader(
        self, node: int, term: int, term_at: TermAt, first_index: int, last_index: int
    ) -> None:
        """Raft's Leader Completeness: an entry committed in term U is in the log of every
        leader of a term above U. ``node`` is observed becoming leader of ``term`` (maybe
        later than it happened, e.g. after an fsync): entries known committed only in terms
        >= ``term`` may have been committed after it was elected, and are not required."""
        known_in = self.committed.known_in
        for index, cterm in self.committed.committed.items():
            if index < first_index or known_in.get(index, 0) >= term:
                continue  # covered by the leader's snapshot, or maybe committed after it won
            if index > last_index:
                raise Violation(
                    "leader_completeness",
                    f"member {node} became leader of term {term} with log ending at {last_index}; "
                    f"index {index} (term {cterm}) was committed",
                )
            have = term_at(index)
            if have is not None and have != cterm:
                raise Violation(
                    "leader_completeness",
                    f"member {node} became leader of term {term} holding term {have} at index {index}; "
                    f"term {cterm} was committed there",
                )


@dataclass
class CommitMonotonic:
    commit: dict[int, int] = field(default_factory=dict)  # node -> commit index this incarnation

    def on_commit(self, node: int, commit: int) -> None:
        old = self.commit.get(node, 0)
        if commit < old:
            raise Violation(
                "commit_monotonic", f"member {node} commit index went from {old} to {commit}"
            )
        self.commit[node] = commit

    def restart(self, node: int, commit: int) -> None:
        self.commit[node] = commit


@dataclass
class ApplySafety:
    applied_entries: dict[int, Entry] = field(default_factory=dict)  # index -> entry
    applied: dict[int, int] = field(default_factory=dict)  # node -> applied index

    def on_apply(self, node: int, entry: Entry, commit: int) -> None:
        last = self.applied.get(node, 0)
        if entry.index != last + 1:
            raise Violation(
                "apply_safety",
                f"member {node} applied index {entry.index} right after index {last}",
            )
        if entry.index > commit:
            raise Violation(
                "apply_safety",
                f"member {node} applied index {entry.index} beyond its commit index {commit}",
            )
        old = self.applied_entries.setdefault(entry.index, entry)
        if old != entry:
            raise Violation(
                "apply_safety",
                f"index {entry.index} applied as {_short(entry)} on member {node} and as {_short(old)} before",
            )
        self.applied[node] = entry.index

    def on_snapshot(self, node: int, index: int) -> None:
        last = self.applied.get(node, 0)
        if index < last:
            raise Violation(
                "apply_safety",
                f"member {node} restored a snapshot at {index} after applying {last}",
            )
        self.applied[node] = index

    def restart(self, node: int, applied: int) -> None:
        self.applied[node] = applied


def _short(e: Entry) -> str:
    data = e.data if len(e.data) <= 40 else e.data[:37] + b"..."
    return f"{e.index}/{e.term} {e.type.name} {data!r}"


class ClusterCheckers:
    """All the checkers together, fed by a driver. Method names say what happened."""

    def __init__(self) -> None:
        self.election = ElectionSafety()
        self.votes = VoteOnce()
        self.durable = DurablePromises()
        self.log = LogMatching()
        self.committed = CommittedImmutable()
        self.completeness = LeaderCompleteness(self.committed)
        self.commit = CommitMonotonic()
        self.apply = ApplySafety()
        self.checks = 0

    def role(self, node: int, term: int, role: StateRole) -> None:
        self.checks += 1
        self.election.on_role(node, term, role)

    def vote_granted(
        self, voter: int, term: int, candidate: int, durable: HardState | None = None
    ) -> None:
        """``voter`` sends a granting vote; ``durable`` is its hard state on disk, if known."""
        self.checks += 1
        self.votes.on_vote_granted(voter, term, candidate)
        if durable is not None:
            self.durable.on_vote_sent(voter, term, candidate, durable)

    def ack_sent(
        self,
        node: int,
        msg_term: int,
        index: int,
        term: int | None,
        durable_term_at: TermAt,
        durable_first: int,
        durable: HardState,
    ) -> None:
        self.checks += 1
        self.durable.on_ack_sent(
            node, msg_term, index, term, durable_term_at, durable_first, durable
        )

    def appended(self, node: int, entries: Iterable[Entry], prev_term: int | None) -> None:
        self.checks += 1
        self.log.on_append(node, entries, prev_term)

    def snapshot_installed(self, node: int, index: int, term: int, node_term: int = 0) -> None:
        self.checks += 1
        self.committed.on_committed(node, index, term, node_term)

    def new_leader(
        self, node: int, term: int, term_at: TermAt, first_index: int, last_index: int
    ) -> None:
        self.checks += 1
        self.completeness.on_new_leader(node, term, term_at, first_index, last_index)

    def commit_advanced(
        self,
        node: int,
        old: int,
        new: int,
        term_at: TermAt,
        last_index: int | None = None,
        node_term: int = 0,
    ) -> None:
        """``node`` (now in ``node_term``) moved its commit index from ``old`` to ``new``;
        ``term_at`` reads its log, which ends at ``last_index`` (when given, the commit index
        may not pass it)."""
        self.checks += 1
        self.commit.on_commit(node, new)
        if last_index is not None and new > last_index:
            raise Violation(
                "commit_monotonic",
                f"member {node} commit index {new} is past its last index {last_index}",
            )
        for index in range(old + 1, new + 1):
            t = term_at(index)
            if t is not None:
                self.committed.on_committed(node, index, t, node_term)

    def applied(self, node: int, entry: Entry, commit: int) -> None:
        self.checks += 1
        self.apply.on_apply(node, entry, commit)

    def snapshot_applied(self, node: int, index: int) -> None:
        self.checks += 1
        self.apply.on_snapshot(node, index)

    def restarted(self, node: int, commit: int, applied: int) -> None:
        self.commit.restart(node, commit)
        self.apply.restart(node, applied)
