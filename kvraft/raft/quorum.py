"""Quorum arithmetic as pure functions: committed index and vote outcome for a majority
configuration and for a joint (C_old,new) one.

A joint configuration needs a majority of *each* half. An empty half places no
constraint: its committed index is ``UNBOUNDED`` and its vote is always won, so a
non-joint configuration is the joint one ``(voters, {})``.

Example, voters {1, 2, 3, 4, 5} with match {1: 9, 2: 7, 3: 7, 4: 3}: sorted descending
9, 7, 7, 3, 0 (5 has none); a majority is 3, so the third value, 7, is committed.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

__all__ = [
    "UNBOUNDED",
    "VoteResult",
    "joint_committed_index",
    "joint_vote_result",
    "majority_committed_index",
    "majority_vote_result",
]

UNBOUNDED = (1 << 64) - 1
"""Committed index of an empty configuration (it constrains nothing)."""


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` has (missing voters count as 0)."""
    if not voters:
        return UNBOUNDED
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    return indexes[len(indexes) // 2]


def joint_committed_index(
    incoming: Collection[int], outgoing: Collection[int], match: Mapping[int, int]
) -> int:
    return min(majority_committed_index(incoming, match), majority_committed_index(outgoing, match))


def majority_vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON when a majority said yes, LOST when a majority can no longer say yes."""
    if not voters:
        return VoteResult.WON
    yes = missing = 0
    for v in voters:
        granted = votes.get(v)
        if granted is None:
            missing += 1
        elif granted:
            yes += 1
    need = len(voters) // 2 + 1
    if yes >= need:
        return VoteResult.WON
    if yes + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_vote_result(
    incoming: Collection[int], outgoing: Collection[int], votes: Mapping[int, bool]
) -> VoteResult:
    first = majority_vote_result(incoming, votes)
    second = majority_vote_result(outgoing, votes)
    if first == second:
        return first
    if VoteResult.LOST in (first, second):
        return VoteResult.LOST
    return VoteResult.PENDING
