"""Each safety checker fires on a hand-made violation (and stays quiet on a legal history)."""

from __future__ import annotations

import pytest

from kvraft.raft.types import Entry, EntryType, StateRole
from kvraft.testing.checkers import ClusterCheckers, Violation


def e(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term=term, index=index, data=data)


def log_of(*entries: Entry):  # noqa: ANN202 - a TermAt
    terms = {x.index: x.term for x in entries}
    return lambda i: terms.get(i)


def fires(checker: str):  # noqa: ANN201
    return pytest.raises(Violation, match=f"^{checker}: ")


def test_election_safety() -> None:
    c = ClusterCheckers()
    c.role(1, 2, StateRole.LEADER)
    c.role(1, 2, StateRole.LEADER)  # the same leader again is fine
    c.role(2, 2, StateRole.FOLLOWER)
    c.role(2, 3, StateRole.LEADER)  # another term, another leader
    with fires("election_safety"):
        c.role(3, 2, StateRole.LEADER)


def test_vote_once() -> None:
    c = ClusterCheckers()
    c.vote_granted(1, 5, 2)
    c.vote_granted(1, 5, 2)  # a duplicated response
    c.vote_granted(1, 6, 3)
    with fires("vote_once"):
        c.vote_granted(1, 5, 3)


def test_log_matching_same_index_and_term_different_data() -> None:
    c = ClusterCheckers()
    c.appended(1, [e(1, 1, b"a"), e(2, 1, b"b")], 0)
    c.appended(2, [e(1, 1, b"a")], 0)
    with fires("log_matching"):
        c.appended(2, [e(2, 1, b"X")], 1)


def test_log_matching_different_predecessor() -> None:
    c = ClusterCheckers()
    c.appended(1, [e(1, 1), e(2, 1), e(3, 3)], 0)
    c.appended(2, [e(1, 1), e(2, 2)], 0)
    with fires("log_matching"):
        c.appended(2, [e(3, 3)], 2)  # 3/3 after a term-2 entry here, after term 1 on member 1


def test_committed_immutable_and_commit_monotonic() -> None:
    c = ClusterCheckers()
    c.commit_advanced(1, 0, 2, log_of(e(1, 1), e(2, 1)))
    c.commit_advanced(2, 0, 1, log_of(e(1, 1), e(2, 2)))
    with fires("committed_immutable"):
        c.commit_advanced(2, 1, 2, log_of(e(1, 1), e(2, 2)))
    c2 = ClusterCheckers()
    c2.commit_advanced(1, 0, 3, log_of(e(1, 1), e(2, 1), e(3, 1)))
    with fires("commit_monotonic"):
        c2.commit_advanced(1, 3, 2, log_of(e(1, 1), e(2, 1), e(3, 1)))
    # after a restart the commit index starts again from what was persisted
    c2.restarted(1, commit=1, applied=0)
    c2.commit_advanced(1, 1, 3, log_of(e(1, 1), e(2, 1), e(3, 1)))


def test_snapshot_term_must_match_commits() -> None:
    c = ClusterCheckers()
    c.commit_advanced(1, 0, 2, log_of(e(1, 1), e(2, 1)))
    c.snapshot_installed(2, 2, 1)
    with fires("committed_immutable"):
        c.snapshot_installed(3, 2, 2)


def test_leader_completeness() -> None:
    c = ClusterCheckers()
    full = log_of(e(1, 1), e(2, 1), e(3, 2))
    c.commit_advanced(1, 0, 3, full)
    c.new_leader(1, 3, full, 1, 3)
    c.new_leader(2, 4, log_of(e(3, 2)), 3, 3)  # indexes 1..2 are in its snapshot
    with fires("leader_completeness"):
        c.new_leader(3, 5, log_of(e(1, 1), e(2, 1)), 1, 2)  # missing index 3
    with fires("leader_completeness"):
        c.new_leader(3, 5, log_of(e(1, 1), e(2, 1), e(3, 3)), 1, 3)  # a different entry at 3


def test_apply_safety_two_entries_at_one_index() -> None:
    c = ClusterCheckers()
    c.applied(1, e(1, 1, b"a"), commit=1)
    c.applied(2, e(1, 1, b"a"), commit=1)
    c.applied(1, e(2, 1, b"b"), commit=2)
    with fires("apply_safety"):
        c.applied(2, e(2, 2, b"c"), commit=2)


def test_apply_safety_order_commit_and_monotonic() -> None:
    c = ClusterCheckers()
    with fires("apply_safety"):
        c.applied(1, e(2, 1), commit=5)  # skipped index 1
    c = ClusterCheckers()
    with fires("apply_safety"):
        c.applied(1, e(1, 1), commit=0)  # not committed
    c = ClusterCheckers()
    c.applied(1, e(1, 1), commit=1)
    with fires("apply_safety"):
        c.applied(1, e(1, 1), commit=1)  # applied twice
    c.snapshot_applied(1, 10)
    c.applied(1, e(11, 2), commit=11)
    with fires("apply_safety"):
        c.snapshot_applied(1, 5)
    # a restart rebuilds the state machine from the snapshot: applied restarts there
    c.restarted(1, commit=11, applied=10)
    c.applied(1, e(11, 2), commit=11)


def test_entry_types_are_compared() -> None:
    c = ClusterCheckers()
    c.applied(1, Entry(term=1, index=1, type=EntryType.NORMAL, data=b"x"), commit=1)
    with fires("apply_safety"):
        c.applied(2, Entry(term=1, index=1, type=EntryType.CONF_CHANGE, data=b"x"), commit=1)


def test_leader_completeness_allows_commits_it_may_have_preceded() -> None:
    # member 3 is seen becoming leader of term 8 only after term 9 committed index 5: it may
    # have won term 8 before that commit happened, so it need not hold the entry
    c = ClusterCheckers()
    c.commit_advanced(1, 0, 5, log_of(*(e(i, 9) for i in range(1, 6))), node_term=9)
    c.new_leader(3, 8, log_of(e(1, 9)), 1, 1)
    with fires("leader_completeness"):
        c.new_leader(3, 10, log_of(e(1, 9)), 1, 1)
    # a commit seen by a member of a lower term bounds the committing term from above
    c.commit_advanced(2, 0, 5, log_of(*(e(i, 9) for i in range(1, 6))), node_term=9)
    c2 = ClusterCheckers()
    c2.commit_advanced(1, 0, 2, log_of(e(1, 1), e(2, 1)), node_term=2)
    with fires("leader_completeness"):
        c2.new_leader(3, 3, log_of(e(1, 1)), 1, 1)


def test_durable_promises_vote() -> None:
    from kvraft.raft.types import HardState

    c = ClusterCheckers()
    c.vote_granted(1, 2, 3, HardState(term=2, vote=3, commit=0))
    c.vote_granted(1, 2, 3, HardState(term=5, vote=0, commit=0))  # a later term keeps it
    with fires("durable_promises"):
        c.vote_granted(2, 2, 3, HardState(term=1, vote=0, commit=0))  # vote not on disk
    with fires("durable_promises"):
        c.vote_granted(4, 2, 3, HardState(term=2, vote=0, commit=0))


def test_durable_promises_ack() -> None:
    from kvraft.raft.types import HardState

    c = ClusterCheckers()
    hs = HardState(term=3, vote=1, commit=0)
    durable = log_of(e(1, 1), e(2, 3))
    c.ack_sent(2, 3, 2, 3, durable, 1, hs)
    c.ack_sent(2, 3, 0, None, durable, 5, hs)  # inside the durable snapshot
    with fires("durable_promises"):
        c.ack_sent(2, 3, 3, 3, durable, 1, hs)  # index 3 is not on disk
    with fires("durable_promises"):
        c.ack_sent(2, 3, 2, 4, log_of(e(1, 1), e(2, 2)), 1, hs)  # a different entry on disk
    c.ack_sent(2, 2, 3, 3, durable, 1, hs)  # acked in term 2, durable term 3: superseded
