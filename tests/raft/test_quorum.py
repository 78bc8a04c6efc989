"""quorum.py against naive reference implementations (Hypothesis), plus examples."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st

from kvraft.raft.quorum import (
    UNBOUNDED,
    VoteResult,
    joint_committed_index,
    joint_vote_result,
    majority_committed_index,
    majority_vote_result,
)

ids = st.frozensets(st.integers(1, 9), max_size=7)
matches = st.dictionaries(st.integers(1, 9), st.integers(0, 20))
votes = st.dictionaries(st.integers(1, 9), st.booleans())


def naive_committed(voters: frozenset[int], match: dict[int, int]) -> int:
    """The largest index i such that a majority of voters has match >= i."""
    if not voters:
        return UNBOUNDED
    need = len(voters) // 2 + 1
    best = 0
    for i in range(0, 21):
        if sum(1 for v in voters if match.get(v, 0) >= i) >= need:
            best = i
    return best


def naive_vote(voters: frozenset[int], vs: dict[int, bool]) -> VoteResult:
    """Enumerate the outcomes of the missing votes."""
    if not voters:
        return VoteResult.WON
    need = len(voters) // 2 + 1
    yes = sum(1 for v in voters if vs.get(v) is True)
    missing = [v for v in voters if v not in vs]
    if yes >= need:
        return VoteResult.WON
    if yes + len(missing) >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


@given(ids, matches)
def test_majority_committed_matches_naive(voters: frozenset[int], match: dict[int, int]) -> None:
    assert majority_committed_index(voters, match) == naive_committed(voters, match)


@given(ids, ids, matches)
def test_joint_committed_is_min_of_halves(
    a: frozenset[int], b: frozenset[int], match: dict[int, int]
) -> None:
    assert joint_committed_index(a, b, match) == min(
        naive_committed(a, match), naive_committed(b, match)
    )


@given(ids, votes)
def test_majority_vote_matches_naive(voters: frozenset[int], vs: dict[int, bool]) -> None:
    assert majority_vote_result(voters, vs) == naive_vote(voters, vs)


@given(ids, ids, votes)
def test_joint_vote_needs_both_halves(
    a: frozenset[int], b: frozenset[int], vs: dict[int, bool]
) -> None:
    got = joint_vote_result(a, b, vs)
    ra, rb = naive_vote(a, vs), naive_vote(b, vs)
    if ra == rb == VoteResult.WON:
        assert got == VoteResult.WON
    elif VoteResult.LOST in (ra, rb):
        assert got == VoteResult.LOST
    else:
        assert got == VoteResult.PENDING


@given(ids, matches)
def test_committed_index_is_stored_on_a_majority_and_majorities_intersect(
    voters: frozenset[int], match: dict[int, int]
) -> None:
    c = majority_committed_index(voters, match)
    if voters:
        holders = {v for v in voters if match.get(v, 0) >= c}
        assert len(holders) > len(voters) // 2
        # any two majorities of the same voter set share a member
        need = len(voters) // 2 + 1
        for q in combinations(sorted(voters), need):
            assert holders & set(q)


def test_examples() -> None:
    assert majority_committed_index({1, 2, 3, 4, 5}, {1: 9, 2: 7, 3: 7, 4: 3}) == 7
    assert majority_committed_index({1, 2}, {1: 5, 2: 3}) == 3
    assert majority_committed_index(set(), {}) == UNBOUNDED
    assert joint_committed_index({1, 2, 3}, set(), {1: 4, 2: 4}) == 4
    assert joint_committed_index({1, 2, 3}, {3, 4, 5}, {1: 4, 2: 4, 3: 1, 4: 2, 5: 3}) == 2
    assert majority_vote_result({1, 2, 3}, {1: True}) == VoteResult.PENDING
    assert majority_vote_result({1, 2, 3}, {1: True, 2: False, 3: False}) == VoteResult.LOST
    assert joint_vote_result({1, 2, 3}, {4, 5, 6}, {1: True, 2: True}) == VoteResult.PENDING
