"""The corruption checks' decisions (``kvraft.server.corruption``), table-driven: which
peers make a starting member refuse to start, and which members a leader's round names
for a CORRUPT alarm."""

from __future__ import annotations

import pytest

from kvraft.server.corruption import (
    COMPACTED,
    FUTURE,
    UNREACHABLE,
    LocalHash,
    PeerHash,
    judge_compact,
    judge_initial,
    judge_round,
)

L = 1  # the leader (or the starting member)
LOCAL = LocalHash(hash=111, revision=50, compact_revision=10)


@pytest.mark.parametrize(
    ("peers", "mismatched", "notes"),
    [
        ([PeerHash(2, 60, 111, 10), PeerHash(3, 55, 111, 10)], [], 0),
        ([PeerHash(2, 60, 999, 10), PeerHash(3, 55, 111, 10)], [2], 0),
        ([PeerHash(2, 60, 999, 10), PeerHash(3, 55, 998, 10)], [2, 3], 0),
        # another compaction point: the hashes cannot be compared (etcd only warns)
        ([PeerHash(2, 60, 999, 20)], [], 1),
        ([PeerHash(2, error=FUTURE), PeerHash(3, error=COMPACTED), PeerHash(4, error=UNREACHABLE)], [], 3),
        ([PeerHash(2, error="etcdserver: something else"), PeerHash(3, 50, 999, 10)], [3], 1),
        ([], [], 0),
    ],
)
def test_initial_check(peers: list[PeerHash], mismatched: list[int], notes: int) -> None:
    found, said = judge_initial(LOCAL, peers)
    assert found == mismatched
    assert len(said) == notes


def named(found: list[tuple[int, str]]) -> list[int]:
    return [member for member, _ in found]


@pytest.mark.parametrize(
    ("peers", "members", "expected"),
    [
        # all agree
        ([PeerHash(2, 50, 111, 10), PeerHash(3, 50, 111, 10)], 3, []),
        # one follower differs, the others agree with the leader: that follower
        ([PeerHash(2, 50, 111, 10), PeerHash(3, 50, 999, 10)], 3, [3]),
        # the leader is the odd one out: the leader (etcd would name the first follower)
        ([PeerHash(2, 50, 999, 10), PeerHash(3, 50, 999, 10)], 3, [L]),
        # five members, two followers differ in two ways: both
        ([PeerHash(2, 50, 111, 10), PeerHash(3, 50, 111, 10), PeerHash(4, 50, 7, 10), PeerHash(5, 50, 8, 10)], 5,
         [4, 5]),
        # no majority (one follower did not answer): every follower that differs from the leader
        ([PeerHash(2, 50, 999, 10), PeerHash(3, error=UNREACHABLE)], 3, [2]),
        # a follower ahead of the leader, or compacted past it
        ([PeerHash(2, 70, 111, 10), PeerHash(3, 50, 111, 10)], 3, [2]),
        ([PeerHash(2, 50, 111, 10), PeerHash(3, 50, 5, 30)], 3, [3]),
        # a follower behind (future revision) or at another, older compaction point: not compared
        ([PeerHash(2, error=FUTURE), PeerHash(3, 50, 999, 5)], 3, []),
    ],
)
def test_round(peers: list[PeerHash], members: int, expected: list[int]) -> None:
    after = LocalHash(111, 50, 10)
    assert named(judge_round(L, LOCAL, after, 52, peers, members)) == expected


def test_round_names_the_leader_when_its_own_hash_changes_under_it() -> None:
    after = LocalHash(112, 50, 10)  # same revision and compaction point, another hash
    found = judge_round(L, LOCAL, after, 50, [PeerHash(2, 50, 111, 10)], 3)
    assert named(found) == [L]
    assert "changed" in found[0][1]


def test_round_compares_peers_with_the_applied_revision_not_only_the_hashed_one() -> None:
    """The leader's hash is of its committed revision; a follower may have committed a little
    more already, but never more than the leader has applied."""
    after = LocalHash(111, 50, 10)
    assert named(judge_round(L, LOCAL, after, 55, [PeerHash(2, 54, 111, 10)], 3)) == []
    assert named(judge_round(L, LOCAL, after, 55, [PeerHash(2, 56, 111, 10)], 3)) == [2]


def test_every_reason_names_the_numbers() -> None:
    found = judge_round(L, LOCAL, LOCAL, 50, [PeerHash(2, 50, 111, 10), PeerHash(3, 50, 999, 10)], 3)
    assert found == [(3, "hash 999 at revision 50; 2 of 3 members agree on 111")]


async def test_a_peer_answers_why_it_has_no_hash() -> None:
    """A compacted or future revision travels as COMPACTED / FUTURE (the judges skip those);
    any other error as its text."""
    from types import SimpleNamespace

    from kvraft.apply.errors import Unavailable
    from kvraft.apply.validate import as_etcd_error
    from kvraft.server import wire
    from kvraft.server.corruption import CorruptionChecker
    from kvraft.storage.mvcc.errors import CompactedRevisionError, FutureRevisionError

    sent: list[object] = []
    errors = iter([as_etcd_error(CompactedRevisionError()), as_etcd_error(FutureRevisionError()),
                   Unavailable("etcdserver: no leader")])

    async def hash_kv_result(revision: int) -> object:
        raise next(errors)

    node = SimpleNamespace(
        driver=SimpleNamespace(on_frame=lambda *a: None),
        hash_kv_result=hash_kv_result,
        state=SimpleNamespace(revision=lambda: 42),
        transport=SimpleNamespace(send_frame=lambda to, kind, body: sent.append((to, kind, body))),
    )
    checker = CorruptionChecker(node)
    for request_id in (1, 2, 3):
        await checker._answer(7, request_id, 10)
    assert sent == [
        (7, wire.HASH_KV_RESP, [1, 42, 0, 0, COMPACTED]),
        (7, wire.HASH_KV_RESP, [2, 42, 0, 0, FUTURE]),
        (7, wire.HASH_KV_RESP, [3, 42, 0, 0, "etcdserver: no leader"]),
    ]


COMPACTED_AT = LocalHash(hash=111, revision=80, compact_revision=40)
"""The leader's hash recorded by its compaction at 80, the previous one at 40."""


@pytest.mark.parametrize(
    ("peers", "done", "alarms", "notes"),
    [
        # every peer agrees: done, nothing raised
        ([PeerHash(2, 90, 111, 40), PeerHash(3, 85, 111, 40)], True, [], 0),
        # one peer cannot be compared (restarted since: another previous point; no answer):
        # not done, the round goes on to an older hash
        ([PeerHash(2, 90, 111, 40), PeerHash(3, 85, 111, 80)], False, [], 1),
        ([PeerHash(2, 90, 111, 40), PeerHash(3, error=UNREACHABLE)], False, [], 1),
        # a mismatch with a majority: the members outside it, the leader too
        ([PeerHash(2, 90, 999, 40), PeerHash(3, 85, 111, 40)], True, [2], 0),
        ([PeerHash(2, 90, 999, 40), PeerHash(3, 85, 999, 40)], True, [L], 0),
        ([PeerHash(2, 90, 999, 40), PeerHash(3, 85, 111, 40), PeerHash(4, 80, 111, 40), PeerHash(5, 80, 998, 40)],
         True, [2, 5], 0),
        # no hash has a majority (counting the members not compared): member 0, the cluster
        ([PeerHash(2, 90, 999, 40), PeerHash(3, error=FUTURE)], True, [0], 1),
        ([PeerHash(2, 90, 999, 40), PeerHash(3, 85, 998, 40)], True, [0], 0),
    ],
)
def test_compact_hash_check(peers: list[PeerHash], done: bool, alarms: list[int], notes: int) -> None:
    got_done, got_alarms, said = judge_compact(L, COMPACTED_AT, peers)
    assert (got_done, got_alarms, len(said)) == (done, alarms, notes)
