from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.lease import LeaseExists, LeaseNotFound, LeaseTTLTooLarge, Lessor, NotPrimary
from kvraft.testing.clock import ManualClock


def test_grant_minimum_maximum_and_duplicates() -> None:
    lessor = Lessor(min_ttl_s=2)
    assert lessor.grant(1, 0, 0.0).ttl_s == 2
    assert lessor.grant(2, 60, 0.0).ttl_s == 60
    with pytest.raises(LeaseExists):
        lessor.grant(2, 5, 0.0)
    with pytest.raises(LeaseTTLTooLarge):
        lessor.grant(3, 9_000_000_001, 0.0)
    assert lessor.remaining(2, 0.0) == 60
    assert lessor.remaining(2, 0.5) == 60  # ceil, like etcd's TimeToLive
    assert lessor.remaining(2, 1.0) == 59
    assert lessor.remaining(99, 0.0) == -1


def test_only_the_primary_expires_and_retries_lost_revokes() -> None:
    clock = ManualClock()
    lessor = Lessor(min_ttl_s=1, revoke_retry_s=3)
    lessor.grant(7, 5, clock.monotonic())
    clock.advance(6)
    assert lessor.expired(clock.monotonic()) == []  # follower: never decides
    lessor.promote(clock.monotonic())
    assert lessor.expired(clock.monotonic()) == [7]
    clock.advance(1)
    assert lessor.expired(clock.monotonic()) == []  # revoke in flight
    clock.advance(3)
    assert lessor.expired(clock.monotonic()) == [7]  # proposal lost: named again
    lessor.attach(7, b"k2")
    lessor.attach(7, b"k1")
    assert lessor.revoke(7) == [b"k1", b"k2"]
    assert lessor.expired(clock.monotonic() + 100) == []
    with pytest.raises(LeaseNotFound):
        lessor.revoke(7)
    with pytest.raises(LeaseNotFound):
        lessor.renew(7, 0.0)


def test_renew_pushes_the_deadline() -> None:
    clock = ManualClock()
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.grant(1, 10, clock.monotonic())
    for _ in range(5):
        clock.advance(8)
        assert lessor.expired(clock.monotonic()) == []
        assert lessor.renew(1, clock.monotonic()) == 10
    clock.advance(10.001)
    assert lessor.expired(clock.monotonic()) == [1]


def test_remaining_ttl_survives_failover_and_restart() -> None:
    """Leader A and follower B apply the same entries (B a little later); A dies; B keeps
    A's deadline rather than granting a fresh full TTL."""
    a, b = Lessor(), Lessor()
    a.promote(0.0)
    for lessor, t in ((a, 0.0), (b, 0.01)):
        lessor.grant(5, 30, t)
    assert a.checkpoints_due(10.0, interval_s=10) == [(5, 20)]
    for lessor, t in ((a, 10.0), (b, 10.01)):
        lessor.checkpoint(5, 20, t)
    # A dies at t=12; B is elected at t=14
    b.promote(14.0)
    assert b.remaining(5, 14.0) == 17
    assert b.expired(29.9) == []
    assert b.expired(30.02) == [5]
    # a member restarted from persisted records starts from the remaining TTL
    c = Lessor()
    c.restore(b.records(25.0), now=1000.0)
    assert c.remaining(5, 1000.0) == 6


def test_checkpoints_due_skips_recently_renewed() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.grant(1, 100, 0.0)
    lessor.grant(2, 100, 0.0)
    lessor.renew(2, 50.0)
    assert lessor.checkpoints_due(60.0, interval_s=30) == [(1, 40)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["grant", "renew", "keepalive", "revoke", "tick", "ckpt"]), st.integers(1, 4), st.integers(1, 20)), max_size=60))
def test_expiry_matches_a_naive_model(ops) -> None:
    """Nothing is expired early, and a lease past its deadline is named within one call."""
    lessor = Lessor(min_ttl_s=1)
    lessor.promote(0.0)
    now = 0.0
    deadline: dict[int, float] = {}
    for op, lid, n in ops:
        if op == "grant" and lid not in deadline:
            lessor.grant(lid, n, now)
            deadline[lid] = now + n
        elif op == "renew" and lid in deadline:
            lessor.renew(lid, now)
            deadline[lid] = now + lessor.leases[lid].ttl_s
        elif op == "revoke" and lid in deadline:
            lessor.revoke(lid)
            del deadline[lid]
        elif op == "keepalive" and lid in deadline and deadline[lid] > now:
            assert lessor.keepalive(lid, now) == lessor.leases[lid].ttl_s
            deadline[lid] = now + lessor.leases[lid].ttl_s
        elif op == "ckpt":
            # the primary replicates what is due; applying its own checkpoints never moves
            # its deadlines
            for ckpt_id, left in lessor.checkpoints_due(now, interval_s=2):
                lessor.checkpoint(ckpt_id, left, now + 0.5)
        elif op == "tick":
            now += n / 4
            named = lessor.expired(now, limit=10)
            assert all(deadline[i] <= now for i in named)
            overdue = {i for i, d in deadline.items() if d <= now}
            assert overdue <= set(named) | set(lessor._revoking)
            for i in named:
                lessor.revoke(i)
                del deadline[i]


def test_keepalive_renews_in_memory_on_the_primary_only() -> None:
    lessor = Lessor(min_ttl_s=1)
    lessor.grant(1, 10, 0.0)
    with pytest.raises(NotPrimary):
        lessor.keepalive(1, 1.0)
    lessor.promote(1.0)
    assert lessor.keepalive(1, 4.0) == 10
    assert lessor.remaining(1, 4.0) == 10
    assert lessor.expired(13.9) == []
    assert lessor.expired(14.0) == [1]
    # past its deadline (its revocation is under way): not brought back
    with pytest.raises(LeaseNotFound):
        lessor.keepalive(1, 14.1)
    with pytest.raises(LeaseNotFound):
        lessor.keepalive(99, 14.1)


def test_renewed_leases_are_checkpointed_at_once_and_own_checkpoints_keep_the_deadline() -> None:
    leader, follower = Lessor(), Lessor()
    leader.promote(0.0)
    for lessor in (leader, follower):
        lessor.grant(1, 30, 0.0)
        lessor.grant(2, 30, 0.0)
    assert leader.checkpoints_due(1.0, interval_s=10) == []
    leader.keepalive(1, 5.0)
    due = leader.checkpoints_due(5.1, interval_s=10)
    assert due == [(1, 30)]
    assert leader.checkpoints_due(5.2, interval_s=10) == []  # in flight, not named twice
    # the owner renews again before the checkpoint is applied: applying it must not
    # take the leader back to the older deadline
    leader.keepalive(1, 5.3)
    for lessor, t in ((leader, 5.6), (follower, 5.7)):
        lessor.checkpoint(1, 30, t)
    assert leader.leases[1].deadline == 35.3
    assert follower.leases[1].deadline == 35.7  # within the checkpoint delay of the leader
    assert follower.leases[1].remaining_ttl_s == leader.leases[1].remaining_ttl_s == 30
    # lease 1's second renewal is due; lease 2, untouched, is checkpointed after the interval
    assert leader.checkpoints_due(10.0, interval_s=10) == [(1, 26), (2, 20)]


def test_checkpoints_due_respects_the_limit_and_carries_the_rest_over() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    for i in range(1, 6):
        lessor.grant(i, 60, 0.0)
        lessor.keepalive(i, 1.0)
    first = lessor.checkpoints_due(1.0, interval_s=10, limit=3)
    second = lessor.checkpoints_due(1.0, interval_s=10, limit=3)
    assert len(first) == 3 and len(second) == 2
    assert sorted(i for i, _ in first + second) == [1, 2, 3, 4, 5]


def test_promote_extends_every_lease_by_the_election_timeout() -> None:
    """etcd's Promote(extend): the follower's deadlines (from applied checkpoints) plus the
    time a new leader needs; one already past counts from the promotion."""
    follower = Lessor(min_ttl_s=1)
    follower.grant(1, 30, 0.0)
    follower.grant(2, 3, 0.0)
    follower.checkpoint(1, 25, 5.0)  # deadline 30
    follower.promote(10.0, extend_s=1.0)
    assert follower.leases[1].deadline == 31.0
    assert follower.leases[2].deadline == 11.0  # its owner gets the election timeout to reach us
    assert follower.expired(10.9) == []
    assert follower.expired(11.0) == [2]
    assert follower.keepalive(1, 12.0) == 30
    follower.demote()
    with pytest.raises(NotPrimary):
        follower.keepalive(1, 13.0)


def test_a_kept_alive_lease_survives_failover_and_an_unrenewed_one_ends() -> None:
    """Leader A renews lease 1 every 3 s (TTL 10) and checkpoints each loop turn; B applies
    the checkpoints; A dies at t=20 right after a renewal that B never hears of; B is
    promoted at t=22 with extend 1: lease 1 lasts until its owner reaches B; lease 2,
    never renewed, ends within TTL + extend."""
    a, b = Lessor(min_ttl_s=1), Lessor(min_ttl_s=1)
    a.promote(0.0)
    for lessor in (a, b):
        lessor.grant(1, 10, 0.0)
        lessor.grant(2, 10, 0.0)
    t = 0.0
    while t < 19:
        t += 3
        a.keepalive(1, t)
        for lid, left in a.checkpoints_due(t + 0.1, interval_s=10):
            a.checkpoint(lid, left, t + 0.2)
            b.checkpoint(lid, left, t + 0.3)
        assert a.expired(t + 0.3) == [] or t + 0.3 >= 10
    a.keepalive(1, 20.0)  # never checkpointed
    b.promote(22.0, extend_s=1.0)
    assert b.expired(22.99) == []
    assert b.keepalive(1, 23.0) == 10  # the owner's next keepalive lands in time
    assert b.expired(23.0) == [2]
    assert 1 not in b.expired(32.99)  # (2 is named again: its revoke was never applied)
